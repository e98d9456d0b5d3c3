"""`newsrec tune` on small synthetic data: a study, a failed trial, pruning, kill -9 and resume,
best.toml retrained to the same figure, the final test taken once, `tune show`, space errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from clock_helpers import FakeClock
from filelock import Timeout
from train_helpers import hashing_store, synth
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.tune.study import study_lock

runner = CliRunner()
# The pruner is tested on its own; elsewhere a pruned trial would make the counts depend on luck.
NO_PRUNING = ("--pruner", "none")
BASE = """
[train]
dim = 16
heads = 2
history = 10
batch_size = 32
threads = 1
epochs = 3
"""
SPACE = """
[tune.space]
lr = { low = 1e-4, high = 1e-2, log = true }
dropout = { low = 0.0, high = 0.4 }
fusion = { choices = ["concat", "gate"] }
"""


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(dataset with train/ and valid/, hashing store, base config): the trials choose their
    epochs on train/'s last day, the final test reports valid/, a later day that chose nothing."""
    root = tmp_path_factory.mktemp("tune")
    data = synth(root)
    store = hashing_store(data, root / "store")
    config = root / "base.toml"
    config.write_text(BASE + SPACE, encoding="utf-8")
    return data, store, config


def tune(*args: object) -> dict:
    result = runner.invoke(app, ["tune", *(str(a) for a in args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_study_completes_writes_best_toml_that_retrains_to_the_reported_auc(
    synthetic: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, store, config = synthetic
    out = tmp_path / "study"
    report = tune(
        data, "-e", store, "--out", out, "--trials", 4, "--config", config, "--final-test", *NO_PRUNING
    )
    assert report["trials_counted"] == 4 and report["counts"] == {"complete": 4}
    trials = {t["number"]: t for t in report["trials"]}
    # trial 0 trains the defaults of the searched settings (attention fusion lies outside the space)
    assert trials[0]["defaults"] and trials[0]["params"] == {
        "lr": 0.001,
        "dropout": 0.2,
        "fusion": "attention",
    }
    assert report["defaults"]["number"] == 0
    best = report["best"]
    assert best["auc"] == max(t["auc"] for t in report["trials"])
    for trial in report["trials"]:
        history = [
            json.loads(line) for line in (out / trial["run_dir"] / "history.jsonl").read_text().splitlines()
        ]
        trained = [r for r in history if r["epoch"] > 0]  # epoch 0: the untrained model (content prior)
        assert len(trained) == trial["epochs"] and 1 <= trial["epochs"] <= 3
        # a trial is worth its best trained epoch, never the untrained epoch 0
        assert trial["auc"] == pytest.approx(max(r["metrics"]["auc"] for r in trained), abs=1e-12)
        assert trial["best_epoch"] >= 1
        assert (out / trial["run_dir"] / "model.pt").is_file()
    assert "optimistic" in report["note"]

    # best.toml is a --config of `newsrec train`, and retrains to the same validation AUC (same seed)
    best_toml = out / "best.toml"
    text = best_toml.read_text()
    assert "[train]" in text and "\nthreads =" not in text and f"validation AUC {best['auc']:.4f}" in text
    result = runner.invoke(
        app,
        [
            "train",
            str(data),
            "-e",
            str(store),
            "--config",
            str(best_toml),
            "--threads",
            "1",
            "-o",
            str(tmp_path / "re"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    retrained = json.loads(result.stdout)
    assert retrained["best_metrics"]["auc"] == pytest.approx(best["auc"], abs=1e-9)

    # the final test ran once, on the best trial; a rerun shows the stored figures, not a second look
    final = report["final_test"]
    assert final["trial"] == best["number"] and final["repeated"] is False
    # ... on valid/, a later day than the one that chose every trial's epochs
    assert final["chosen_on"].startswith("the last day of train/") and final["reported_on"].startswith(
        "valid/"
    )
    again = tune(
        data, "-e", store, "--out", out, "--trials", 4, "--config", config, "--final-test", *NO_PRUNING
    )
    assert again["final_test"]["repeated"] is True
    assert again["final_test"]["test"] == final["test"] and again["trials_counted"] == 4

    # tune show: the same table, the defaults' row beside the best, and PNG charts
    shown = runner.invoke(app, ["tune", "show", str(out), "--plot", str(tmp_path / "plots")])
    assert shown.exit_code == 0, shown.output
    assert "0 defaults" in shown.stdout and f"{best['auc']:.4f}" in shown.stdout
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "history.png",
        "importance.png",
        "parallel.png",
    ]


def test_a_failing_trial_is_recorded_and_the_study_goes_on(
    synthetic: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, store, config = synthetic
    space = tmp_path / "space.toml"
    # dim 16 with 3 heads is refused when the model is built: a trial-time failure, not a space error
    space.write_text(
        "[tune.space]\nheads = { choices = [2, 3] }\nlr = { low = 1e-3, high = 1e-2, log = true }\n"
    )
    report = tune(
        data, "-e", store, "--out", tmp_path / "s", "--trials", 4, "--config", config, "--space", space,
        "--pruner", "none",
    )  # fmt: skip
    failed = [t for t in report["trials"] if t["state"] == "failed"]
    complete = [t for t in report["trials"] if t["state"] == "complete"]
    assert failed and complete and len(failed) + len(complete) == report["trials_counted"] == 4
    assert all(t["params"]["heads"] == 3 and "divisible" in t["error"] for t in failed)
    assert all(t["params"]["heads"] == 2 for t in complete)


def test_a_forced_bad_trial_is_pruned_before_its_last_epoch(
    synthetic: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, store, config = synthetic
    space = tmp_path / "space.toml"
    space.write_text(
        "[tune.space]\nlr = { low = 1e-4, high = 1e-2, log = true }\n"
        "use_text = { choices = [true, false] }\nuse_category = { choices = [true, false] }\n"
        "id_dropout = { low = 0.0, high = 1.0 }\n"
    )
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="newsrec", direction="maximize")
    good = {"lr": 5e-3, "use_text": True, "use_category": True, "id_dropout": 0.5}
    study.enqueue_trial(good)
    study.enqueue_trial({**good, "lr": 3e-3})
    # IDs only, always replaced by "unseen" in training: the model cannot learn to tell news apart
    study.enqueue_trial({"lr": 5e-3, "use_text": False, "use_category": False, "id_dropout": 1.0})
    # patience 3: the good trials run all three epochs even when epoch 0 (the content prior) stays best
    patient = tmp_path / "patient.toml"
    # valid/ chooses (45 impressions, not train/'s last day's 30): the margin below needs them
    patient.write_text(
        config.read_text().replace("epochs = 3", "epochs = 3\npatience = 3")
        + '\n[data]\nselect_on = "valid"\n'
    )
    report = tune(
        data, "-e", store, "--out", tmp_path / "s", "--trials", 3, "--config", patient, "--space", space,
        "--storage", url, "--no-defaults", "--pruner", "median",
    )  # fmt: skip
    trials = {t["number"]: t for t in report["trials"]}
    assert trials[0]["state"] == trials[1]["state"] == "complete"
    assert trials[0]["epochs"] == trials[1]["epochs"] == 3
    bad = trials[2]
    assert bad["state"] == "pruned" and bad["epochs"] == 1 < 3
    assert bad["auc"] < min(trials[0]["auc"], trials[1]["auc"]) - 0.05
    assert bad["stopped"] == "pruned after epoch 1"
    history = (tmp_path / "s" / bad["run_dir"] / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1]  # no text, no content prior: no epoch 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def mid_trial(out: Path, pid: int, cache: dict[str, optuna.Study]) -> bool:
    """Worker `pid` has a running trial past its first trained epoch, another worker one running."""
    try:
        if "study" not in cache:
            if not (out / "tune.json").is_file():
                return False
            cache["study"] = optuna.load_study(study_name="newsrec", storage=f"sqlite:///{out / 'study.db'}")
        running = cache["study"].get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    except Exception:  # the study is being created
        return False
    own = [t for t in running if t.user_attrs.get("pid") == pid and "run_dir" in t.user_attrs]
    other = [t for t in running if t.user_attrs.get("pid") not in (None, pid)]
    for trial in own:
        history = out / trial.user_attrs["run_dir"] / "history.jsonl"
        lines = history.read_text().splitlines() if history.is_file() else []
        if other and any(json.loads(line)["epoch"] >= 1 for line in lines if line.strip()):
            return True
    return False


def test_a_killed_study_resumes_with_no_trial_lost_or_counted_twice(
    synthetic: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, store, config = synthetic
    slow = tmp_path / "slow.toml"
    # small batches: epochs of about a second, time to kill the workers mid-trial
    slow.write_text(config.read_text().replace("batch_size = 32", "batch_size = 4"))
    out = tmp_path / "s"
    args = [data, "-e", store, "--out", out, "--trials", 3, "--config", slow, "--n-jobs", 2, "--pruner", "none"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "newsrec_cli", "tune", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # kill -9 the command (worker 0) in the middle of a trial: past its first trained epoch,
        # while the other worker is mid-trial too
        deadline, cache = time.monotonic() + 300, {}  # generous: spawned workers start slowly
        while not mid_trial(out, process.pid, cache):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("never saw both workers mid-trial")
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    url = f"sqlite:///{(out / 'study.db').resolve()}"
    study = optuna.load_study(study_name="newsrec", storage=url)
    # the orphaned worker process notices that its parent is gone, records its trial as failed
    # and queued again, and exits; the killed command's own trial stays RUNNING until the rerun
    children = {
        t.user_attrs["pid"] for t in study.get_trials() if t.user_attrs.get("pid", process.pid) != process.pid
    }
    stop = time.monotonic() + 120
    while any(alive(pid) for pid in children) and time.monotonic() < stop:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in children)
    before = study.get_trials()
    running = [t.number for t in before if t.state.name == "RUNNING"]
    assert running and all(t.user_attrs["pid"] == process.pid for t in before if t.number in running)
    stopped = [t.number for t in before if t.state.name == "FAIL" and t.user_attrs.get("retried")]
    assert all(t.user_attrs["pid"] != process.pid for t in before if t.number in stopped)
    killed = {t.number: t for t in before if t.number in running + stopped}

    report = tune(*args)  # the same command, again
    trials = {t["number"]: t for t in report["trials"]}
    requeued = [t for t in report["trials"] if t["retried"]]
    assert sorted(t["number"] for t in requeued) == sorted(killed)
    assert all(t["state"] == "failed" for t in requeued)
    for number in killed:
        retry = [t for t in report["trials"] if t["retry_of"] == number]
        assert len(retry) == 1 and retry[0]["state"] == "complete"
        assert (
            retry[0]["params"] == trials[number]["params"]
            and retry[0]["defaults"] == trials[number]["defaults"]
        )
    finished = [t for t in report["trials"] if t["state"] == "complete"]
    assert len(finished) == report["trials_counted"] == 3
    assert len(report["trials"]) == 3 + len(killed)


TAKE_LOCK = """
import sys
from pathlib import Path
from filelock import Timeout
from newsrec_cli.tune.study import study_lock
try:
    with study_lock(Path(sys.argv[1]), timeout=0):
        print("taken")
except Timeout:
    print("refused")
"""


def test_the_study_lock_excludes_a_second_writer(tmp_path: Path) -> None:
    """While one worker counts and asks, another (a process, or a thread of the same one) cannot;
    once it releases (early, as a worker does when its trial is asked), the other can."""

    def second_process() -> str:
        result = subprocess.run(
            [sys.executable, "-c", TAKE_LOCK, str(tmp_path)], capture_output=True, text=True, check=True
        )
        return result.stdout.strip()

    with study_lock(tmp_path) as lock:
        assert second_process() == "refused"
        with pytest.raises(Timeout), study_lock(tmp_path, timeout=0):
            pass
        lock.release()
        assert second_process() == "taken"
        with study_lock(tmp_path, timeout=0) as again:
            assert again.held
    assert second_process() == "taken"


def test_the_study_imports_and_locks_where_fcntl_does_not_exist(tmp_path: Path) -> None:
    """As on Windows: `import fcntl` fails, and the study still imports and takes its lock."""
    no_fcntl = "import sys\nsys.modules['fcntl'] = None  # import fcntl raises ImportError\n"
    result = subprocess.run(
        [sys.executable, "-c", no_fcntl + TAKE_LOCK, str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == "taken", result.stderr[-500:]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("learning_rate = { low = 1e-4, high = 1e-2 }", "learning_rate: not a train setting; allowed: "),
        ("fusion = { low = 1, high = 2 }", "fusion: not a numeric setting"),
        ('fusion = { choices = ["concat", "sum"] }', "fusion = 'sum'"),
        ("threads = { low = 1, high = 4 }", "threads: not searchable"),
        ("dropout = { low = 0.5, high = 0.1 }", "dropout: low (0.5) must be below high (0.1)"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_file_line_and_key(
    synthetic: tuple[Path, Path, Path], tmp_path: Path, entry: str, message: str
) -> None:
    data, store, config = synthetic
    space = tmp_path / "space.toml"
    space.write_text(f"# a space\n[tune.space]\nlr = {{ low = 1e-4, high = 1e-2, log = true }}\n{entry}\n")
    result = runner.invoke(
        app, ["tune", str(data), "-e", str(store), "-o", str(tmp_path / "s"), "--space", str(space)]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert f"{space}:4: [tune.space] {message}" in lines[0].replace("\n", "")
    assert not (tmp_path / "s").exists()


def test_a_rerun_with_another_space_is_refused(synthetic: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, store, config = synthetic
    out = tmp_path / "s"
    tune(data, "-e", store, "--out", out, "--trials", 1, "--config", config)
    space = tmp_path / "space.toml"
    space.write_text("[tune.space]\nlr = { low = 1e-4, high = 1e-1, log = true }\n")
    result = runner.invoke(
        app,
        ["tune", str(data), "-e", str(store), "-o", str(out), "--config", str(config), "--space", str(space)],
    )
    assert result.exit_code == 2 and "space differs from the study's" in result.output


def test_the_default_space_checks_out_and_is_printed() -> None:
    result = runner.invoke(app, ["tune", "space"])
    assert result.exit_code == 0 and "[tune.space]" in result.stdout
    from newsrec_cli.tune.space import load_space

    assert {"lr", "dim", "dropout", "negatives", "fusion", "user_encoder", "loss"} <= set(
        load_space(None).names
    )


def test_the_time_budget_stops_the_study_and_a_cut_trial_is_not_a_best(
    synthetic: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, store, config = synthetic
    # A fake clock on which each training step takes one second: the 10-second budget is 10
    # steps, one epoch and a part of the 50 (no early stopping), however busy the machine is.
    FakeClock(monkeypatch, per_step=1.0)
    long = tmp_path / "long.toml"
    long.write_text(config.read_text().replace("epochs = 3", "epochs = 50\npatience = 50"))
    args = [
        "tune",
        str(data),
        "-e",
        str(store),
        "-o",
        str(tmp_path / "s"),
        "--config",
        str(long),
        "--trials",
        "5",
    ]
    result = runner.invoke(app, [*args, "--time-budget", "10", "--json"])
    assert result.exit_code == 1 and "no trial completed" in result.output
    shown = runner.invoke(app, ["tune", "show", str(tmp_path / "s"), "--json"])
    report = json.loads(shown.stdout)
    assert report["trials_counted"] == 1 and report["best"] is None
    (trial,) = report["trials"]
    assert trial["state"] == "pruned" and trial["stopped"] == "the study's --time-budget ran out"
    assert 1 <= trial["epochs"] < 50, trial["epochs"]
    history = [json.loads(line) for line in (tmp_path / "s" / trial["run_dir"] / "history.jsonl").open()]
    assert history[-1]["partial"] and history[-1]["global_step"] == 10  # cut by the budget at step 10


LEARNING_OFF = """
[tune.space]
lr = { low = 1e-12, high = 2e-12, log = true }
"""


def test_a_study_never_crowns_the_untrained_prior(synthetic: tuple[Path, Path, Path], tmp_path: Path) -> None:
    # Learning switched off: every trained epoch is the untrained model give or take rounding, so
    # only the rule decides. The trial is worth its best trained epoch and model.pt holds it.
    data, store, _ = synthetic
    config = tmp_path / "off.toml"
    config.write_text(BASE.replace("epochs = 3", "epochs = 1") + LEARNING_OFF, encoding="utf-8")
    out = tmp_path / "off"
    report = tune(data, "-e", store, "--out", out, "--trials", 1, "--config", config, *NO_PRUNING)
    (trial,) = report["trials"]
    history = [
        json.loads(line) for line in (out / trial["run_dir"] / "history.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in history] == [0, 1] and not history[0]["best"]
    assert trial["best_epoch"] == 1 and trial["auc"] == history[1]["metrics"]["auc"]
    saved = torch.load(out / trial["run_dir"] / "model.pt", weights_only=True)
    assert saved["epoch"] == 1
    assert "choose_untrained = false" in (out / "best.toml").read_text()
