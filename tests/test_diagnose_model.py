"""Model diagnoses on a tiny synthetic dataset with hashing vectors: the bad configuration (cosine
head without L2 normalisation, scale 10) FAILs with a fix, the defaults pass, the numbers are the
model's own, and the command's exit codes, JSON and plots behave."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diagnose_helpers import synth_with_store, table_rows, wide_console
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.commands import diagnose as diagnose_cmd
from newsrec_cli.commands.diagnose import format_cell
from newsrec_cli.diagnose.api import check_cosine, check_gradients, check_saturation
from newsrec_cli.diagnose.cosine import TEMPERATURES
from newsrec_cli.diagnose.forward import run_model
from newsrec_cli.diagnose.report import Status
from newsrec_cli.diagnose.subject import Subject, from_init, from_run
from newsrec_cli.model.inference import score_impressions
from newsrec_cli.runs.loading import load_run
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings
from newsrec_cli.train import train

runner = CliRunner()
SAMPLE = 48
BAD_TOML = '[train]\nscoring = "cosine"\n\n[diagnose]\nnormalize = false\nscale = 10\n'


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return synth_with_store(tmp_path_factory.mktemp("diagnose"))


def _fresh(
    synth: tuple[Path, Path], scale: float | None = None, normalize: bool | None = None, **train: object
) -> Subject:
    data, store = synth
    return from_init(
        data,
        store=store,
        graph=None,
        train_settings=TrainSettings(device="cpu", **train),
        data_settings=DataSettings(),
        graph_settings=GraphSettings(),
        sample=SAMPLE,
        seed=0,
        scale=scale,
        normalize=normalize,
    )


def _checks(report) -> dict:
    return {c.name: c for c in report.checks}


def test_unnormalised_vectors_times_10_fail_with_saturated_share_near_1(synth) -> None:
    report, _ = check_saturation(_fresh(synth, scale=10.0, normalize=False, scoring="cosine"))
    sat = _checks(report)["sigmoid saturation"]
    assert report.status == Status.FAIL and report.exit_code == 1
    assert sat.status == Status.FAIL
    # > 0.9 (0.946 measured): the centre is the training news' mean, and the sampled impressions are
    # the reported split's, whose fresh news sit off that centre; the verdict is FAIL all the same.
    assert sat.value["saturated"] > 0.9
    # far outside (-5, 5): measured max 368, and a gradient factor of 0.012 (mean sigmoid slope)
    assert sat.value["logit_max"] > 50.0
    assert _checks(report)["gradient factor"].value < 0.05
    assert "cosine" in sat.fix and "scale" in sat.fix
    assert any("cosine" in f for f in report.fixes)


def test_cosine_with_scale_10_also_saturates(synth) -> None:
    report, _ = check_saturation(_fresh(synth, scale=10.0, scoring="cosine"))
    assert _checks(report)["sigmoid saturation"].status > Status.OK
    fix = _checks(report)["sigmoid saturation"].fix
    assert fix.startswith("lower the scale") and "L2-normalise" not in fix


@pytest.mark.parametrize("scoring", ["dot", "cosine"])
def test_default_configuration_passes(synth, scoring: str) -> None:
    report, _ = check_saturation(_fresh(synth, scoring=scoring))
    assert report.status == Status.OK, report.reasons
    logits = report.values["logits"]
    assert logits["min"] > -5 and logits["max"] < 10


def test_logits_are_the_models_own_forward(synth) -> None:
    subject = _fresh(synth)
    out = run_model(subject.model, subject.valid, history=subject.settings.history, batch_size=7)
    imps, i = subject.valid, 3
    # The last `history` clicks, oldest first, left-aligned, built here without recent_history.
    length = subject.settings.history
    clicks = imps.history_of(i)[-length:].astype(np.int64)
    hist = np.zeros((1, length), dtype=np.int64)
    hist[0, : len(clicks)] = clicks
    mask = np.arange(length)[None, :] < len(clicks)
    cands = torch.from_numpy(imps.candidates_of(i).astype(np.int64))[None, :]
    with torch.no_grad():
        direct = subject.model(torch.from_numpy(hist), torch.from_numpy(mask), cands)[0].numpy()
    got = out.logits[imps.candidate_offsets[i] : imps.candidate_offsets[i + 1]]
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-5)
    # the learned head's vectors (the content prior's text part is not one of them)
    assert out.news.shape == (len(imps.candidates), subject.model.news_dim)
    assert out.users.shape == (len(imps), subject.model.news_dim)


def test_cosine_report_numbers(synth) -> None:
    # without the content prior the logits are the head's alone, which the table predicts exactly
    subject = _fresh(synth, scale=10.0, normalize=False, scoring="cosine", content_prior=False)
    report, _ = check_cosine(subject)
    checks = _checks(report)
    assert checks["current temperature"].status == Status.FAIL
    assert checks["current temperature"].value["suggested_cosine_scale"] in TEMPERATURES
    assert 'scoring = "cosine"' in checks["current temperature"].fix
    sims = {row[0]: row for row in next(t for t in report.tables if t.title.startswith("Similarity")).rows}
    cosine = sims["cosine (L2-normalised)"]
    assert -1.0 <= cosine[1] <= cosine[-3] <= 1.0  # min and max
    temps = next(t for t in report.tables if t.title.startswith("Temperatures"))
    rows = {(row[0], row[1]): dict(zip(temps.columns, row, strict=True)) for row in temps.rows}
    assert len(rows) == 3 * len(TEMPERATURES)
    saturated = [rows[("cosine (L2-normalised)", t)]["saturated"] for t in TEMPERATURES]
    assert saturated == sorted(saturated)  # a larger scale never saturates less
    # This head's logits are 10 x the raw dot product: the raw row at t = 10 has their range.
    sat, _ = check_saturation(subject)
    raw10 = rows[("u.n (raw, un-normalised)", 10)]
    assert raw10["logit min"] == pytest.approx(sat.values["logits"]["min"], rel=1e-4)
    assert raw10["logit max"] == pytest.approx(sat.values["logits"]["max"], rel=1e-4)
    norms = {row[0]: row for row in report.tables[0].rows}
    assert norms["users"][1] == len(subject.valid)


def test_dot_head_row_is_the_dot_models_logits(synth) -> None:
    subject = _fresh(synth, scale=7.0, scoring="dot", content_prior=False)
    report, _ = check_cosine(subject)
    sat, _ = check_saturation(subject)
    temps = next(t for t in report.tables if t.title.startswith("Temperatures"))
    head = {row[1]: row for row in temps.rows if row[0] == "dot head (scale 1)"}
    # scale 7 is not in the table: t x similarity is linear, so 7 = 5 + (10 - 5) x 0.4
    lo = head[5][2] + (head[10][2] - head[5][2]) * 0.4
    assert lo == pytest.approx(sat.values["logits"]["min"], rel=1e-4)


def test_gradients_over_a_few_steps(synth) -> None:
    report = check_gradients(_fresh(synth, dim=64, heads=4), steps=2, seed=0)
    assert report.status == Status.OK, report.reasons
    norms = next(t for t in report.tables if t.title.startswith("Gradient norm"))
    assert norms.columns[1:3] == ["step 1", "step 2"]
    flags = {row[0]: row[-1] for row in norms.rows}
    assert flags["news_encoder.text"] == "ok" and flags["user_encoder.attention"] == "ok"
    assert flags["news_encoder.text_missing"] == "unused"  # every news has a vector
    weights = report.values["fusion_weights"]
    assert set(weights) == {"id", "text", "category"}
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(np.isfinite(report.values["losses"]))
    assert _checks(report)["first loss"].status == Status.OK  # about log(1 + K) at the start


def test_gradients_of_the_bad_configuration_flag_the_first_loss(synth) -> None:
    subject = _fresh(synth, scale=10.0, normalize=False, scoring="cosine", dim=64, heads=4)
    report = check_gradients(subject, steps=1, seed=0)
    first = _checks(report)["first loss"]
    assert first.status == Status.FAIL and first.value["ratio"] > 5
    assert report.exit_code == 1


def test_a_trained_run_matches_score_impressions(synth, tmp_path: Path) -> None:
    data, store = synth
    run_dir = tmp_path / "run"
    train(
        data,
        run_dir,
        store=store,
        settings=TrainSettings(device="cpu", max_steps=3, epochs=1, dim=32, heads=4),
    )
    subject = from_run(run_dir, data=None, sample=SAMPLE, seed=0, device="cpu")
    assert subject.origin == f"run {run_dir}"
    out = run_model(subject.model, subject.valid, history=subject.settings.history)
    expected = score_impressions(load_run(run_dir, device="cpu"), subject.dataset, subject.valid)
    np.testing.assert_allclose(out.logits, expected, rtol=1e-4, atol=1e-5)
    result = runner.invoke(app, ["diagnose", "saturation", str(run_dir), "--sample", "16", "--json"])
    # Three steps from the default initialisation: the defaults' saturation check must pass.
    assert json.loads(result.stdout)["verdict"] == "OK" and result.exit_code == 0
    refused = runner.invoke(app, ["diagnose", "saturation", str(run_dir), "--scale", "10"])
    assert refused.exit_code == 2 and "--init" in refused.output


# --- the command -----------------------------------------------------------------------------------


def _cli(synth, tmp_path: Path, toml: str, *args: str) -> list[str]:
    data, store = synth
    config = tmp_path / "settings.toml"
    config.write_text(toml, encoding="utf-8")
    return [
        "--init",
        str(config),
        "--data",
        str(data),
        "--embeddings",
        str(store),
        "--sample",
        str(SAMPLE),
        "--device",
        "cpu",
        *args,
    ]


def test_cli_saturation_exit_codes_and_plot(synth, tmp_path: Path) -> None:
    bad = runner.invoke(
        app, ["diagnose", "saturation", *_cli(synth, tmp_path, BAD_TOML, "--plot", str(tmp_path))]
    )
    assert bad.exit_code == 1, bad.output
    assert "FAIL:" in bad.output and "fix:" in bad.output
    assert (tmp_path / "logits.png").read_bytes()[:4] == b"\x89PNG"
    good = runner.invoke(app, ["diagnose", "saturation", *_cli(synth, tmp_path, "")])
    assert good.exit_code == 0, good.output
    assert "OK:" in good.output


def test_cli_normalize_and_scale_flags_reach_the_model(synth, tmp_path: Path) -> None:
    # The fault of BAD_TOML asked for with flags: without normalisation the logits leave +-scale.
    toml = '[train]\nscoring = "cosine"\ncontent_prior = false\n'  # the head's logits alone
    flags = _cli(synth, tmp_path, toml, "--no-normalize", "--scale", "10", "--json")
    result = runner.invoke(app, ["diagnose", "saturation", *flags])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["values"]["logits"]["max"] > 10
    bounded = runner.invoke(
        app, ["diagnose", "saturation", *_cli(synth, tmp_path, toml, "--scale", "10", "--json")]
    )
    assert json.loads(bounded.stdout)["values"]["logits"]["max"] <= 10 + 1e-4


def test_cli_json_equals_the_tables(synth, tmp_path: Path, monkeypatch) -> None:
    args = ["diagnose", "cosine", *_cli(synth, tmp_path, BAD_TOML)]
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["verdict"] == "FAIL" and data["fixes"]
    monkeypatch.setattr(diagnose_cmd, "console", wide_console())
    text = runner.invoke(app, args).output
    for table in data["tables"]:
        expected = [
            [format_cell(v, c in table["percent"]) for v, c in zip(row, table["columns"], strict=True)]
            for row in table["rows"]
        ]
        assert table_rows(text, table["title"]) == expected, table["title"]


def test_cli_gradients_steps_flag(synth, tmp_path: Path) -> None:
    small = "[train]\ndim = 64\nheads = 4\n"
    result = runner.invoke(
        app, ["diagnose", "gradients", *_cli(synth, tmp_path, small, "--steps", "2", "--json")]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["values"]["losses"]) == 2


def test_cli_plot_without_matplotlib_is_a_clear_error(synth, tmp_path: Path, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = runner.invoke(app, ["diagnose", "cosine", *_cli(synth, tmp_path, "", "--plot", str(tmp_path))])
    assert result.exit_code == 2
    assert "--plot needs matplotlib" in result.output and "pip install matplotlib" in result.output


def test_cli_needs_exactly_one_model_source(synth) -> None:
    assert runner.invoke(app, ["diagnose", "saturation"]).exit_code == 2
    missing_data = runner.invoke(app, ["diagnose", "cosine", "--init", __file__])
    assert missing_data.exit_code == 2


@pytest.mark.slow
def test_reproduces_the_original_failure_as_a_subprocess(synth, tmp_path: Path) -> None:
    args = _cli(synth, tmp_path, BAD_TOML, "--json")
    proc = subprocess.run(
        [sys.executable, "-m", "newsrec_cli", "diagnose", "saturation", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "FAIL"
    sat = next(c for c in report["checks"] if c["name"] == "sigmoid saturation")
    assert sat["value"]["high"] > 0.9  # as above: 0.946 of the reported split's logits saturate


def test_gradients_show_the_candidate_attention_of_a_candidate_aware_model(synth) -> None:
    report = check_gradients(_fresh(synth, dim=32, heads=4, user_encoder="candidate"), steps=2, seed=0)
    attention = _checks(report)["candidate attention"]
    table = {row[0]: row[1] for row in next(t for t in report.tables if t.title.startswith("Candidate")).rows}
    assert table["candidates with 2+ clicks"] > 0
    # a candidate's weights sum to 1 over its clicks, so the largest is at least the uniform one
    assert table["mean largest weight"] >= table["mean uniform weight (1 / clicks)"] - 1e-6
    assert 0.0 < attention.value["entropy_ratio"] <= 1.0 + 1e-6
    nrms = check_gradients(_fresh(synth, dim=32, heads=4), steps=1, seed=0)
    assert "candidate attention" not in _checks(nrms)  # NRMS pools once per user: nothing to show
