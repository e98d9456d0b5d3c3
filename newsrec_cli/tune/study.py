"""`tune()`: an Optuna study over `train()`, stored in SQLite, resumable, with K worker processes.

    result = tune(TuneSetup(data=..., store=..., out=Path("tune/mind"), trials=20, ...))

Phases: open (or create) the study and check that it is the same study -> K workers, each a loop
of [under a file lock: fail the trials of dead workers and queue their settings again, count,
ask] -> train the trial into DIR/trials/NNN, reporting each epoch's validation AUC to the pruner
-> tell the outcome -> best.toml from the best complete trial.

A trial counts towards --trials once it is complete, pruned or failed by its own error; a trial
whose worker died (kill -9, Ctrl-C) is recorded as failed with `retried` set and its settings are
queued again, so a rerun of the same command loses none and counts none twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import multiprocessing
import os
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newsrec_cli import atomic
from newsrec_cli.errors import InputError, NewsrecError, SettingsError
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings
from newsrec_cli.tune.space import SearchSpace, parse_space

TUNE_FILE = "tune.json"
TUNE_FORMAT = "newsrec-tune"
TRIALS = "trials"
LOCK = ".tune.lock"
DEFAULT_STUDY = "newsrec"
PRUNERS = ("median", "hyperband", "none")
# Train settings a resumed study may change: where and how fast trials run, not what they train.
HARDWARE = frozenset({"device", "workers", "threads", "eval_batch_size"})


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
    deadline: float | None = None  # wall-clock time (time.time()) after which no trial starts

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


class TuneEvents:
    """Hooks the command layer overrides to show progress (only the in-process worker calls them)."""

    def on_trial_start(self, number: int, params: dict[str, Any], defaults: bool) -> None: ...

    def on_epoch_end(self, number: int, record: Any) -> None: ...

    def on_trial_end(self, trial: Any) -> None:
        """`trial` is Optuna's FrozenTrial of the finished trial."""

    def on_poll(self, counted: int, total: int) -> None:
        """While waiting for worker processes: trials counted so far."""


# ----------------------------------------------------------------------------- storage


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
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
        return optuna.storages.RDBStorage(url, **kwargs)
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
def study_lock(out: Path) -> Iterator[None]:
    """One worker at a time counts trials and asks for the next one (no overshoot of --trials)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_tune_file(out: Path) -> dict[str, Any]:
    path = out / TUNE_FILE
    if not out.is_dir():
        raise InputError("study folder not found", path=out)
    if not path.is_file():
        raise InputError(f"not a study folder (no {TUNE_FILE}); start one with `newsrec tune`", path=out)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", path=path) from None
    if not isinstance(info, dict) or info.get("format") != TUNE_FORMAT:
        raise InputError(f"not a {TUNE_FILE} of newsrec tune", path=path)
    return info


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


def _process_token(pid: int) -> str | None:
    """The start time of a process (Linux), so a recycled PID is not taken for the old worker."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, token: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return token is None or _process_token(pid) in (None, token)


def recover_dead_trials(study: Any) -> list[int]:
    """Fail the RUNNING trials of dead workers on this host and queue their settings again.

    Call under `study_lock`: every worker sets its PID right after asking, under the same lock,
    so a RUNNING trial without one here is a worker that died in between.
    """
    from optuna.trial import TrialState

    host = socket.gethostname()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host", host) != host:
            continue  # another machine's worker: no way to tell from here
        pid = attrs.get("pid")
        if pid is not None and _alive(int(pid), attrs.get("pid_token")):
            continue
        _mark_retried(study, trial, "its worker process died (killed?) mid-trial")
        recovered.append(trial.number)
    return recovered


def _mark_retried(study: Any, trial: Any, why: str) -> None:
    from optuna.trial import TrialState

    storage = study._storage  # user attributes of a trial this process did not ask for
    storage.set_trial_user_attr(trial._trial_id, "error", f"{why}; its settings were queued again")
    storage.set_trial_user_attr(trial._trial_id, "retried", True)
    study.tell(trial.number, state=TrialState.FAIL)
    attrs = {"retry_of": trial.number}
    if trial.user_attrs.get("defaults"):
        attrs["defaults"] = True
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)


def counted(trials: list[Any]) -> int:
    """Trials that count towards --trials: all started ones except those queued again."""
    from optuna.trial import TrialState

    return sum(
        1
        for t in trials
        if t.state != TrialState.WAITING and not (t.state == TrialState.FAIL and t.user_attrs.get("retried"))
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


def run_trial(setup: TuneSetup, study: Any, trial: Any, events: TuneEvents, parent_pid: int | None) -> bool:
    """Train one trial and tell Optuna the outcome; False when it was interrupted (stop the worker)."""
    from optuna.trial import TrialState

    from newsrec_cli.train.loop import TrainingInterrupted, train
    from newsrec_cli.tune.callbacks import TrialCallbacks, TrialPruned

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
            left = setup.deadline - time.time()
            if own_budget is None or left < own_budget:
                settings = settings.model_copy(update={"time_budget": max(left, 1.0)})
        result = train(
            setup.data,
            run_dir,
            store=setup.store,
            graph=setup.graph,
            settings=settings,
            data_settings=DataSettings(**setup.data_settings),
            graph_settings=GraphSettings(**setup.graph_settings),
            callbacks=callbacks,
        )
    except TrialPruned:
        _epoch_attrs(trial, callbacks.records, started)
        trial.set_user_attr("stopped", f"pruned after epoch {callbacks.records[-1].epoch}")
        study.tell(trial, state=TrialState.PRUNED)
    except TrainingInterrupted:
        _epoch_attrs(trial, callbacks.records, started)
        _mark_retried(study, study.get_trials(deepcopy=False)[trial.number], "interrupted")
        return False
    except KeyboardInterrupt:
        _mark_retried(study, study.get_trials(deepcopy=False)[trial.number], "interrupted")
        raise
    except Exception as exc:  # a failed trial is recorded with its error; the study goes on
        _epoch_attrs(trial, callbacks.records, started)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not isinstance(exc, NewsrecError):
            message = f"{type(exc).__name__}: {message}"
        trial.set_user_attr("error", message)
        study.tell(trial, state=TrialState.FAIL)
    else:
        _epoch_attrs(trial, callbacks.records, started)
        auc = result.best_metrics.get("auc", math.nan)
        trial.set_user_attr("stopped", result.stopped)
        if result.stopped == "time_budget" and own_budget is None:
            # Cut by the study's --time-budget: not a finished trial, so not a candidate for best.
            trial.set_user_attr("stopped", "the study's --time-budget ran out")
            study.tell(trial, state=TrialState.PRUNED)
        elif not math.isfinite(auc):
            trial.set_user_attr(
                "error", "no validation AUC (every validation impression has one label class)"
            )
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, auc)
    events.on_trial_end(study.get_trials(deepcopy=False)[trial.number])
    return True


# ----------------------------------------------------------------------------- workers


def run_worker(
    setup: TuneSetup, worker: int, events: TuneEvents | None = None, parent_pid: int | None = None
) -> None:
    """Ask, train and tell until the study has --trials trials or the deadline passes."""
    quiet_optuna()
    events = events or TuneEvents()
    storage = open_storage(setup.storage_url())
    while True:
        with study_lock(setup.out):
            study = load_study(setup, storage=storage)
            # A seed per worker and per trial count: a resumed or parallel study does not repeat
            # the random start of the first one.
            study.sampler = make_sampler(setup, 1000 * worker + len(study.get_trials(deepcopy=False)))
            recover_dead_trials(study)
            if setup.deadline is not None and time.time() >= setup.deadline:
                return
            if counted(study.get_trials(deepcopy=False)) >= setup.trials:
                return
            trial = study.ask()
            trial.set_user_attr("pid", os.getpid())
            trial.set_user_attr("pid_token", _process_token(os.getpid()))
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("worker", worker)
        if not run_trial(setup, study, trial, events, parent_pid):
            from newsrec_cli.train.loop import TrainingInterrupted

            raise TrainingInterrupted(
                f"interrupted: trial {trial.number} is queued again; rerun the same command to resume"
            )


def _worker_process(setup: TuneSetup, worker: int, parent_pid: int) -> None:
    """Entry point of a worker process (spawned: a fresh interpreter, no inherited torch state)."""
    import signal

    # Ctrl-C reaches the whole process group; the worker's training loop stops at the next step.
    try:
        run_worker(setup, worker, parent_pid=parent_pid)
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


def tune(setup: TuneSetup, events: TuneEvents | None = None) -> TuneRun:
    """Run (or resume) the study until it has `setup.trials` trials or its time budget is spent."""
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
        recovered = recover_dead_trials(study)
    if setup.time_budget is not None:
        setup.deadline = time.time() + setup.time_budget
    processes = []
    if setup.n_jobs > 1:
        context = multiprocessing.get_context("spawn")
        for worker in range(1, setup.n_jobs):
            process = context.Process(target=_worker_process, args=(setup, worker, os.getpid()), daemon=False)
            process.start()
            processes.append(process)
    try:
        run_worker(setup, 0, events)
        while any(p.is_alive() for p in processes):
            for process in processes:
                process.join(timeout=2.0)
            trials = load_study(setup).get_trials(deepcopy=False)
            events.on_poll(counted(trials), setup.trials)
    finally:
        for process in processes:
            process.join()
    return TuneRun(setup.out, created, recovered, time.monotonic() - started)
