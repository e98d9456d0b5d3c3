"""`newsrec train --nproc N`: N processes on this machine through PyTorch's elastic launcher.

The launcher is `torch.distributed.run` (torchrun) itself, called in-process with a standalone
rendezvous and no restarts: each worker runs `python -m newsrec_cli.commands.train_worker
REQUEST`, where REQUEST is a JSON file of the resolved settings and paths, so the workers train
with exactly what this process resolved (flags, TOML, environment). If a worker fails, the
launcher stops the others and this raises one NewsrecError that names the rank.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from newsrec_cli import atomic
from newsrec_cli.errors import NewsrecError
from newsrec_cli.runs.files import LAST
from newsrec_cli.train.distributed import LAUNCHER_ENV, PEER_LOST_EXIT
from newsrec_cli.train.state import saved_position

WORKER_MODULE = "newsrec_cli.commands.train_worker"


class WorkerFailed(NewsrecError):
    """A worker process of `--nproc` ended with an error or was killed."""


class WorkerReported(NewsrecError):
    """Rank 0 failed after printing why: exit with its code, print nothing more."""

    quiet = True

    def __init__(self, exit_code: int) -> None:
        super().__init__("")
        self.exit_code = exit_code


def launch(nproc: int, request: dict[str, Any], *, out: Path, threads: int | None = None) -> None:
    """Run `nproc` training workers on this machine and wait for them (see the module doc)."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    with tempfile.TemporaryDirectory(prefix="newsrec-launch-") as folder:
        path = Path(folder) / "request.json"
        atomic.write_text(path, json.dumps(request))
        args = torchrun.get_args_parser().parse_args(
            [
                "--standalone",  # rendezvous on localhost, a free port
                f"--nproc-per-node={nproc}",
                "--max-restarts=0",  # a failed rank ends the job; --resume continues it
                "--module",
                WORKER_MODULE,
                str(path),
            ]
        )
        with _worker_env(nproc, threads), _quiet_launcher():
            try:
                torchrun.run(args)
            except ChildFailedError as exc:
                raise _failure(exc, nproc, out) from None
            except SignalException as exc:
                # Ctrl-C (or SIGTERM): the launcher passed it on; rank 0 saved last.pt at the step
                # all ranks stopped on and said so, unless it was killed first.
                code = 130 if exc.sigval == signal.SIGINT else 128 + int(exc.sigval)
                raise WorkerReported(code) from None


def _failure(exc: Any, nproc: int, out: Path) -> NewsrecError:
    """One error for the failed job: silent when rank 0 printed its own, else the rank that
    failed first (not the ones that only lost it, or that the launcher stopped) and what last.pt
    holds."""
    failures = exc.failures  # {rank: ProcessFailure}, in the order the launcher saw them end
    zero = failures.get(0)
    if zero is not None and zero.exitcode > 0 and zero.exitcode != PEER_LOST_EXIT:
        return WorkerReported(zero.exitcode)  # a NewsrecError of rank 0: it printed the one line already
    rank = first_failure(failures)
    failure = failures[rank]
    code = failure.exitcode
    how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
    return WorkerFailed(
        f"train --nproc {nproc}: rank {rank} (pid {failure.pid}) {how} first; the other ranks were "
        f"stopped. {saved_position(out / LAST)}: continue with "
        f"newsrec train --resume --out {out} --nproc {nproc}"
    )


def first_failure(failures: dict[int, Any]) -> int:
    """The rank whose end caused the others': an error exit before a signal (a crash, or a kill
    from outside), before a rank that only lost its peer (PEER_LOST_EXIT); then the earliest.

    The launcher stamps failures in whole seconds, so a rank it stopped with SIGTERM after the
    killed one often has the same timestamp; it records them in the order it saw them end (the
    dead ones, then those it stopped), which breaks the tie.
    """

    def cause(code: int) -> int:
        return 2 if code == PEER_LOST_EXIT else 1 if code < 0 else 0

    order = {rank: i for i, rank in enumerate(failures)}
    return min(failures, key=lambda r: (cause(failures[r].exitcode), failures[r].timestamp, order[r]))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@contextmanager
def _worker_env(nproc: int, threads: int | None) -> Iterator[None]:
    """What the workers inherit: their share of the cores (torchrun's own default is one thread)
    and a mark that this launcher reports failures (a rank that only lost a peer stays quiet)."""
    added = {LAUNCHER_ENV: "1"}
    if "OMP_NUM_THREADS" not in os.environ:
        added["OMP_NUM_THREADS"] = str(threads or max(1, (os.cpu_count() or 1) // nproc))
    previous = {key: os.environ.get(key) for key in added}
    os.environ.update(added)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _quiet_launcher() -> Iterator[None]:
    """The launcher's own log lines (rendezvous, SIGTERM to the other ranks, the failure table)
    would bury the one-line error: only critical ones while the workers run."""
    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith("torch.distributed")
    ]
    loggers.append(logging.getLogger("torch.distributed"))
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
