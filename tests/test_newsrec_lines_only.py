"""What a user reads on stderr is newsrec's lines only: no torch or onnxruntime warnings on the
way to a refusal or an export, and error messages that name the flag that exists. Real CLI runs
(subprocesses), their stderr captured whole."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from evaluate_helpers import make_mind, make_store, train_tiny_run
from typer.testing import CliRunner

from newsrec_cli.cli import app

NEWSREC = Path(sys.executable).parent / "newsrec"
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lines")
    data, store = make_mind(root / "mind"), make_store(root / "store")
    run = root / "run"
    train_tiny_run(data, run, store)
    return run, data


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo this should never run",))


def _newsrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NEWSREC), *args], capture_output=True, text=True, timeout=300)


def test_tampered_checkpoint_is_refused_without_torchs_pickle_warning(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    run, data = trained
    tampered = tmp_path / "run"
    tampered.mkdir()
    for file in run.iterdir():
        if file.is_file():
            (tampered / file.name).write_bytes(file.read_bytes())
    # protocol 4, as a hand-made pickle would be (torch.save writes 2): torch warns about it first
    (tampered / "model.pt").write_bytes(pickle.dumps({"model": _RunsCode()}, protocol=4))
    result = _newsrec("evaluate", str(tampered), "--data", str(data))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {tampered / 'model.pt'}: refused: the file holds code or objects that are not tensors "
        "or plain values (tampered with, or not written by newsrec); it was not loaded",
    ]
    assert "should never run" not in result.stdout


def test_export_prints_no_onnxruntime_advice(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = trained
    result = _newsrec("export", str(run), "--out", str(tmp_path / "export"))
    assert result.returncode == 0, result.stderr
    assert "pre-processing" not in result.stderr and "WARNING" not in result.stderr
    assert "Warning" not in result.stderr, result.stderr
    assert (tmp_path / "export" / "export.json").is_file()


def test_recommend_names_its_own_flag_for_unknown_ids(trained: tuple[Path, Path]) -> None:
    run, _ = trained
    result = runner.invoke(app, ["recommend", str(run), "--history", "N1 NOPE", "--candidates", "N2 GONE"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: recommend: unknown news IDs: NOPE, GONE (pass --skip-unknown to skip them)"
    )
    skipped = runner.invoke(
        app, ["recommend", str(run), "--history", "N1 NOPE", "--candidates", "N2 GONE", "--skip-unknown"]
    )
    assert skipped.exit_code == 0, skipped.output
    assert "skipped unknown: NOPE GONE" in " ".join(skipped.stdout.split())
