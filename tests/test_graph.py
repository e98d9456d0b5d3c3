"""`newsrec build-graph`: building from real MIND news, entity features, stats, file format, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from graph_helpers import (
    RELATION_VEC,
    direct_links,
    real_lines,
    relation_rows,
    write_mind,
    write_vec,
)
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.embed.importer import import_vectors
from newsrec_cli.errors import InputError
from newsrec_cli.graph import build_graph, graph_stats, load_graph, save_graph
from newsrec_cli.graph.graph import COOCCURS, LABEL_TEXT, LEARNED, VEC, mention_type, reverse_type
from newsrec_cli.settings import GraphSettings

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny graphs: with 2 cores shared by busy neighbours, torch's thread pool only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return real_lines()


@pytest.fixture(scope="module")
def mind(tmp_path_factory: pytest.TempPathFactory, lines: list[str]) -> Path:
    return write_mind(tmp_path_factory.mktemp("mind"), lines)


@pytest.fixture(scope="module")
def graph(mind: Path):
    return build_graph(mind, GraphSettings(cooccurrence_min=1))[0]


def edges_of(graph, relation: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(news ID, WikidataId) -> (weight, reverse weight) of one mention type."""
    forward, backward = graph.data[mention_type(relation)], graph.data[reverse_type(relation)]
    reverse = {
        (int(n), int(e)): float(w)
        for (e, n), w in zip(backward.edge_index.t().tolist(), backward.edge_weight.tolist(), strict=True)
    }
    out = {}
    for (n, e), w in zip(forward.edge_index.t().tolist(), forward.edge_weight.tolist(), strict=True):
        out[(graph.news_ids[n], graph.entity_ids[e])] = (float(w), reverse[(n, e)])
    return out


# -- building ------------------------------------------------------------------------------------


@pytest.mark.parametrize("min_confidence", [0.0, 0.95])
def test_entity_links_match_a_direct_count_of_the_json(
    mind: Path, lines: list[str], min_confidence: float
) -> None:
    graph, report = build_graph(mind, GraphSettings(min_confidence=min_confidence))
    expected = direct_links(lines, min_confidence)
    for relation in ("title", "abstract"):
        got = edges_of(graph, relation)
        assert set(got) == set(expected[relation])
        for key, (conf, occ) in expected[relation].items():
            weight, reverse_weight = got[key]
            assert weight == pytest.approx(conf * occ, rel=1e-6)
            assert reverse_weight == weight
    entities = {e for links in expected.values() for (_, e) in links}
    assert sorted(graph.entity_ids) == sorted(entities)
    assert graph.num_news == len(lines)
    total = sum(1 for line in lines for col in (6, 7) for _ in json.loads(line.split("\t")[col] or "[]"))
    assert sum(report.links_read.values()) == total
    kept = sum(len(v) for v in expected.values())  # the real rows repeat no entity within a column
    assert sum(report.links_below_confidence.values()) == total - kept
    if min_confidence:
        assert sum(report.links_below_confidence.values()) > 0


def test_news_sharing_an_entity_are_two_hops_apart(graph) -> None:
    neighbours: dict[tuple[str, int], set[tuple[str, int]]] = defaultdict(set)
    for edge_type in graph.edge_types:
        if edge_type == COOCCURS:
            continue
        src_type, _, dst_type = edge_type
        for s, d in graph.data[edge_type].edge_index.t().tolist():
            neighbours[(dst_type, d)].add((src_type, s))  # who sends messages to whom

    def hops(start: int) -> dict[tuple[str, int], int]:
        seen, frontier = {("news", start): 0}, [("news", start)]
        for depth in (1, 2):
            nxt = []
            for node in frontier:
                for other in neighbours[node]:
                    if other not in seen:
                        seen[other] = depth
                        nxt.append(other)
            frontier = nxt
        return seen

    by_entity: dict[int, set[int]] = defaultdict(set)
    for relation in ("title", "abstract"):
        for n, e in graph.data[mention_type(relation)].edge_index.t().tolist():
            by_entity[e].add(n)
    shared = next(sorted(ns) for ns in by_entity.values() if len(ns) >= 2)
    reach = hops(shared[0])
    assert reach[("news", shared[1])] == 2
    expected = {n for ns in by_entity.values() if shared[0] in ns for n in ns} - {shared[0]}
    assert {n for (t, n), d in reach.items() if t == "news" and d == 2} == expected


def test_stats_add_up(graph, lines: list[str]) -> None:
    stats = graph_stats(graph)
    assert stats["nodes"] == {"news": 500, "entity": graph.num_entities, "total": 500 + graph.num_entities}
    edges = {k: v for k, v in stats["edges"].items() if k != "total"}
    assert sum(edges.values()) == stats["edges"]["total"]
    assert edges["news__title__entity"] == edges["entity__rev_title__news"]
    with_entities = sum(
        1
        for line in lines
        if json.loads(line.split("\t")[6] or "[]") + json.loads(line.split("\t")[7] or "[]")
    )
    assert stats["news_with_entities"]["count"] == with_entities
    assert stats["news_with_entities"]["count"] + stats["news_without_entities"] == 500
    assert stats["isolated"]["news"] == stats["news_without_entities"]
    assert stats["isolated"]["entity"] == 0  # every entity node is mentioned by some news
    coverage = stats["entity_features"]
    assert sum(row["count"] for row in coverage.values()) == graph.num_entities
    assert coverage["learned"]["count"] == graph.num_entities  # no .vec, no store
    pairs = {(n, e) for links in direct_links(lines).values() for (n, e) in links}
    degree = stats["degree"]
    assert degree["news -> entities"]["mean"] * 500 == pytest.approx(len(pairs), abs=1)
    assert degree["entity -> news"]["mean"] * graph.num_entities == pytest.approx(len(pairs), abs=1)
    assert degree["entity -> co-occurring entities"]["max"] >= 1


def test_cooccurrence_counts_pairs_of_news(graph, lines: list[str]) -> None:
    per_news: dict[str, set[str]] = defaultdict(set)
    for links in direct_links(lines).values():
        for n, e in links:
            per_news[n].add(e)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for ents in per_news.values():
        ordered = sorted(ents)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                counts[(a, b)] += 1
    got = {}
    for (a, b), w in zip(
        graph.data[COOCCURS].edge_index.t().tolist(), graph.data[COOCCURS].edge_weight.tolist(), strict=True
    ):
        got[tuple(sorted((graph.entity_ids[a], graph.entity_ids[b])))] = w
    assert got == {k: float(v) for k, v in counts.items()}
    assert graph.data[COOCCURS].edge_index.shape[1] == 2 * len(counts)  # both directions


def test_news_without_any_entity_build_with_a_warning(tmp_path: Path, lines: list[str]) -> None:
    bare = ["\t".join(line.split("\t")[:6] + ["", "[]"]) for line in lines[:40]]
    graph, report = build_graph(write_mind(tmp_path / "mind", bare), GraphSettings(cooccurrence_min=1))
    assert (graph.num_news, graph.num_entities) == (40, 0)
    assert graph_stats(graph)["news_without_entities"] == 40
    assert any("no entity links" in w for w in report.warnings())


def test_splits_share_one_graph(tmp_path: Path, lines: list[str]) -> None:
    write_mind(tmp_path / "train", lines[:300])
    write_mind(tmp_path / "valid", lines[250:])  # 50 news in both splits
    graph, report = build_graph(tmp_path, GraphSettings())
    assert report.splits == ["train", "valid"]
    assert graph.news_ids == [line.split("\t")[0] for line in lines]


# -- entity features -------------------------------------------------------------------------------


def test_features_prefer_vec_then_label_store_then_learned(tmp_path: Path, lines: list[str], graph) -> None:
    folder = write_mind(tmp_path / "mind", lines)
    ids = sorted(graph.entity_ids)
    vec_ids, store_ids = ids[:40], ids[30:100]  # 10 in both: the .vec wins
    rows = relation_rows(40)
    write_vec(folder / "entity_embedding.vec", vec_ids, rows)
    store_vectors = np.random.default_rng(0).normal(size=(len(store_ids), 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", store_vectors)
    (tmp_path / "ids.txt").write_text("".join(i + "\n" for i in store_ids), encoding="utf-8")
    import_vectors(
        tmp_path / "v.npy",
        tmp_path / "ids.txt",
        tmp_path / "store",
        model="test",
        kind="entities",
        normalize=False,
    )

    built, report = build_graph(folder, GraphSettings(), entity_store=tmp_path / "store")
    source = built.entity_source.numpy()
    index = built.entity_index
    assert {built.entity_ids[j] for j in np.flatnonzero(source == VEC)} == set(vec_ids)
    assert {built.entity_ids[j] for j in np.flatnonzero(source == LABEL_TEXT)} == set(store_ids) - set(
        vec_ids
    )
    assert int((source == LEARNED).sum()) == len(ids) - 100
    vec = built.features["vec"]
    for id_, row in zip(vec_ids, rows, strict=True):
        k = int(np.flatnonzero(vec.rows == index[id_])[0])
        np.testing.assert_allclose(vec.matrix[k], row, atol=1e-6)
    text = built.features["label_text"]
    k = int(np.flatnonzero(text.rows == index[store_ids[-1]])[0])
    np.testing.assert_array_equal(text.matrix[k], store_vectors[-1])
    assert report.features["vec"]["count"] == 40 and report.features["vec"]["dim"] == 100
    assert report.features["label_text"] == {
        "count": 60,
        "store": str(tmp_path / "store"),
        "model": "test",
        "dim": 8,
    }
    coverage = graph_stats(built)["entity_features"]
    assert coverage["vec"] == {"count": 40, "share": round(40 / len(ids), 4), "dim": 100}
    assert coverage["label_text"]["count"] == 60
    assert coverage["learned"]["count"] == len(ids) - 100


def test_real_relation_vec_reads_but_covers_no_entity(mind: Path) -> None:
    graph, report = build_graph(mind, GraphSettings(), entity_vec=[RELATION_VEC])
    assert report.features["vec"]["vectors_in_files"] == 1091  # P-ids: the format, not entities
    assert report.features["vec"]["count"] == 0
    assert report.features["learned"]["count"] == graph.num_entities


def test_news_store_is_not_an_entity_store(tmp_path: Path, mind: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((2, 4), dtype=np.float32))
    (tmp_path / "ids.txt").write_text("N1\nN2\n", encoding="utf-8")
    import_vectors(tmp_path / "v.npy", tmp_path / "ids.txt", tmp_path / "store", model="m")
    with pytest.raises(InputError, match="not an entity store"):
        build_graph(mind, GraphSettings(), entity_store=tmp_path / "store")


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("Q80976\t0.1\t0.2\t\n", "expected 100 values, found 2"),
        ("Q80976\t" + "x\t" * 100 + "\n", "not a number"),
    ],
)
def test_bad_vec_is_a_one_line_error(tmp_path: Path, lines: list[str], bad_row: str, message: str) -> None:
    folder = write_mind(tmp_path / "mind", lines[:20])
    write_vec(folder / "entity_embedding.vec", ["Q1"], relation_rows(1))
    with open(folder / "entity_embedding.vec", "a", encoding="utf-8") as handle:
        handle.write(bad_row)
    result = runner.invoke(app, ["build-graph", str(folder), "--out", str(tmp_path / "g")])
    assert result.exit_code == 1
    assert message in result.stderr and "entity_embedding.vec:2" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_unparsable_entity_json_is_counted_per_column(tmp_path: Path, lines: list[str]) -> None:
    broken, clean = [], []
    for number, line in enumerate(lines[:30], start=1):
        fields = line.split("\t")
        if number in (3, 7, 9):
            fields[6] = '[{"Label": "oops", '  # cut JSON in the title column
        if number == 11:
            fields[7] = "not json"
        broken.append("\t".join(fields))
        clean.append("\t".join(f if f not in ('[{"Label": "oops", ', "not json") else "[]" for f in fields))
    folder = write_mind(tmp_path / "mind", broken)
    graph, report = build_graph(folder, GraphSettings())
    assert report.bad_entities["TitleEntities"]["count"] == 3
    assert report.bad_entities["AbstractEntities"]["count"] == 1
    assert report.bad_entities["TitleEntities"]["first"] == [f"{folder / 'news.tsv'}:{n}" for n in (3, 7, 9)]
    assert graph.num_news == 30  # the rows are kept, without those entities
    expected = direct_links(clean)
    assert set(edges_of(graph, "title")) == set(expected["title"])
    assert set(edges_of(graph, "abstract")) == set(expected["abstract"])
    result = runner.invoke(app, ["build-graph", str(folder), "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert "3 news with unparsable TitleEntities JSON" in result.stderr
    assert "1 news with unparsable AbstractEntities JSON" in result.stderr


# -- file format ---------------------------------------------------------------------------------------


def test_save_load_round_trip_is_exact(tmp_path: Path, lines: list[str], graph) -> None:
    folder = write_mind(tmp_path / "mind", lines)
    write_vec(folder / "entity_embedding.vec", sorted(graph.entity_ids)[:25], relation_rows(25))
    built, _ = build_graph(folder, GraphSettings(cooccurrence_min=1, min_confidence=0.5))
    save_graph(built, tmp_path / "g")
    loaded = load_graph(tmp_path / "g")
    assert loaded.news_ids == built.news_ids and loaded.entity_ids == built.entity_ids
    assert loaded.edge_types == built.edge_types
    for edge_type in built.edge_types:
        for key in ("edge_index", "edge_weight"):
            a, b = built.data[edge_type][key], loaded.data[edge_type][key]
            assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(built.entity_source, loaded.entity_source)
    assert built.features.keys() == loaded.features.keys() == {"vec"}
    np.testing.assert_array_equal(built.features["vec"].matrix, loaded.features["vec"].matrix)
    np.testing.assert_array_equal(built.features["vec"].rows, loaded.features["vec"].rows)
    assert loaded.meta["settings"] == {"min_confidence": 0.5, "cooccurrence_min": 1}
    assert graph_stats(loaded) == graph_stats(built)


def test_load_refuses_what_is_not_a_graph(tmp_path: Path, graph) -> None:
    with pytest.raises(InputError, match="no such folder"):
        load_graph(tmp_path / "nothing")
    save_graph(graph, tmp_path / "g")
    arrays = dict(np.load(tmp_path / "g" / "graph.npz"))
    arrays["title_news"] = np.array([{"evil": 1}], dtype=object)
    np.savez(tmp_path / "g" / "graph.npz", **arrays)  # an object array needs unpickling
    with pytest.raises(InputError, match="graph.npz"):
        load_graph(tmp_path / "g")
    (tmp_path / "g" / "meta.json").unlink()
    with pytest.raises(InputError, match="no meta.json"):
        load_graph(tmp_path / "g")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="holds no graph"):
        save_graph(graph, tmp_path / "other")


# -- command ---------------------------------------------------------------------------------------------


def test_cli_build_then_info(tmp_path: Path, mind: Path) -> None:
    out = tmp_path / "graph"
    result = runner.invoke(app, ["build-graph", str(mind), "--out", str(out), "--cooccurrence-min", "2"])
    assert result.exit_code == 0, result.output
    assert "Nodes and edges" in result.stdout and "Entity features by source" in result.stdout
    assert "wrote" in result.stdout
    info = runner.invoke(app, ["build-graph", "--info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    payload = json.loads(info.stdout)
    assert payload["stats"] == graph_stats(load_graph(out))
    assert payload["meta"]["settings"]["cooccurrence_min"] == 2
    table = runner.invoke(app, ["build-graph", "--info", str(out)])
    assert table.exit_code == 0 and "news with >= 1 entity" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give DATA --out GRAPH"),
        (["DATA"], "give DATA --out GRAPH"),
        (["DATA", "--out", "G", "--info", "G"], "give it alone"),
        (["DATA", "--out", "G", "--min-confidence", "2"], "graph.min_confidence = 2.0"),
    ],
)
def test_cli_usage_errors(tmp_path: Path, mind: Path, args: list[str], message: str) -> None:
    args = [str(mind) if a == "DATA" else str(tmp_path / a) if a == "G" else a for a in args]
    result = runner.invoke(app, ["build-graph", *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_installed_entry_point(tmp_path: Path, mind: Path) -> None:
    exe = Path(sys.executable).parent / "newsrec"
    if not exe.exists():
        pytest.skip("the newsrec entry point is not installed in this environment")
    done = subprocess.run(
        [str(exe), "build-graph", str(mind), "--out", str(tmp_path / "g"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stats"]["nodes"]["news"] == 500
