"""Effective sample size of importance weights (section 5.5 of the reproduction report).

For one data point with importance weights w_1..w_n, k_e = (sum w)^2 / sum w^2 = 1 / sum w~^2, with
w~ = softmax(log w) the normalized weights: n when all weights are equal, 1 when one dominates.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def ess_stats(log_w: Tensor, threshold: float = 1e-2) -> dict[str, Tensor]:
    """Per data point ESS statistics from log-weights [M, K, B] (any scale: only differences matter).

    Returns, each [B]:
        group: 1 / sum_k w~_mk^2 with w~ normalized over the K samples of group m, averaged over m
            (in [1, K]; the ESS of the samples that each IWAE(K) term sees).
        all: 1 / sum w~^2 with w~ normalized over all M*K samples (in [1, M*K]).
        above_threshold: number of the K group-normalized weights above ``threshold``, averaged over m.
    """
    log_w = log_w.detach().double()
    w_group = torch.softmax(log_w, dim=1)                    # [M, K, B]
    w_all = torch.softmax(log_w.flatten(0, 1), dim=0)        # [M*K, B]
    return {
        "group": (1.0 / w_group.square().sum(1)).mean(0),
        "all": 1.0 / w_all.square().sum(0),
        "above_threshold": (w_group > threshold).sum(1).double().mean(0),
    }


def weight_histogram(log_w: Tensor, edges: Tensor) -> Tensor:
    """Counts of the group-normalized weights w~ [M, K, B] in bins of log10 w~ (``edges`` [n + 1]);
    values below the first edge are counted in the first bin."""
    log10_w = torch.log_softmax(log_w.detach().double(), dim=1).flatten() / math.log(10.0)
    log10_w = log10_w.clamp(edges[0], edges[-1])  # tensor bounds: no device sync
    index = (torch.bucketize(log10_w, edges, right=True) - 1).clamp(0, len(edges) - 2)
    return torch.bincount(index, minlength=len(edges) - 1).double()
