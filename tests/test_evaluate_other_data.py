"""`evaluate RUN --data OTHER` never overwrites the run's own metrics.json: metrics of other data
or another split get a file named after them (and the store is checked against the data: see
test_embed_fingerprints.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from evaluate_helpers import NEWS, make_mind, make_store, train_tiny_run
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


def _without_news(data: Path, out: Path, drop: set[str]) -> Path:
    """A copy of `data` whose news.tsv files lack the rows of `drop` (behaviors unchanged)."""
    shutil.copytree(data, out)
    for news in out.glob("*/news.tsv"):
        lines = news.read_text().splitlines(keepends=True)
        news.write_text("".join(line for line in lines if line.split("\t")[0] not in drop))
    return out


def test_news_without_a_row_are_refused_as_train_refuses_them(tmp_path: Path) -> None:
    data, store = make_mind(tmp_path / "mind"), make_store(tmp_path / "store")
    run = tmp_path / "run"
    train_tiny_run(data, run, store)
    lacking = _without_news(data, tmp_path / "lacking", {"N5", "N6"})
    empty = _without_news(data, tmp_path / "empty", set(NEWS))
    # per field: the first line of valid/behaviors.tsv that uses one, how many IDs and lines (§7)
    lacking_where = (
        ":1, field Impressions: 2 news IDs",
        "N5, N6",
        "1 ID on 1 line, first line 2",
        "2 IDs on 2",
    )
    empty_where = (
        ":1, field History: 6 news IDs",
        "N1, N3, N2, N4, N5",
        "3 IDs on 2 lines, first line 1",
        "6 IDs on 3",
    )
    for other, (at, first, history, candidates) in ((lacking, lacking_where), (empty, empty_where)):
        result = runner.invoke(app, ["evaluate", str(run), "--data", str(other), "--json"])
        assert result.exit_code == 1, result.output
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: {other / 'valid' / 'behaviors.tsv'}{at} in the impressions have no row in news.tsv "
            f"(first: {first}); field History: {history}; field Impressions: {candidates} lines, first line 1; "
            "drop them with `newsrec filter --require-embeddings STORE`, or train with --missing learned"
        )
        assert not list(run.glob("metrics-*.json"))
        refused = runner.invoke(
            app, ["train", str(other), "--out", str(tmp_path / "t"), "-e", str(store), "--select-on", "valid"]
        )
        assert refused.exit_code == 1 and "have no row in news.tsv" in refused.stderr


def test_a_run_trained_with_missing_learned_scores_them_and_says_how_many(tmp_path: Path) -> None:
    data, store = make_mind(tmp_path / "mind"), make_store(tmp_path / "store")
    run = tmp_path / "run"
    train_tiny_run(data, run, store, missing="learned")
    lacking = _without_news(data, tmp_path / "lacking", {"N5", "N6"})
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(lacking)])
    assert result.exit_code == 0, result.output
    assert (
        "note: 2 news IDs of the impressions have no row in news.tsv: scored with the run's learned "
        "missing vector (trained with --missing learned)"
    ) in " ".join(result.stderr.split())
