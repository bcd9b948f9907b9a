"""The evaluation pass: a data point's log importance weights without autograd, fast on a CPU.

L_5000 on a test set costs as much as several training epochs, almost all of it in this pass. It gives
``IWAENetwork.log_weights(x, (k,), eps=indexed_normal(...)).value`` for one binary data point (the
same noise, the same value up to float rounding; tests/test_fast_paths.py), computed differently:

- One data point at a time, its k samples in blocks of ``rows``. Every intermediate is written into
  buffers of the thread's ``Workspace`` (no page faults on fresh memory, see ``workspace``).
- Biases ride inside the matrix products: each layer's input buffer carries a trailing column of
  ones, and each weight matrix a trailing row holding the bias (no broadcast copy per layer).
- For binary x the Bernoulli term is log p(x|h1) = -sum_d softplus(s_d l_d) with s = 1 - 2x. The
  sign is folded into the visible layer's weights once per point, and sum_d s_d l_d comes out of the
  same product as one extra column. softplus(t) = relu(t) + log(1 + e^-|t|); the factors 1 + e^-|t|
  lie in (1, 2], so products of 16 of them are taken before the log: one log per 16 pixels.
- The Gaussians' normalising constants cancel in log w (one q and one p term per layer) and are left
  out.
The pass covers what evaluation uses: CPU tensors, binary x, tanh/ReLU networks, no pruning or
hooks; ``supports`` says when it applies, and callers use ``IWAENetwork.log_weights`` otherwise.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..model.noise import BLOCK, buffer_size, draw_rows
from .bernoulli import log_prod_, softplus_
from .inplace import INPLACE_ACTIVATIONS, has_hooks
from .workspace import Workspace

if TYPE_CHECKING:
    from ..model.network import IWAENetwork

EVAL_ROWS = 8192  # samples per block: k = 5000 in one (fewer, longer operations; benchmarks/bench.py)
_VISIBLE_ROWS = 512  # rows of [rows, D] logits per step: 1.6 MB in float32, within a 2 MB L2 cache


def block_rows(rows: int, k: int) -> int:
    """Samples per block for a requested ``rows``: a multiple of the noise BLOCK (at least one), at most k."""
    return min(k, max(BLOCK, rows - rows % BLOCK))


def _sq_norm(t: Tensor) -> Tensor:
    """sum of squares over the last dimension, [R, d] -> [R] (one reduction, no [R, d] temporary)."""
    return torch.linalg.vector_norm(t, dim=-1).square_()


def supports(net: IWAENetwork, x: Tensor) -> bool:
    """Whether the pass applies: CPU, float32/64, binary x [B, D], tanh/ReLU layers, no module hooks."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 2
            and all(spec.activation in ("tanh", "relu") for spec in net.specs)
            and not has_hooks(net) and bool(((x == 0) | (x == 1)).all()))


def _augmented(linear: nn.Linear, dtype: torch.dtype) -> Tensor:
    """[n_in + 1, n_out]: the weight's transpose with the bias as the last row (inputs end with a 1)."""
    return torch.cat([linear.weight.t(), linear.bias[None]]).detach().to(dtype).contiguous()


def _mlp_layers(mlp: nn.Sequential, dtype: torch.dtype) -> list[tuple[Tensor, object]]:
    """(augmented weight, in-place activation) for each Linear of an MLP."""
    mods = list(mlp)
    return [(_augmented(m, dtype), INPLACE_ACTIVATIONS[type(mods[i + 1])])
            for i, m in enumerate(mods) if isinstance(m, nn.Linear)]


class EvalPass:
    """The pass for one network (its weights prepared once; share it across threads, not mutate it).

    Args:
        net: the network (read at construction; build a new pass after the weights change).
        dtype: float32 or float64, the dtype of the data it will see.
    """

    @torch.no_grad()
    def __init__(self, net: IWAENetwork, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self.dims = net.latent_sizes
        self.first = net.encoder.blocks[0]  # x -> q(h1|x): once per data point, through the module
        self.softplus_std = net.encoder.blocks[0].std == "softplus"
        self.encoder = [(_mlp_layers(b.mlp, dtype), _augmented(b.head, dtype)) for b in net.encoder.blocks[1:]]
        self.decoder = [(_mlp_layers(b.mlp, dtype), _augmented(b.head, dtype)) for b in net.decoder.blocks]
        visible = net.decoder.visible
        self.visible_mlp = _mlp_layers(visible.mlp, dtype)
        self.visible_head = _augmented(visible.head, dtype)  # [H + 1, D]

    # ------------------------------------------------------------------------------------ pieces
    @staticmethod
    def _mlp(ws: Workspace, tag: str, layers, t: Tensor) -> Tensor:
        """t [R, n + 1] (ones column) -> the MLP's output, [R, m + 1] with a ones column."""
        for i, (w, act) in enumerate(layers):
            out = ws.get(f"{tag}{i}", t.shape[0], w.shape[1], t.dtype, ones=True)
            act(torch.mm(t, w, out=out[:, :-1]))
            t = out
        return t

    def _gaussian(self, ws: Workspace, tag: str, block, t: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log_std), each [R, d] (views of one buffer), of a Gaussian block on input t."""
        layers, head = block
        t = self._mlp(ws, tag, layers, t)
        out = torch.mm(t, head, out=ws.get(f"{tag}head", t.shape[0], head.shape[1], t.dtype))
        d = head.shape[1] // 2
        mean, log_std = out[:, :d], out[:, d:]
        if self.softplus_std:  # GaussianBlock: log(softplus(s).clamp_min(1e-6))
            softplus_(log_std).clamp_min_(1e-6).log_()
        return mean, log_std

    def _point(self, ws: Workspace, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per data point: q(h1|x)'s mean and std [d1], sum log std, and the signed visible weights."""
        mean, log_std = self.first(x[None])
        mean, log_std = mean[0].to(self.dtype), log_std[0].to(self.dtype)
        D = x.shape[0]
        signed = ws.get("visible", self.visible_head.shape[0], D + 1, self.dtype)
        torch.mul(self.visible_head, 1 - 2 * x.to(self.dtype), out=signed[:, :D])  # columns times s_d
        torch.sum(signed[:, :D], 1, out=signed[:, D])                                # sum_d s_d l_d
        return mean, log_std.exp(), log_std.sum(), signed

    def _block(self, ws: Workspace, point, noise: Tensor, out: Tensor) -> None:
        """log w of R samples of one point into out [R]; noise [R, sum d_l], all layers' (a view is fine)."""
        mean1, std1, log_std1_sum, signed = point
        R, dt = out.shape[0], self.dtype
        eps = noise.split(self.dims, dim=-1)
        # log w = 0.5 |e|^2 + sum_l sum log sigma_q,l  - 0.5 |h_L|^2
        #         - sum_{l<L} [0.5 |z_l|^2 + sum log sigma_p,l]  - sum_d softplus(s_d l_d)
        out.copy_(_sq_norm(noise)).mul_(0.5).add_(log_std1_sum)
        h = ws.get("h0", R, self.dims[0], dt, ones=True)
        torch.addcmul(mean1, std1, eps[0], out=h[:, :-1])
        hs = [h]
        for layer, (block, e) in enumerate(zip(self.encoder, eps[1:]), start=1):
            mean, log_std = self._gaussian(ws, f"q{layer}.", block, hs[-1])
            out.add_(log_std.sum(-1))
            h = ws.get(f"h{layer}", R, self.dims[layer], dt, ones=True)
            torch.addcmul(mean, log_std.exp_(), e, out=h[:, :-1])
            hs.append(h)
        top = hs[-1][:, :-1]
        out.sub_(_sq_norm(top), alpha=0.5)
        for layer in reversed(range(len(self.decoder))):  # p(h_{l+1} | h_{l+2}) from hs[layer + 1]
            mean, log_std = self._gaussian(ws, f"p{layer}.", self.decoder[layer], hs[layer + 1])
            out.sub_(log_std.sum(-1))
            z = torch.sub(hs[layer][:, :-1], mean, out=mean).mul_(log_std.neg_().exp_())
            out.sub_(_sq_norm(z), alpha=0.5)
        a = self._mlp(ws, "v", self.visible_mlp, hs[0])
        for r in range(0, R, _VISIBLE_ROWS):  # [rows, D] logits small enough to stay in L2 cache
            out[r:r + _VISIBLE_ROWS].sub_(self._neg_log_px(ws, a[r:r + _VISIBLE_ROWS], signed))

    @staticmethod
    def _neg_log_px(ws: Workspace, a: Tensor, signed: Tensor) -> Tensor:
        """-log p(x | h1) = sum_d softplus(t_d), t = s * logits, from the last hidden layer a [r, H + 1]."""
        D = signed.shape[1] - 1
        logits = torch.mm(a, signed, out=ws.get("logits", a.shape[0], D + 1, a.dtype))
        t = logits[:, :D].abs_()
        total = t.sum(-1).add_(logits[:, D]).mul_(0.5)  # sum relu(t) = (sum t + sum |t|) / 2
        return total.add_(log_prod_(t.neg_().exp_().add_(1)))

    # ------------------------------------------------------------------------------------ public
    @torch.no_grad()
    def log_weights(self, x: Tensor, index: int, k: int, seed: int, rows: int = EVAL_ROWS,
                    ws: Workspace | None = None) -> Tensor:
        """The k log-weights of one data point x [D] (binary), noise ``indexed_normal(seed, index)``.

        rows: samples per block (rounded down to a multiple of the noise BLOCK). Returns [k].
        """
        ws = Workspace.local() if ws is None else ws
        rows = block_rows(rows, k)
        point = self._point(ws, x)
        total = sum(self.dims)
        out = torch.empty(k, dtype=self.dtype)
        for start in range(0, k, rows):
            n = min(rows, k - start)
            raw = ws.get("noise", buffer_size(1, start, n, total), 1, torch.float32)
            noise = draw_rows(seed, [index], start, n, total, out=raw)[0]
            if self.dtype != torch.float32:
                noise = noise.to(self.dtype)
            self._block(ws, point, noise, out[start:start + n])
        return out
