"""`evaluate RUN --data OTHER` never overwrites the run's own metrics.json: metrics of other data
or another split get a file named after them (and the store is checked against the data: see
test_embed_fingerprints.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from evaluate_helpers import make_mind, make_store
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.settings import DataSettings, TrainSettings
from newsrec_cli.train import train

runner = CliRunner()


def test_metrics_of_other_data_get_their_own_file(tmp_path: Path) -> None:
    data, store = make_mind(tmp_path / "mind"), make_store(tmp_path / "store")
    run = tmp_path / "run"
    settings = TrainSettings(dim=8, heads=2, epochs=1, device="cpu", threads=1)
    # train/ is 4 impressions of one day, too few to hold any out: valid/ chooses (and is reported)
    train(data, run, store=store, settings=settings, data_settings=DataSettings(select_on="valid"))
    own = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "--json"])
    assert own.exit_code == 0, own.output
    assert [Path(p).name for p in json.loads(own.stdout)["written"]] == ["metrics.json"]
    saved = (run / "metrics.json").read_text()
    # Other data: the same news and texts, one impression fewer.
    other = tmp_path / "other"
    shutil.copytree(data, other)
    lines = (other / "valid" / "behaviors.tsv").read_text().splitlines()
    (other / "valid" / "behaviors.tsv").write_text("".join(line + "\n" for line in lines[:2]))
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(other), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["impressions"] == 2
    written = Path(report["written"][0])
    assert written.parent == run and written.name.startswith("metrics-other-auto-")
    assert json.loads(written.read_text())["impressions"] == 2
    assert (run / "metrics.json").read_text() == saved  # the run's own metrics are untouched
    # --out still chooses the folder, and the plain name.
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(other), "--out", str(out), "--json"])
    assert result.exit_code == 0 and json.loads((out / "metrics.json").read_text())["impressions"] == 2
