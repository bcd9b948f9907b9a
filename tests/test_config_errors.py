"""Bad settings raise ConfigError with a one-line message naming the bad value and what is allowed."""
from __future__ import annotations

import pytest

from iwae_pl import ConfigError, IWAENetwork, LayerSpec, log_likelihood, make_objective

from conftest import make_data, make_net


@pytest.mark.parametrize("layers,match", [
    ([], "non-empty"),
    ([{"latent": 0}], "latent size"),
    ([{"latent": 5, "hidden": [10, -1]}], "hidden sizes"),
    ([{"latent": 5, "activation": "sigmoidal"}], "sigmoidal.*allowed: tanh"),
    ([{"latent": 5, "hiden": [3]}], "keys are latent"),
    ([{"hidden": [3]}], "keys are latent"),
    ([3], "expected a LayerSpec"),
])
def test_bad_layer_specs(layers, match):
    with pytest.raises(ConfigError, match=match) as info:
        IWAENetwork(10, layers)
    assert "\n" not in str(info.value)


def test_bad_network_settings():
    with pytest.raises(ConfigError, match="input_dim"):
        IWAENetwork(0, [LayerSpec(2)])
    with pytest.raises(ConfigError, match="'sigmoid'.*allowed: exp, softplus"):
        IWAENetwork(4, [LayerSpec(2)], std="sigmoid")


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="iwea"), "unknown objective 'iwea'; allowed: vae, iwae, miwae, ciwae, piwae, vr"),
    (dict(name="miwae", M=0, K=5), "M must be an integer >= 1, got 0"),
    (dict(name="miwae", M=2, K=-1), "K must be an integer >= 1, got -1"),
    (dict(name="miwae", M=2.5, K=1), "M must be an integer"),
    (dict(name="iwae", K=5, estimator="dregs"), "unknown gradient estimator 'dregs'; allowed: reparam, stl, dreg"),
    (dict(name="iwae", M=8, K=8), "takes M=1, got M=8; use 'miwae'"),
    (dict(name="vae", M=2, K=8), "takes M=1"),
    (dict(name="iwae", K=5, beta=0.5), "beta=0.5 applies only to objective 'ciwae'"),
    (dict(name="miwae", K=5, alpha=0.5), "alpha=0.5 applies only to objective 'vr'"),
    (dict(name="ciwae", K=5, beta=1.5), r"ciwae beta must be in \[0, 1\], got 1.5"),
    (dict(name="vr", K=5, alpha=float("nan")), "vr alpha must be a finite number"),
])
def test_bad_objectives(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_objective(**kwargs)


def test_estimator_needs_matching_log_weights():
    net, x = make_net(), make_data()
    objective = make_objective("iwae", 1, 4, "dreg")
    with pytest.raises(ConfigError, match="stop_q=True"):
        objective(net.log_weights(x, (1, 4)))
    with pytest.raises(ConfigError, match="split=True"):
        objective(net.log_weights(x, (1, 4), stop_q=True))
    with pytest.raises(ValueError, match=r"expects log-weights \[M=1, K=4, B\], got \[2, 4, 5\]"):
        make_objective("iwae", 1, 4)(net.log_weights(x, (2, 4)))


def test_bad_lk_arguments():
    net, x = make_net(), make_data()
    import torch
    with pytest.raises(ConfigError, match="k must be an integer >= 1, got 0"):
        log_likelihood(net, x, torch.arange(len(x)), 0)
    with pytest.raises(ConfigError, match="chunk must be"):
        log_likelihood(net, x, torch.arange(len(x)), 10, chunk=0)
