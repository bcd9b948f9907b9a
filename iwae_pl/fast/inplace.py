"""MLPs with tanh / ReLU applied in place on the Linear outputs: one [rows, width] tensor less per layer.

Same values and gradients as ``mlp(t)`` (tests/test_fast_paths.py): nothing but the activation reads
a Linear's output, Linear's backward needs only its input, and the backward of tanh / ReLU reads their
result. Modules with forward hooks (and any global hook) run as usual, so hooks see every module.
"""
from __future__ import annotations

from torch import Tensor, nn

INPLACE_ACTIVATIONS = {nn.Tanh: Tensor.tanh_, nn.ReLU: Tensor.relu_}

_GLOBAL_HOOKS = (getattr(nn.modules.module, "_global_forward_hooks", None),
                 getattr(nn.modules.module, "_global_forward_pre_hooks", None))


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
    for m in mlp:
        inplace = INPLACE_ACTIVATIONS.get(type(m))
        t = inplace(t) if fresh and inplace is not None else m(t)
        fresh = type(m) is nn.Linear
    return t.view(*lead, t.shape[-1])
