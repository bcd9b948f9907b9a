"""Noise that does not depend on batching: sample j of data point i is a function of (seed, i, j).

Evaluation (L_k, activity, ESS on a fixed set) draws its Gaussian noise here, so that a data point's
estimate is the same whatever batch it sits in, whatever the chunk size, and (later) on any number
of devices. Samples are generated in fixed blocks of ``BLOCK`` per data point, each from a CPU
generator seeded by a hash of (seed, index, block), then moved to the target device: CPU and GPU
runs see identical noise. Training keeps torch's ordinary (faster) RNG.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

BLOCK = 32  # samples per (data point, block) generator; chunk sizes that are multiples of it waste nothing
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def stream_seed(*keys: int) -> int:
    """A 63-bit generator seed from integer keys (well mixed: neighbouring keys give unrelated streams)."""
    h = 0
    for k in keys:
        h = _splitmix64(h ^ (k & _MASK64))
    return h >> 1


def indexed_normal(seed: int, index: Tensor, start: int, n: int, dims: Sequence[int],
                   device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """Standard-normal noise for samples start .. start+n-1 of each data point.

    Args:
        seed: the evaluation seed. index: [B] int, each data point's position in its dataset.
        start, n: which samples (the same range for every data point). dims: sizes d_l of the layers.
    Returns:
        one tensor per layer, [n, B, d_l]; entry [j, b] depends only on (seed, index[b], start + j).
    """
    total = sum(dims)
    first, last = start // BLOCK, (start + n - 1) // BLOCK
    out = torch.empty(n, len(index), total)
    gen = torch.Generator()
    offset = start - first * BLOCK
    for b, i in enumerate(index.tolist()):
        blocks = [torch.randn(BLOCK, total, generator=gen.manual_seed(stream_seed(seed, i, blk)))
                  for blk in range(first, last + 1)]
        out[:, b] = torch.cat(blocks)[offset:offset + n]
    out = out.to(device=device, dtype=dtype, non_blocking=True)
    return list(out.split(list(dims), dim=-1))
