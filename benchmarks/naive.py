"""The straightforward reference: a per-sample IWAE as public implementations write it.

Every one of the S samples of a data point goes through the *whole* encoder: x is repeated S times
(``x.repeat(S, 1)``) before the first layer. The networks are plain ``nn.Sequential`` modules, the
densities are the textbook formulas (Gaussian log-density from (h - mu) / sigma, the Bernoulli term
through ``binary_cross_entropy_with_logits``), the IWAE loss is autograd through ``logsumexp``, noise
is ``torch.randn``. Architecture and parameters are copied from an ``IWAENetwork``, so on the same
noise both give the same log-weights (tests/test_bench_references.py).

Nothing here is used by the package; it exists only to be measured against.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LOG_2PI = math.log(2 * math.pi)


def _normal_log_prob(h: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    return (-0.5 * ((h - mu) / torch.exp(log_sigma)) ** 2 - log_sigma - 0.5 * _LOG_2PI).sum(-1)


class _Gaussian(nn.Module):
    """MLP, then separate mean and log-sigma layers (as in the original Theano code)."""

    def __init__(self, mlp: nn.Sequential, head: nn.Linear):
        super().__init__()
        d = head.out_features // 2
        self.mlp = copy.deepcopy(mlp)
        like = {"dtype": head.weight.dtype, "device": head.weight.device}
        self.mean = nn.Linear(head.in_features, d, **like)
        self.log_sigma = nn.Linear(head.in_features, d, **like)
        with torch.no_grad():
            self.mean.weight.copy_(head.weight[:d])
            self.mean.bias.copy_(head.bias[:d])
            self.log_sigma.weight.copy_(head.weight[d:])
            self.log_sigma.bias.copy_(head.bias[d:])

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = self.mlp(t)
        return self.mean(t), self.log_sigma(t)


class NaiveIWAE(nn.Module):
    """Encoder and decoder with the structure of an ``IWAENetwork`` (std = exp), computed naively."""

    def __init__(self, net):
        super().__init__()
        self.enc = nn.ModuleList(_Gaussian(b.mlp, b.head) for b in net.encoder.blocks)
        self.dec = nn.ModuleList(_Gaussian(b.mlp, b.head) for b in net.decoder.blocks)
        visible = net.decoder.visible
        self.visible = nn.Sequential(*copy.deepcopy(visible.mlp), copy.deepcopy(visible.head))  # -> D logits

    def log_weights(self, x: Tensor, n: int, eps: list[Tensor] | None = None) -> Tensor:
        """log w for n samples of every data point, [n, B] (eps, if given: per layer [n, B, d])."""
        B = x.shape[0]
        xr = x.repeat(n, 1)  # [n*B, D]: the whole encoder runs n times per data point
        below, hs, log_q = xr, [], 0.0
        for layer, block in enumerate(self.enc):
            mu, log_sigma = block(below)
            e = torch.randn_like(mu) if eps is None else eps[layer].reshape(n * B, -1)
            h = mu + torch.exp(log_sigma) * e
            log_q = log_q + _normal_log_prob(h, mu, log_sigma)
            hs.append(h)
            below = h
        log_p = (-0.5 * hs[-1] ** 2 - 0.5 * _LOG_2PI).sum(-1)
        for layer in reversed(range(len(self.dec))):
            mu, log_sigma = self.dec[layer](hs[layer + 1])
            log_p = log_p + _normal_log_prob(hs[layer], mu, log_sigma)
        logits = self.visible(hs[0])
        log_px = -F.binary_cross_entropy_with_logits(logits, xr, reduction="none").sum(-1)
        return (log_px + log_p - log_q).view(n, B)

    def loss(self, x: Tensor, M: int, K: int) -> Tensor:
        """-MIWAE(M, K) bound averaged over the batch (IWAE for M = 1): autograd through logsumexp."""
        lw = self.log_weights(x, M * K).view(M, K, -1)
        return -(torch.logsumexp(lw, 1) - math.log(K)).mean()

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, k: int = 5000, chunk: int = 100) -> Tensor:
        """L_k per data point: all B points together, `chunk` samples per pass, torch.randn noise."""
        parts = [torch.logsumexp(self.log_weights(x, min(chunk, k - s)), 0) for s in range(0, k, chunk)]
        return torch.logsumexp(torch.stack(parts), 0) - math.log(k)
