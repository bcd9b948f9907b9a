"""The Bernoulli log-likelihood of binary pixels, log p(x | logits) summed over pixels, made cheap.

It is the largest elementwise term of every pass ([*S, B, D] logits, D = 784 for MNIST): these
functions compute it with fewer passes over the logits than the two-term expression, with the same
values and gradients (tests/test_fast_paths.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _dot_last(logits: Tensor, x: Tensor) -> Tensor:
    """sum_d x[b, d] * logits[..., b, d] -> [..., B] without materializing the product.

    A batched matrix-vector product over the B data points (one pass over logits instead of a
    multiply pass and a sum pass); falls back to multiply-and-sum for other shapes.
    """
    if x.dim() == 2 and logits.dim() >= 2 and logits.shape[-2:] == x.shape and logits.dtype == x.dtype:
        B, D = x.shape
        flat = logits.reshape(-1, B, D)  # a view for the usual contiguous logits
        return torch.bmm(flat.transpose(0, 1), x.unsqueeze(-1)).view(B, -1).t().reshape(logits.shape[:-1])
    return (x * logits).sum(-1)


class _BernoulliLogProb(torch.autograd.Function):
    """sum_d x_d l_d - softplus(l_d) with a hand-written backward: d/dl = (x - sigmoid(l)) * grad.

    Autograd of the two-term expression keeps the product x * l, the softplus output and two
    expanded gradients alive and makes five passes over the [*S, B, D] logits in the backward;
    this takes three (sigmoid, subtract, scale, in place), and forward skips the product tensor.
    """

    @staticmethod
    def forward(ctx, x: Tensor, logits: Tensor) -> Tensor:
        ctx.save_for_backward(x, logits)
        return _dot_last(logits, x) - F.softplus(logits).sum(-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, logits = ctx.saved_tensors
        g = grad.unsqueeze(-1)
        grad_logits = None
        if ctx.needs_input_grad[1]:
            grad_logits = torch.sigmoid(logits).sub_(x).mul_(g.neg())
        grad_x = None
        if ctx.needs_input_grad[0]:  # x is data and needs no gradient in this project; kept for generality
            grad_x = logits * g
            while grad_x.dim() > x.dim():
                grad_x = grad_x.sum(0)
            grad_x = grad_x.sum_to_size(x.shape)
        return grad_x, grad_logits


def _softplus_(t: Tensor) -> Tensor:
    """softplus in place (the native kernel writing into its input), for tensors nothing else uses."""
    try:
        return torch._C._nn.softplus(t, 1.0, 20.0, out=t)
    except (AttributeError, RuntimeError, TypeError):  # an older/newer torch without this overload
        return t.copy_(F.softplus(t))


_FUSED_MIN = 1 << 15  # elements; below it the Python-level backward costs more than the passes it saves


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over pixels; x [B, D] broadcasts against [*S, B, D]."""
    if torch.is_grad_enabled() and (logits.requires_grad or x.requires_grad):
        if logits.numel() >= _FUSED_MIN:
            return _BernoulliLogProb.apply(x, logits)
        return (x * logits).sum(-1) - F.softplus(logits).sum(-1)
    return _dot_last(logits, x) - F.softplus(logits).sum(-1)
