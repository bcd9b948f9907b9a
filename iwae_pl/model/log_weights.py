"""The one contract shared by the network, the objectives and the diagnostics: log importance weights.

log w = log p(x | h1) + beta * (sum_l log p(h_l | h_{l+1}) - sum_l log q(h_l | h_{l-1})),

for every sample and data point, shaped [*S, B] (S = (M, K) in training). The per-layer terms stay
available so that the warm-up temperature beta and the diagnostics need no second network pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from torch import Tensor


@dataclass
class LogWeights:
    """Per-sample terms of the log importance weight; every term is [*S, B].

    Attributes:
        log_px: log p(x | h1).
        log_p: [log p(h1 | h2), ..., log p(h_{L-1} | h_L), log p(h_L)].
        log_q: [log q(h1 | x), ..., log q(h_L | h_{L-1})].
        means: posterior means per layer: [B, d1] for layer 1, [*S, B, d_l] above it.
        beta: warm-up temperature multiplying the latent terms (1 for the true bound).
        stop_q: True if log_q was evaluated with the encoder's parameters held fixed (STL, DReG).
        encoder, decoder: optional views with the same values as ``value`` whose gradients reach only
            the encoder / only the decoder (see ``IWAENetwork.log_weights(split=True)``).

    The terms are not changed after construction: ``value`` and ``log_joint_ratio`` are computed once
    and cached (the objective, the training step and the diagnostics all read them).
    """

    log_px: Tensor
    log_p: list[Tensor]
    log_q: list[Tensor]
    means: list[Tensor]
    beta: float = 1.0
    stop_q: bool = False
    encoder: Tensor | None = None
    decoder: Tensor | None = None

    @cached_property
    def log_joint_ratio(self) -> Tensor:
        """sum_l log p(h_l | .) - sum_l log q(h_l | .): the latent part of log w, [*S, B]."""
        # A chain of adds (no torch.stack copies): 2L - 1 small elementwise ops, any number of layers.
        out = self.log_p[0] - self.log_q[0]
        for p, q in zip(self.log_p[1:], self.log_q[1:]):
            out = out + p - q
        return out

    @cached_property
    def value(self) -> Tensor:
        """log w at temperature beta, [*S, B]."""
        latent = self.log_joint_ratio
        return self.log_px + latent if self.beta == 1.0 else self.log_px + self.beta * latent

    def at_beta(self, beta: float) -> Tensor:
        """log w at another temperature (e.g. beta = 1 for reporting during warm-up), no new pass."""
        return self.log_px + beta * self.log_joint_ratio
