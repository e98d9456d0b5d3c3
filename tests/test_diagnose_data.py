"""`newsrec diagnose data` on the real MIND fixtures (against direct counts) and on hand-made faults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from diagnose_helpers import (
    ENTITY,
    news_row,
    synth_with_store,
    table_rows,
    wide_console,
    write_mind,
    write_store,
)
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.commands import diagnose as diagnose_cmd
from newsrec_cli.commands.diagnose import format_cell
from newsrec_cli.diagnose.api import check_data
from newsrec_cli.diagnose.report import Report, Status

runner = CliRunner()


def _checks(report: Report) -> dict:
    return {c.name: c for c in report.checks}


def _table(report: Report, title: str) -> dict:
    table = next(t for t in report.tables if t.title.startswith(title))
    return {tuple(row[:2]): dict(zip(table.columns, row, strict=True)) for row in table.rows}


# --- the real fixtures ---------------------------------------------------------------------------


def _direct_counts(folder: Path) -> dict:
    """Everything the checks report, counted straight from the files with plain Python."""
    news_ids, with_entities = [], set()
    for line in (folder / "news.tsv").read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        news_ids.append(cols[0])
        if cols[6].strip() not in ("", "[]") or cols[7].strip() not in ("", "[]"):
            with_entities.add(cols[0])
    clicks = candidates = no_click = 0
    history_lengths, cand_ids, hist_ids = [], set(), set()
    behaviors = folder / "behaviors.tsv"
    lines = behaviors.read_text(encoding="utf-8").splitlines() if behaviors.exists() else []
    for line in lines:
        _, _, _, hist, imps = line.split("\t")
        labels = [tok.rsplit("-", 1) for tok in imps.split()]
        clicks += sum(label == "1" for _, label in labels)
        candidates += len(labels)
        no_click += all(label == "0" for _, label in labels)
        history_lengths.append(len(hist.split()))
        cand_ids.update(n for n, _ in labels)
        hist_ids.update(hist.split())
    return {
        "news": news_ids,
        "entities": with_entities,
        "clicks": clicks,
        "candidates": candidates,
        "no_click": no_click,
        "impressions": len(lines),
        "history": history_lengths,
        "cand_ids": cand_ids,
        "hist_ids": hist_ids,
    }


def test_real_llm4rec_click_rate_and_coverage_match_a_direct_count(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "llm4rec_mind"
    direct = _direct_counts(folder)
    # A store holding every other news of news.tsv: text coverage must equal the direct count.
    half = direct["news"][::2]
    store = write_store(tmp_path / "half", half, np.random.default_rng(0).normal(size=(len(half), 8)))
    report = check_data(folder, store=store)

    rate = direct["clicks"] / direct["candidates"]
    click = _checks(report)["click rate"]
    assert click.status == Status.WARN  # accuracy is meaningless at this rate
    assert click.value["click_rate"] == pytest.approx(rate)
    assert click.value["all_negative_accuracy"] == pytest.approx(1 - rate)
    assert f"{1 - rate:.2%}" in click.message
    clicks = _table(report, "Clicks")
    assert clicks[("all", direct["impressions"])]["clicks"] == direct["clicks"]
    assert _checks(report)["impressions without a click"].value["count"] == direct["no_click"]

    coverage = _table(report, "Coverage")
    in_store = set(half)
    cand = coverage[("all", "candidates")]
    assert cand["news"] == len(direct["cand_ids"])
    assert cand["in news.tsv"] == 1.0
    assert cand["text"] == pytest.approx(len(direct["cand_ids"] & in_store) / len(direct["cand_ids"]))
    hist = coverage[("all", "history")]
    assert hist["text"] == pytest.approx(len(direct["hist_ids"] & in_store) / len(direct["hist_ids"]))
    assert cand["entities"] == 0.0  # this fixture has empty entity columns
    assert _checks(report)["text vector coverage"].status == Status.FAIL
    assert _checks(report)["entity coverage"].status == Status.WARN

    lengths = np.array(direct["history"])
    history = _table(report, "History length")[("all", direct["impressions"])]
    assert history["p50"] == float(np.percentile(lengths, 50))
    assert history["max"] == int(lengths.max())


def test_real_mind_tiny_news_only_with_its_openai_vectors(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "mind_tiny"
    direct = _direct_counts(folder)
    ids = (folder / "llm_embeddings_ids.txt").read_text(encoding="utf-8").split()
    vectors = np.load(folder / "llm_embeddings.npy")
    store = write_store(tmp_path / "openai", ids, vectors, normalized=True)
    report = check_data(folder, store=store)

    assert "no behaviors.tsv" in " ".join(report.notes)
    row = _table(report, "Coverage")[("news.tsv", "all news")]
    assert row["news"] == len(direct["news"]) == 500
    assert row["text"] == pytest.approx(len(set(ids) & set(direct["news"])) / 500)
    assert row["entities"] == pytest.approx(len(direct["entities"]) / 500)
    assert _checks(report)["entity coverage"].value == pytest.approx(len(direct["entities"]) / 500)
    vec = next(t for t in report.tables if t.title == "Vectors").rows[0]
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    assert vec[1:5] == [500, 1536, 0, 0]
    assert vec[7] == pytest.approx(norms.mean())
    assert _checks(report)["text vectors: finite"].status == Status.OK


# --- hand-made faults ------------------------------------------------------------------------------


@pytest.fixture
def faulty(tmp_path: Path) -> tuple[Path, Path]:
    news = [
        news_row("N1", ENTITY),
        news_row("N2"),
        news_row("N2"),
        news_row("N3"),
        news_row("N4"),
        news_row("N5"),
        news_row("N6"),
    ]
    data = write_mind(
        tmp_path / "bad",
        news,
        [
            ("U1", "N1 N2", "N3-1 N4-0 N5-0"),
            ("U2", "", "N3-0 N4-0 N9-0"),  # no click; N9 has no news.tsv row
            ("U3", "N1", "N5-1 N5-0 N6-0"),  # N5 listed twice
        ],
    )
    vectors = np.random.default_rng(1).normal(size=(5, 4))
    vectors[3] = 0.0  # N4: a zero vector
    vectors[4, 2] = np.nan  # N5: a NaN
    store = write_store(tmp_path / "store", ["N1", "N2", "N3", "N4", "N5"], vectors)  # N6 missing
    return data, store


def test_hand_made_faults_are_each_found(faulty: tuple[Path, Path]) -> None:
    data, store = faulty
    report = check_data(data, store=store)
    checks = _checks(report)
    assert report.status == Status.FAIL
    assert checks["malformed lines"].value == 1  # the duplicate N2 row, skipped
    assert checks["duplicate news IDs"].status == Status.FAIL and checks["duplicate news IDs"].value == 1
    assert checks["impressions without a click"].value == {"count": 1, "share": pytest.approx(1 / 3)}
    assert checks["repeated candidates"].value == 1
    assert checks["click rate"].value["click_rate"] == pytest.approx(2 / 9)
    assert checks["click rate"].status == Status.OK  # 22 %: accuracy is not absurd here
    assert checks["news.tsv coverage"].status == Status.FAIL and "N9" not in checks["news.tsv coverage"].fix
    assert checks["text vector coverage"].status == Status.FAIL
    assert "N6" in checks["text vector coverage"].message
    assert (
        checks["text vectors: finite"].status == Status.FAIL
        and checks["text vectors: finite"].value["non_finite"] == 1
    )
    cand = _table(report, "Coverage")[("all", "candidates")]
    assert (
        cand["news"] == 5
        and cand["in news.tsv"] == pytest.approx(4 / 5)
        and cand["text"] == pytest.approx(3 / 5)
    )
    assert cand["entities"] == 0.0


def test_a_text_gap_is_only_a_warning_when_training_learns_missing_vectors(faulty: tuple[Path, Path]) -> None:
    data, store = faulty
    checks = _checks(check_data(data, store=store, missing_allowed=True))
    assert checks["text vector coverage"].status == Status.WARN


def test_zero_vectors_warn(tmp_path: Path) -> None:
    data = write_mind(tmp_path / "d", [news_row("N1"), news_row("N2")], [("U1", "N1", "N2-1 N1-0")])
    store = write_store(tmp_path / "s", ["N1", "N2"], np.array([[1.0, 0.0], [0.0, 0.0]]))
    checks = _checks(check_data(data, store=store))
    assert checks["text vectors: zero vectors"].status == Status.WARN


# --- the command -----------------------------------------------------------------------------------


def test_cli_exit_codes_fail_1_warn_0(faulty: tuple[Path, Path], shared_data: Path) -> None:
    data, store = faulty
    failed = runner.invoke(app, ["diagnose", "data", str(data), "--embeddings", str(store)])
    assert failed.exit_code == 1, failed.output
    assert "FAIL:" in failed.output and "fix:" in failed.output
    warned = runner.invoke(app, ["diagnose", "data", str(shared_data / "llm4rec_mind")])
    assert warned.exit_code == 0, warned.output
    assert "WARN:" in warned.output and "accuracy is meaningless" in warned.output


def test_cli_json_carries_the_numbers_of_the_tables(shared_data: Path, monkeypatch) -> None:
    folder = str(shared_data / "llm4rec_mind")
    as_json = runner.invoke(app, ["diagnose", "data", folder, "--json"])
    assert as_json.exit_code == 0
    data = json.loads(as_json.stdout)
    assert data["verdict"] == "WARN" and data["reasons"]
    monkeypatch.setattr(diagnose_cmd, "console", wide_console())
    text = runner.invoke(app, ["diagnose", "data", folder]).output
    assert len(data["tables"]) >= 4
    for table in data["tables"]:
        shown = table_rows(text, table["title"])
        expected = [
            [format_cell(v, c in table["percent"]) for v, c in zip(row, table["columns"], strict=True)]
            for row in table["rows"]
        ]
        assert shown == expected, table["title"]


def test_cli_bad_input_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["diagnose", "data", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "not a MIND dataset" in result.output and "Traceback" not in result.output


def test_graph_coverage_and_entity_features(tmp_path: Path) -> None:
    data, store = synth_with_store(tmp_path)
    built = runner.invoke(app, ["build-graph", str(data), "--out", str(tmp_path / "graph")])
    assert built.exit_code == 0, built.output
    report = check_data(data, store=store, graph=tmp_path / "graph")
    checks = _checks(report)
    assert checks["graph coverage"].status == Status.OK
    assert all(row["graph"] == 1.0 for row in _table(report, "Coverage").values())
    entities = {row[0]: row for row in next(t for t in report.tables if t.title == "Entities").rows}
    linked = entities["graph nodes"][1]
    assert entities["graph nodes"][2] == linked  # every linked entity is a node
    assert entities["all .vec files"][2] <= linked
    assert any(
        name.startswith("graph entity features")
        for name in (row[0] for row in next(t for t in report.tables if t.title == "Vectors").rows)
    )
