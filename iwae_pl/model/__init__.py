"""The math: network, densities, log-weights, objectives, L_k, evaluation noise, lr schedule.

Plain PyTorch; nothing here imports Lightning.
"""
from .log_weights import LogWeights
from .network import IWAENetwork
from .specs import BURDA_1_LAYER, BURDA_2_LAYER, LayerSpec, as_layer_specs
from .objectives import (CIWAE, ELBO, ESTIMATORS, IWAE, MIWAE, OBJECTIVES, PIWAE, VR, Objective,  # noqa: I001
                         ObjectiveOutput, log_mean_exp, make_objective)
from .likelihood import log_likelihood

__all__ = [
    "BURDA_1_LAYER", "BURDA_2_LAYER", "CIWAE", "ELBO", "ESTIMATORS", "IWAE", "IWAENetwork", "LayerSpec", "LogWeights",
    "MIWAE", "OBJECTIVES", "Objective", "ObjectiveOutput", "PIWAE", "VR", "as_layer_specs", "log_likelihood",
    "log_mean_exp", "make_objective",
]
