"""Distributed training on PyTorch's own engine: torchrun's elastic launcher starts the processes,
DistributedDataParallel averages the gradients. Everything a rank does differently from a single
process goes through `Ranks`, so the loop itself has one code path.

Conventions (README, "Distributed training"):

- One process per rank; `RANK`, `WORLD_SIZE` and `LOCAL_RANK` come from the launcher (torchrun, or
  `newsrec train --nproc N`, which calls the same launcher). gloo on CPU, nccl on CUDA with
  device cuda:LOCAL_RANK.
- The global batch is `--batch-size`, whatever the number of processes: every rank builds the same
  seeded epoch plan and takes its contiguous share of each step's rows (`np.array_split`), so the
  steps, the learning-rate schedule and a resume do not depend on the number of processes.
- Validation (and hard-negative scoring) is sharded by impression; each rank computes the MIND
  metrics of its share, and the per-metric sums are gathered: the means equal one process's.
- Rank 0 alone writes checkpoints, history.jsonl, TensorBoard and talks to the terminal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from newsrec_cli.errors import NewsrecError, SettingsError
from newsrec_cli.evaluate.metrics import MetricResult
from newsrec_cli.model.assembly import resolve_device
from newsrec_cli.objective.shard import BatchShard

T = TypeVar("T")

TIMEOUT_ENV = "NEWSREC_DIST_TIMEOUT"  # seconds a collective may wait for a peer (default 600)


LAUNCHER_ENV = "NEWSREC_NPROC_LAUNCHER"  # set by `newsrec train --nproc` for its workers
PEER_LOST_EXIT = 75  # EX_TEMPFAIL: the run can continue (--resume), the cause is another rank


class PeerLost(NewsrecError):
    """A collective failed: another process of the distributed run died or stopped answering.

    Under `newsrec train --nproc` the launcher names the rank that failed, so this stays quiet.
    """

    exit_code = PEER_LOST_EXIT

    @property
    def quiet(self) -> bool:
        return os.environ.get(LAUNCHER_ENV) == "1"


class RankFailed(NewsrecError):
    """An error of another rank, reported by rank 0 (with that rank's exit code)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class QuietFailure(RankFailed):
    """The error every rank stops on, on a rank other than 0: rank 0 alone prints it."""

    quiet = True

    def __init__(self, exit_code: int) -> None:
        super().__init__("", exit_code)


def launched_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) set by torchrun / the elastic launcher, else None."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise SettingsError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
    return rank, world, local


def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "600")
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{TIMEOUT_ENV}={raw!r}: seconds expected") from None


def shard_sizes(total: int, world: int) -> list[int]:
    """Rows of each rank when `total` rows are split in rank order (np.array_split's sizes)."""
    return [len(part) for part in np.array_split(np.arange(total), world)]


@dataclass
class Ranks:
    """This process's place in the run; `Ranks()` is a plain single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    tensor_group: Any = None  # newsrec's tensor collectives (in-batch negatives), apart from DDP's
    object_group: Any = None  # gloo: small sums and Python objects, on CPU whatever the device
    owns_process_group: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def share(self, n: int) -> np.ndarray:
        """This rank's contiguous share of range(n), in rank order."""
        return np.array_split(np.arange(n, dtype=np.int64), self.world)[self.rank]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        with collective(self):
            dist.all_gather_object(out, obj, group=self.object_group)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over ranks (float64)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        with collective(self):
            dist.all_reduce(tensor, group=self.object_group)
        return tensor.tolist()

    def max(self, value: int) -> int:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.int64)
        with collective(self):
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.object_group)
        return int(tensor.item())

    def agree(self, work: Callable[[], T]) -> T:
        """`work()` on every rank; if it failed on any, every rank stops and rank 0 says why, once."""
        if not self.distributed:
            return work()
        error: NewsrecError | None = None
        result: Any = None
        try:
            result = work()
        except NewsrecError as exc:
            error = exc
        reports = self.gather_objects(None if error is None else (str(error), error.exit_code))
        failed = [(rank, report) for rank, report in enumerate(reports) if report is not None]
        if not failed:
            return result
        if not self.main:
            raise QuietFailure(failed[0][1][1])
        if error is not None:
            raise error
        rank, (message, code) = failed[0]
        raise RankFailed(f"rank {rank}: {message}", code)

    def for_this_rank(self, error: NewsrecError) -> NewsrecError:
        """What this rank raises for an error every rank stops on at once: `error` itself on
        rank 0, which prints it, a quiet one elsewhere (`raise ranks.for_this_rank(error)`)."""
        return error if self.main else QuietFailure(error.exit_code)

    def batch_shard(self, total: int) -> BatchShard:
        """This rank's part of a global batch of `total` rows (see `BatchShard`)."""
        sizes = shard_sizes(total, self.world)
        offset = sum(sizes[: self.rank])
        return BatchShard(
            rows=sizes[self.rank],
            total=total,
            offset=offset,
            world=self.world,
            gather=lambda x: gather_rows(x, sizes, self),
            sum_over_ranks=self._sum_tensor,
        )

    def _sum_tensor(self, value: Tensor) -> Tensor:
        total = value.detach().to(torch.float64).reshape(1).cpu()
        with collective(self):
            dist.all_reduce(total, group=self.object_group)
        return total.to(value.device)

    def close(self) -> None:
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_process_group = False


class _GatherRows(torch.autograd.Function):
    """all_gather of row blocks of different sizes, differentiable.

    Every rank's loss uses every rank's rows (in-batch negatives), so the gradient of a rank's
    own rows is the sum over ranks of the gradients that reach the gathered tensor.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int], rank: int, group: Any) -> Tensor:  # type: ignore[override]
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        most = max(max(sizes), 1)
        padded = x.new_zeros((most, *x.shape[1:]))  # all_gather needs equal shapes
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=group)
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None, None


def gather_rows(x: Tensor, sizes: list[int], ranks: Ranks) -> Tensor:
    """(sizes[rank], ...) on each rank -> (sum(sizes), ...) in rank order; differentiable."""
    with collective(ranks):
        if x.requires_grad:
            return _GatherRows.apply(x, sizes, ranks.rank, ranks.tensor_group)
        with torch.no_grad():
            return _GatherRows.forward(_NoContext(), x, sizes, ranks.rank, ranks.tensor_group)


class _NoContext:
    """Stands for autograd's ctx when gathering without gradient."""


@contextmanager
def collective(ranks: Ranks) -> Iterator[None]:
    """A failed collective (a peer died, or no answer within the timeout) as one clear error."""
    if not ranks.distributed:
        yield
        return
    try:
        yield
    except (RuntimeError, dist.DistError) as exc:
        if isinstance(exc, dist.DistError) or _looks_distributed(exc):
            reason = _short(exc)
            raise PeerLost(
                f"rank {ranks.rank}: another process of the distributed run stopped ({reason}); "
                "the run ends here, continue it with --resume"
            ) from None
        raise


def _short(exc: BaseException) -> str:
    """The gist of a backend error: its first line, without the C++ source location."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # "[.../gloo/transport/tcp/pair.cc:553] "
    return text.split(". ")[0][:160]


def _looks_distributed(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("gloo", "nccl", "connection", "peer", "timed out", "timeout"))


def start(device_setting: str) -> tuple[Ranks, torch.device]:
    """Join the launcher's process group when started by torchrun (else a single process)."""
    launched = launched_world()
    if launched is None or launched[1] <= 1:
        return Ranks(), resolve_device(device_setting)
    rank, world, local = launched
    device = resolve_device(device_setting)
    if device.type == "cuda":
        # One GPU per process: the local rank picks it (cuda:1 etc. given by hand is overridden).
        gpus = torch.cuda.device_count()
        if local >= gpus:
            raise SettingsError(
                f"train: local rank {local} needs cuda:{local}, this machine has {gpus} GPU(s): "
                f"start at most {gpus} processes per node, or train with --device cpu"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise SettingsError(f"train: distributed training runs on cpu or cuda, not {device.type}")
    timeout = timedelta(seconds=timeout_seconds())
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=timeout, **kwargs)
        owns = True
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise SettingsError("train: the process group does not match RANK / WORLD_SIZE")
    ranks = Ranks(
        rank=rank,
        world=world,
        local_rank=local,
        tensor_group=dist.new_group(timeout=timeout),
        object_group=dist.new_group(backend="gloo", timeout=timeout),
        owns_process_group=owns,
        device=device,
    )
    return ranks, device


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The torch seed of a rank's own draws (dropout): distinct per rank, fixed by (seed, rank, step)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def combine_metrics(parts: list[dict[str, Any]]) -> MetricResult:
    """The MIND metrics of all impressions from each rank's share: per-metric means weighted by
    the impressions each mean is over (the same means as one process's, up to float rounding)."""
    names = list(parts[0]["values"])
    values: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name in names:
        count = sum(int(p["counts"].get(name, 0)) for p in parts)
        total = sum(p["values"][name] * p["counts"][name] for p in parts if p["counts"].get(name, 0) > 0)
        counts[name] = count
        values[name] = total / count if count else float("nan")
    return MetricResult(
        values=values,
        counts=counts,
        skipped_auc=sum(int(p["skipped_auc"]) for p in parts),
        impressions=sum(int(p["impressions"]) for p in parts),
        no_click=sum(int(p["no_click"]) for p in parts),
    )
