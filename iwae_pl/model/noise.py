"""Noise that does not depend on batching: sample j of data point i is a function of (seed, i, j).

Evaluation (L_k, activity, ESS on a fixed set) draws its Gaussian noise here, so that a data point's
estimate is the same whatever batch it sits in, whatever the chunk size, and (later) on any number
of devices. Samples are generated in fixed blocks of ``BLOCK`` per data point, each from a CPU
generator seeded by a hash of (seed, index, block), then moved to the target device: CPU and GPU
runs see identical noise. Training keeps torch's ordinary (faster) RNG.

Speed: the block seeds of a whole call are hashed at once (numpy, wrapping uint64 arithmetic, the
same values as ``stream_seed``), and every block is drawn straight into one buffer (``draw_blocks``;
the CPU evaluation pass passes a reused one), so the per-block Python work is a reseed and one
``normal_`` call. What remains is torch's CPU
Mersenne-Twister/Box-Muller itself, about 9 ns per number (``BLOCK * sum(dims)`` numbers a block).
(Drawing the points' streams on two threads was measured slower: the GIL hand-offs between the
short ``normal_`` calls cost more than the parallelism gains.)
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
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


def _splitmix64_np(x: np.ndarray) -> np.ndarray:
    """``_splitmix64`` elementwise on a uint64 array (numpy's uint64 arithmetic wraps modulo 2^64)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def block_seeds(seed: int, index: Tensor | Sequence[int], blocks: Sequence[int]) -> np.ndarray:
    """``stream_seed(seed, index[b], blocks[j])`` for all b, j at once: uint64 array [B, len(blocks)]."""
    with np.errstate(over="ignore"):
        h = _splitmix64_np(np.array([seed & _MASK64], dtype=np.uint64))              # [1]
        idx = torch.as_tensor(index).cpu().numpy().astype(np.int64).view(np.uint64)   # two's complement = & MASK64
        h = _splitmix64_np(h ^ idx)                                                   # [B]
        blk = np.asarray(blocks, dtype=np.int64).view(np.uint64)
        return _splitmix64_np(h[:, None] ^ blk[None, :]) >> np.uint64(1)             # [B, nblocks]


def draw_blocks(seed: int, index: Tensor | Sequence[int], first: int, nblocks: int, total: int,
                out: Tensor | None = None) -> Tensor:
    """Noise blocks first .. first+nblocks-1 of every data point, sample-contiguous.

    Returns [B, nblocks * BLOCK, total] float32 on the CPU (``out`` if given, of at least that many
    elements: callers that draw repeatedly reuse one buffer); row j of point b is sample
    first * BLOCK + j of stream (seed, index[b]), drawn as ``torch.randn(BLOCK, total)`` would.
    """
    seeds = block_seeds(seed, index, range(first, first + nblocks)).tolist()  # python ints for manual_seed
    shape = (len(seeds), nblocks, BLOCK, total)
    buf = torch.empty(shape) if out is None else out.view(-1)[:math.prod(shape)].view(shape)
    gen = torch.Generator()
    for row, blocks in zip(seeds, buf):
        for s, block in zip(row, blocks.unbind(0)):  # unbind: one call for all the block views
            gen.manual_seed(s)
            block.normal_(generator=gen)
    return buf.view(len(seeds), nblocks * BLOCK, total)


def indexed_normal(seed: int, index: Tensor, start: int, n: int, dims: Sequence[int],
                   device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """Standard-normal noise for samples start .. start+n-1 of each data point.

    Args:
        seed: the evaluation seed. index: [B] int, each data point's position in its dataset.
        start, n: which samples (the same range for every data point). dims: sizes d_l of the layers.
    Returns:
        one tensor per layer, [n, B, d_l]; entry [j, b] depends only on (seed, index[b], start + j).
    """
    dims = [int(d) for d in dims]
    first, last = start // BLOCK, (start + n - 1) // BLOCK
    pin = torch.device(device).type == "cuda" if device is not None else False
    pinned = None  # page-locked host memory, so the copies to the GPU below can be asynchronous
    if pin and torch.cuda.is_available():
        pinned = torch.empty(len(index) * (last - first + 1) * BLOCK * sum(dims), pin_memory=True)
    buf = draw_blocks(seed, index, first, last - first + 1, sum(dims), pinned)  # [B, rows, total]
    offset = start - first * BLOCK
    samples = buf[:, offset:offset + n].transpose(0, 1)  # [n, B, total], a view
    # One copy per layer into the sample-major layout the network uses (and the device transfer).
    return [e.to(device=device, dtype=dtype, memory_format=torch.contiguous_format, non_blocking=pin, copy=True)
            for e in samples.split(dims, dim=-1)]
