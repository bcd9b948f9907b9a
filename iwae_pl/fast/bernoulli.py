"""The Bernoulli pixel term log p(x | h1) without autograd: the fast path of
``model.densities.bernoulli_log_prob``.

It is the largest elementwise term of an evaluation pass ([*S, B, D] logits, D = 784 for MNIST), and
torch's ``softplus`` kernel costs several times an ``exp`` per element on a CPU. Two rewrites do the work:

- softplus(l) = relu(l) - log sigmoid(|l|) with sigmoid(|l|) in [1/2, 1], so the per-pixel logs
  become one log per 16 pixels of their product (``log_prod_``);
- sum_d x_d l_d comes from the [rows, H] side of the visible layer (``_x_dot_logits``), and the logits
  are computed in row blocks of about ROW_BLOCK rows that stay in the CPU caches, written into the
  thread's reused buffer.

With autograd (training) the reference expression runs: a fused training version of this layer (one
autograd function with a hand-written backward) measured 0.95-1.04x the reference step and was removed
(benchmarks/README.md). Same values as the reference up to float rounding (tests/test_fast_paths.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .inplace import autocast_on, has_hooks, mlp_forward
from .workspace import Workspace

_TREE_LEVELS = 4  # products of up to 2^4 = 16 factors in [1/2, 1]: >= 2^-16, exact to a few ulp


def log_prod_(v: Tensor) -> Tensor:
    """sum over the last dimension of log(v), for v in [1/2, 2] (overwrites v): [R, D] -> [R].

    Halves the last dimension by multiplying its two halves in place (while it is even, up to
    ``_TREE_LEVELS`` times), so the log runs on D / 16 products instead of D factors.
    """
    for _ in range(_TREE_LEVELS):
        if v.shape[-1] % 2:
            break
        half = v.shape[-1] // 2
        v = v[..., :half].mul_(v[..., half:])
    return v.log_().sum(-1)


def softplus_sum_(logits: Tensor) -> Tensor:
    """sum_d softplus(l_d) over the last dimension (overwrites logits): [R, D] -> [R].

    sum_d relu(l_d) = (sum_d l_d + sum_d |l_d|) / 2 (``linalg.vector_norm(l, 1)`` is several times
    slower than ``abs_`` and a sum on a CPU).
    """
    total = logits.sum(-1)
    r = logits.abs_()
    total.add_(r.sum(-1)).mul_(0.5)
    return total.sub_(log_prod_(r.sigmoid_()))


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


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over pixels; x [B, D] broadcasts against [*S, B, D].

    With autograd this is the reference expression; without it, the softplus sum of ``softplus_sum_``
    on a copy.
    """
    if torch.is_grad_enabled() and (logits.requires_grad or x.requires_grad):
        return (x * logits).sum(-1) - F.softplus(logits).sum(-1)
    return dot_last(logits, x) - softplus_sum_(logits.clone(memory_format=torch.contiguous_format))


def _x_dot_logits(a: Tensor, xw: Tensor, xb: Tensor) -> Tensor:
    """sum_d x_bd l_sbd for l = a W^T + b, from the [S', B, H] side: a_sb . (W^T x_b) + b . x_b.

    a [S', B, H], xw = x @ W [B, H], xb = x @ b [B] -> [S', B] (no pass over the [S', B, D] logits).
    """
    return torch.einsum("sbh,bh->sb", a, xw).add_(xb)


def _scratch(rows: int, cols: int, like: Tensor) -> Tensor:
    """A [rows, cols] buffer: the thread's reused one up to _SCRATCH_MAX elements, else a fresh one."""
    if rows * cols > _SCRATCH_MAX:
        return like.new_empty(rows, cols)
    return Workspace.local().get("bernoulli scratch", rows, cols, like.dtype, device=like.device)


# The visible block is most of the work of an evaluation pass and its [rows, D] logits the largest
# tensor. Blocks of about ROW_BLOCK rows keep the block's activations and logits in the CPU
# caches (every pass over a DRAM-sized tensor waits on memory); larger blocks allocate as usual.
ROW_BLOCK = 512
_SCRATCH_MAX = 1 << 23  # elements (32 MiB in float32)


def _blocked_applies(block: nn.Module, x: Tensor, t: Tensor) -> bool:
    """Whether the row-blocked evaluation path applies: no autograd, no hooks, no autocast, data
    x [B, D] matching t [*S, B, d1]."""
    return (not torch.is_grad_enabled() and not has_hooks(block) and not autocast_on(t) and x.dim() == 2
            and t.dim() >= 2 and x.shape[0] == t.shape[-2] and x.shape[1] == block.head.out_features
            and x.dtype == t.dtype)


def visible_log_prob(block: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    """``bernoulli_log_prob(x, block(t))`` for a BernoulliBlock (``mlp``, ``head``).

    t [*S, B, d1] -> [*S, B]. Without autograd, row blocks of about ROW_BLOCK rows with their logits
    in a reused buffer; with it (training), the module and the reference density.
    """
    if not _blocked_applies(block, x, t):
        return bernoulli_log_prob(x, block.head(mlp_forward(block.mlp, t)))
    B, D = x.shape
    samples = t.reshape(-1, B, t.shape[-1])  # [S', B, d1]
    head = block.head
    per_block = max(1, ROW_BLOCK // B)  # samples per block
    out = t.new_empty(samples.shape[:2])
    xw, xb = x @ head.weight, x @ head.bias
    for s0 in range(0, samples.shape[0], per_block):
        a = mlp_forward(block.mlp, samples[s0:s0 + per_block])  # [s, B, H]
        rows = a.shape[0] * B
        logits = torch.addmm(head.bias, a.reshape(rows, -1), head.weight.t(), out=_scratch(rows, D, a))
        log_px = _x_dot_logits(a, xw, xb).sub_(softplus_sum_(logits).view(a.shape[0], B))
        out[s0:s0 + per_block] = log_px
    return out.view(t.shape[:-1])
