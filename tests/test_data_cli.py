"""`newsrec data synth | stats | validate` through CliRunner and as the installed command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from newsrec_cli.cli import app

runner = CliRunner()
NEWSREC = Path(sys.executable).parent / "newsrec"
SYNTH_ARGS = ["--news", "300", "--users", "200", "--days", "3", "--seed", "1"]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "synth"
    result = runner.invoke(app, ["data", "synth", "--out", str(out), *SYNTH_ARGS])
    assert result.exit_code == 0, result.output
    return out


def run_newsrec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if not NEWSREC.exists():
        pytest.skip(f"the newsrec entry point is not installed at {NEWSREC} (pip install -e .)")
    return subprocess.run(
        [str(NEWSREC), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
    )


@pytest.mark.slow
def test_installed_entry_point(tmp_path: Path) -> None:
    """Two runs of the real command (each pays the CLI's start-up); the rest goes through CliRunner."""
    help_ = run_newsrec("data", "--help")
    assert help_.returncode == 0
    assert all(name in help_.stdout for name in ("synth", "stats", "validate", "download"))
    synth = run_newsrec("data", "synth", "--out", str(tmp_path / "d"), *SYNTH_ARGS, "--json")
    assert synth.returncode == 0, synth.stderr
    summary = json.loads(synth.stdout)
    assert (
        summary["news"] == 300
        and summary["users"] == 200
        and set(summary["impressions"]) == {"train", "valid"}
    )
    stats = runner.invoke(app, ["data", "stats", str(tmp_path / "d"), "--json"])
    splits = json.loads(stats.stdout)["splits"]
    assert splits["train"]["impressions"] == summary["impressions"]["train"]
    assert splits["all"]["candidates"] == summary["candidates"]
    # the same seed through CliRunner gives the same bytes as the installed command
    runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "e"), *SYNTH_ARGS])
    for name in ("train/behaviors.tsv", "valid/news.tsv"):
        assert (tmp_path / "d" / name).read_bytes() == (tmp_path / "e" / name).read_bytes()


def test_synth_flags_env_and_bad_values(tmp_path: Path) -> None:
    env_run = runner.invoke(
        app,
        ["data", "synth", "--out", str(tmp_path / "e"), "--days", "3", "--json"],
        env={"NEWSREC_SYNTH_NEWS": "250", "NEWSREC_SYNTH_USERS": "120"},
    )
    assert env_run.exit_code == 0, env_run.output
    assert json.loads(env_run.stdout)["news"] == 250
    bad = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "f"), "--news", "10"])
    assert bad.exit_code == 2
    assert "synth.news = 10 (from flag)" in bad.stderr and "Traceback" not in bad.output


def test_stats_table(synth_dir: Path) -> None:
    result = runner.invoke(app, ["data", "stats", str(synth_dir)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "Example: newsrec data synth" in runner.invoke(app, ["data", "synth", "--help"]).stdout
    for label in ("click rate", "history p10/p50/p90/p99", "candidate IDs in news.tsv", "news with entities"):
        assert label in result.stdout
    assert "100.00%" in result.stdout


def test_stats_json_on_real_rows(shared_data: Path) -> None:
    result = runner.invoke(app, ["data", "stats", str(shared_data / "llm4rec_mind"), "--json"])
    assert result.exit_code == 0, result.output
    split = json.loads(result.stdout)["splits"]["all"]
    assert split["impressions"] == 1788 and split["news"] == 6068
    assert split["history_in_news"] == 1.0 and split["news_with_entities"] == 0.0
    assert split["days"] == 1


def _broken_copy(synth_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "broken"
    for split in ("train", "valid"):
        (root / split).mkdir(parents=True)
        for name in ("news.tsv", "behaviors.tsv"):
            (root / split / name).write_bytes((synth_dir / split / name).read_bytes())
    lines = (root / "train" / "behaviors.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    fields = lines[1].split("\t")
    lines[1] = "\t".join(fields[:2] + ["yesterday"] + fields[3:])  # line 2: bad time
    fields = lines[4].rstrip("\n").split("\t")
    lines[4] = "\t".join(fields[:4] + [fields[4] + " N99999-0"]) + "\n"  # line 5: unknown candidate
    lines[6] = lines[6].replace("-0", "-7", 1)  # line 7: bad label
    (root / "train" / "behaviors.tsv").write_text("".join(lines), encoding="utf-8")
    return root


def test_validate_reports_every_problem(synth_dir: Path, tmp_path: Path) -> None:
    root = _broken_copy(synth_dir, tmp_path)
    result = runner.invoke(app, ["data", "validate", str(root), "--json"])
    assert result.exit_code == 1
    checks = {(c["name"], c["split"]): c for c in json.loads(result.stdout)["checks"]}
    assert checks[("times (M/D/YYYY h:mm:ss AM)", "train")]["status"] == "FAIL"
    assert "line 2:" in checks[("times (M/D/YYYY h:mm:ss AM)", "train")]["detail"]
    labels = checks[("candidate labels (ID-0 / ID-1)", "train")]
    assert labels["status"] == "FAIL" and "line 7:" in labels["detail"]
    missing = checks[("candidate IDs in news.tsv", "train")]
    assert missing["status"] == "FAIL" and missing["count"] == 1 and "N99999" in missing["detail"]
    assert checks[("times (M/D/YYYY h:mm:ss AM)", "valid")]["status"] == "OK"
    table = runner.invoke(app, ["data", "validate", str(root)], env={"COLUMNS": "200"})
    assert table.exit_code == 1 and "FAILED: " in table.stdout and "3 FAIL" in table.stdout


def test_stats_on_a_bad_file_is_one_line(synth_dir: Path, tmp_path: Path) -> None:
    root = _broken_copy(synth_dir, tmp_path)
    result = runner.invoke(app, ["data", "stats", str(root)])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output
    assert "train/behaviors.tsv:2, field Time" in result.stderr
    skipped = runner.invoke(app, ["data", "stats", str(root), "--on-bad-lines", "skip", "--json"])
    assert skipped.exit_code == 0
    data = json.loads(skipped.stdout)
    assert data["splits"]["train"]["skipped_lines"] == 2
    assert "2 bad lines skipped" in data["skipped"][0]


def test_not_a_dataset(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "stats", str(tmp_path)])
    assert result.exit_code == 1 and "not a MIND dataset" in result.stderr
    # wide: at 80 columns a long temporary path (xdist's popen-gwN/ adds one) wraps the reason
    result = runner.invoke(app, ["data", "validate", str(tmp_path / "nope")], env={"COLUMNS": "160"})
    assert result.exit_code == 1 and "dataset folder not found" in result.stdout


@pytest.mark.parametrize(
    "preset", [["--news", "300", "--users", "200"], ["--preset", "large", "--scale", "0.001"]]
)
def test_synth_refuses_a_folder_that_holds_a_dataset(tmp_path: Path, preset: list[str]) -> None:
    other = tmp_path / "other"
    (other / "train").mkdir(parents=True)
    (other / "train" / "behaviors.tsv").write_text("1\tU1\t11/15/2019 8:00:00 AM\t\tN1-1\n")
    before = (other / "train" / "behaviors.tsv").read_bytes()
    result = runner.invoke(app, ["data", "synth", "--out", str(other), *preset])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"error: {other}: output folder exists and is not empty; pass --force to write into it"
    )
    assert (other / "train" / "behaviors.tsv").read_bytes() == before
    forced = runner.invoke(app, ["data", "synth", "--out", str(other), *preset, "--force"])
    assert forced.exit_code == 0, forced.output
    assert (other / "train" / "behaviors.tsv").read_bytes() != before


def test_validate_fails_a_behaviors_file_of_random_bytes(synth_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "noise"
    root.mkdir()
    (root / "news.tsv").write_bytes((synth_dir / "train" / "news.tsv").read_bytes())
    rng = np.random.default_rng(0)
    noise = rng.integers(0x80, 0x100, size=4000, dtype=np.uint8)  # bytes that start no UTF-8 text
    noise[::40] = ord("\n")
    (root / "behaviors.tsv").write_bytes(noise.tobytes())
    result = runner.invoke(app, ["data", "validate", str(root), "--json"])
    assert result.exit_code == 1, result.output
    failed = {c["name"]: c for c in json.loads(result.stdout)["checks"] if c["status"] == "FAIL"}
    assert set(failed) == {"behaviors.tsv text (UTF-8)", "impressions present"}
    assert failed["behaviors.tsv text (UTF-8)"]["count"] == 100  # 101 lines, the first blank
    assert "line 2: not UTF-8 text" in failed["behaviors.tsv text (UTF-8)"]["detail"]


@pytest.mark.parametrize("layout", ["one folder", "train and valid"])
def test_validate_fails_an_empty_dataset(tmp_path: Path, layout: str) -> None:
    folders = [tmp_path] if layout == "one folder" else [tmp_path / "train", tmp_path / "valid"]
    for folder in folders:
        folder.mkdir(exist_ok=True)
        (folder / "news.tsv").write_text("")
        (folder / "behaviors.tsv").write_text("")
    result = runner.invoke(app, ["data", "validate", str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    failed = [(c["name"], c["detail"]) for c in json.loads(result.stdout)["checks"] if c["status"] == "FAIL"]
    expected = []
    for folder in folders:
        expected += [
            ("news present", f"no news in {folder / 'news.tsv'}"),
            ("impressions present", f"no impressions in {folder / 'behaviors.tsv'}"),
        ]
    assert failed == expected
