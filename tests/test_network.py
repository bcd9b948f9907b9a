"""Network structure: layer specs become Burda's architectures; initialisation; once-per-point work."""
from __future__ import annotations

import math

import torch

from iwae_pl import BURDA_1_LAYER, BURDA_2_LAYER, IWAENetwork, LayerSpec


def linear_shapes(module):
    return [tuple(m.weight.shape[::-1]) for m in module.modules() if isinstance(m, torch.nn.Linear)]


def test_burda_architectures_from_specs():
    one = IWAENetwork(784, BURDA_1_LAYER)
    assert linear_shapes(one.encoder) == [(784, 200), (200, 200), (200, 100)]  # head: mean and log-std of 50
    assert linear_shapes(one.decoder) == [(50, 200), (200, 200), (200, 784)]
    two = IWAENetwork(784, BURDA_2_LAYER)
    assert linear_shapes(two.encoder) == [(784, 200), (200, 200), (200, 200), (100, 100), (100, 100), (100, 100)]
    assert linear_shapes(two.decoder) == [(100, 200), (200, 200), (200, 784), (50, 100), (100, 100), (100, 200)]
    seven = IWAENetwork(784, [LayerSpec(50, (100, 100))] + [LayerSpec(100, (100, 100))] * 6)
    assert seven.latent_sizes == [50] + [100] * 6


def test_glorot_init_and_visible_bias():
    torch.manual_seed(0)
    net = IWAENetwork(784, BURDA_1_LAYER)
    w = net.encoder.blocks[0].mlp[0].weight
    bound = math.sqrt(6 / (784 + 200))
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    head = net.encoder.blocks[0].head.weight[:50]  # the mean half uses fan (200, 50) like the original
    assert head.abs().max() <= math.sqrt(6 / 250) and head.abs().max() > 0.9 * math.sqrt(6 / 250)
    assert all((m.bias == 0).all() for m in net.modules() if isinstance(m, torch.nn.Linear))
    mean = torch.rand(784)
    mean[0], mean[1] = 0.0, 1.0
    net.set_visible_bias(mean)
    p = torch.sigmoid(net.decoder.visible.head.bias)
    torch.testing.assert_close(p[2:], mean[2:].clamp(1e-3, 1 - 1e-3), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(p[:2], torch.tensor([1e-3, 1 - 1e-3]), atol=1e-6, rtol=1e-4)


def test_sample_independent_encoder_work_runs_once_per_data_point():
    net = IWAENetwork(20, [LayerSpec(4, (8, 8)), LayerSpec(3, (5,))])
    seen = []
    net.encoder.blocks[0].mlp.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    net.log_weights(torch.ones(6, 20), (4, 5))
    assert seen == [(6, 20)]


def test_log_weight_terms_and_temperature():
    torch.manual_seed(1)
    net = IWAENetwork(20, [LayerSpec(4, (8,)), LayerSpec(3, (5,))])
    x = (torch.rand(6, 20) < 0.5).float()
    eps = net.draw_noise(x, (2, 3))
    lw1 = net.log_weights(x, (2, 3), eps=eps)
    lw0 = net.log_weights(x, (2, 3), eps=eps, beta=0.0)
    assert len(lw1.log_p) == len(lw1.log_q) == 2 and lw1.log_px.shape == (2, 3, 6)
    torch.testing.assert_close(lw0.value, lw1.log_px)                 # beta = 0: only the likelihood
    torch.testing.assert_close(lw0.at_beta(1.0), lw1.value)           # the true bound without a new pass
    # log q from the eps shortcut equals the Gaussian density of the sample
    mean, log_std = net.encoder.blocks[0](x)
    h1 = mean + log_std.exp() * eps[0]
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(h1).sum(-1)
    torch.testing.assert_close(lw1.log_q[0], ref, atol=1e-4, rtol=1e-5)


def test_densities_with_and_without_pruned_units():
    """The Gaussian densities equal torch.distributions; pruned units (keep False) drop out exactly."""
    from iwae_pl.model.densities import gaussian_log_prob, standard_normal_log_prob

    g = torch.Generator().manual_seed(0)
    h, mean = torch.randn(3, 4, 5, generator=g), torch.randn(4, 5, generator=g)
    log_std = 0.3 * torch.randn(4, 5, generator=g)
    keep = torch.tensor([True, False, True, True, False])
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(h)
    torch.testing.assert_close(gaussian_log_prob(h, mean, log_std), ref.sum(-1))
    torch.testing.assert_close(gaussian_log_prob(h, mean, log_std, keep), ref[..., keep].sum(-1))
    ref0 = torch.distributions.Normal(0.0, 1.0).log_prob(h)
    torch.testing.assert_close(standard_normal_log_prob(h), ref0.sum(-1))
    torch.testing.assert_close(standard_normal_log_prob(h, keep), ref0[..., keep].sum(-1))


def test_posterior_means_with_given_noise_are_the_log_weights_means(net, x):
    """posterior_means(sample, eps) runs the encoder only, and gives the means log_weights reports."""
    eps = net.draw_noise(x, ())
    with torch.no_grad():
        ref = net.log_weights(x, (1,), eps=[e[None] for e in eps]).means
        got = net.posterior_means(x, "sample", eps=eps)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b.reshape(a.shape), rtol=0, atol=0)
    torch.manual_seed(5)
    drawn = net.posterior_means(x)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(drawn, net.posterior_means(x, eps=net.draw_noise(x, ()))))
