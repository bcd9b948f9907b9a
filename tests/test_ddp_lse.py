"""Sample-parallel L_k: the k samples of the same points spread over 2 gloo processes and combined by a
distributed log-sum-exp give the one-process L_k; the log-sum-exp itself is exact, with -inf and
large values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from iwae_pl.model.likelihood import distributed_logsumexp, log_likelihood, sample_parallel_log_likelihood

from conftest import make_data, make_net

pytestmark = pytest.mark.slow
K = 301  # not divisible by 2: the shares are 150 and 151 samples


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        net, x = make_net(((4, (8, 7)), (2, (5,)))), make_data(3, 6)
        ll = sample_parallel_log_likelihood(net, x, torch.tensor([4, 0, 9]), K, seed=3, chunk=64)
        # a log-sum-exp over the ranks of [rank-dependent value, -inf everywhere, a huge value]
        t = torch.tensor([float(rank), -math.inf, 1e4 + rank], dtype=torch.float64)
        torch.save({"ll": ll, "lse": distributed_logsumexp(t)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_one_process_estimate(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, f"file://{tmp_path / 'store'}", str(tmp_path / "res")), nprocs=world)
    results = [torch.load(tmp_path / f"res.{r}") for r in range(world)]
    net, x = make_net(((4, (8, 7)), (2, (5,)))), make_data(3, 6)
    expected = log_likelihood(net, x, torch.tensor([4, 0, 9]), K, seed=3, threads_over_points=False)
    for r in results:  # every rank has the whole estimate
        torch.testing.assert_close(r["ll"], expected, rtol=1e-10, atol=1e-10)
    # not vacuous: one share alone is a different estimate
    half = log_likelihood(net, x, torch.tensor([4, 0, 9]), K // 2, seed=3, threads_over_points=False)
    assert (half - expected).abs().max() > 1e-4
    lse = results[0]["lse"]
    assert lse[0].item() == pytest.approx(math.log(math.exp(0) + math.exp(1)), rel=1e-12)
    assert lse[1].item() == -math.inf
    assert lse[2].item() == pytest.approx(1e4 + 1 + math.log1p(math.exp(-1)), rel=1e-12)


def test_without_a_process_group_it_is_log_likelihood():
    net, x = make_net(), make_data(2)
    got = sample_parallel_log_likelihood(net, x, torch.arange(2), 50, seed=1)
    torch.testing.assert_close(got, log_likelihood(net, x, torch.arange(2), 50, seed=1, threads_over_points=False))
