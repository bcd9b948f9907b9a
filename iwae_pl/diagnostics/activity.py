"""Active units (Burda et al. 2015; section 5.3 of the reproduction report): A_u = Var_x(E_q[u | x]).

The activity of unit u of a stochastic layer is the variance over data points of its posterior mean;
a unit is active when A_u > 1e-2. The statistic is computed from per-unit sufficient statistics
(count, sum, sum of squares), so partial results over shards of a data set add up exactly.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..model.network import IWAENetwork
from ..model.noise import indexed_normal


@torch.no_grad()
def posterior_mean_moments(net: IWAENetwork, x: Tensor, index: Tensor, propagate: str = "sample",
                           seed: int = 0, batch_size: int = 500) -> list[Tensor]:
    """Sufficient statistics of the posterior means, per layer a float64 tensor [3, d_l]:
    (count, sum over x of E_q[u|x], sum over x of E_q[u|x]^2).

    Args:
        x: [N, D] data. index: [N] dataset positions: with ``propagate="sample"`` the sample of
            layer l - 1 fed to layer l is drawn from noise seeded by (seed, index), so the result
            does not depend on batching or on how the set is split across processes.
        propagate: ``sample`` (Burda's code) or ``mean`` (layer l - 1's mean is fed upwards).
    """
    stats = [torch.zeros(3, d, dtype=torch.float64, device=x.device) for d in net.latent_sizes]
    for xb, ib in zip(x.split(batch_size), index.split(batch_size)):
        eps = None
        if propagate == "sample":  # one seeded sample per data point
            eps = [e[0] for e in indexed_normal(seed, ib, 0, 1, net.latent_sizes, device=xb.device, dtype=xb.dtype,
                                                stream="activity_noise")]
        means = net.posterior_means(xb, propagate, eps=eps)
        for s, m in zip(stats, means):
            m = m.double()
            s += torch.stack([torch.full_like(m[0], len(m)), m.sum(0), m.square().sum(0)])
    return stats


def activity_from_moments(moments: Sequence[Tensor]) -> list[Tensor]:
    """A_u per layer, [d_l]: the population variance (as ``np.var`` in Burda's code) from the moments."""
    out = []
    for n, s, q in moments:
        mean = s / n
        out.append((q / n - mean.square()).clamp_min(0.0))
    return out


def unit_activity(net: IWAENetwork, x: Tensor, index: Tensor, propagate: str = "sample",
                  seed: int = 0) -> list[Tensor]:
    """A_u = Var_x(E_q[u|x]) per layer, [d_l] float64, over the data points x [N, D] (one process)."""
    return activity_from_moments(posterior_mean_moments(net, x, index, propagate, seed))
