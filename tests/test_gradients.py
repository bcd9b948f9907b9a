"""Gradient estimators against their definitions, on the same noise.

Definitions are written out independently here: the frozen-parameter densities of STL/DReG use a
deep copy of the network with gradients switched off, not the library's stop-gradient code.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from iwae_pl import IWAE, MIWAE, PIWAE, make_objective

from conftest import make_data, make_net


def noise(net, shape, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, B, d, generator=g, dtype=torch.float64) for d in net.latent_sizes]


def split_grads(net, objective, x, eps):
    """(encoder grads, decoder grads) of the objective's surrogate, mean over the batch."""
    net.zero_grad()
    lw = objective.log_weights(net, x, eps=eps)
    (-objective(lw).surrogate.mean()).backward()
    return ([p.grad.clone() for p in net.encoder.parameters()], [p.grad.clone() for p in net.decoder.parameters()])


def assert_all_close(a, b):
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg"])
def test_piwae_encoder_gets_miwae_and_decoder_gets_iwae_mk(net, x, estimator):
    M, K = 3, 4
    eps = noise(net, (M, K), len(x))
    enc, dec = split_grads(net, PIWAE(M, K, estimator), x, eps)
    miwae_enc, _ = split_grads(net, MIWAE(M, K, estimator), x, eps)
    flat = [e.reshape(1, M * K, *e.shape[2:]) for e in eps]
    _, iwae_dec = split_grads(net, IWAE(M * K, estimator), x, flat)
    assert_all_close(enc, miwae_enc)
    assert_all_close(dec, iwae_dec)
    # and the two really differ (the test would notice a leak of one into the other)
    iwae_enc, _ = split_grads(net, IWAE(M * K, estimator), x, flat)
    assert max((a - b).abs().max().item() for a, b in zip(enc, iwae_enc)) > 1e-6


@pytest.mark.parametrize("name,M", [("iwae", 1), ("miwae", 3), ("ciwae", 2), ("vr", 2), ("piwae", 2)])
@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_stl_and_dreg_leave_decoder_gradient_unchanged(net, x, name, M, estimator):
    eps = noise(net, (M, 5), len(x))
    _, dec = split_grads(net, make_objective(name, M, 5, estimator), x, eps)
    _, ref = split_grads(net, make_objective(name, M, 5, "reparam"), x, eps)
    assert_all_close(dec, ref)


def frozen_copy(module):
    frozen = copy.deepcopy(module)
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def definition_encoder_grads(net, x, eps, K, power):
    """Encoder gradient of sum_k sg(w~_k)^power [log p_sg(theta)(x, h_k) - log q_sg(phi)(h_k | x)] (STL: 1, DReG: 2)."""
    frozen_dec, frozen_enc = frozen_copy(net.decoder), frozen_copy(net.encoder)
    net.zero_grad()
    hs, _, _ = net.encoder(x, eps)                      # live samples, gradient to phi through h
    log_px, log_p = frozen_dec(x, hs)
    below, log_q = x, []
    for block, h in zip(frozen_enc.blocks, hs):
        mean, log_std = block(below)
        log_q.append(torch.distributions.Normal(mean, log_std.exp()).log_prob(h).sum(-1))
        below = h
    lw = log_px + sum(log_p) - sum(log_q)               # [1, K, B]
    w = torch.softmax(lw.detach(), 1) ** power
    (-(w * lw).sum((0, 1)).mean()).backward()
    return [p.grad.clone() for p in net.encoder.parameters()]


@pytest.mark.parametrize("estimator,power", [("stl", 1), ("dreg", 2)])
def test_path_estimators_match_their_definition(net, x, estimator, power):
    eps = noise(net, (1, 6), len(x))
    enc, _ = split_grads(net, IWAE(6, estimator), x, eps)
    assert_all_close(enc, definition_encoder_grads(net, x, eps, 6, power))


def encoder_grad_draws(net, x, estimator, K, draws, seed):
    """[draws, P] flattened encoder gradients of IWAE(K) on fresh noise per draw (paired by seed)."""
    out = []
    for r in range(draws):
        enc, _ = split_grads(net, IWAE(K, estimator), x, noise(net, (1, K), len(x), seed=seed + r))
        out.append(torch.cat([g.flatten() for g in enc]))
    return torch.stack(out)


def test_dreg_is_unbiased_for_iwae():
    """E[DReG encoder gradient] = E[IWAE encoder gradient]: a paired z-test per parameter on the same
    noise; the tolerance comes from the standard error of the paired difference."""
    net, x = make_net(((2, (5,)),), input_dim=6, seed=4), make_data(3, 6, seed=5)
    draws = 1500
    dreg = encoder_grad_draws(net, x, "dreg", 8, draws, seed=100)
    rep = encoder_grad_draws(net, x, "reparam", 8, draws, seed=100)
    live = rep.std(0) > 0                # weights on pixels that are 0 in every x get no gradient at all
    dreg, rep = dreg[:, live], rep[:, live]
    diff = dreg - rep
    z = diff.mean(0) / (diff.std(0) / math.sqrt(draws))
    assert z.abs().max() < 4.5, z.abs().max()
    # the same test has power: a 30% scaled-up estimator is detected
    z_bad = (1.3 * dreg - rep).mean(0) / ((1.3 * dreg - rep).std(0) / math.sqrt(draws))
    assert z_bad.abs().max() > 4.5


def test_dreg_has_lower_encoder_variance_at_large_k():
    """Where q is close to the posterior (small weights: q ~ prior ~ posterior), the IWAE encoder
    gradient's variance is dominated by the score term that DReG removes (Tucker et al. 2018)."""
    net, x = make_net(((2, (5,)),), input_dim=6, seed=4), make_data(3, 6, seed=5)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.2)
    dreg = encoder_grad_draws(net, x, "dreg", 64, 100, seed=7)
    rep = encoder_grad_draws(net, x, "reparam", 64, 100, seed=7)
    assert dreg.var(0).sum() < 0.01 * rep.var(0).sum()
