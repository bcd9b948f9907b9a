"""Diagnostics as pure functions of a network, log-weights or statistics (plain PyTorch, no Lightning).

    activity   active units A_u = Var_x(E_q[u|x]) from additive sufficient statistics
    ess        effective sample size of importance weights, weight histograms
    snr        gradient signal-to-noise ratio of an objective's estimator, encoder vs decoder
    images     model samples, reconstructions, image grids
    figures    matplotlib figures of the statistics

The callbacks in ``iwae_pl.lightning.callbacks`` schedule them, reduce them across processes and log them.
"""
from .activity import activity_from_moments, posterior_mean_moments, unit_activity
from .ess import ess_stats, weight_histogram
from .snr import gradient_snr

__all__ = ["activity_from_moments", "ess_stats", "gradient_snr", "posterior_mean_moments", "unit_activity",
           "weight_histogram"]
