"""The embedding store, the chunk log, templates, token batches and vector import (engine level)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from newsrec_cli.embed.chunks import ChunkLog
from newsrec_cli.embed.importer import import_vectors
from newsrec_cli.embed.info import coverage, norm_stats
from newsrec_cli.embed.providers.hashing import HashingProvider
from newsrec_cli.embed.run import EmbedRunError, execute, plan_run
from newsrec_cli.embed.store import COMMIT, STAGING, EmbeddingStore, commit, new_meta
from newsrec_cli.embed.text import news_texts, render, template_fields
from newsrec_cli.embed.tokens import estimated_cost, token_batches, token_counter
from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.mind.news import read_news

SIGNATURE = {
    "kind": "news",
    "provider": "hashing",
    "model": "m",
    "dimension": 3,
    "template": "{title}",
    "normalized": False,
}


def make_store(path: Path, ids: list[str], vectors: np.ndarray) -> EmbeddingStore:
    commit(path, ids, vectors.astype(np.float32), new_meta({**SIGNATURE, "dimension": vectors.shape[1]}))
    return EmbeddingStore.open(path)


# --- the store -------------------------------------------------------------------------------


def test_lookup_by_id_reports_missing(tmp_path: Path) -> None:
    vectors = np.arange(9, dtype=np.float32).reshape(3, 3)
    store = make_store(tmp_path / "s", ["N1", "N2", "N3"], vectors)
    out, missing = store.lookup(["N3", "N9", "N1"])
    assert out.dtype == np.float32 and out.shape == (3, 3)
    np.testing.assert_array_equal(out[0], vectors[2])
    np.testing.assert_array_equal(out[1], np.zeros(3))
    np.testing.assert_array_equal(out[2], vectors[0])
    assert missing == ["N9"]
    assert len(store) == 3 and store.has("N2") and not store.has("N9") and store.dim == 3
    assert store.meta["count"] == 3 and store.meta["kind"] == "news"


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("dup_id", "duplicate ID 'N1'"),
        ("nan", "NaN or Inf"),
        ("count", "says 3 vectors but ids.txt has 2"),
        ("dim", "dimension 3, meta.json says 4"),
        ("pickle", "not a readable .npy"),
        ("not_store", "no meta.json"),
    ],
)
def test_open_rejects_broken_stores(tmp_path: Path, breakage: str, message: str) -> None:
    path = tmp_path / "s"
    make_store(path, ["N1", "N2", "N3"], np.ones((3, 3)))
    if breakage == "dup_id":
        (path / "ids.txt").write_text("N1\nN2\nN1\n")
    elif breakage == "nan":
        np.save(path / "vectors.npy", np.array([[1, 2, 3], [np.nan, 0, 0], [1, 1, 1]], dtype=np.float32))
    elif breakage == "count":
        (path / "ids.txt").write_text("N1\nN2\n")
        np.save(path / "vectors.npy", np.ones((2, 3), dtype=np.float32))
    elif breakage == "dim":
        meta = json.loads((path / "meta.json").read_text())
        (path / "meta.json").write_text(json.dumps({**meta, "dimension": 4}))
    elif breakage == "pickle":
        (path / "vectors.npy").write_bytes(pickle.dumps([1, 2, 3]))
    elif breakage == "not_store":
        (path / "meta.json").unlink()
    with pytest.raises(InputError, match=message):
        EmbeddingStore.open(path)


def test_interrupted_commit_rolls_forward(tmp_path: Path) -> None:
    """A writer killed between the renames leaves a store that readers refuse and writers finish."""
    path = tmp_path / "s"
    make_store(path, ["N1"], np.ones((1, 3)))
    staging = path / STAGING
    staging.mkdir()
    np.save(staging / "vectors.npy", np.full((2, 3), 2.0, dtype=np.float32))
    (staging / "ids.txt").write_text("N1\nN2\n")
    meta = {**json.loads((path / "meta.json").read_text()), "count": 2}
    (staging / "meta.json").write_text(json.dumps(meta))
    (staging / COMMIT).write_text("ready\n")
    # The kill came after vectors.npy was moved in, before ids.txt.
    (staging / "vectors.npy").replace(path / "vectors.npy")
    with pytest.raises(InputError, match="interrupted"):
        EmbeddingStore.open(path)
    texts = ["a", "b"]
    plan = plan_run(
        path,
        ["N1", "N2"],
        texts,
        HashingProvider(3).spec,
        kind="news",
        template="{title}",
        normalize=False,
        force=True,
    )
    assert not staging.exists()
    assert plan.replace  # the store (model "m") is not the hashing model's: --force replaces it
    store = EmbeddingStore.open(path)
    assert store.ids == ["N1", "N2"] and float(store.vectors[1, 0]) == 2.0


def test_incomplete_staging_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make_store(path, ["N1"], np.ones((1, 3)))
    (path / STAGING).mkdir()
    (path / STAGING / "ids.txt").write_text("N9\n")
    plan_run(
        path,
        ["N1"],
        ["a"],
        HashingProvider(3).spec,
        kind="news",
        template="{title}",
        normalize=False,
        force=True,
    )
    assert not (path / STAGING).exists()
    assert EmbeddingStore.open(path).ids == ["N1"]


# --- runs at engine level --------------------------------------------------------------------


class FlakyProvider(HashingProvider):
    """Hashing that fails on its n-th batch, or returns NaN there."""

    def __init__(self, fail_at: int, how: str = "error") -> None:
        super().__init__(8, batch_size=2)
        self.calls, self.fail_at, self.how = 0, fail_at, how

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = super().embed(texts)
        if self.calls == self.fail_at:
            if self.how == "nan":
                out[0, 0] = np.nan
                return out
            if self.how == "dim":
                return out[:, :4]
            from newsrec_cli.embed.providers.base import ProviderError

            raise ProviderError("provider down")
        return out


@pytest.mark.parametrize(
    ("how", "message"),
    [("error", "provider down"), ("nan", "NaN or Inf"), ("dim", "4-d vectors, the store holds 8-d")],
)
def test_failing_batch_keeps_earlier_batches(tmp_path: Path, how: str, message: str) -> None:
    ids = [f"N{i}" for i in range(7)]
    texts = [f"text number {i}" for i in ids]
    provider = FlakyProvider(fail_at=3, how=how)
    plan = plan_run(
        tmp_path / "s", ids, texts, provider.spec, kind="news", template="{title}", normalize=True
    )
    with pytest.raises(EmbedRunError, match=message) as caught:
        execute(plan, provider)
    report = caught.value.report
    assert (report.embedded, report.failed) == (4, 3)
    store = EmbeddingStore.open(tmp_path / "s")
    assert store.ids == ids[:4]
    expected = HashingProvider(8).embed(texts[:4])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(store.lookup(ids[:4])[0], expected, rtol=1e-6)
    # A rerun embeds only the rest.
    provider = FlakyProvider(fail_at=-1)
    plan = plan_run(
        tmp_path / "s", ids, texts, provider.spec, kind="news", template="{title}", normalize=True
    )
    assert [plan.ids[i] for i in plan.todo] == ids[4:] and plan.reused == 4
    report = execute(plan, provider)
    assert report.embedded == 3 and report.count == 7
    assert EmbeddingStore.open(tmp_path / "s").ids == ids


def test_chunks_of_an_interrupted_run_are_resumed(tmp_path: Path) -> None:
    ids = [f"N{i}" for i in range(6)]
    texts = [f"words {i}" for i in ids]
    provider = HashingProvider(8, batch_size=2)
    plan = plan_run(
        tmp_path / "s", ids, texts, provider.spec, kind="news", template="{title}", normalize=False
    )
    log = ChunkLog(tmp_path / "s")
    log.start(plan.signature)
    log.append(ids[:2], provider.embed(texts[:2]))
    (log.folder / ".tmp-half-written").write_bytes(b"garbage")  # what a kill mid-write leaves
    plan = plan_run(
        tmp_path / "s", ids, texts, provider.spec, kind="news", template="{title}", normalize=False
    )
    assert plan.resumed == 2 and len(plan.todo) == 4
    report = execute(plan, provider)
    assert (report.embedded, report.resumed, report.count) == (4, 2, 6)
    store = EmbeddingStore.open(tmp_path / "s")
    assert store.ids == ids
    np.testing.assert_array_equal(store.lookup(ids)[0], provider.embed(texts))
    assert not log.folder.exists()


def test_other_settings_need_force(tmp_path: Path) -> None:
    ids, texts = ["N1", "N2"], ["a b", "c d"]
    small = HashingProvider(8)
    execute(
        plan_run(tmp_path / "s", ids, texts, small.spec, kind="news", template="{title}", normalize=True),
        small,
    )
    big = HashingProvider(16)
    with pytest.raises(SettingsError, match=r"dimension 8 \(asked: 16\).*--force"):
        plan_run(tmp_path / "s", ids, texts, big.spec, kind="news", template="{title}", normalize=True)
    with pytest.raises(SettingsError, match="template"):
        plan_run(tmp_path / "s", ids, texts, small.spec, kind="news", template="{abstract}", normalize=True)
    plan = plan_run(
        tmp_path / "s", ids, texts, big.spec, kind="news", template="{title}", normalize=True, force=True
    )
    assert plan.replace and plan.reused == 0
    execute(plan, big)
    assert EmbeddingStore.open(tmp_path / "s").dim == 16


def test_out_must_be_a_store_or_new(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an embedding store"):
        plan_run(
            tmp_path / "stuff",
            ["N1"],
            ["a"],
            HashingProvider(8).spec,
            kind="news",
            template="{title}",
            normalize=True,
        )


# --- texts, tokens, info ----------------------------------------------------------------------


def test_template_fields_and_fallbacks(tmp_path: Path) -> None:
    rows = [
        "N1\tsports\tfootball\tBig win\tThe team won.\t\t[]\t[]",
        "N2\tnews\tnewsus\tNo abstract here\t\t\t[]\t[]",
        'N3\tnews\tnewsworld\t\t\t\t[{"Label": "Paris", "WikidataId": "Q90"}]\t[]',
        "N4\t\t\t\t\t\t[]\t[]",
    ]
    (tmp_path / "news.tsv").write_text("\n".join(rows) + "\n")
    table = read_news(tmp_path / "news.tsv")
    texts = news_texts(table, "{category} | {subcategory} | {title} | {abstract}")
    assert texts.texts[:2] == [
        "sports | football | Big win | The team won.",
        "news | newsus | No abstract here",
    ]
    assert texts.fallback_ids == ["N4"] and texts.texts[3] == "N4"
    by_abstract = news_texts(table, "{abstract}")
    assert by_abstract.texts == ["The team won.", "No abstract here", "news newsworld", "N4"]
    assert by_abstract.fallback_ids == ["N2", "N3", "N4"]
    assert news_texts(table, "{title} ({entities})").texts[2] == "Paris"
    assert render("{title}: {abstract}", {"title": "T", "abstract": ""}) == "T"


@pytest.mark.parametrize("template", ["{body}", "{title!r}", "no fields", "{title"])
def test_bad_templates_are_settings_errors(template: str) -> None:
    with pytest.raises(SettingsError, match="embed.template"):
        template_fields(template)


def test_token_batches_respect_both_limits() -> None:
    counts = [5, 5, 5, 20, 1, 1, 1, 1]
    batches = token_batches(counts, max_tokens=12, max_texts=3)
    assert [list(b) for b in batches] == [[0, 1], [2], [3], [4, 5, 6], [7]]
    for batch in batches:
        assert len(batch) <= 3
        assert sum(counts[i] for i in batch) <= 12 or len(batch) == 1


def test_token_counter_is_exact_or_an_upper_bound() -> None:
    counter = token_counter()
    text = "Ünïcode headline: stocks rise 3%"
    assert counter.count(text) <= len(text.encode("utf-8"))
    if not counter.exact:
        assert counter.count(text) == len(text.encode("utf-8")) and "upper bound" in counter.source
    assert estimated_cost("text-embedding-3-small", 1_000_000) == pytest.approx(0.02)
    assert estimated_cost("text-embedding-3-large", 500_000) == pytest.approx(0.065)
    assert estimated_cost("text-embedding-ada-002", 2_000_000) == pytest.approx(0.20)
    assert estimated_cost("my-local-model", 10) is None


def test_norms_and_coverage(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", ["A", "B", "C"], np.array([[3, 4, 0], [0, 0, 0], [1, 0, 0]]))
    assert norm_stats(store.vectors) == {"min": 0.0, "mean": 2.0, "max": 5.0, "zero_rows": 1}
    covered = coverage(store, {"train": ["A", "B", "X"], "valid": ["C"]})
    assert [(c.split, c.covered, c.total, c.missing) for c in covered] == [
        ("train", 2, 3, ["X"]),
        ("valid", 1, 1, []),
    ]


# --- import ------------------------------------------------------------------------------------


def test_import_real_vectors_lookup_after_reordering(tmp_path: Path, shared_data: Path) -> None:
    """The shared real text-embedding-3-small vectors: rows found by ID whatever the file order."""
    tiny = shared_data / "mind_tiny"
    original = np.load(tiny / "llm_embeddings.npy", allow_pickle=False)
    ids = (tiny / "llm_embeddings_ids.txt").read_text().split()
    order = np.random.default_rng(0).permutation(len(ids))
    np.save(tmp_path / "shuffled.npy", original[order])
    (tmp_path / "shuffled_ids.txt").write_text("".join(ids[i] + "\n" for i in order))
    report = import_vectors(
        tmp_path / "shuffled.npy",
        tmp_path / "shuffled_ids.txt",
        tmp_path / "s",
        model="text-embedding-3-small",
        provider="openai",
        normalize=False,
    )
    assert (report.imported, report.count, report.dimension) == (500, 500, 1536)
    store = EmbeddingStore.open(tmp_path / "s")
    for probe in (0, 17, 499):
        np.testing.assert_array_equal(store.lookup([ids[probe]])[0][0], original[probe])
    assert store.ids == [ids[i] for i in order]
    news_ids = read_news(tiny / "news.tsv").ids
    assert coverage(store, {"all": news_ids})[0].covered == len(news_ids)
    # Importing again adds nothing; a different model needs --force.
    again = import_vectors(
        tmp_path / "shuffled.npy",
        tmp_path / "shuffled_ids.txt",
        tmp_path / "s",
        model="text-embedding-3-small",
        provider="openai",
        normalize=False,
    )
    assert (again.imported, again.already_present, again.count) == (0, 500, 500)
    with pytest.raises(SettingsError, match="--force"):
        import_vectors(
            tmp_path / "shuffled.npy", tmp_path / "shuffled_ids.txt", tmp_path / "s", model="other"
        )


@pytest.mark.parametrize(
    ("vectors", "ids", "message"),
    [
        (np.array([object(), 1], dtype=object), "A\nB\n", "pickle"),
        (np.ones((2, 3)), "A\nA\n", "duplicate ID 'A'"),
        (np.ones((3, 3)), "A\nB\n", "2 IDs for 3 vector rows"),
        (np.array([[1.0, np.inf], [0, 1]]), "A\nB\n", "NaN or Inf \\(first: ID 'A'\\)"),
        (np.ones(4), "A\n", "2-D matrix"),
        (np.array([["a", "b"]]), "A\n", "expected numbers"),
    ],
)
def test_import_rejects_bad_inputs(tmp_path: Path, vectors: np.ndarray, ids: str, message: str) -> None:
    np.save(tmp_path / "v.npy", vectors, allow_pickle=True)
    (tmp_path / "ids.txt").write_text(ids)
    with pytest.raises(InputError, match=message):
        import_vectors(tmp_path / "v.npy", tmp_path / "ids.txt", tmp_path / "s", model="m")
    assert not (tmp_path / "s").exists()
