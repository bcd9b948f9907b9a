"""The Bernoulli pixel term log p(x | h1) made cheap: the fast path of ``model.densities.bernoulli_log_prob``.

It is the largest elementwise term of every pass ([*S, B, D] logits, D = 784 for MNIST). With autograd
(training), ``bernoulli_log_prob`` uses a hand-written backward; without it (evaluation),
``visible_log_prob`` runs the visible block over row blocks that stay in the CPU caches and writes the
logits into the thread's reused buffer. Same values and gradients as the reference
(tests/test_fast_paths.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .inplace import has_hooks, mlp_forward
from .workspace import Workspace


def dot_last(logits: Tensor, x: Tensor) -> Tensor:
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
        return dot_last(logits, x) - F.softplus(logits).sum(-1)

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


def softplus_(t: Tensor) -> Tensor:
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
    return dot_last(logits, x) - F.softplus(logits).sum(-1)


# Evaluation (no autograd): the visible block is most of the work of a pass and its [rows, D] logits
# the largest tensor. Blocks of about ROW_BLOCK rows keep the block's activations and logits in the CPU
# caches (every pass over a DRAM-sized tensor waits on memory); larger blocks allocate as usual.
ROW_BLOCK = 512
_SCRATCH_MAX = 1 << 23  # elements (32 MiB in float32)


def visible_log_prob(block: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    """``bernoulli_log_prob(x, block(t))`` for a BernoulliBlock (``mlp``, ``head``): t [*S, B, d1] -> [*S, B]."""
    if (torch.is_grad_enabled() or has_hooks(block) or t.dim() < 2 or x.dim() != 2
            or x.shape[0] != t.shape[-2]):
        return bernoulli_log_prob(x, block.head(mlp_forward(block.mlp, t)))
    B, D = x.shape[0], block.head.out_features
    samples = t.reshape(-1, B, t.shape[-1])  # [S', B, d1]
    per_block = max(1, ROW_BLOCK // max(1, B))  # samples per block
    if min(per_block, samples.shape[0]) * B * D > _SCRATCH_MAX:
        return bernoulli_log_prob(x, block.head(mlp_forward(block.mlp, t)))
    out = t.new_empty(samples.shape[:2])
    buf = Workspace.local().get("visible logits", min(per_block, samples.shape[0]) * B, D, t.dtype,
                                device=t.device)
    for s0 in range(0, samples.shape[0], per_block):
        a = mlp_forward(block.mlp, samples[s0:s0 + per_block])  # [s, B, H]
        rows = a.shape[0] * B
        logits = torch.addmm(block.head.bias, a.reshape(rows, -1), block.head.weight.t(), out=buf[:rows])
        logits = logits.view(a.shape[0], B, D)
        torch.sub(dot_last(logits, x), softplus_(logits).sum(-1), out=out[s0:s0 + per_block])
    return out.view(t.shape[:-1])
