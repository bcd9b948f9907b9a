"""The benchmark's references compute what the project computes, and its FLOP counts are right.

benchmarks/naive.py (the per-sample reference) and benchmarks/peers.py (pythae's IWAE, when installed)
must give the project's log-weights on the same noise, or the benchmark compares different things;
bench.flops must count the multiply-adds the networks actually run (checked against torch's own
FLOP counter on the plain, unfused network).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from iwae_pl import BURDA_1_LAYER, IWAENetwork, LayerSpec, make_objective

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench  # noqa: E402
from naive import NaiveIWAE  # noqa: E402

LAYERS = {"one_layer": [LayerSpec(3, (8, 7))], "two_layers": [LayerSpec(4, (8, 7)), LayerSpec(2, (5,))]}


def small_net(name, dtype=torch.float64, fast=True):
    torch.manual_seed(0)
    net = IWAENetwork(12, LAYERS[name], fast=fast).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.3)
    return net


def data(n=5, dtype=torch.float64):
    return (torch.rand(n, 12, generator=torch.Generator().manual_seed(1)) < 0.4).to(dtype)


@pytest.mark.parametrize("name", list(LAYERS))
def test_naive_log_weights_and_loss_equal_the_project(name):
    net, x = small_net(name), data()
    eps = net.draw_noise(x, (6,))
    ref = net.log_weights(x, (6,), eps=eps).value
    naive = NaiveIWAE(net)
    torch.testing.assert_close(naive.log_weights(x, 6, eps), ref, rtol=1e-12, atol=1e-10)
    # the training loss: -IWAE(K) averaged over the batch, on the naive model's own noise
    torch.manual_seed(3)
    loss = naive.loss(x, 2, 3)
    torch.manual_seed(3)
    lw = naive.log_weights(x, 6).view(2, 3, -1)
    expected = -(torch.logsumexp(lw, 1) - math.log(3)).mean()
    torch.testing.assert_close(loss, expected)
    assert torch.equal(make_objective("miwae", 2, 3).bound(lw), torch.logsumexp(lw, 1).sub(math.log(3)).mean(0))


def test_naive_log_likelihood_is_the_log_mean_exp_of_its_chunks():
    net, x = small_net("two_layers"), data(3)
    naive = NaiveIWAE(net)
    torch.manual_seed(5)
    got = naive.log_likelihood(x, 10, chunk=4)
    torch.manual_seed(5)
    parts = torch.cat([naive.log_weights(x, n) for n in (4, 4, 2)])  # the same draws, in order
    torch.testing.assert_close(got, torch.logsumexp(parts, 0) - math.log(10))


def test_pythae_log_weights_equal_the_project():
    pytest.importorskip("pythae")
    from peers import pythae_iwae, pythae_log_weights
    torch.manual_seed(0)
    net = IWAENetwork(12, [LayerSpec(3, (8, 7))])
    x = data(4, torch.float32)
    eps = net.draw_noise(x, (5,))
    ref = net.log_weights(x, (5,), eps=eps).value.detach()
    got = pythae_log_weights(pythae_iwae(net, 5), x, eps[0])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)


def test_pythae_peer_refuses_networks_it_cannot_express():
    pytest.importorskip("pythae")
    from peers import pythae_iwae
    with pytest.raises(ValueError, match="one stochastic layer"):
        pythae_iwae(small_net("two_layers"), 5)


def counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("S", [1, 7])
def test_flops_match_torchs_counter(name, S):
    """Forward and forward + backward FLOPs of the plain (unfused) network and of the naive reference."""
    net, x = small_net(name, fast=False), data(5)
    objective = make_objective("iwae", 1, S)
    eval_flops = counted_flops(lambda: net.log_weights(x, (S,), eps=net.draw_noise(x, (S,))))
    assert bench.flops(net, 5, S, train=False) == eval_flops
    train_flops = counted_flops(lambda: (-objective.estimate(net, x).surrogate.mean()).backward())
    assert bench.flops(net, 5, S, train=True) == train_flops
    naive = NaiveIWAE(net)
    assert bench.flops(net, 5, S, train=True, naive=True) == counted_flops(lambda: naive.loss(x, 1, S).backward())


def test_gemm_shapes_cover_the_step_flops():
    net = IWAENetwork(784, BURDA_1_LAYER)
    shapes = bench.gemm_shapes(net, 50)
    assert sum(2 * m * k * n * c for (m, k, n), c in shapes.items()) == bench.flops(net, bench.B, 50, train=True)
