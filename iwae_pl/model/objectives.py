"""Objectives: reduce log importance weights [M, K, B] to a bound and a gradient surrogate.

In the spirit of pyro's ``RenyiELBO``: calling an objective returns the true bound per data point
and a surrogate whose *value* equals the bound and whose *gradient* is the chosen estimator's:

    bound, surrogate = objective(log_w)      # log_w: [M, K, B] -> bound, surrogate: [B]
    loss = -surrogate.mean()

Every objective here is a sum over the M outer groups of a function of the K inner log-weights, so
it is fully described by its bound, the gradient of the bound with respect to each log-weight
(``weights``, the familiar normalized importance weights) and, for DReG, by ``weights`` minus the
diagonal of their derivative (``dreg_weights``; w~ -> w~^2 for IWAE, Tucker et al. 2018).

Gradient estimators (applied per group of K, so they compose with MIWAE and PIWAE):
    reparam  the reparameterization gradient of the bound (default).
    stl      "sticking the landing" (Roeder et al. 2017): the score term of log q is dropped;
             the encoder sees sum_i w~_i d/dz[log p - log q_sg](z_i) dz_i/dphi. Biased for K > 1.
    dreg     doubly reparameterized (Tucker et al. 2018): encoder weights w~_i^2 on the path
             derivative; unbiased; the decoder keeps the bound's own gradient.
"""
from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Literal, NamedTuple, Sequence, get_args

import torch
from torch import Tensor

from ..errors import ConfigError, check_int
from .log_weights import LogWeights

if TYPE_CHECKING:
    from .network import IWAENetwork

EstimatorName = Literal["reparam", "stl", "dreg"]
ESTIMATORS: tuple[str, ...] = get_args(EstimatorName)
ObjectiveName = Literal["vae", "iwae", "miwae", "ciwae", "piwae", "vr"]  # the keys of OBJECTIVES (tested)


class ObjectiveOutput(NamedTuple):
    """bound: the true bound per data point [B]; surrogate: same value, the estimator's gradient [B]."""

    bound: Tensor
    surrogate: Tensor


def log_mean_exp(x: Tensor, dim: int) -> Tensor:
    """log(mean(exp(x))) along dim, stable for any magnitude of x."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


class Objective:
    """Base class: an objective over [M, K, B] log-weights with a gradient estimator.

    Subclasses define ``bound`` and ``weights`` (and ``dreg_weights`` if DReG applies); everything
    else — which network pass is needed, how the surrogate is built — is shared.
    """

    name = "objective"

    def __init__(self, M: int = 1, K: int = 1, estimator: str = "reparam"):
        self.M, self.K = check_int("M", M), check_int("K", K)
        if estimator not in ESTIMATORS:
            raise ConfigError(f"unknown gradient estimator {estimator!r}; allowed: {', '.join(ESTIMATORS)}")
        self.estimator = estimator

    def __repr__(self) -> str:
        return f"{type(self).__name__}(M={self.M}, K={self.K}, estimator={self.estimator!r})"

    @property
    def sample_shape(self) -> tuple[int, int]:
        return self.M, self.K

    @property
    def stop_q(self) -> bool:
        """Whether log q must be evaluated with the encoder's parameters held fixed."""
        return self.estimator in ("stl", "dreg")

    @property
    def split(self) -> bool:
        """Whether encoder and decoder receive gradients of different surrogates (needs split views)."""
        return self.estimator == "dreg"

    # --- the math, over detached or live log-weights [M, K, B] ---------------------------------
    def bound(self, log_w: Tensor) -> Tensor:
        """The bound per data point, [B]."""
        raise NotImplementedError

    def weights(self, log_w: Tensor) -> Tensor:
        """d bound / d log_w, [M, K, B]."""
        raise NotImplementedError

    def dreg_weights(self, log_w: Tensor) -> Tensor:
        """weights - diag(d weights / d log_w): DReG's encoder coefficients, [M, K, B]."""
        raise NotImplementedError

    def encoder_weights(self, log_w: Tensor) -> Tensor:
        return self.dreg_weights(log_w) if self.estimator == "dreg" else self.weights(log_w)

    def decoder_weights(self, log_w: Tensor) -> Tensor:
        return self.weights(log_w)

    # --- the pass it needs, and the estimator ----------------------------------------------------
    def log_weights(self, net: "IWAENetwork", x: Tensor, *, beta: float = 1.0,
                    eps: Sequence[Tensor] | None = None) -> LogWeights:
        """Run the network pass this objective and estimator need: [M, K, B] log-weights of x [B, D].

        The objective knows whether log q must see the encoder's parameters held fixed (STL, DReG) and
        whether encoder and decoder need separate gradient views (DReG, PIWAE); callers never pass
        those flags. eps: optional noise per layer [M, K, B, d_l] (default: torch's RNG).
        """
        return net.log_weights(x, self.sample_shape, eps=eps, beta=beta, stop_q=self.stop_q, split=self.split)

    def estimate(self, net: "IWAENetwork", x: Tensor, *, beta: float = 1.0,
                 eps: Sequence[Tensor] | None = None) -> ObjectiveOutput:
        """``self(self.log_weights(net, x, ...))``: bound and surrogate per data point, [B] each."""
        return self(self.log_weights(net, x, beta=beta, eps=eps))

    def __call__(self, log_w: Tensor | LogWeights) -> ObjectiveOutput:
        views = log_w if isinstance(log_w, LogWeights) else None
        value = views.value if views is not None else log_w
        if value.dim() != 3 or tuple(value.shape[:2]) != self.sample_shape:
            raise ValueError(f"{self!r} expects log-weights [M={self.M}, K={self.K}, B], got {list(value.shape)}")
        if not self.stop_q and not self.split:
            bound = self.bound(value)  # plain reparameterization: autograd of the bound itself
            return ObjectiveOutput(bound, bound)
        if self.stop_q and (views is None or not views.stop_q):
            raise ConfigError(f"{self!r} needs log-weights computed with stop_q=True (use objective.log_weights(net, x))")
        v = value.detach()
        bound = self.bound(v)
        if self.split:
            if views.encoder is None or views.decoder is None:
                raise ConfigError(f"{self!r} needs log-weights computed with split=True (use objective.log_weights(net, x))")
            s = ((self.encoder_weights(v) * views.encoder).sum((0, 1))
                 + (self.decoder_weights(v) * views.decoder).sum((0, 1)))
        else:
            s = (self.weights(v) * value).sum((0, 1))
        return ObjectiveOutput(bound, bound + (s - s.detach()))


class ELBO(Objective):
    """VAE: ELBO averaged over K samples, mean_k log w_k. Its gradient is the VAE's; K = 1 is the
    single-sample VAE. Use as the baseline; with K > 1 it is not tighter, only less noisy."""

    name = "vae"

    def __init__(self, K: int = 1, estimator: str = "reparam"):
        super().__init__(1, K, estimator)

    def bound(self, log_w: Tensor) -> Tensor:
        return log_w.mean((0, 1))

    def weights(self, log_w: Tensor) -> Tensor:
        return torch.full_like(log_w, 1.0 / (self.M * self.K))

    dreg_weights = weights  # the weights do not depend on log_w: DReG = STL = path derivative


class MIWAE(Objective):
    """MIWAE(M, K) (Rainforth et al. 2018): mean over M groups of log mean_k w_mk.
    M = 1 is IWAE(K); K = 1 is the ELBO over M samples."""

    name = "miwae"

    def bound(self, log_w: Tensor) -> Tensor:
        return log_mean_exp(log_w, 1).mean(0)

    def weights(self, log_w: Tensor) -> Tensor:
        return torch.softmax(log_w, 1) / self.M

    def dreg_weights(self, log_w: Tensor) -> Tensor:
        return torch.softmax(log_w, 1).square() / self.M


class IWAE(MIWAE):
    """IWAE(K) (Burda et al. 2015): log mean_k w_k; gradient sum_k w~_k grad log w_k."""

    name = "iwae"

    def __init__(self, K: int = 1, estimator: str = "reparam"):
        super().__init__(1, K, estimator)


class CIWAE(Objective):
    """CIWAE(beta) (Rainforth et al. 2018): beta * ELBO + (1 - beta) * IWAE on the same K samples,
    averaged over M groups. beta = 1 is the ELBO, beta = 0 is IWAE."""

    name = "ciwae"

    def __init__(self, M: int = 1, K: int = 1, beta: float = 0.5, estimator: str = "reparam"):
        super().__init__(M, K, estimator)
        if not isinstance(beta, numbers.Real) or not 0.0 <= beta <= 1.0:
            raise ConfigError(f"ciwae beta must be in [0, 1], got {beta!r}")
        self.beta = float(beta)

    def bound(self, log_w: Tensor) -> Tensor:
        return (self.beta * log_w.mean(1) + (1 - self.beta) * log_mean_exp(log_w, 1)).mean(0)

    def weights(self, log_w: Tensor) -> Tensor:
        return (self.beta / self.K + (1 - self.beta) * torch.softmax(log_w, 1)) / self.M

    def dreg_weights(self, log_w: Tensor) -> Tensor:
        return (self.beta / self.K + (1 - self.beta) * torch.softmax(log_w, 1).square()) / self.M


class VR(Objective):
    """Renyi bound VR-alpha (Li & Turner 2016): 1/(1-alpha) log mean_k w_k^(1-alpha), averaged over
    M groups. alpha = 0 is IWAE, alpha -> 1 the ELBO; alpha < 0 is not a lower bound."""

    name = "vr"

    def __init__(self, M: int = 1, K: int = 1, alpha: float = 0.5, estimator: str = "reparam"):
        super().__init__(M, K, estimator)
        if not isinstance(alpha, numbers.Real) or not math.isfinite(alpha):
            raise ConfigError(f"vr alpha must be a finite number, got {alpha!r}")
        self.alpha = float(alpha)

    def bound(self, log_w: Tensor) -> Tensor:
        tau = 1.0 - self.alpha
        if tau == 0.0:
            return log_w.mean((0, 1))
        return (log_mean_exp(tau * log_w, 1) / tau).mean(0)

    def weights(self, log_w: Tensor) -> Tensor:
        return torch.softmax((1.0 - self.alpha) * log_w, 1) / self.M

    def dreg_weights(self, log_w: Tensor) -> Tensor:
        v = torch.softmax((1.0 - self.alpha) * log_w, 1)
        return (v - (1.0 - self.alpha) * v * (1 - v)) / self.M


class PIWAE(Objective):
    """PIWAE(M, K) (Rainforth et al. 2018): the encoder is trained on MIWAE(M, K), the decoder on
    IWAE(M*K) over the same M*K samples. The reported bound is IWAE(M*K), the decoder's objective.
    Encoder and decoder gradients come from separate views (no term of one leaks into the other)."""

    name = "piwae"

    def __init__(self, M: int = 1, K: int = 1, estimator: str = "reparam"):
        super().__init__(M, K, estimator)
        self.encoder_objective = MIWAE(M, K, estimator)

    @property
    def split(self) -> bool:
        return True

    def bound(self, log_w: Tensor) -> Tensor:
        return log_mean_exp(log_w.flatten(0, 1), 0)

    def weights(self, log_w: Tensor) -> Tensor:
        return torch.softmax(log_w.flatten(0, 1), 0).view_as(log_w)

    def encoder_weights(self, log_w: Tensor) -> Tensor:
        return self.encoder_objective.encoder_weights(log_w)


OBJECTIVES = {cls.name: cls for cls in (ELBO, IWAE, MIWAE, CIWAE, PIWAE, VR)}


def make_objective(
    name: str,
    M: int = 1,
    K: int = 1,
    estimator: str = "reparam",
    beta: float | None = None,
    alpha: float | None = None,
) -> Objective:
    """Build an objective by name, rejecting combinations that make no sense with a clear error.

    ``beta`` belongs to ciwae (default 0.5), ``alpha`` to vr (default 0.5); ``vae`` and ``iwae``
    take M = 1 (use ``miwae`` for M > 1).
    """
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; allowed: {', '.join(OBJECTIVES)}")
    if beta is not None and name != "ciwae":
        raise ConfigError(f"beta={beta!r} applies only to objective 'ciwae', not {name!r}")
    if alpha is not None and name != "vr":
        raise ConfigError(f"alpha={alpha!r} applies only to objective 'vr', not {name!r}")
    if name in ("vae", "iwae"):
        if M != 1:
            raise ConfigError(f"objective {name!r} takes M=1, got M={M!r}; use 'miwae' for M > 1 outer samples")
        return OBJECTIVES[name](K, estimator)
    if name == "ciwae":
        return CIWAE(M, K, 0.5 if beta is None else beta, estimator)
    if name == "vr":
        return VR(M, K, 0.5 if alpha is None else alpha, estimator)
    return OBJECTIVES[name](M, K, estimator)
