"""Bounds and L_k against log p(x) computed exactly by quadrature on tiny models.

The quadrature uses only the generative model's definition (prior, conditional Gaussians, Bernoulli
pixels), never the log-weight machinery under test. Sanity: the quadrature's p(x) sums to 1 over all
2^D binary vectors.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from iwae_pl import ELBO, IWAE, log_likelihood
from iwae_pl.model.noise import indexed_normal

from conftest import make_net

NODES, WEIGHTS = np.polynomial.hermite.hermgauss(80)
T = torch.tensor(NODES, dtype=torch.float64) * math.sqrt(2.0)    # nodes for N(0, 1)
W = torch.tensor(WEIGHTS, dtype=torch.float64) / math.sqrt(math.pi)


def bernoulli(xs, logits):
    return (xs * logits - torch.nn.functional.softplus(logits)).sum(-1)


def log_px_one_layer(net, xs):
    """log p(x) for a 1-layer net with a 1-d latent: Gauss-Hermite over h ~ N(0, 1)."""
    logits = net.decoder.visible(T[:, None])                        # [Q, D]
    return torch.logsumexp(torch.log(W)[None] + bernoulli(xs[:, None], logits[None]), 1)


def log_px_two_layers(net, xs):
    """log p(x) for a 2-layer net with 1-d latents: nested Gauss-Hermite, h2 ~ N(0,1), h1 | h2 Gaussian."""
    mean, log_std = net.decoder.blocks[0](T[:, None])               # p(h1 | h2) at each h2 node
    h1 = mean + torch.exp(log_std) * T[None, :]                      # [Q2, Q1] nodes of h1 | h2
    logits = net.decoder.visible(h1[..., None])                      # [Q2, Q1, D]
    log_w = torch.log(W)[:, None] + torch.log(W)[None, :]
    return torch.logsumexp(log_w[None] + bernoulli(xs[:, None, None], logits[None]), (1, 2))


CASES = {"one_layer": (((1, (4,)),), log_px_one_layer), "two_layers": (((1, (4,)), (1, (3,))), log_px_two_layers)}


@pytest.fixture(params=list(CASES))
def case(request):
    layers, exact = CASES[request.param]
    net = make_net(layers, input_dim=4, seed=3)
    with torch.no_grad():  # proposals wider than the posterior (std ~0.9 here): well-behaved weights
        for block in net.encoder.blocks:
            block.head.bias[block.head.out_features // 2:] += 0.7
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    with torch.no_grad():
        log_px = exact(net, xs)
    return net, xs, log_px


def test_quadrature_is_a_distribution(case):
    _, _, log_px = case
    assert torch.logsumexp(log_px, 0).abs().item() < 1e-8


def mc_bound(net, objective, xs, draws, seed=0):
    """Mean and standard error of the bound over independent draws, per data point."""
    torch.manual_seed(seed)
    with torch.no_grad():
        vals = torch.stack([objective.bound(net.log_weights(xs, objective.sample_shape).value) for _ in range(draws)])
    return vals.mean(0), vals.std(0) / math.sqrt(draws)


def test_bounds_lie_below_log_px_and_tighten_with_k(case):
    net, xs, log_px = case
    means, ses = zip(*(mc_bound(net, IWAE(k), xs, 400) for k in (1, 5, 50)))
    elbo, _ = mc_bound(net, ELBO(1), xs, 400)
    torch.testing.assert_close(elbo, means[0], atol=5 * ses[0].max().item(), rtol=0)
    for mean, se in zip(means, ses):
        assert torch.all(mean <= log_px + 4 * se)
    # in expectation L_1 < L_5 < L_50 < log p(x): the gaps are many standard errors wide here
    for lo, hi, se in zip(means[:-1], means[1:], ses[1:]):
        assert (hi - lo).mean() > 4 * se.mean()
    assert (log_px - means[-1]).mean() > 0
    assert (log_px - means[-1]).mean() < 0.5 * (log_px - means[0]).mean()


def test_lk_approaches_log_px(case):
    net, xs, log_px = case
    index = torch.arange(len(xs))
    errors = [(log_likelihood(net, xs, index, k, seed=1) - log_px).abs().mean().item() for k in (1, 10, 100, 5000)]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    # at k = 5000, each point's error is within 4 delta-method standard errors of the estimate,
    # SE(log mean w) ~= sqrt((k * sum w~^2 - 1) / k), from the very same weights
    k = 5000
    with torch.no_grad():
        eps = indexed_normal(1, index, 0, k, net.latent_sizes, dtype=torch.float64)
        lw = net.log_weights(xs, (k,), eps=eps).value
    se = torch.sqrt((k * torch.softmax(lw, 0).square().sum(0) - 1) / k)
    err = log_likelihood(net, xs, index, k, seed=1) - log_px
    assert torch.all(err.abs() < 4 * se), (err, se)
