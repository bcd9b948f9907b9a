"""The one mechanism for statistics across processes: torchmetrics states with a ``dist_reduce_fx``.

The module's ``val/*`` and ``test/*`` means are ``MeanMetric``s; the callbacks' sufficient statistics
are ``Sums`` (float64 sums, ``dist_reduce_fx="sum"``) and predictions are ``PerPoint`` (per-point
values, ``dist_reduce_fx="cat"``). ``compute()`` reduces over all processes (a collective: every
process calls it) and is the identity on one process. With evaluation sharded without padding
(``data.ShardSampler``) every point enters exactly once, so the reduced values equal one process's.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class Sums(Metric):
    """Named float64 sums of fixed shapes, summed over updates and over processes.

    Args:
        shapes: name -> shape of each sum, e.g. ``{"moments": (3, d)}``.
    """

    full_state_update = False

    def __init__(self, shapes: Mapping[str, Sequence[int]]):
        super().__init__()
        self.names = list(shapes)
        for name, shape in shapes.items():
            self.add_state(name, default=torch.zeros(tuple(shape), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, **values: Tensor) -> None:
        for name, value in values.items():
            state = getattr(self, name)
            setattr(self, name, state + value.to(state))

    def compute(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self.names}


class PerPoint(Metric):
    """Per-point values keyed by dataset index, gathered from all processes and put in index order.

    ``compute()`` returns (index [N] int64, values [N] float64) sorted by index; an index seen twice
    (a sampler that pads or repeats) is an error rather than a silently biased result.
    """

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, values: Tensor) -> None:
        self.index.append(index.detach().long().flatten())
        self.values.append(values.detach().to(torch.float64).flatten())

    def compute(self) -> tuple[Tensor, Tensor]:
        if isinstance(self.index, list) and not self.index:  # nothing seen (after a sync: tensors)
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.float64)
        index, values = dim_zero_cat(self.index).long(), dim_zero_cat(self.values)
        order = torch.argsort(index, stable=True)
        index, values = index[order], values[order]
        if len(index) > 1 and bool((index[1:] == index[:-1]).any()):
            repeated = index[1:][index[1:] == index[:-1]][:5].tolist()
            raise RuntimeError(f"data points evaluated more than once (indices {repeated}); the sampler must "
                               f"not pad or repeat points")
        return index, values
