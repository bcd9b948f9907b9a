"""L_k: the importance-sampled estimate of log p(x) used for test log-likelihood (Burda et al.).

L_k(x) = log (1/k) sum_{i=1..k} w_i,  w_i = p(x, h_i) / q(h_i | x),  h_i ~ q(h | x),

with k = 5000 in the papers. The k samples are processed in chunks and combined with a running
log-sum-exp, so memory is bounded by the chunk, not by k. Noise comes from ``noise.indexed_normal``:
a data point's estimate does not depend on the chunk size or on the batch it is evaluated in.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .errors import ConfigError
from .network import IWAENetwork
from .noise import BLOCK, indexed_normal

DEFAULT_MAX_ROWS = 16384  # samples x data points per chunk: ~0.5 GB of activations for Burda's nets


def auto_chunk(batch_size: int, k: int, max_rows: int = DEFAULT_MAX_ROWS) -> int:
    """Samples per data point per chunk: as many as fit in max_rows, a multiple of the noise BLOCK."""
    chunk = max(1, max_rows // max(1, batch_size))
    if chunk >= BLOCK:
        chunk -= chunk % BLOCK
    return min(chunk, k)


@torch.no_grad()
def log_likelihood(net: IWAENetwork, x: Tensor, index: Tensor, k: int = 5000, *, seed: int = 0,
                   chunk: int | None = None, keep: Sequence[Tensor | None] | None = None) -> Tensor:
    """L_k for each data point.

    Args:
        net: the network. x: [B, D] binary data. index: [B] the data points' dataset indices (they
            select the noise). k: samples per data point. seed: evaluation seed.
        chunk: samples per data point per forward pass (default: ``auto_chunk``).
        keep: optional per layer bool [d_l]: evaluate with the False units pruned (see
            ``IWAENetwork.log_weights``), for Burda et al.'s check that inactive units do not matter.
    Returns:
        [B] float32 estimates of log p(x).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    chunk = auto_chunk(x.shape[0], k) if chunk is None else chunk
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be an integer >= 1, got {chunk!r}")
    total = None
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        eps = indexed_normal(seed, index, start, n, net.latent_sizes, device=x.device, dtype=x.dtype)
        lse = torch.logsumexp(net.log_weights(x, (n,), eps=eps, keep=keep).value, 0)
        total = lse if total is None else torch.logaddexp(total, lse)
    return total - math.log(k)
