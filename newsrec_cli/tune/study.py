"""`tune()`: an Optuna study over `train()`, stored in SQLite, resumable, with K worker processes.

    result = tune(TuneSetup(data=..., store=..., out=Path("tune/mind"), trials=20, ...))

Phases: open (or create) the study and check that it is the same study -> K workers, each a loop
of [under a file lock: fail the trials of dead workers and queue their settings again, count,
ask] -> train the trial into DIR/trials/NNN, reporting each epoch's validation AUC to the pruner
-> tell the outcome -> best.toml from the best complete trial.

Dead workers are found by Optuna's storage heartbeat: a running trial records one every
HEARTBEAT_S seconds, and one silent for GRACE_S is failed and queued again by Optuna's
RetryHeartbeatStaleTrialCallback (on any host that shares the storage). A trial interrupted by
Ctrl-C is failed and queued again by its own worker. A trial counts towards --trials once it is
complete, pruned or failed by its own error, so a rerun of the same command loses none and counts
none twice.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from newsrec_cli import atomic, clock
from newsrec_cli.errors import InputError, NewsrecError, SettingsError
from newsrec_cli.manifests import read_manifest
from newsrec_cli.runs.records import TrainFunction, TrainingInterrupted, TrainJob
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings
from newsrec_cli.tune.callbacks import TrialCallbacks, TrialPruned
from newsrec_cli.tune.events import TuneEvents
from newsrec_cli.tune.space import SearchSpace, parse_space

TUNE_FILE = "tune.json"
TUNE_FORMAT = "newsrec-tune"
TRIALS = "trials"
LOCK = ".tune.lock"
DEFAULT_STUDY = "newsrec"
PRUNERS = ("median", "hyperband", "none")
# Train settings a resumed study may change: where and how fast trials run, not what they train.
HARDWARE = frozenset({"device", "workers", "threads", "eval_batch_size"})
# A running trial's heartbeat; one silent for GRACE_S is a dead worker's. The grace is ten beats,
# so a worker slowed by a busy machine or a waiting SQLite lock is not taken for dead.
HEARTBEAT_S = 2
GRACE_S = 20


@dataclass
class TuneSetup:
    """Everything a worker needs; picklable, so worker processes get it whole."""

    data: Path
    out: Path
    store: Path | None = None
    graph: Path | None = None
    space: SearchSpace | None = None
    train: dict[str, Any] = field(default_factory=dict)  # fixed train settings of every trial
    data_settings: dict[str, Any] = field(default_factory=dict)
    graph_settings: dict[str, Any] = field(default_factory=dict)
    trials: int = 20
    n_jobs: int = 1
    time_budget: float | None = None
    storage: str | None = None  # default: sqlite:///OUT/study.db
    study: str = DEFAULT_STUDY
    pruner: str = "median"
    seed: int = 0
    defaults: bool = True  # trial 0 runs the default settings, the row every trial is read against
    deadline: float | None = None  # wall-clock time (clock.wall()) after which no trial starts

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out / 'study.db').resolve()}"

    def identity(self) -> dict[str, Any]:
        """What makes two runs of `tune` the same study (stored in tune.json)."""
        assert self.space is not None
        return {
            "data": str(Path(self.data).resolve()),
            "embeddings": str(Path(self.store).resolve()) if self.store else None,
            "graph": str(Path(self.graph).resolve()) if self.graph else None,
            "space": self.space.to_dict(),
            "train": {k: v for k, v in self.train.items() if k not in HARDWARE},
            "data_settings": self.data_settings,
            "graph_settings": self.graph_settings,
            "pruner": self.pruner,
            "seed": self.seed,
            "defaults": self.defaults,
        }


# ----------------------------------------------------------------------------- storage


def quiet_optuna() -> None:
    import optuna

    # ERROR: Optuna logs each failed trial as a warning with its traceback; newsrec reports them.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # The defaults trial may lie outside the space (e.g. dim 128 with choices 64, 256): intended.
    warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(url: str) -> Any:
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Workers write at once; SQLite serialises them, so wait for the lock instead of failing.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
            **kwargs,
        )
    except Exception as exc:  # sqlalchemy raises many kinds; the user needs the URL and the reason
        raise SettingsError(f"--storage {url}: cannot open ({str(exc).splitlines()[0]})") from None


def make_sampler(setup: TuneSetup, offset: int) -> Any:
    import optuna

    # Random trials first, then TPE; fewer for a short study so that TPE gets a say.
    startup = min(10, max(2, setup.trials // 3))
    # constant_liar: a worker treats the other workers' running trials as bad, so K workers do
    # not all propose the same point. The seed differs per worker and per restart.
    return optuna.samplers.TPESampler(seed=setup.seed + offset, n_startup_trials=startup, constant_liar=True)


def make_pruner(setup: TuneSetup) -> Any:
    import optuna

    epochs = int(setup.train.get("epochs", TrainSettings().epochs))
    if setup.pruner == "median":
        # Compare from the first epoch on, once two trials have finished.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if setup.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 2), reduction_factor=3)
    return optuna.pruners.NopPruner()


def load_study(setup: TuneSetup, offset: int = 0, storage: Any = None) -> Any:
    import optuna

    return optuna.load_study(
        study_name=setup.study,
        storage=storage or open_storage(setup.storage_url()),
        sampler=make_sampler(setup, offset),
        pruner=make_pruner(setup),
    )


@contextlib.contextmanager
def study_lock(out: Path, timeout: float = -1) -> Iterator[StudyLock]:
    """One worker at a time counts trials and asks for the next one (no overshoot of --trials);
    the holder may release it early (`StudyLock.release`: once its trial is asked). It waits
    `timeout` seconds at most (-1: for ever), then raises filelock.Timeout."""
    out.mkdir(parents=True, exist_ok=True)
    lock = StudyLock(out / LOCK, timeout)
    try:
        yield lock
    finally:
        lock.release()


class StudyLock:
    """The file lock of `study_lock`, held from its start. filelock's (an OS lock on the file, which
    the kernel drops when its process dies), one instance per holder: two holders exclude each other
    whether they are processes or threads of one."""

    def __init__(self, path: Path, timeout: float = -1) -> None:
        self._lock = FileLock(path, timeout=timeout)
        self._lock.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self._lock.release()
            self.held = False


def read_tune_file(out: Path) -> dict[str, Any]:
    path = out / TUNE_FILE
    if not out.is_dir():
        raise InputError("study folder not found", path=out)
    if not path.is_file():
        raise InputError(f"not a study folder (no {TUNE_FILE}); start one with `newsrec tune`", path=out)
    return read_manifest(path, TUNE_FORMAT, f"the {TUNE_FILE} of a study")


def setup_from_file(out: Path) -> TuneSetup:
    """The setup a study folder was created with (for `tune show`)."""
    info = read_tune_file(out)
    ident = info["identity"]
    return TuneSetup(
        data=Path(ident["data"]),
        out=out,
        store=Path(ident["embeddings"]) if ident["embeddings"] else None,
        graph=Path(ident["graph"]) if ident["graph"] else None,
        space=parse_space(ident["space"], str(out / TUNE_FILE)),
        train=ident["train"],
        data_settings=ident["data_settings"],
        graph_settings=ident["graph_settings"],
        trials=info.get("trials", 0),
        storage=info["storage"],
        study=info["study"],
        pruner=ident["pruner"],
        seed=ident["seed"],
        defaults=ident["defaults"],
    )


def _open_or_create(setup: TuneSetup) -> tuple[Any, bool]:
    """(study, created); a rerun must name the same study with the same data, space and settings."""
    import optuna

    out, url = setup.out, setup.storage_url()
    identity = setup.identity()
    path = out / TUNE_FILE
    if path.exists():
        info = read_tune_file(out)
        if info["storage"] != url or info["study"] != setup.study:
            raise SettingsError(
                f"{path}: this folder holds study {info['study']!r} in {info['storage']}; "
                f"rerun with those (or choose another --out)"
            )
        for key, value in identity.items():
            if info["identity"].get(key) != value:
                raise SettingsError(
                    f"{path}: {key} differs from the study's ({json.dumps(info['identity'].get(key))} "
                    f"stored, {json.dumps(value)} now); a resumed study must search the same thing; "
                    "choose another --out for a new study"
                )
    elif (out / TRIALS).is_dir() and any((out / TRIALS).iterdir()):
        raise SettingsError(f"{out / TRIALS}: holds trial runs but no {TUNE_FILE}; choose another --out")
    storage = open_storage(url)
    try:
        optuna.load_study(study_name=setup.study, storage=storage)
        created = False
    except KeyError:
        created = True
    if created and path.exists():
        raise SettingsError(f"{path}: study {setup.study!r} is gone from {url}; choose another --out")
    study = optuna.create_study(
        storage=storage,
        study_name=setup.study,
        direction="maximize",
        sampler=make_sampler(setup, 0),
        pruner=make_pruner(setup),
        load_if_exists=True,
    )
    # The storage may hold a study of another tool with the same name: check its direction.
    if not created and study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise SettingsError(f"--study {setup.study}: exists in {url} and does not maximise")
    if created and setup.defaults:
        assert setup.space is not None
        base = TrainSettings(**setup.train)
        inside = {
            p.name: getattr(base, p.name) for p in setup.space.params if p.contains(getattr(base, p.name))
        }
        study.enqueue_trial(inside, user_attrs={"defaults": True})
    info = {
        "format": TUNE_FORMAT,
        "version": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "storage": url,
        "study": setup.study,
        "trials": setup.trials,
        "identity": identity,
    }
    if path.exists():
        info["created"] = read_tune_file(out).get("created", info["created"])
    atomic.write_text(path, json.dumps(info, indent=2) + "\n")
    return study, created


# ----------------------------------------------------------------------------- dead workers


def recover_stale_trials(study: Any) -> list[int]:
    """Fail the running trials whose heartbeat stopped (their worker died) and queue their
    settings again (Optuna's RetryHeartbeatStaleTrialCallback); the numbers failed."""
    import optuna
    from optuna.trial import TrialState

    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    return [
        t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in running
    ]


def retry_of(trial: Any) -> int | None:
    """The trial this one runs again: a dead worker's (queued by Optuna) or an interrupted one."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    number = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return number if number is not None else trial.user_attrs.get("retry_of")


def retried(trials: list[Any]) -> set[int]:
    """Numbers of the failed trials that were queued again (each runs again as another trial)."""
    return {number for t in trials if (number := retry_of(t)) is not None}


def _queue_again(study: Any, number: int) -> None:
    """Queue an interrupted trial's settings again (it is failed, `retried` set)."""
    trial = study.get_trials(deepcopy=False)[number]
    attrs = {"retry_of": number}
    if trial.user_attrs.get("defaults"):
        attrs["defaults"] = True
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)


def counted(trials: list[Any]) -> int:
    """Trials that count towards --trials: all started ones except those queued again."""
    from optuna.trial import TrialState

    again = retried(trials)
    return sum(
        1
        for t in trials
        if t.state != TrialState.WAITING and not (t.state == TrialState.FAIL and t.number in again)
    )


# ----------------------------------------------------------------------------- one trial


def trial_settings(setup: TuneSetup, params: dict[str, Any]) -> TrainSettings:
    """A trial's settings: its value is its best trained epoch (epoch >= 1), so a study can never
    crown the untrained prior (`choose_untrained` off, also in best.toml)."""
    try:
        return TrainSettings(**{**setup.train, **params, "choose_untrained": False})
    except Exception as exc:  # pydantic's ValidationError: say it in one line
        raise SettingsError(f"settings of this trial: {str(exc).splitlines()[0]}") from None


def _epoch_attrs(trial: Any, records: list[Any], started: float) -> None:
    best = max(
        (r for r in records if r.epoch > 0 and math.isfinite(r.metrics.get("auc", math.nan))),
        key=lambda r: r.metrics["auc"],
        default=None,
    )
    trial.set_user_attr("epochs", sum(1 for r in records if r.epoch > 0))  # trained epochs, not epoch 0
    trial.set_user_attr("seconds", round(time.monotonic() - started, 2))
    if best is not None:
        trial.set_user_attr("best_epoch", best.epoch)
        trial.set_user_attr("metrics", {k: v for k, v in best.metrics.items() if math.isfinite(v)})


class TrialFailed(Exception):
    """A trial failed by its own error, recorded in its "error" attribute; the study goes on."""


class TrialStopped(Exception):
    """A trial was interrupted (Ctrl-C, or its worker's parent died): queued again, the worker stops."""


def run_trial(
    setup: TuneSetup, trial: Any, events: TuneEvents, parent_pid: int | None, train: TrainFunction
) -> float:
    """Train one trial: Optuna's objective. Its validation AUC, or optuna.TrialPruned, TrialFailed
    or TrialStopped; `study.optimize` records the state (and beats the trial's heartbeat)."""
    import optuna

    assert setup.space is not None
    started = time.monotonic()
    defaults = bool(trial.user_attrs.get("defaults"))
    run_dir = setup.out / TRIALS / f"{trial.number:03d}"
    trial.set_user_attr("run_dir", f"{TRIALS}/{run_dir.name}")
    callbacks = TrialCallbacks(trial, prunable=not defaults, parent_pid=parent_pid, events=events)
    try:
        if defaults:
            base = TrainSettings(**setup.train)
            params, outside = setup.space.suggest_defaults(
                trial, {n: getattr(base, n) for n in setup.space.names}
            )
            trial.set_user_attr("outside_space", outside)
        else:
            params = setup.space.suggest(trial)
        events.on_trial_start(trial.number, params, defaults)
        settings = trial_settings(setup, params)
        own_budget = settings.time_budget
        if setup.deadline is not None:
            left = setup.deadline - clock.wall()
            if own_budget is None or left < own_budget:
                settings = settings.model_copy(update={"time_budget": max(left, 1.0)})
        job = TrainJob(
            data=setup.data,
            out=Path(run_dir),
            store=setup.store,
            graph=setup.graph,
            settings=settings,
            data_settings=DataSettings(**setup.data_settings),
            graph_settings=GraphSettings(**setup.graph_settings),
        )
        result = train(job, callbacks)
    except TrialPruned:
        _epoch_attrs(trial, callbacks.records, started)
        trial.set_user_attr("stopped", f"pruned after epoch {callbacks.records[-1].epoch}")
        raise optuna.TrialPruned from None
    except TrainingInterrupted:
        _epoch_attrs(trial, callbacks.records, started)
        _mark_interrupted(trial)
        raise TrialStopped from None
    except KeyboardInterrupt:
        _mark_interrupted(trial)
        raise
    except Exception as exc:  # a failed trial is recorded with its error; the study goes on
        _epoch_attrs(trial, callbacks.records, started)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not isinstance(exc, NewsrecError):
            message = f"{type(exc).__name__}: {message}"
        trial.set_user_attr("error", message)
        raise TrialFailed(message) from None
    _epoch_attrs(trial, callbacks.records, started)
    auc = result.best_metrics.get("auc", math.nan)
    trial.set_user_attr("stopped", result.stopped)
    if result.stopped == "time_budget" and own_budget is None:
        # Cut by the study's --time-budget: not a finished trial, so not a candidate for best.
        trial.set_user_attr("stopped", "the study's --time-budget ran out")
        raise optuna.TrialPruned
    if not math.isfinite(auc):
        message = "no validation AUC (every validation impression has one label class)"
        trial.set_user_attr("error", message)
        raise TrialFailed(message)
    return auc


def _mark_interrupted(trial: Any) -> None:
    trial.set_user_attr("error", "interrupted; its settings were queued again")
    trial.set_user_attr("retried", True)


# ----------------------------------------------------------------------------- workers


def _objective(
    setup: TuneSetup,
    worker: int,
    lock: StudyLock,
    asked: list[Any],
    events: TuneEvents,
    parent_pid: int | None,
    train: TrainFunction,
) -> Callable[[Any], float]:
    """`run_trial` as the objective of one `study.optimize` call, which asks under `lock`."""

    def objective(trial: Any) -> float:
        asked.append(trial)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("worker", worker)
        lock.release()  # asked: the other workers may count and ask now
        return run_trial(setup, trial, events, parent_pid, train)

    return objective


def run_worker(
    setup: TuneSetup,
    worker: int,
    train: TrainFunction,
    events: TuneEvents | None = None,
    parent_pid: int | None = None,
) -> None:
    """Ask, train (with `train`) and tell until the study has --trials trials or the deadline passes."""
    quiet_optuna()
    events = events or TuneEvents()
    storage = open_storage(setup.storage_url())
    waiting_since: float | None = None
    while True:
        asked: list[Any] = []
        with study_lock(setup.out) as lock:
            study = load_study(setup, storage=storage)
            # A seed per worker and per trial count: a resumed or parallel study does not repeat
            # the random start of the first one.
            study.sampler = make_sampler(setup, 1000 * worker + len(study.get_trials(deepcopy=False)))
            if setup.deadline is not None and clock.wall() >= setup.deadline:
                return
            recover_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            if counted(trials) >= setup.trials:
                # A running trial may be a dead worker's, queued again once its heartbeat is
                # stale: wait for that, at most the grace (then it is a live worker's).
                waiting_since = waiting_since or time.monotonic()
                running = any(t.state.name == "RUNNING" for t in trials)
                if not running or time.monotonic() - waiting_since > GRACE_S + 2 * HEARTBEAT_S:
                    return
            else:
                waiting_since = None
                objective = _objective(setup, worker, lock, asked, events, parent_pid, train)
                try:
                    study.optimize(objective, n_trials=1, catch=(TrialFailed,))
                except (TrialStopped, KeyboardInterrupt) as exc:
                    _queue_again(study, asked[0].number)
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    raise TrainingInterrupted(
                        f"interrupted: trial {asked[0].number} is queued again; rerun the same command to resume"
                    ) from None
        if not asked:
            time.sleep(HEARTBEAT_S)
            continue
        events.on_trial_end(study.get_trials(deepcopy=False)[asked[0].number])


def _worker_process(setup: TuneSetup, worker: int, parent_pid: int, train: TrainFunction) -> None:
    """Entry point of a worker process (spawned: a fresh interpreter, no inherited torch state)."""
    import signal

    # Ctrl-C reaches the whole process group; the worker's training loop stops at the next step.
    try:
        run_worker(setup, worker, train, parent_pid=parent_pid)
    except NewsrecError as exc:
        if exc.exit_code != 130:
            raise SystemExit(f"worker {worker}: {exc}") from None
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class TuneRun:
    """What `tune()` did: the study's folder, whether it was new, and the dead trials it re-queued."""

    out: Path
    created: bool
    recovered: list[int]
    seconds: float


def tune(setup: TuneSetup, train: TrainFunction, events: TuneEvents | None = None) -> TuneRun:
    """Run (or resume) the study until it has `setup.trials` trials or its time budget is spent.

    `train` is the training function (the training package's `train`), given by the caller; the
    spawned workers receive it too (a module-level function: it pickles by name).
    """
    import optuna  # noqa: F401  (fail here, not in a worker, when it is missing)

    quiet_optuna()
    events = events or TuneEvents()
    if setup.space is None:
        raise SettingsError("tune: no search space")
    if setup.trials < 1 or setup.n_jobs < 1:
        raise SettingsError("tune: --trials and --n-jobs must be at least 1")
    if setup.pruner not in PRUNERS:
        raise SettingsError(f"tune: --pruner {setup.pruner!r}: allowed: {', '.join(PRUNERS)}")
    started = time.monotonic()
    setup.out.mkdir(parents=True, exist_ok=True)
    with study_lock(setup.out):
        study, created = _open_or_create(setup)
        # Trials a dead worker left running; Optuna queues them again once their heartbeat is stale.
        running = [t.number for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
        recover_stale_trials(study)
    if setup.time_budget is not None:
        setup.deadline = clock.wall() + setup.time_budget
    processes = []
    if setup.n_jobs > 1:
        context = multiprocessing.get_context("spawn")
        for worker in range(1, setup.n_jobs):
            process = context.Process(
                target=_worker_process, args=(setup, worker, os.getpid(), train), daemon=False
            )
            process.start()
            processes.append(process)
    try:
        run_worker(setup, 0, train, events)
        while any(p.is_alive() for p in processes):
            for process in processes:
                process.join(timeout=2.0)
            trials = load_study(setup).get_trials(deepcopy=False)
            events.on_poll(counted(trials), setup.trials)
    finally:
        for process in processes:
            process.join()
    again = retried(load_study(setup).get_trials(deepcopy=False))
    recovered = [number for number in running if number in again]
    return TuneRun(setup.out, created, recovered, time.monotonic() - started)
