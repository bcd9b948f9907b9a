"""Layer specs: the architecture of an IWAE as data (what configs, checkpoints and the CLI carry).

A network is a list of stochastic layers, bottom-up (layer 1 is next to x); each names its number of
Gaussian units and the deterministic layers that lead to it. YAML gives them as dicts::

    layers: [{latent: 100, hidden: [200, 200]}, {latent: 50, hidden: [100, 100]}]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn

from ..errors import ConfigError

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus, "gelu": nn.GELU}


@dataclass(frozen=True)
class LayerSpec:
    """One stochastic layer of the network, listed bottom-up.

    Args:
        latent: number of Gaussian units d_l in this layer.
        hidden: sizes of the deterministic layers between the layer below (x, or h_{l-1}) and this
            one. The recognition net uses them bottom-up, the generative net top-down (reversed).
        activation: nonlinearity of those deterministic layers (tanh in the original).
    """

    latent: int
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "tanh"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if not isinstance(self.latent, int) or self.latent < 1:
            raise ConfigError(f"layer latent size must be an integer >= 1, got {self.latent!r}")
        if any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ConfigError(f"hidden sizes must be integers >= 1, got {list(self.hidden)!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")


# Burda et al.'s MNIST architectures (REFERENCE.md): 784-200-200-50 and 784-200-200-100-100-100-50.
BURDA_1_LAYER = (LayerSpec(50, (200, 200)),)
BURDA_2_LAYER = (LayerSpec(100, (200, 200)), LayerSpec(50, (100, 100)))


def as_layer_specs(layers: Sequence[LayerSpec | dict]) -> tuple[LayerSpec, ...]:
    """Accept LayerSpec objects or plain dicts (from YAML) and validate the stack."""
    if isinstance(layers, (LayerSpec, dict)) or not isinstance(layers, Sequence) or len(layers) == 0:
        raise ConfigError(f"layers must be a non-empty list of layer specs, got {layers!r}")
    specs = []
    for spec in layers:
        if isinstance(spec, dict):
            unknown = set(spec) - {"latent", "hidden", "activation"}
            if unknown or "latent" not in spec:
                raise ConfigError(f"bad layer spec {spec!r}: keys are latent (required), hidden, activation")
            spec = LayerSpec(**spec)
        elif not isinstance(spec, LayerSpec):
            raise ConfigError(f"bad layer spec {spec!r}: expected a LayerSpec or a dict")
        specs.append(spec)
    return tuple(specs)


