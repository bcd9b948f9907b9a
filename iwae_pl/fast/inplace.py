"""MLPs without autograd with tanh / ReLU applied in place on the Linear outputs: one [rows, width]
tensor less per layer in an evaluation pass.

Same values as ``mlp(t)`` up to float rounding (tests/test_fast_paths.py): nothing but the activation
reads a Linear's output. tanh is computed as 2 sigmoid(2t) - 1 (``tanh_``): torch's CPU tanh kernel
costs about twice its sigmoid kernel per element, and tanh was the largest elementwise cost of L_5000
(benchmarks/README.md); that form is exact to float rounding in absolute terms (|error| < 2 ulp of 1),
not relative to tiny outputs, which is what the next Linear layer sees.

With autograd (training) the modules run as they are: in-place activations and this tanh in training
measured 0.95-1.04x the plain step and were removed (benchmarks/README.md). Modules with forward hooks
(and any global hook) run as usual, so hooks see every module.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def tanh_(t: Tensor) -> Tensor:
    """tanh in place as 2 sigmoid(2t) - 1."""
    return t.mul_(2).sigmoid_().mul_(2).sub_(1)


INPLACE_ACTIVATIONS = {nn.Tanh: tanh_, nn.ReLU: Tensor.relu_}

_GLOBAL_HOOKS = (getattr(nn.modules.module, "_global_forward_hooks", None),
                 getattr(nn.modules.module, "_global_forward_pre_hooks", None))


def autocast_on(t: Tensor) -> bool:
    """Whether autocast (mixed precision) is active for t's device: the fast paths then step aside,
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
    """``mlp(t)``; without autograd (and autocast), with tanh / ReLU in place where that is safe."""
    if torch.is_grad_enabled() or has_hooks(mlp) or autocast_on(t):
        return mlp(t)
    fresh = False  # True when t is a Linear output that nothing else refers to
    for m in mlp:
        inplace = INPLACE_ACTIVATIONS.get(type(m))
        t = inplace(t) if fresh and inplace is not None else m(t)
        fresh = type(m) is nn.Linear
    return t
