"""L_k: the importance-sampled estimate of log p(x) used for test log-likelihood (Burda et al.).

L_k(x) = log (1/k) sum_{i=1..k} w_i,  w_i = p(x, h_i) / q(h_i | x),  h_i ~ q(h | x),

with k = 5000 in the papers. The k samples are processed in chunks and combined with a running
log-sum-exp, so memory is bounded by the chunk, not by k; a large batch is split into groups of
points so that a forward pass holds at most max(chunk, max_rows) sample rows, whatever the batch
size. Noise comes from ``noise.indexed_normal``: a data point's estimate does not depend on the
chunk size or on the batch it is evaluated in.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .errors import check_int
from .network import IWAENetwork
from .noise import BLOCK, indexed_normal

# Rows (samples x data points) per forward pass. On a CPU small passes are fastest: the [rows, D]
# activations stay in cache and reuse the allocator's memory (a fresh multi-MB tensor costs a page
# fault per 4 KiB); benchmarks/bench.py sweeps it. A GPU wants large passes.
DEFAULT_MAX_ROWS = 8192
CUDA_MAX_ROWS = 1 << 17  # ~0.5 GB of activations for Burda's nets


def auto_chunk(batch_size: int, k: int, max_rows: int = DEFAULT_MAX_ROWS) -> int:
    """Samples per data point per chunk: as many as fit in max_rows, a multiple of the noise BLOCK
    (at least one BLOCK: smaller chunks would draw each noise block more than once)."""
    chunk = max(1, max_rows // max(1, batch_size))
    chunk = max(BLOCK, chunk - chunk % BLOCK)
    return min(chunk, k)


@torch.no_grad()
def log_likelihood(net: IWAENetwork, x: Tensor, index: Tensor, k: int = 5000, *, seed: int = 0,
                   chunk: int | None = None, keep: Sequence[Tensor | None] | None = None,
                   max_rows: int | None = None) -> Tensor:
    """L_k for each data point.

    Args:
        net: the network. x: [B, D] binary data. index: [B] the data points' dataset indices (they
            select the noise). k: samples per data point. seed: evaluation seed.
        chunk: samples per data point per forward pass (default: ``auto_chunk``).
        keep: optional per layer bool [d_l]: evaluate with the False units pruned (see
            ``IWAENetwork.log_weights``), for Burda et al.'s check that inactive units do not matter.
        max_rows: bound on samples x data points per forward pass (default: ``DEFAULT_MAX_ROWS`` on
            CPU, ``CUDA_MAX_ROWS`` on a GPU); the batch is split into groups of max(1, max_rows // chunk)
            points, so memory is bounded whatever the batch size and k.
    Returns:
        [B] float32 estimates of log p(x). A point's value does not depend on chunk, max_rows or the
        rest of the batch (up to float rounding of the running log-sum-exp).
    """
    k = check_int("k", k)
    if max_rows is None:
        max_rows = CUDA_MAX_ROWS if x.device.type == "cuda" else DEFAULT_MAX_ROWS
    max_rows = check_int("max_rows", max_rows)
    chunk = auto_chunk(x.shape[0], k, max_rows) if chunk is None else chunk
    chunk = check_int("chunk", chunk)
    group = max(1, max_rows // chunk)  # data points per forward pass
    totals = []
    for first in range(0, x.shape[0], group):
        xg, ig = x[first:first + group], index[first:first + group]
        total = None
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            eps = indexed_normal(seed, ig, start, n, net.latent_sizes, device=x.device, dtype=x.dtype)
            lse = torch.logsumexp(net.log_weights(xg, (n,), eps=eps, keep=keep).value, 0)
            total = lse if total is None else torch.logaddexp(total, lse)
        totals.append(total)
    if not totals:  # an empty batch
        return x.new_zeros(0)
    return (totals[0] if len(totals) == 1 else torch.cat(totals)) - math.log(k)
