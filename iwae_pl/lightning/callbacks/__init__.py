"""Diagnostics callbacks, one concept a file; all configurable from YAML (``trainer.callbacks``).

    BetaWarmup           warm-up temperature on the latent terms (warmup.py)
    ActivityStats        active units A_u = Var_x(E_q[u|x]) and the pruning check (activity.py)
    EffectiveSampleSize  ESS of the training importance weights (ess.py)
    GradientSNR          gradient signal-to-noise ratio, encoder vs decoder (snr.py)
    SampleImages         model samples and reconstructions (images.py)
"""
from .activity import ActivityStats, unit_activity
from .ess import EffectiveSampleSize, ess_stats
from .images import SampleImages
from .snr import GradientSNR, gradient_snr
from .warmup import BetaWarmup

__all__ = ["ActivityStats", "BetaWarmup", "EffectiveSampleSize", "GradientSNR", "SampleImages",
           "ess_stats", "gradient_snr", "unit_activity"]
