"""Log densities of the model's distributions, summed over their last dimension (the reference forms).

    gaussian_log_prob(h, mean, log_std)   log N(h; mean, exp(log_std)^2)       [..., d] -> [...]
    standard_normal_log_prob(h)           log N(h; 0, I)                        [..., d] -> [...]
    eps_log_prob(e, log_std)              the same at h = mean + std * e, from e itself
    bernoulli_log_prob(x, logits)         log Bernoulli(x; sigmoid(logits))     x [B, D], logits [*S, B, D] -> [*S, B]

``keep`` (optional bool [d]) leaves the units where it is False out of the sum: Burda et al.'s
pruning check evaluates the bound without the inactive units. The fast Bernoulli term used in
training and evaluation (``iwae_pl.fast.bernoulli``) is tested equal to ``bernoulli_log_prob``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def eps_log_prob(e: Tensor, log_std: Tensor | None = None, keep: Tensor | None = None) -> Tensor:
    """log density of h = mean + exp(log_std) * e at h: [..., d] -> [...].

    (h - mean) / std is e itself, so callers that drew e pass it directly (cheaper, exact).
    log_std None means std 1. keep: optional bool [d]; units where False are left out.
    """
    if keep is None:  # no elementwise pass over the terms: sums first
        out = -0.5 * (e.square().sum(-1) + LOG_2PI * e.shape[-1])
        return out if log_std is None else out - log_std.sum(-1)
    terms = -0.5 * (e.square() + LOG_2PI)
    return ((terms if log_std is None else terms - log_std) * keep).sum(-1)


def gaussian_log_prob(h: Tensor, mean: Tensor, log_std: Tensor, keep: Tensor | None = None) -> Tensor:
    """log N(h; mean, exp(log_std)^2), summed over the last dimension (keep: as ``eps_log_prob``)."""
    return eps_log_prob((h - mean) * torch.exp(-log_std), log_std, keep)


def standard_normal_log_prob(h: Tensor, keep: Tensor | None = None) -> Tensor:
    """log N(h; 0, I), summed over the last dimension (keep: as ``eps_log_prob``)."""
    return eps_log_prob(h, None, keep)


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over pixels: sum_d x_d l_d - softplus(l_d).

    x [B, D] broadcasts against logits [*S, B, D]; returns [*S, B].
    """
    return (x * logits).sum(-1) - F.softplus(logits).sum(-1)
