"""A rank's share of a global batch (`BatchShard`): what a loss needs to equal one process's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor


@dataclass
class BatchShard:
    """This rank's part of a global batch, for losses that must equal one process's.

    DDP averages gradients over ranks, so a rank's loss is its mean times `weight` =
    rows * world / total: the average of the ranks' gradients is then the gradient of the mean
    over the global batch. A rank whose share is empty (a last batch with fewer rows than ranks)
    holds one stand-in row of weight 0, so that every rank runs the same forward and backward.
    """

    rows: int  # rows of the global batch this rank holds (0: a stand-in row that counts nothing)
    total: int  # rows of the global batch
    offset: int  # global index of this rank's first row
    world: int
    gather: Callable[[Tensor], Tensor]  # (rows, ...) on every rank -> (total, ...), with gradient
    sum_over_ranks: Callable[[Tensor], Tensor]  # a count summed over ranks (no gradient)

    @property
    def weight(self) -> float:
        return self.rows * self.world / self.total
