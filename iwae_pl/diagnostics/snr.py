"""Gradient signal-to-noise ratio (Rainforth et al. 2018, "Tighter variational bounds are not
necessarily better").

SNR(theta) = |E[g(theta)] / std[g(theta)]| for each scalar parameter theta, where g is the objective's
stochastic gradient estimate on a fixed batch and the expectation is over the sampling noise only.
For IWAE(K) the theory gives SNR(decoder) = O(sqrt(K)) but SNR(encoder) = O(1 / sqrt(K)): tighter
bounds starve the encoder of signal.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..model.network import IWAENetwork
from ..model.objectives import Objective


def gradient_snr(net: IWAENetwork, objective: Objective, x: Tensor, num_estimates: int = 100,
                 generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean per-parameter SNR of ``objective``'s gradient on the batch x [B, D], encoder and decoder.

    Estimate r (r = 1..R) differentiates exactly like the training step (at beta = 1):
    noise = ``net.draw_noise(x, objective.sample_shape, generator)`` (the r-th draw from ``generator``),
    loss = -objective.estimate(net, x, eps=noise).surrogate.mean(),
    g_r = d loss / d theta by ``torch.autograd.grad`` (no ``.grad`` is written). Per scalar parameter,
    SNR = |mean_r g_r| / std_r g_r (unbiased std, float64 running sums); parameters whose estimates
    never vary (std = 0) are left out of the averages.

    Returns: {"encoder": mean SNR over the encoder's scalars, "decoder": same for the decoder}.
    """
    groups = {"encoder": list(net.encoder.parameters()), "decoder": list(net.decoder.parameters())}
    params = groups["encoder"] + groups["decoder"]
    sums = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    squares = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for _ in range(num_estimates):
        eps = net.draw_noise(x, objective.sample_shape, generator=generator)
        lw = objective.log_weights(net, x, eps=eps)
        loss = -objective(lw).surrogate.mean()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for s, q, g in zip(sums, squares, grads):
            if g is not None:
                g = g.double()
                s += g
                q += g.square()
    out, start = {}, 0
    for name, group in groups.items():
        snrs = []
        for s, q in zip(sums[start:start + len(group)], squares[start:start + len(group)]):
            mean = s / num_estimates
            var = ((q - num_estimates * mean.square()) / (num_estimates - 1)).clamp_min(0.0)
            moving = var > 0
            snrs.append((mean[moving].abs() / var[moving].sqrt()).flatten())
        out[name] = torch.cat(snrs).mean().item() if snrs else float("nan")
        start += len(group)
    return out
