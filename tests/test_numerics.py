"""Numerical stability for large K and extreme log-weights; chunk/batch independence of L_k."""
from __future__ import annotations

import torch

from iwae_pl import IWAENetwork, LayerSpec, OBJECTIVES, log_likelihood, make_objective
from iwae_pl.model.noise import indexed_normal

from conftest import make_data, make_net


def test_k5000_extreme_log_weights_are_finite_in_float32():
    lw = (torch.randn(1, 5000, 4) * 50 - 1e4).requires_grad_()
    for name in OBJECTIVES:
        objective = make_objective(name, 1, 5000)
        bound = objective.bound(lw)
        (grad,) = torch.autograd.grad(bound.sum(), lw)
        assert torch.isfinite(bound).all() and torch.isfinite(grad).all(), name
        assert torch.isfinite(objective.weights(lw.detach())).all()
    # IWAE(K) of constant log-weights c is exactly c, even far from 0
    const = torch.full((1, 5000, 2), -1e4)
    torch.testing.assert_close(make_objective("iwae", 1, 5000).bound(const), torch.full((2,), -1e4))


def test_network_k5000_float32_finite():
    torch.manual_seed(0)
    net = IWAENetwork(784, [LayerSpec(100, (200, 200)), LayerSpec(50, (100, 100))])
    x = (torch.rand(2, 784) < 0.5).float()
    objective = make_objective("iwae", 1, 5000, "dreg")
    lw = net.log_weights(x, objective.sample_shape, stop_q=True, split=True)
    bound, surrogate = objective(lw)
    (-surrogate.mean()).backward()
    assert torch.isfinite(bound).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert torch.isfinite(log_likelihood(net, x, torch.arange(2), 5000)).all()


def test_lk_independent_of_chunk_and_batch():
    net, x = make_net(((4, (8, 7)), (2, (5,))), dtype=torch.float32), make_data(6, dtype=torch.float32)
    index = torch.arange(100, 106)
    reference = log_likelihood(net, x, index, 300, seed=3, chunk=300)
    for chunk in (1, 7, 32, 64, 299):
        torch.testing.assert_close(log_likelihood(net, x, index, 300, seed=3, chunk=chunk), reference, rtol=0, atol=1e-4)
    # a point's value does not depend on which other points share its batch, or their order
    alone = log_likelihood(net, x[2:3], index[2:3], 300, seed=3, chunk=50)
    torch.testing.assert_close(alone, reference[2:3], rtol=0, atol=1e-4)
    perm = torch.tensor([5, 0, 3, 1, 4, 2])
    torch.testing.assert_close(log_likelihood(net, x[perm], index[perm], 300, seed=3), reference[perm], rtol=0, atol=1e-4)
    # but it does depend on the seed and on the index (the noise really is per point)
    assert (log_likelihood(net, x, index, 300, seed=4) - reference).abs().max() > 1e-3
    assert (log_likelihood(net, x, index + 1, 300, seed=3) - reference).abs().max() > 1e-3


def test_indexed_noise_depends_only_on_seed_index_and_sample():
    index = torch.tensor([7, 3, 11])
    full = torch.cat(indexed_normal(5, index, 0, 100, [2, 3]), -1)       # [100, 3, 5]
    part = torch.cat(indexed_normal(5, index[1:2], 40, 33, [2, 3]), -1)  # samples 40..72 of point 3
    torch.testing.assert_close(part[:, 0], full[40:73, 1], rtol=0, atol=0)
    assert abs(full.mean().item()) < 0.1 and abs(full.std().item() - 1) < 0.1
    # different points get unrelated noise
    assert torch.corrcoef(torch.stack([full[:, 0].flatten(), full[:, 1].flatten()]))[0, 1].abs() < 0.2
