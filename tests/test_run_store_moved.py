"""A run whose text store has moved: the error says where the path comes from and which option
gives the new place; `--run-embeddings` gives it to evaluate, diagnose, export, serve's engine and
recommend, checked to be the store the run was trained with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from evaluate_helpers import NEWS, make_mind, make_store, train_tiny_run
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.embed.store import commit, new_meta
from newsrec_cli.serve.engine import Engine, ServeConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """(run, data, the store where it is now, the path config.json still names)."""
    root = tmp_path_factory.mktemp("moved")
    data, store = make_mind(root / "mind"), make_store(root / "store")
    run = root / "run"
    train_tiny_run(data, run, store)
    now = root / "elsewhere" / "store"
    now.parent.mkdir()
    shutil.move(store, now)
    return run, data, now, store


def test_the_error_names_config_json_and_the_option(moved: tuple[Path, Path, Path, Path]) -> None:
    run, data, _, old = moved
    expected = (
        f"error: {old}: the run's text store {old} (named in {run / 'config.json'}) is not there; "
        "if it moved, give where it is now with --run-embeddings STORE"
    )
    for args in (
        ["evaluate", str(run), "--data", str(data)],
        ["diagnose", "saturation", str(run), "--data", str(data)],
        ["recommend", str(run), "--history", "N1"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.strip().splitlines()[-1] == expected, args


def test_the_moved_store_is_given_on_the_command_line(moved: tuple[Path, Path, Path, Path]) -> None:
    run, data, now, _ = moved
    result = runner.invoke(
        app, ["evaluate", str(run), "--data", str(data), "--run-embeddings", str(now), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"][0]["name"] == f"model {run.name}"
    diagnosed = runner.invoke(
        app, ["diagnose", "saturation", str(run), "--data", str(data), "--run-embeddings", str(now)]
    )
    assert diagnosed.exit_code in (0, 1) and "Traceback" not in diagnosed.output  # OK/WARN/FAIL, not an error
    assert "is not there" not in diagnosed.output
    recommended = runner.invoke(app, ["recommend", str(run), "--history", "N1", "--run-embeddings", str(now)])
    assert recommended.exit_code == 0, recommended.output
    engine = Engine(ServeConfig(source=str(run), run_store=str(now)))
    engine.load()
    assert engine.ready and len(engine.table) == len(NEWS)


def test_another_store_in_its_place_is_refused(moved: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    run, data, now, _ = moved
    other = tmp_path / "other"
    ids = list(NEWS)
    signature = {
        "kind": "news",
        "provider": "hashing",
        "model": "another model",
        "dimension": 3,
        "template": "{title}",
        "normalized": False,
    }
    commit(other, ids, np.ones((len(ids), 3), np.float32), new_meta(signature))
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "--run-embeddings", str(other)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {other}: is not the store this run was trained with (model 'another model', the run's "
        f"'hand-made', as {run / 'config.json'} records)"
    )
