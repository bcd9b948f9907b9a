"""Buffers reused across calls, one set per thread: evaluation writes its large intermediates here.

On a CPU a fresh multi-MB tensor costs a page fault per 4 KiB on first touch (on the virtual
machines this project runs on that doubled the time of elementwise work), so the no-autograd
evaluation path (``BernoulliBlock.log_prob``, ``fast.bernoulli``) writes into buffers that live here
instead of allocating per pass. The buffers belong to the thread, not to a module: they are never
pickled or deep-copied with a network, and they go away with the thread.
"""
from __future__ import annotations

import threading

import torch
from torch import Tensor


class Workspace:
    """Named buffers, grown on demand and reused (one per thread: ``Workspace.local()``)."""

    _tls = threading.local()

    def __init__(self) -> None:
        self._buffers: dict[tuple, Tensor] = {}

    @classmethod
    def local(cls) -> "Workspace":
        """This thread's workspace."""
        if not hasattr(cls._tls, "ws"):
            cls._tls.ws = cls()
        return cls._tls.ws

    def get(self, name: str, rows: int, cols: int, dtype: torch.dtype,
            device: torch.device | str = "cpu") -> Tensor:
        """A [rows, cols] buffer (contents undefined)."""
        device = torch.device(device)
        key = (name, cols, dtype, device)
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < rows:
            with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
                buf = self._buffers[key] = torch.empty(rows, cols, dtype=dtype, device=device)
        return buf[:rows]
