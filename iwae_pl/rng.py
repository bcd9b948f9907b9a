"""One seeding scheme: every random stream of a run is derived from (seed, stream name, keys).

A stream's seed is a splitmix64 hash chain over the stream's number and its integer keys, so
neighbouring keys (ranks, epochs, data indices) give unrelated streams and no two named streams
coincide. The streams in use:

    train_noise     training samples: keys (rank, epoch, batch) -> a ``torch.Generator`` per batch
    eval_noise      L_k's per-point noise: key (index) -> ``counter_normal``
    bound_noise     the val/test bound's per-point noise: key (index)
    activity_noise  the activity callback's propagated sample: key (index)
    binarize_train  dynamic binarization of the training set: keys (rank[, worker seed])
    binarize_fixed  the one-off binarization of a val/test split: key (split number)
    binarize_first  a split's first examples taken by the diagnostics: no keys
    shuffle         the training order (one process; under DDP Lightning's sampler reshuffles)
    snr, images     the private generators of those callbacks

``counter_normal`` is the evaluation noise: normal number j of a key's stream is a pure function of
(key, j) written in int64/float32 tensor ops, so it is computed on the device that needs it (no CPU
draw and copy) and a CPU and a GPU give the same values up to float32 rounding of log/sin/cos.
Layout of one stream (all bit operations on 64-bit words, wrapping):

    pair p = 256 * (j // 512) + j % 256;  x = splitmix64 state K + (p + 1) * 0x9E3779B97F4A7C15
    x ^= x >>> 30; x *= 0xBF58476D1CE4E5B9; x ^= x >>> 27; x *= 0x94D049BB133111EB; x ^= x >> 31
    (the last shift arithmetic: bit 63 becomes 0, the other bits stay uniform, no mask needed)
    theta = 2 pi * (low 32 bits as a signed int) / 2^32,  u = (bits 32..62 + 1) / 2^31 in (0, 1]
    normal j = sqrt(-2 log u) * (cos theta if j % 512 < 256 else sin theta)      (Box-Muller)

Groups of 256 cosines then 256 sines keep every tensor operation contiguous.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["STREAMS", "counter_normal", "generator", "key", "keys", "normal_buffer_size", "stream_seed"]

STREAMS = {"train_noise": 1, "eval_noise": 2, "bound_noise": 3, "activity_noise": 4, "binarize_train": 5,
           "binarize_fixed": 6, "binarize_first": 7, "shuffle": 8, "snr": 9, "images": 10}

_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    """The int64 with the same 64 bits as c."""
    c &= _MASK64
    return c - (1 << 64) if c >> 63 else c


_GOLDEN, _M1, _M2 = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))
GROUP = 256  # pairs per group: 256 cosines, then the 256 sines of the same pairs
_STEPS: dict[torch.device, Tensor] = {}  # (p + 1) * golden for p < GROUP, per device
_CHUNK_ROWS = 64  # groups per pass on a CPU: 16k pairs, few enough that the buffers stay in L2 cache
_DEVICE_CHUNK_ROWS = 1 << 14  # on a GPU: 4M pairs per pass, ~100 MB of scratch buffers


def _mix(x: int) -> int:
    """splitmix64: one step of the state and its output mix (Python ints)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _stream_number(stream: str) -> int:
    try:
        return STREAMS[stream]
    except KeyError:
        raise ValueError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}") from None


def key(seed: int, stream: str, *keys: int) -> int:
    """The 64-bit key (as an int64 value) of (seed, stream, keys): a splitmix64 hash chain."""
    h = 0
    for k in (int(seed), _stream_number(stream), *(int(k) for k in keys)):
        h = _mix(h ^ (k & _MASK64))
    return _signed(h)


def stream_seed(seed: int, stream: str, *keys: int) -> int:
    """A non-negative 63-bit seed for ``torch.Generator.manual_seed`` from (seed, stream, keys)."""
    return (key(seed, stream, *keys) & _MASK64) >> 1


def generator(seed: int, stream: str, *keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``stream_seed(seed, stream, *keys)``."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream, *keys))


def _lshr(x: Tensor, s: int, out: Tensor) -> Tensor:
    """Logical right shift of int64 x by s into out (torch's >> on int64 is arithmetic)."""
    torch.bitwise_right_shift(x, s, out=out)
    return out.bitwise_and_((1 << (64 - s)) - 1)


def _mix_(x: Tensor, t: Tensor, exact: bool = False) -> Tensor:
    """splitmix64's output mix in place on int64 x (t: a scratch tensor of x's shape). With ``exact``
    False the last shift is arithmetic (see the module docstring): one operation less per number."""
    x ^= _lshr(x, 30, t)
    x *= _M1
    x ^= _lshr(x, 27, t)
    x *= _M2
    x ^= _lshr(x, 31, t) if exact else torch.bitwise_right_shift(x, 31, out=t)
    return x


def keys(seed: int, stream: str, index: Tensor) -> Tensor:
    """``key(seed, stream, i)`` for every i of index [B] (int), computed on index's device: int64 [B]."""
    h = torch.full_like(index, key(seed, stream), dtype=torch.int64).bitwise_xor_(index.long())
    h += _GOLDEN  # the chain's last link, with the index mixed in
    return _mix_(h, torch.empty_like(h), exact=True)


def _steps(device: torch.device) -> Tensor:
    if device not in _STEPS:
        _STEPS[device] = torch.arange(1, GROUP + 1, dtype=torch.int64, device=device).mul_(_GOLDEN)
    return _STEPS[device]


def normal_buffer_size(batch: int, first: int, count: int) -> int:
    """Elements of the buffer ``counter_normal`` needs for ``batch`` keys: whole groups of 512 normals."""
    per_group = 2 * GROUP
    return batch * (-(-(first + count) // per_group) - first // per_group) * per_group


def counter_normal(stream_keys: Tensor, first: int, count: int, out: Tensor | None = None) -> Tensor:
    """Standard normals first .. first+count-1 of each key's stream (layout: module docstring).

    Args:
        stream_keys: [B] int64 keys (``keys(seed, stream, index)``); the device it is on computes.
        out: optional float32 buffer of at least ``normal_buffer_size(B, first, count)`` elements on
            that device (callers that draw repeatedly reuse one; a smaller one is not used).
    Returns:
        [B, count] float32, a view (rows possibly strided) of ``out`` or of a new buffer; row b
        depends only on (stream_keys[b], first, count).
    """
    device = stream_keys.device
    B = stream_keys.shape[0]
    per_group = 2 * GROUP
    g0 = first // per_group
    ng = -(-(first + count) // per_group) - g0
    size = normal_buffer_size(B, first, count)
    if out is None or out.numel() < size:
        out = torch.empty(size, device=device)
    full = out.view(-1)[:size].view(B * ng, 2, GROUP)
    if B * ng:
        groups = torch.arange(g0, g0 + ng, dtype=torch.int64, device=device).mul_(_signed(GROUP * _GOLDEN))
        base = (stream_keys.long()[:, None] + groups).view(-1)  # state before each group's first pair
        steps = _steps(device)
        rows = min(_CHUNK_ROWS if device.type == "cpu" else _DEVICE_CHUNK_ROWS, B * ng)
        x = torch.empty(rows, GROUP, dtype=torch.int64, device=device)
        t = torch.empty_like(x)
        # Float work on contiguous buffers: unary ops on strided views fall off torch's fast CPU path.
        theta, r, c = torch.empty(3, rows, GROUP, device=device)
        for r0 in range(0, B * ng, rows):
            R = min(rows, B * ng - r0)
            xs, ts, th, rs, cs, o = x[:R], t[:R], theta[:R], r[:R], c[:R], full[r0:r0 + R]
            _mix_(torch.add(base[r0:r0 + R, None], steps, out=xs), ts)
            # (low, high) 32-bit words of each int64: little-endian order, as on every device torch runs on
            words = xs.view(torch.int32).view(R, GROUP, 2)
            th.copy_(words[..., 0]).mul_(2 * math.pi / 2 ** 32)
            rs.copy_(words[..., 1]).add_(1.0).mul_(2.0 ** -31).log_().mul_(-2.0).sqrt_()
            torch.mul(torch.cos(th, out=cs), rs, out=o[:, 0])
            torch.mul(torch.sin(th, out=cs), rs, out=o[:, 1])
    offset = first - g0 * per_group
    return full.view(B, ng * per_group)[:, offset:offset + count]
