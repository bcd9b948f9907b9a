"""Noise that does not depend on batching: sample j of data point i is a function of (seed, i, j).

Evaluation (L_k, the val/test bound, activity) draws its Gaussian noise here, so that a data point's
estimate is the same whatever batch it sits in, whatever the chunk size, on any number of processes
and on any device. The noise of point i is the counter-based stream ``rng.counter_normal`` of the key
``rng.key(seed, stream, i)``: sample j, layer dimension d is normal number j * sum(dims) + d of it.
It is computed in tensor ops on the device that uses it (a GPU draws its own noise, no host copy);
CPU and GPU agree up to float32 rounding. Training uses torch's ordinary RNG (seeded per rank and
batch, see ``rng``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .. import rng

BLOCK = 32  # chunk granularity of the evaluation paths: sample counts are rounded to multiples of it
EVAL_STREAM = "eval_noise"


def _index_tensor(index: Tensor | Sequence[int], device: torch.device | str | None) -> Tensor:
    return torch.as_tensor(index, dtype=torch.int64, device=device)


def draw_rows(seed: int, index: Tensor | Sequence[int], start: int, n: int, total: int,
              stream: str = EVAL_STREAM, device: torch.device | str | None = None) -> Tensor:
    """Samples start .. start+n-1 of every data point, all layers side by side.

    Returns [B, n, total] float32; row j of point b is sample start + j of stream (seed, index[b]),
    i.e. normals (start + j) * total .. (start + j + 1) * total - 1 of it.
    """
    index = _index_tensor(index, device)
    normals = rng.counter_normal(rng.keys(seed, stream, index), start * total, n * total)
    return normals.view(index.shape[0], n, total)


def indexed_normal(seed: int, index: Tensor, start: int, n: int, dims: Sequence[int],
                   device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                   stream: str = EVAL_STREAM) -> list[Tensor]:
    """Standard-normal noise for samples start .. start+n-1 of each data point.

    Args:
        seed: the evaluation seed. index: [B] int, each data point's position in its dataset.
        start, n: which samples (the same range for every data point). dims: sizes d_l of the layers.
        device: where the noise is computed and returned (default: index's device).
        stream: the named stream (``rng.STREAMS``): L_k, the bound and the activity use their own.
    Returns:
        one tensor per layer, [n, B, d_l]; entry [j, b] depends only on (seed, stream, index[b], start + j).
    """
    dims = [int(d) for d in dims]
    device = index.device if device is None and isinstance(index, Tensor) else device
    rows = draw_rows(seed, index, start, n, sum(dims), stream=stream, device=device)  # [B, n, total]
    samples = rows.transpose(0, 1)  # [n, B, total], a view
    # One copy per layer into the sample-major layout the network uses.
    return [e.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True) for e in samples.split(dims, dim=-1)]
