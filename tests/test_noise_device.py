"""The counter-based evaluation noise: the tensor implementation against a plain-Python reference of
its definition, the same values whatever the batching and chunking, standard normal (moments, KS),
independent across indices and samples, and the same on a GPU as on the CPU."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from iwae_pl import rng
from iwae_pl.model.noise import draw_rows, indexed_normal

M64 = 2**64 - 1


def reference_normal(key: int, j: int) -> float:
    """Normal number j of the stream of ``key`` from the definition in rng's docstring, in Python
    integers and float64."""
    group, w = divmod(j, 2 * rng.GROUP)
    pair = rng.GROUP * group + w % rng.GROUP
    x = (key + (pair + 1) * 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    shifted = x >> 31
    if x >> 63:  # arithmetic shift: the sign bit copied into the top 31 bits
        shifted |= ((1 << 31) - 1) << 33
    x ^= shifted
    low, high = x & 0xFFFFFFFF, (x >> 32) & 0xFFFFFFFF
    theta = 2 * math.pi * (low - 2**32 if low >> 31 else low) / 2**32
    u = (high + 1) / 2**31
    r = math.sqrt(-2 * math.log(u))
    return r * (math.cos(theta) if w < rng.GROUP else math.sin(theta))


def test_matches_the_reference_definition():
    index = torch.tensor([0, 3, 2**40])
    keys = rng.keys(9, "eval_noise", index)
    js = [0, 1, 255, 256, 511, 512, 700, 5000, 123457]
    got = rng.counter_normal(keys, 0, max(js) + 1)
    for b, k in enumerate(keys.tolist()):
        for j in js:
            assert got[b, j].item() == pytest.approx(reference_normal(k & M64, j), rel=1e-5, abs=1e-5)
    assert got.dtype == torch.float32


def test_same_values_whatever_the_batching_and_chunking(monkeypatch):
    index = torch.tensor([5, 0, 77, 3, 1000])
    dims = [3, 5, 2]
    whole = torch.cat(indexed_normal(4, index, 0, 300, dims), -1)  # [300, 5, 10]
    for start, n in [(0, 1), (37, 100), (255, 2), (299, 1)]:
        for part in (index[1:3], index[4:], index):
            sub = torch.cat(indexed_normal(4, part, start, n, dims), -1)
            positions = [index.tolist().index(i) for i in part.tolist()]
            assert torch.equal(sub, whole[start:start + n, positions])
    monkeypatch.setattr(rng, "_CHUNK_ROWS", 1)  # a different chunking of the computation
    assert torch.equal(torch.cat(indexed_normal(4, index, 0, 300, dims), -1), whole)
    assert torch.equal(draw_rows(4, index, 20, 50, 10).transpose(0, 1), whole[20:70])


def test_streams_differ_and_the_seed_matters():
    index = torch.arange(4)
    a = indexed_normal(0, index, 0, 50, [6])[0]
    assert not torch.allclose(a, indexed_normal(1, index, 0, 50, [6])[0])
    assert not torch.allclose(a, indexed_normal(0, index, 0, 50, [6], stream="bound_noise")[0])


def test_standard_normal_moments_and_ks():
    z = rng.counter_normal(rng.keys(0, "eval_noise", torch.arange(8)), 0, 50_000).double().flatten()
    n = z.numel()
    assert abs(z.mean()) < 5 / n ** 0.5
    assert abs(z.var() - 1) < 5 * (2 / n) ** 0.5
    assert abs(stats.skew(z.numpy())) < 5 * (6 / n) ** 0.5
    assert abs(stats.kurtosis(z.numpy())) < 5 * (24 / n) ** 0.5
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    assert stats.kstest(z.numpy() + 0.02, "norm").pvalue < 1e-3  # the KS test has the power to fail
    assert z.abs().max() > 4.5  # the tails are there (400k draws: P(max |z| < 4.5) ~ e^-3)


def test_independent_across_indices_and_samples():
    n = 20_000
    z = rng.counter_normal(rng.keys(0, "eval_noise", torch.arange(6)), 0, n).double()  # [6, n]
    bound = 5 / n ** 0.5
    corr = torch.corrcoef(z)
    assert corr[~torch.eye(6, dtype=torch.bool)].abs().max() < bound  # neighbouring indices
    for lag in (1, 2, rng.GROUP, 2 * rng.GROUP):  # neighbouring samples, and the cos/sin of one pair
        for b in range(6):
            assert abs(torch.corrcoef(torch.stack([z[b, :-lag], z[b, lag:]]))[0, 1]) < bound
            # squares too: a Box-Muller pair shares its radius, which must not show
            sq = z[b] ** 2
            assert abs(torch.corrcoef(torch.stack([sq[:-lag], sq[lag:]]))[0, 1]) < bound


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_noise_equals_cpu_noise():
    index = torch.tensor([0, 9, 2**33, 12345])
    cpu = indexed_normal(2, index, 17, 400, [50, 100])
    gpu = indexed_normal(2, index.cuda(), 17, 400, [50, 100])
    for c, g in zip(cpu, gpu):
        assert g.device.type == "cuda"
        torch.testing.assert_close(g.cpu(), c, rtol=1e-5, atol=1e-5)
