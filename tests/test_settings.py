"""Settings: precedence defaults < TOML < env < flags, one-line errors, config show/init."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.errors import SettingsError
from newsrec_cli.settings import STAGES, TrainSettings, example_toml, resolve

runner = CliRunner()


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text("[train]\nlr = 0.01\nepochs = 3\nbatch_size = 16\n")
    env = {"NEWSREC_TRAIN_EPOCHS": "7", "NEWSREC_TRAIN_BATCH_SIZE": "32"}
    r = resolve(TrainSettings, config=cfg, env=env, overrides={"batch_size": 8, "dim": None})
    s = r.settings
    assert (s.lr, s.epochs, s.batch_size, s.dim) == (0.01, 7, 8, TrainSettings().dim)
    assert r.sources["lr"].startswith("file")
    assert r.sources["epochs"] == "env NEWSREC_TRAIN_EPOCHS"
    assert r.sources["batch_size"] == "flag"
    assert r.sources["dim"] == "default"


def test_bad_value_names_field_value_and_source(tmp_path: Path) -> None:
    with pytest.raises(
        SettingsError, match=r"train\.lr = '-1' \(from env NEWSREC_TRAIN_LR\): .*greater than 0"
    ):
        resolve(TrainSettings, env={"NEWSREC_TRAIN_LR": "-1"})
    with pytest.raises(SettingsError, match=r"train\.fusion = 'sum' \(from flag\): Input should be 'concat'"):
        resolve(TrainSettings, env={}, overrides={"fusion": "sum"})


def test_unknown_key_and_section(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text("[train]\nlearning_rate = 0.1\n")
    with pytest.raises(SettingsError, match=r"train\.learning_rate: unknown setting"):
        resolve(TrainSettings, config=cfg, env={})
    cfg.write_text("[trian]\nlr = 0.1\n")
    with pytest.raises(SettingsError, match=r"unknown section \[trian\]"):
        resolve(TrainSettings, config=cfg, env={})


def test_example_toml_parses_and_uncommented_equals_defaults() -> None:
    text = example_toml()
    assert tomllib.loads(text) == {s.section: {} for s in STAGES}
    # Uncommenting every `# key = value` line gives back exactly the defaults (a field unset by
    # default shows an example value instead, marked so: no TOML value means "unset").
    setting = re.compile(r"^# [a-z_0-9]+ = ")
    lines = [
        ln[2:] if setting.match(ln) and not ln.endswith("# example; unset by default") else ln
        for ln in text.splitlines()
    ]
    data = tomllib.loads("\n".join(ln for ln in lines if not ln.startswith("#")))
    for stage in STAGES:
        assert stage(**data[stage.section]) == stage()


def test_config_show_json_reports_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text("[embed]\nbatch_size = 16\n")
    monkeypatch.setenv("NEWSREC_TRAIN_LR", "0.005")
    result = runner.invoke(app, ["config", "show", "--config", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["embed"]["batch_size"] == {"value": 16, "source": f"file {cfg}"}
    assert data["train"]["lr"] == {"value": 0.005, "source": "env NEWSREC_TRAIN_LR"}


def test_config_show_bad_env_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSREC_TRAIN_EPOCHS", "many")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "train.epochs = 'many'" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_init_writes_and_refuses_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "newsrec.toml"
    assert runner.invoke(app, ["config", "init", str(out)]).exit_code == 0
    assert out.read_text() == example_toml()
    again = runner.invoke(app, ["config", "init", str(out)])
    assert again.exit_code == 2 and "--force" in again.stderr


@pytest.mark.parametrize("stage", [s for s in STAGES if "seed" in s.model_fields])
@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_every_seed_is_checked_by_the_settings(stage: type, seed: str, tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(f"[{stage.section}]\nseed = {seed}\n")
    result = runner.invoke(app, ["config", "show", "--config", str(cfg)])
    assert result.exit_code == 2, result.output
    assert f"{stage.section}.seed = {seed}" in result.stderr and "Traceback" not in result.output
    assert stage(seed=2**32 - 1).seed == 2**32 - 1


def test_train_negative_seed_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--seed", "-1"])
    assert result.exit_code == 2, result.output
    assert (
        result.stderr.strip()
        == "error: train.seed = -1 (from flag): Input should be greater than or equal to 0"
    )
    assert not (tmp_path / "run").exists()
