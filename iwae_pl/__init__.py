"""iwae_pl: importance-weighted autoencoders (VAE, IWAE, MIWAE, CIWAE, PIWAE, VR) with PyTorch Lightning.

The math (network, log-weights, objectives, L_k) is plain PyTorch and importable without Lightning
being used; the Lightning module, data and callbacks build on it.
"""
from .errors import ConfigError
from .likelihood import log_likelihood
from .log_weights import LogWeights
from .network import BURDA_1_LAYER, BURDA_2_LAYER, IWAENetwork, LayerSpec
from .objectives import (CIWAE, ELBO, ESTIMATORS, IWAE, MIWAE, OBJECTIVES, PIWAE, VR, Objective,
                         ObjectiveOutput, log_mean_exp, make_objective)

__all__ = [
    "BURDA_1_LAYER", "BURDA_2_LAYER", "CIWAE", "ConfigError", "ELBO", "ESTIMATORS", "IWAE", "IWAENetwork",
    "LayerSpec", "LogWeights", "MIWAE", "OBJECTIVES", "Objective", "ObjectiveOutput", "PIWAE", "VR",
    "log_likelihood", "log_mean_exp", "make_objective",
]
__version__ = "0.1.0"
