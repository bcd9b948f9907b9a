"""MLPs with tanh / ReLU applied in place on the Linear outputs: one [rows, width] tensor less per layer.

Same values and gradients as ``mlp(t)`` (tests/test_fast_paths.py): nothing but the activation reads
a Linear's output, Linear's backward needs only its input, and the backward of tanh / ReLU reads their
result. Modules with forward hooks (and any global hook) run as usual, so hooks see every module.

With autograd (training), tanh is computed as 2 sigmoid(2t) - 1 (``TrainingTanh``): torch's CPU tanh
kernel costs about twice its sigmoid kernel per element. That form is exact to float rounding in
absolute terms (|error| < 2 ulp of 1), not relative to tiny outputs; evaluation keeps torch's tanh.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

INPLACE_ACTIVATIONS = {nn.Tanh: Tensor.tanh_, nn.ReLU: Tensor.relu_}
FUSED_MIN = 1 << 15  # elements; below it a Python-level autograd function costs more than it saves


class TrainingTanh(torch.autograd.Function):
    """tanh(t) = 2 sigmoid(2t) - 1 in place on t (a Linear output nothing else reads).

    Backward (1 - y^2) g from the saved output y, as torch's tanh."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        ctx.mark_dirty(t)
        y = t.mul_(2).sigmoid_().mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)

_GLOBAL_HOOKS = (getattr(nn.modules.module, "_global_forward_hooks", None),
                 getattr(nn.modules.module, "_global_forward_pre_hooks", None))


def autocast_on(t: Tensor) -> bool:
    """Whether autocast (mixed precision) is active for t's device: the fused paths then step aside,
    so that the reference's float32 ops stay float32."""
    try:
        return torch.is_autocast_enabled(t.device.type)
    except TypeError:  # torch < 2.4: no device argument (CUDA only); CPU autocast has its own query
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def has_hooks(module: nn.Module) -> bool:
    """Forward hooks on the module or its children, or global ones (they must see every module run)."""
    if any(_GLOBAL_HOOKS):
        return True
    if module._forward_hooks or module._forward_pre_hooks:
        return True
    return any(has_hooks(m) for m in module._modules.values() if m is not None)


def mlp_forward(mlp: nn.Sequential, t: Tensor) -> Tensor:
    """``mlp(t)``, with tanh / ReLU in place where that is safe."""
    if has_hooks(mlp) or len(mlp) == 0:
        return mlp(t)
    # Rows as one matrix: a Linear on [*S, B, n] returns a *view* of its 2-D product, and an in-place
    # op on a view makes autograd copy the whole gradient (CopySlices) in the backward.
    lead = t.shape[:-1]
    t = t.reshape(-1, t.shape[-1])
    fresh = False  # True when t is a Linear output that nothing else refers to
    training = torch.is_grad_enabled() and not autocast_on(t)
    for m in mlp:
        inplace = INPLACE_ACTIVATIONS.get(type(m))
        if training and type(m) is nn.Tanh and t.numel() >= FUSED_MIN:
            inplace = TrainingTanh.apply
        t = inplace(t) if fresh and inplace is not None else m(t)
        fresh = type(m) is nn.Linear
    return t.view(*lead, t.shape[-1])
