"""Exact identities between the objectives, on random networks and random log-weights."""
from __future__ import annotations

import pytest
import torch

from iwae_pl import CIWAE, ELBO, IWAE, MIWAE, OBJECTIVES, PIWAE, VR, make_objective

from conftest import make_data, make_net
from conftest import surrogate_grads as grads


def noise(net, shape, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, B, d, generator=g, dtype=torch.float64) for d in net.latent_sizes]


def assert_same(a, b):
    (ba, ga), (bb, gb) = a, b
    torch.testing.assert_close(ba, bb, rtol=1e-10, atol=1e-10)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg"])
def test_iwae_k1_is_elbo(net, x, estimator):
    eps = noise(net, (1, 1), len(x))
    assert_same(grads(net, IWAE(1, estimator), x, eps), grads(net, ELBO(1, estimator), x, eps))


@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg"])
def test_miwae_m1_is_iwae(net, x, estimator):
    eps = noise(net, (1, 7), len(x))
    assert_same(grads(net, MIWAE(1, 7, estimator), x, eps), grads(net, IWAE(7, estimator), x, eps))


@pytest.mark.parametrize("estimator", ["reparam", "stl"])
def test_miwae_k1_is_elbo_over_m_samples(net, x, estimator):
    eps = noise(net, (6, 1), len(x))
    eps_elbo = [e.reshape(1, 6, *e.shape[2:]) for e in eps]
    assert_same(grads(net, MIWAE(6, 1, estimator), x, eps), grads(net, ELBO(6, estimator), x, eps_elbo))


def test_ciwae_endpoints(net, x):
    eps = noise(net, (1, 5), len(x))
    assert_same(grads(net, CIWAE(1, 5, beta=1.0), x, eps), grads(net, ELBO(5), x, eps))
    assert_same(grads(net, CIWAE(1, 5, beta=0.0), x, eps), grads(net, IWAE(5), x, eps))


def test_vr_alpha0_is_iwae_and_alpha1_is_elbo(net, x):
    eps = noise(net, (1, 5), len(x))
    assert_same(grads(net, VR(1, 5, alpha=0.0), x, eps), grads(net, IWAE(5), x, eps))
    assert_same(grads(net, VR(1, 5, alpha=1.0), x, eps), grads(net, ELBO(5), x, eps))
    # and the limit alpha -> 1 approaches the ELBO continuously
    lw = net.log_weights(x, (1, 5), eps=eps).value.detach()
    gap = [(VR(1, 5, alpha=a).bound(lw) - ELBO(5).bound(lw)).abs().max().item() for a in (0.9, 0.99, 0.999)]
    assert gap[0] > gap[1] > gap[2] and gap[2] < 0.05 * gap[0]  # the gap shrinks like (1 - alpha)


def test_ordering_of_bounds_on_same_samples():
    """On the same log-weights: ELBO <= MIWAE(M,K) <= IWAE(M*K) (Jensen), pointwise."""
    lw = torch.randn(4, 8, 10, dtype=torch.float64) * 5
    elbo = ELBO(32).bound(lw.reshape(1, 32, 10))
    miwae = MIWAE(4, 8).bound(lw)
    iwae = IWAE(32).bound(lw.reshape(1, 32, 10))
    assert torch.all(elbo <= miwae + 1e-12) and torch.all(miwae <= iwae + 1e-12)
    torch.testing.assert_close(PIWAE(4, 8).bound(lw), iwae)


ALL = [make_objective("vae", K=5), make_objective("iwae", K=5), make_objective("miwae", 3, 5),
       make_objective("ciwae", 3, 5, beta=0.3), make_objective("vr", 3, 5, alpha=0.4),
       make_objective("vr", 3, 5, alpha=-0.5), make_objective("piwae", 3, 5)]


@pytest.mark.parametrize("objective", ALL, ids=repr)
def test_weights_are_the_gradient_of_the_bound(objective):
    """weights() is d bound / d log_w, checked against autograd of the bound's definition."""
    M, K = objective.sample_shape
    lw = (torch.randn(M, K, 4, dtype=torch.float64) * 3).requires_grad_()
    (auto,) = torch.autograd.grad(objective.bound(lw).sum(), lw)
    torch.testing.assert_close(objective.weights(lw.detach()), auto)


@pytest.mark.parametrize("objective", [o for o in ALL if o.name != "piwae"], ids=repr)
def test_dreg_weights_are_weights_minus_hessian_diagonal(objective):
    """DReG coefficient = w - diag(dw/dlog_w) (Tucker et al.'s identity), against autograd."""
    M, K = objective.sample_shape
    lw = torch.randn(M, K, 2, dtype=torch.float64) * 2
    flat = lw.flatten()

    def weights(v):
        return objective.weights(v.view_as(lw)).flatten()

    diag = torch.autograd.functional.jacobian(weights, flat).diagonal()
    torch.testing.assert_close(objective.dreg_weights(lw), (weights(flat) - diag).view_as(lw))


@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg"])
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_surrogate_value_is_the_bound(net, x, name, estimator):
    M = 1 if name in ("vae", "iwae") else 2
    objective = make_objective(name, M, 3, estimator)
    lw = objective.log_weights(net, x)
    bound, surrogate = objective(lw)
    torch.testing.assert_close(surrogate.detach(), bound.detach())
    assert bound.shape == (len(x),)


@pytest.mark.parametrize("name,M,K,estimator", [("iwae", 1, 4, "reparam"), ("miwae", 2, 3, "stl"),
                                                 ("piwae", 2, 3, "reparam"), ("iwae", 1, 4, "dreg")])
def test_objective_runs_the_pass_its_estimator_needs(name, M, K, estimator):
    """objective.log_weights / estimate pass stop_q and split themselves: same values and gradients as the
    explicit network call with the flags spelled out."""
    net, x = make_net(), make_data()
    objective = make_objective(name, M, K, estimator)
    eps = net.draw_noise(x, objective.sample_shape)
    lw = objective.log_weights(net, x, eps=eps)
    ref = net.log_weights(x, (M, K), eps=eps, stop_q=objective.stop_q, split=objective.split)
    assert lw.stop_q == objective.stop_q and (lw.encoder is not None) == objective.split
    out = objective.estimate(net, x, eps=eps)
    grads = torch.autograd.grad(out.surrogate.sum(), list(net.parameters()))
    ref_grads = torch.autograd.grad(objective(ref).surrogate.sum(), list(net.parameters()))
    torch.testing.assert_close(out.bound, objective(ref).bound)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_name_lists_are_one_list():
    """The CLI's Literal choices are the objective registry's keys and the estimator tuple."""
    from typing import get_args

    from iwae_pl import ESTIMATORS
    from iwae_pl.model.objectives import EstimatorName, ObjectiveName
    assert set(get_args(ObjectiveName)) == set(OBJECTIVES)
    assert get_args(EstimatorName) == ESTIMATORS
