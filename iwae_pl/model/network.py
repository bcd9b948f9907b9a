"""The IWAE network (Burda et al. 2015): Gaussian stochastic layers joined by MLPs, Bernoulli pixels.

Shapes used throughout:
    x      [B, D]        a batch of binary data points
    S      sample shape  (M, K) for training objectives, (n,) for an L_k chunk
    h_l    [*S, B, d_l]  a sample of stochastic layer l (l = 1 is the one next to x)
    terms  [*S, B]       per-sample log-density terms; their combination is the log importance weight

The recognition model q(h|x) = q(h1|x) q(h2|h1) ... and the generative model
p(x, h) = p(x|h1) p(h1|h2) ... p(h_L) share one layer spec. The deterministic MLP from x to the
parameters of q(h1|x) does not depend on the sample, so it runs once per data point and only the
Gaussian draw is broadcast over the sample shape.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..errors import ConfigError
from ..fast.bernoulli import visible_log_prob
from ..fast.inplace import mlp_forward
from .densities import bernoulli_log_prob, eps_log_prob, gaussian_log_prob, standard_normal_log_prob
from .log_weights import LogWeights
from .specs import ACTIVATIONS, BURDA_1_LAYER, BURDA_2_LAYER, LayerSpec, as_layer_specs

__all__ = ["BURDA_1_LAYER", "BURDA_2_LAYER", "IWAENetwork", "LayerSpec", "as_layer_specs"]
StdParam = Literal["exp", "softplus"]


def _mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear + activation for each consecutive pair of sizes (an empty Sequential if len < 2)."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


def _glorot_(linear: nn.Linear, fan_out: int | None = None) -> None:
    """Glorot-uniform weights U(+-sqrt(6/(n_in+n_out))), zero bias, as in the original code."""
    fan_out = linear.out_features if fan_out is None else fan_out
    bound = math.sqrt(6.0 / (linear.in_features + fan_out))
    nn.init.uniform_(linear.weight, -bound, bound)
    nn.init.zeros_(linear.bias)


class GaussianBlock(nn.Module):
    """MLP followed by a diagonal-Gaussian head: features [..., n_in] -> (mean, log_std) [..., d].

    One Linear produces mean and the std pre-activation together (one matmul instead of two);
    each half is initialised like the separate matrices of the original code.
    """

    def __init__(self, n_in: int, hidden: Sequence[int], latent: int, activation: str, std: StdParam,
                 fast: bool = True):
        super().__init__()
        self.mlp = _mlp([n_in, *hidden], activation)
        self.head = nn.Linear(hidden[-1] if hidden else n_in, 2 * latent)
        self.std = std
        self.fast = fast
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                _glorot_(m)
        _glorot_(self.head, fan_out=latent)

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        features = mlp_forward(self.mlp, t) if self.fast else self.mlp(t)
        mean, s = self.head(features).chunk(2, dim=-1)
        if self.std == "exp":  # the original: the linear output is log sigma
            return mean, s
        return mean, F.softplus(s).clamp_min(1e-6).log()


class BernoulliBlock(nn.Module):
    """MLP followed by a linear layer of Bernoulli logits: h1 [..., d1] -> logits [..., D]."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, activation: str, fast: bool = True):
        super().__init__()
        self.mlp = _mlp([n_in, *hidden], activation)
        self.head = nn.Linear(hidden[-1] if hidden else n_in, n_out)
        self.fast = fast
        for m in [*self.mlp, self.head]:
            if isinstance(m, nn.Linear):
                _glorot_(m)

    def forward(self, t: Tensor) -> Tensor:
        return self.head(mlp_forward(self.mlp, t) if self.fast else self.mlp(t))

    def log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        """log p(x | t) summed over pixels: x [B, D], t [*S, B, d1] -> [*S, B]."""
        if self.fast:
            return visible_log_prob(self, x, t)
        return bernoulli_log_prob(x, self(t))


class Encoder(nn.Module):
    """The recognition model q(h1|x) q(h2|h1) ... q(h_L|h_{L-1})."""

    def __init__(self, input_dim: int, specs: Sequence[LayerSpec], std: StdParam, fast: bool = True):
        super().__init__()
        sizes = [input_dim] + [s.latent for s in specs]
        self.blocks = nn.ModuleList(
            GaussianBlock(n_in, s.hidden, s.latent, s.activation, std, fast) for n_in, s in zip(sizes, specs)
        )

    def forward(self, x: Tensor, eps: Sequence[Tensor], keep: Sequence[Tensor | None] | None = None
                ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Reparameterized samples from q.

        Args:
            x: [B, D]. eps: per layer, standard normal noise [*S, B, d_l].
            keep: optional per layer bool [d_l]: units where False are pruned — clamped to their
                posterior mean and left out of log q (Burda et al.'s pruning check).
        Returns:
            hs: samples [*S, B, d_l]; log_q: log q(h_l | h_{l-1}) [*S, B];
            params: per layer (mean, log_std) — layer 1's are [B, d1] (computed once per data point).
        """
        hs, log_q, params = [], [], []
        below = x
        for block, e, k in zip(self.blocks, eps, keep or [None] * len(self.blocks)):
            mean, log_std = block(below)
            h = torch.addcmul(mean, torch.exp(log_std), e)
            if k is not None:
                h = torch.where(k, h, mean)
            log_q.append(eps_log_prob(e, log_std, k))
            hs.append(h)
            params.append((mean, log_std))
            below = h
        return hs, log_q, params

    def log_q_stopped(self, hs: Sequence[Tensor], params: Sequence[tuple[Tensor, Tensor]]) -> list[Tensor]:
        """log q_{sg(phi)}(h|x): densities with the encoder's parameters held fixed (STL, DReG).

        The gradient still flows through the samples h (the path derivative), including through
        h_{l-1} into the mean of layer l, but not into the parameters directly.
        """
        mean, log_std = params[0]  # layer 1 depends only on x: detaching its parameters suffices
        out = [gaussian_log_prob(hs[0], mean.detach(), log_std.detach())]
        for block, below, h in zip(self.blocks[1:], hs[:-1], hs[1:]):
            mean, log_std = functional_call(block, _detached(block), (below,))
            out.append(gaussian_log_prob(h, mean, log_std))
        return out


class Decoder(nn.Module):
    """The generative model p(h_L) p(h_{L-1}|h_L) ... p(x|h1)."""

    def __init__(self, input_dim: int, specs: Sequence[LayerSpec], std: StdParam, fast: bool = True):
        super().__init__()
        s0 = specs[0]
        self.visible = BernoulliBlock(s0.latent, tuple(reversed(s0.hidden)), input_dim, s0.activation, fast)
        # blocks[l-1] maps h_{l+1} down to the parameters of p(h_l | h_{l+1}).
        self.blocks = nn.ModuleList(
            GaussianBlock(upper.latent, tuple(reversed(upper.hidden)), lower.latent, upper.activation, std, fast)
            for lower, upper in zip(specs[:-1], specs[1:])
        )

    def forward(self, x: Tensor, hs: Sequence[Tensor], keep: Sequence[Tensor | None] | None = None
                ) -> tuple[Tensor, list[Tensor]]:
        """Returns log p(x | h1) [*S, B] and [log p(h1|h2), ..., log p(h_L)], each [*S, B].

        keep: optional per layer bool [d_l]; pruned units (False) are left out of log p.
        """
        keep = keep or [None] * len(hs)
        log_p = [gaussian_log_prob(h, *block(upper), k)
                 for block, h, upper, k in zip(self.blocks, hs[:-1], hs[1:], keep[:-1])]
        log_p.append(standard_normal_log_prob(hs[-1], keep[-1]))
        return self.visible.log_prob(x, hs[0]), log_p


def _detached(module: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach() for name, p in module.named_parameters()}


class IWAENetwork(nn.Module):
    """Encoder and decoder of a (multi-layer) IWAE, and the log importance weights they define.

    Args:
        input_dim: number of visible (binary) units D.
        layers: stochastic layers bottom-up, e.g. ``BURDA_2_LAYER``.
        std: how the std of every Gaussian is parameterized: ``exp`` (the linear output is log sigma,
            as in the original) or ``softplus``.
        fast: run the MLPs and the Bernoulli term through ``iwae_pl.fast`` (in-place activations, a
            fused Bernoulli backward, cache-sized evaluation blocks); False runs the plain modules
            above. Same values and gradients either way (tests/test_fast_paths.py).
    """

    def __init__(self, input_dim: int, layers: Sequence[LayerSpec | dict] = BURDA_1_LAYER, std: StdParam = "exp",
                 fast: bool = True):
        super().__init__()
        if not isinstance(input_dim, int) or input_dim < 1:
            raise ConfigError(f"input_dim must be an integer >= 1, got {input_dim!r}")
        if std not in ("exp", "softplus"):
            raise ConfigError(f"unknown std parameterization {std!r}; allowed: exp, softplus")
        self.specs = as_layer_specs(layers)
        self.input_dim = input_dim
        self.encoder = Encoder(input_dim, self.specs, std, fast)
        self.decoder = Decoder(input_dim, self.specs, std, fast)

    @property
    def latent_sizes(self) -> list[int]:
        return [s.latent for s in self.specs]

    def set_visible_bias(self, pixel_mean: Tensor, clip: float = 1e-3) -> None:
        """Initialise the Bernoulli bias to logit(clip(mean)), as the original code does."""
        p = pixel_mean.clamp(clip, 1 - clip).to(self.decoder.visible.head.bias)
        with torch.no_grad():
            self.decoder.visible.head.bias.copy_(torch.log(p) - torch.log1p(-p))

    def draw_noise(self, x: Tensor, sample_shape: Sequence[int], generator: torch.Generator | None = None) -> list[Tensor]:
        """Standard-normal noise per layer, [*S, B, d_l], from torch's RNG (training)."""
        shape = (*sample_shape, x.shape[0])
        return [torch.randn(*shape, d, device=x.device, dtype=x.dtype, generator=generator) for d in self.latent_sizes]

    def log_weights(
        self,
        x: Tensor,
        sample_shape: Sequence[int] = (1, 1),
        *,
        eps: Sequence[Tensor] | None = None,
        beta: float = 1.0,
        stop_q: bool = False,
        split: bool = False,
        keep: Sequence[Tensor | None] | None = None,
    ) -> LogWeights:
        """Log importance weights log w = log p(x|h1) + beta (log p(h) - log q(h|x)), [*S, B].

        Args:
            x: [B, D] binary data. sample_shape: S, e.g. (M, K). eps: optional noise per layer
                [*S, B, d_l] (drawn from torch's RNG if None).
            beta: warm-up temperature on the latent terms (1 for the true bound).
            stop_q: evaluate log q with the encoder's parameters held fixed (STL and DReG).
            split: also return an ``encoder`` view (same values; the gradient reaches only the encoder:
                decoder parameters held fixed) and a ``decoder`` view (samples held fixed; the gradient
                reaches only the decoder). Objectives that give the two networks different gradients
                (DReG, PIWAE) use them, in one backward pass. Costs a second decoder pass.
            keep: optional per layer bool [d_l] (None = all units): units where False are pruned,
                i.e. clamped to their posterior mean and left out of log p and log q.
        """
        if eps is None:
            eps = self.draw_noise(x, sample_shape)
        if keep is not None and (stop_q or split):
            raise ConfigError("pruning units (keep=...) is for evaluation; it cannot be combined with stop_q or split")
        hs, log_q, params = self.encoder(x, eps, keep)
        if stop_q:
            log_q = self.encoder.log_q_stopped(hs, params)
        means = [p[0] for p in params]
        if not split:
            log_px, log_p = self.decoder(x, hs, keep)
            return LogWeights(log_px, log_p, log_q, means, beta, stop_q)
        # Decoder view: samples (and so log q) fixed; gradient only to the decoder's parameters.
        log_px_d, log_p_d = self.decoder(x, [h.detach() for h in hs])
        decoder_view = LogWeights(log_px_d, log_p_d, [q.detach() for q in log_q], means, beta).value
        # Encoder view: decoder parameters fixed; gradient flows through the samples to the encoder.
        log_px, log_p = functional_call(self.decoder, _detached(self.decoder), (x, hs))
        out = LogWeights(log_px, log_p, log_q, means, beta, stop_q)
        out.encoder, out.decoder = out.value, decoder_view
        return out

    def posterior_means(self, x: Tensor, propagate: Literal["sample", "mean"] = "sample",
                        eps: Sequence[Tensor] | None = None) -> list[Tensor]:
        """E_q[h_l | input of layer l] for every layer, each [B, d_l] (the activity statistic's input).

        ``sample`` (Burda's code, the default): layer l > 1 is fed one sample of layer l-1, drawn with
        the noise ``eps`` (per layer [B, d_l]; default torch's RNG); ``mean``: layer l > 1 is fed the
        mean of layer l-1 (a mean-field shortcut). The encoder only: no decoder pass.
        """
        if propagate == "sample":
            eps = self.draw_noise(x, ()) if eps is None else eps
            return [mean for mean, _ in self.encoder(x, eps)[2]]
        means, below = [], x
        for block in self.encoder.blocks:
            below, _ = block(below)
            means.append(below)
        return means

    def decode_probs(self, h1: Tensor) -> Tensor:
        """Pixel probabilities p(x = 1 | h1): [..., d1] -> [..., D]."""
        return torch.sigmoid(self.decoder.visible(h1))

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral samples h1 from the generative model's prior over layer 1: [n, d1]."""
        device = self.decoder.visible.head.weight.device
        h = torch.randn(n, self.specs[-1].latent, device=device, generator=generator)
        for block in reversed(self.decoder.blocks):
            mean, log_std = block(h)
            h = mean + torch.exp(log_std) * torch.randn(mean.shape, device=device, generator=generator)
        return h
