"""L_k: the importance-sampled estimate of log p(x) used for test log-likelihood (Burda et al.).

L_k(x) = log (1/k) sum_{i=1..k} w_i,  w_i = p(x, h_i) / q(h_i | x),  h_i ~ q(h | x),

with k = 5000 in the papers. ``IWAENetwork.log_weights`` runs on chunks of samples combined with a
running log-sum-exp; a large batch is split into groups of points so that a forward pass holds at most
max(chunk, max_rows) sample rows, so memory is bounded by the chunk, not by k or the batch. On a CPU
with T > 1 torch threads, whole data points are spread over T Python threads that each run torch
single-threaded (``threads_over_points``): the per-point work is a few large matrix products and
long elementwise passes, and splitting every one of them T ways waits on the slowest thread T times
per operation (benchmarks/README.md, "L_5000"). Noise comes from ``noise``: a data point's estimate
does not depend on the chunk size, the threading, the batch it is evaluated in, or how many processes
share the work. ``sample_parallel_log_likelihood`` spreads the k samples of the same points over the
processes of a ``torch.distributed`` group (few points, large k) and combines the partial sums exactly
with ``distributed_logsumexp``.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import check_int
from .network import IWAENetwork
from .noise import BLOCK, indexed_normal

# Rows (samples x data points) per forward pass. On a CPU passes of about CPU_PASS_ELEMENTS activations
# of the widest layer are fastest (~1,300 rows for MNIST: the activations stay in cache and reuse the
# allocator's memory; benchmarks/README.md), at most CPU_MAX_ROWS. A GPU wants large passes.
CPU_PASS_ELEMENTS = 1 << 20
CPU_MAX_ROWS = 8192
CUDA_MAX_ROWS = 1 << 17  # ~0.5 GB of activations for Burda's nets


def default_max_rows(net: IWAENetwork, device: torch.device) -> int:
    """Rows per forward pass when ``max_rows`` is not given: CUDA_MAX_ROWS on a GPU; on a CPU
    CPU_PASS_ELEMENTS activations of the network's widest layer, at least one noise BLOCK, at most
    CPU_MAX_ROWS."""
    if device.type == "cuda":
        return CUDA_MAX_ROWS
    widest = max([net.input_dim, *(h for spec in net.specs for h in spec.hidden)])
    return min(CPU_MAX_ROWS, max(BLOCK, CPU_PASS_ELEMENTS // widest))


def _pass_sizes(net: IWAENetwork, x: Tensor, k: int, points: int, chunk: int | None,
                max_rows: int | None) -> tuple[int, int]:
    """(chunk, max_rows), checked, with the defaults for those not given (``points``: data points per
    pass, for ``auto_chunk``)."""
    max_rows = check_int("max_rows", default_max_rows(net, x.device) if max_rows is None else max_rows)
    return (auto_chunk(points, k, max_rows) if chunk is None else check_int("chunk", chunk)), max_rows


def auto_chunk(batch_size: int, k: int, max_rows: int = CPU_MAX_ROWS) -> int:
    """Samples per data point per chunk: as many as fit in max_rows, a multiple of the noise BLOCK
    (at least one BLOCK: smaller chunks would draw each noise block more than once)."""
    chunk = max(1, max_rows // max(1, batch_size))
    chunk = max(BLOCK, chunk - chunk % BLOCK)
    return min(chunk, k)


@torch.no_grad()
def log_likelihood(net: IWAENetwork, x: Tensor, index: Tensor, k: int = 5000, *, seed: int = 0,
                   chunk: int | None = None, keep: Sequence[Tensor | None] | None = None,
                   max_rows: int | None = None, threads_over_points: bool = True) -> Tensor:
    """L_k for each data point.

    Args:
        net: the network. x: [B, D] data. index: [B] the data points' dataset indices (they select
            the noise). k: samples per data point. seed: evaluation seed.
        chunk: samples per data point per forward pass (default ``auto_chunk``: as many as fit in
            max_rows rows for the batch, or for one point with points over threads; a multiple of the
            noise BLOCK).
        keep: optional per layer bool [d_l]: evaluate with the False units pruned (see
            ``IWAENetwork.log_weights``), for Burda et al.'s check that inactive units do not matter.
        max_rows: bound on samples x data points per forward pass (default ``default_max_rows``:
            about 1,300 for MNIST on a CPU, ``CUDA_MAX_ROWS`` on a GPU); the batch is split into groups
            of max(1, max_rows // chunk) points, so memory is bounded whatever the batch size and k.
        threads_over_points: on a CPU with T = torch.get_num_threads() > 1 and more than one point,
            split the points into T shares evaluated on T threads, torch single-threaded in each
            (False: every operation on torch's intra-op threads). Same values either way.
    Returns:
        [B] estimates of log p(x) (x's dtype). A point's value does not depend on chunk, max_rows,
        the threading or the rest of the batch (up to float rounding).
    """
    k = check_int("k", k)
    threads = min(torch.get_num_threads(), x.shape[0]) if x.device.type == "cpu" else 1
    if threads_over_points and threads > 1:
        chunk, max_rows = _pass_sizes(net, x, k, 1, chunk, max_rows)
        return _over_threads(threads, net, x, index, k, seed, chunk, max_rows, keep)
    chunk, max_rows = _pass_sizes(net, x, k, x.shape[0], chunk, max_rows)
    return _log_sum_weights(net, x, index, 0, k, seed, chunk, max_rows, keep) - math.log(k)


def _log_sum_weights(net: IWAENetwork, x: Tensor, index: Tensor, start: int, stop: int, seed: int,
                     chunk: int, max_rows: int, keep: Sequence[Tensor | None] | None = None) -> Tensor:
    """log sum_{start <= i < stop} w_i per point [B] (the network path; -inf for an empty range)."""
    group = max(1, max_rows // chunk)  # data points per forward pass
    totals = []
    for first in range(0, x.shape[0], group):
        xg, ig = x[first:first + group], index[first:first + group]
        total = torch.full((xg.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
        for begin in range(start, stop, chunk):
            n = min(chunk, stop - begin)
            eps = indexed_normal(seed, ig, begin, n, net.latent_sizes, device=x.device, dtype=x.dtype)
            total = torch.logaddexp(total, torch.logsumexp(net.log_weights(xg, (n,), eps=eps, keep=keep).value, 0))
        totals.append(total)
    if not totals:  # an empty batch
        return x.new_zeros(0)
    return totals[0] if len(totals) == 1 else torch.cat(totals)


def distributed_logsumexp(t: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """log sum over processes of exp(t), elementwise (t [...] on every process, same shape): exact up to
    rounding, with the maximum taken out first so nothing overflows. Identity without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    m = t.detach().clone()
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    finite = torch.isfinite(m)
    shift = torch.where(finite, m, torch.zeros_like(m))  # all -inf (an empty share everywhere): stays -inf
    s = torch.exp(t - shift)
    dist.all_reduce(s, op=dist.ReduceOp.SUM, group=group)
    return torch.log(s) + shift


@torch.no_grad()
def sample_parallel_log_likelihood(net: IWAENetwork, x: Tensor, index: Tensor, k: int = 5000, *, seed: int = 0,
                                   chunk: int | None = None, max_rows: int | None = None,
                                   group: dist.ProcessGroup | None = None) -> Tensor:
    """L_k of the same points x [B, D] on every process of ``group``, each process drawing a contiguous
    share of the k samples (process r of R: samples r*k//R .. (r+1)*k//R - 1), combined by
    ``distributed_logsumexp``. Every process gets the [B] estimates, equal to ``log_likelihood``'s
    (same per-point noise) up to float rounding. Without ``torch.distributed`` it is ``log_likelihood``'s
    network path. For few points and large k, where splitting the points would leave processes idle."""
    k = check_int("k", k)
    rank, world = (dist.get_rank(group), dist.get_world_size(group)) if dist.is_initialized() else (0, 1)
    chunk, max_rows = _pass_sizes(net, x, k, x.shape[0], chunk, max_rows)
    start, stop = rank * k // world, (rank + 1) * k // world
    partial = _log_sum_weights(net, x, index, start, stop, seed, chunk, max_rows)
    return distributed_logsumexp(partial, group) - math.log(k)


def _over_threads(threads: int, net: IWAENetwork, x: Tensor, index: Tensor, k: int, seed: int, chunk: int,
                  max_rows: int, keep: Sequence[Tensor | None] | None) -> Tensor:
    """L_k with the points split into ``threads`` contiguous shares, each evaluated on its own Python
    thread running torch single-threaded (threads release the GIL inside torch)."""
    inference = torch.is_inference_mode_enabled()  # thread-local, like grad mode: carried into workers
    grad = torch.is_grad_enabled()
    bounds = [t * x.shape[0] // threads for t in range(threads + 1)]

    def worker(t: int) -> Tensor:
        torch.set_num_threads(1)
        a, b = bounds[t], bounds[t + 1]
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return _log_sum_weights(net, x[a:b], index[a:b], 0, k, seed, chunk, max_rows, keep)

    intra_op = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(worker, range(threads)))  # list(): re-raises a worker's exception here
    finally:
        torch.set_num_threads(intra_op)  # BLAS thread counts are process-wide: restore them
    return torch.cat(parts) - math.log(k)
