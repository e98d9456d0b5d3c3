"""The training loop of `newsrec train`, as a plain function tests and notebooks import.

    result = train("data/mind", "runs/nrms", store="data/mind/vectors", settings=TrainSettings())

Phases: read the data and split off validation (the dataset's valid/ folder, else by time, by
impression only for data without usable times) -> build vocabularies, per-news inputs and the
model -> per epoch: a seeded plan of clicks and negatives, steps (learning rate, forward,
backward, clip, step) -> validate (AUC, MRR, nDCG per impression) -> best model.pt, last.pt,
history.jsonl, TensorBoard. `resume=True` continues from last.pt exactly where it stopped.

Set-up lives in `setup.py`, the phases after it in `trainer.py`, the checkpoints in `state.py`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from newsrec_cli.runs.records import TrainCallbacks, TrainJob, TrainResult
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings
from newsrec_cli.train import distributed
from newsrec_cli.train.determinism import ordered_ops
from newsrec_cli.train.lock import run_dir_lock
from newsrec_cli.train.setup import (
    ModelParts,
    RunRequest,
    TrainingData,
    build_parts,
    load_training_data,
    open_run,
)
from newsrec_cli.train.trainer import Trainer

__all__ = ["train", "train_job"]


def train(
    data: str | Path | None,
    out: str | Path,
    *,
    store: str | Path | None = None,
    graph: str | Path | None = None,
    settings: TrainSettings | None = None,
    data_settings: DataSettings | None = None,
    graph_settings: GraphSettings | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: TrainCallbacks | None = None,
) -> TrainResult:
    """`train_job` with the job spelled out as keywords, for scripts, notebooks and tests."""
    job = TrainJob(
        data=None if data is None else Path(data),
        out=Path(out),
        store=None if store is None else Path(store),
        graph=None if graph is None else Path(graph),
        settings=settings or TrainSettings(),
        data_settings=data_settings or DataSettings(),
        graph_settings=graph_settings or GraphSettings(),
        resume=resume,
        overwrite=overwrite,
    )
    return train_job(job, callbacks)


def train_job(job: TrainJob, callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Train a recommender on a MIND dataset and write the run directory `job.out`.

    With `job.resume`, the settings, data, store and graph come from `out`'s config.json (only the
    time budget and hardware settings given here apply) and training continues from last.pt, or
    from step 0 when the run was stopped before its first last.pt. `job.overwrite` deletes the run
    files already in `out` and starts over.

    Started by torchrun (or `newsrec train --nproc N`), every process calls this with the same
    job and trains its share of each batch under DistributedDataParallel; rank 0 writes the run
    directory and calls `callbacks` (see `distributed.py`).
    """
    # -- processes: one, or this rank of a run started by torchrun (RANK, WORLD_SIZE in the env)
    ranks, device = distributed.start(job.settings.device)
    held = ExitStack()  # the run folder's lock, taken by rank 0 in set-up, released however train ends
    try:
        # rank 0 alone shows progress
        shown = (callbacks or TrainCallbacks()) if ranks.main else TrainCallbacks()
        return _train(job, ranks, device, held, shown)
    finally:
        held.close()
        ranks.close()


def _train(
    job: TrainJob, ranks: distributed.Ranks, device: torch.device, held: ExitStack, callbacks: TrainCallbacks
) -> TrainResult:
    def set_up() -> tuple[RunRequest, TrainingData, ModelParts]:
        # -- one writer per run folder, before anything in it is read, cleared or written
        if ranks.main and (not job.resume or job.out.is_dir()):  # no folder to resume: open_run says so
            held.enter_context(run_dir_lock(job.out))
        # -- which run: new, resumed (settings and paths from config.json) or started over
        run = open_run(job, main=ranks.main)
        # -- threads and seeds
        if run.settings.threads:
            torch.set_num_threads(run.settings.threads)
        torch.manual_seed(run.settings.seed)
        # -- data, then the model and its optimizer
        training_data = load_training_data(run)
        return run, training_data, build_parts(run, training_data, device)

    # Every rank sets up; if one fails, all stop (rank 0 says why) instead of waiting for it.
    run, training_data, parts = ranks.agree(set_up)
    trainer = Trainer(run, training_data, parts, device, callbacks, ranks)
    # -- the run directory: new files, or the state last.pt left
    trainer.open_run_dir()
    if trainer.state.finished:
        return trainer.result("already_finished")

    trainer.open_writer()
    try:
        # DDP's own all-reduce (in backward) fails like newsrec's collectives when a peer dies.
        with distributed.collective(ranks), ordered_ops(trainer.determinism):
            trainer.start_ddp()
            callbacks.on_start(trainer.info)
            if run.saved is None and parts.model.prior is not None:
                trainer.validate_untrained()  # epoch 0: the content baseline to beat
            stop = ""
            with _sigint_flag(patient=ranks.distributed) as interrupted:
                while trainer.state.epoch < run.settings.epochs and not stop:
                    steps = trainer.train_epoch(interrupted)  # until the epoch ends or a stop rule
                    stop = trainer.end_epoch(steps, interrupted)  # validate, choose, checkpoints
    finally:
        trainer.close_writer()
    return trainer.result(trainer.state.stop_reason or "epochs")


@contextmanager
def _sigint_flag(patient: bool = False) -> Iterator[threading.Event]:
    """First Ctrl-C asks the loop to stop after the current step; a second one aborts at once.

    `patient` (a distributed rank): every Ctrl-C only asks. A rank gets SIGINT twice, from the
    terminal and from the launcher that forwards it, and all ranks must reach the same step to
    save last.pt; the launcher kills what has not ended 30 s later.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set() and not patient:
            raise KeyboardInterrupt
        flag.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
