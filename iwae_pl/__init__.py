"""iwae_pl: importance-weighted autoencoders (VAE, IWAE, MIWAE, CIWAE, PIWAE, VR) with PyTorch Lightning.

    model/        the math: network, densities, log-weights, objectives, L_k (plain PyTorch)
    fast/         speed paths, each tested equal to its reference in model/ (plain PyTorch)
    diagnostics/  activity, ESS, gradient SNR, image grids and figures (plain PyTorch)
    data/         datasets, binarization, verified downloads, the LightningDataModule
    lightning/    the LightningModule, callbacks, loggers
    runs/         the run function and run directories that fit, sweeps, resume and report share
    cli.py        ``iwae_pl`` / ``python -m iwae_pl``
"""
from .errors import ConfigError
from .model import (BURDA_1_LAYER, BURDA_2_LAYER, CIWAE, ELBO, ESTIMATORS, IWAE, MIWAE, OBJECTIVES, PIWAE, VR,
                    IWAENetwork, LayerSpec, LogWeights, Objective, ObjectiveOutput, log_likelihood, log_mean_exp,
                    make_objective)

__all__ = [
    "BURDA_1_LAYER", "BURDA_2_LAYER", "CIWAE", "ConfigError", "ELBO", "ESTIMATORS", "IWAE", "IWAENetwork",
    "LayerSpec", "LogWeights", "MIWAE", "OBJECTIVES", "Objective", "ObjectiveOutput", "PIWAE", "VR",
    "log_likelihood", "log_mean_exp", "make_objective",
]
__version__ = "0.1.0"
