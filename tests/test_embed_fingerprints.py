"""A store records a fingerprint of the text each vector was made from: `embed` reuses a vector only
for the same text and re-embeds (and reports) changed ones; `train` and `evaluate` refuse a store
whose texts differ from the dataset's; stores from before fingerprints still load, unchecked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from evaluate_helpers import make_mind
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.embed.store import HASHES, META, EmbeddingStore, text_hash
from newsrec_cli.errors import InputError
from newsrec_cli.settings import DataSettings, TrainSettings
from newsrec_cli.train import train

runner = CliRunner()
TINY = TrainSettings(dim=8, heads=2, epochs=1, device="cpu", seed=1, threads=1)
SELECT = ["--select-on", "valid"]  # make_mind's 4 training impressions: none to hold out


def embed(data: Path, store: Path) -> dict:
    result = runner.invoke(app, ["embed", str(data), "--out", str(store), "--provider", "hashing", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def retitle(root: Path, news_id: str, title: str) -> None:
    """Give `news_id` another title in every split of a dataset (same ID, other text)."""
    for news in root.glob("*/news.tsv"):
        lines = news.read_text().splitlines()
        for i, line in enumerate(lines):
            parts = line.split("\t")
            if parts[0] == news_id:
                parts[3] = title
                lines[i] = "\t".join(parts)
        news.write_text("".join(line + "\n" for line in lines))


def strip_fingerprints(store: Path) -> None:
    """Make `store` look like one written before fingerprints existed."""
    (store / HASHES).unlink()
    meta = json.loads((store / META).read_text())
    meta.pop("text_hashes")
    (store / META).write_text(json.dumps(meta))


@pytest.fixture
def two_datasets(tmp_path: Path) -> tuple[Path, Path]:
    a = make_mind(tmp_path / "a")
    b = make_mind(tmp_path / "b")
    retitle(b, "N3", "A different story under the same ID")
    return a, b


def test_embed_reuses_only_the_same_text_and_reports_the_changed(
    two_datasets: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = two_datasets
    store = tmp_path / "store"
    first = embed(a, store)
    assert first["embedded"] == 6 and first["changed"] == {"count": 0, "first": []}
    opened = EmbeddingStore.open(store)
    assert opened.hashes is not None and len(opened.hashes) == 6
    old = np.array(opened.vectors[opened.row_of("N3")])
    second = embed(b, store)
    assert second["embedded"] == 1 and second["reused"] == 5
    assert second["changed"] == {"count": 1, "first": ["N3"]}
    assert second["count"] == 6  # replaced in place, not added
    fresh = tmp_path / "fresh"
    embed(b, fresh)
    after, reference = EmbeddingStore.open(store), EmbeddingStore.open(fresh)
    for id_ in reference.ids:
        np.testing.assert_array_equal(
            after.vectors[after.row_of(id_)], reference.vectors[reference.row_of(id_)]
        )
        assert after.hash_of(id_) == reference.hash_of(id_)
    assert not np.array_equal(old, after.vectors[after.row_of("N3")])
    assert after.hash_of("N3") == text_hash(
        "news | politics | A different story under the same ID | An abstract."
    )
    third = embed(b, store)  # nothing changed since: all reused
    assert third["embedded"] == 0 and third["changed"]["count"] == 0
    assert not (store / "chunks").exists()  # nothing of the run is left behind


def test_the_table_names_the_changed_news(two_datasets: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_datasets
    embed(a, tmp_path / "store")
    result = runner.invoke(
        app,
        ["embed", str(b), "--out", str(tmp_path / "store"), "--provider", "hashing"],
        env={"COLUMNS": "160"},
    )
    assert result.exit_code == 0, result.output
    assert "of which text changed" in result.stdout and "1 (N3)" in result.stdout


def test_a_store_without_fingerprints_loads_and_is_reused_unchecked(
    two_datasets: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = two_datasets
    store = tmp_path / "store"
    embed(a, store)
    info = runner.invoke(app, ["embed", "info", str(store), "--json"])
    assert json.loads(info.stdout)["fingerprinted"] == 6
    strip_fingerprints(store)
    assert EmbeddingStore.open(store).hashes is None
    info = runner.invoke(app, ["embed", "info", str(store)], env={"COLUMNS": "160"})
    assert info.exit_code == 0 and "none (store made before newsrec recorded them)" in info.stdout
    result = runner.invoke(app, ["embed", str(b), "--out", str(store), "--provider", "hashing"])
    assert result.exit_code == 0, result.output
    assert "6 vectors were reused by ID alone" in result.stderr
    # Training on it works (nothing to check against) and says so.
    run = runner.invoke(
        app, ["train", str(b), "-e", str(store), "-o", str(tmp_path / "run"), "--dim", "8", *SELECT]
    )
    assert run.exit_code == 0, run.output
    assert "could not be checked" in run.stderr


def test_train_refuses_a_store_made_from_other_texts(two_datasets: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_datasets
    store = tmp_path / "store"
    embed(a, store)
    with pytest.raises(InputError, match=r"1 of 6 news have another text in .*b than the one") as err:
        train(b, tmp_path / "run", store=store, settings=TINY, data_settings=DataSettings(select_on="valid"))
    assert "(first: N3)" in str(err.value) and "newsrec embed" in str(err.value)
    # issue 29 §5: the advice embeds into a new folder, never into the store (a's vectors)
    assert (
        f"newsrec embed {b} --out {tmp_path / 'store-b'} (with the store's provider and model: hashing"
        in str(err.value)
    )
    assert f"--out {store} " not in str(err.value) and not str(err.value).endswith(f"--out {store}")
    (tmp_path / "store-b").mkdir()  # taken: the next free name
    with pytest.raises(InputError, match=f"--out {tmp_path / 'store-b-2'} "):
        train(b, tmp_path / "run", store=store, settings=TINY, data_settings=DataSettings(select_on="valid"))
    result = runner.invoke(
        app, ["train", str(b), "-e", str(store), "-o", str(tmp_path / "run2"), "--dim", "8", *SELECT]
    )
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "(first: N3)" in result.stderr


def test_evaluate_checks_the_run_store_and_the_content_store_against_the_data(
    two_datasets: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = two_datasets
    store = tmp_path / "store"
    embed(a, store)
    train(a, tmp_path / "run", store=store, settings=TINY, data_settings=DataSettings(select_on="valid"))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(b)])
    assert result.exit_code == 1
    assert "1 of" in result.stderr and "(first: N3)" in result.stderr
    result = runner.invoke(app, ["evaluate", "--data", str(b), "--baselines", "--embeddings", str(store)])
    assert result.exit_code == 1 and "(first: N3)" in result.stderr
    ok = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(a), "--baselines"])
    assert ok.exit_code == 0, ok.output


def test_a_resumed_chunk_of_another_text_is_embedded_again(tmp_path: Path) -> None:
    from newsrec_cli.embed.chunks import ChunkLog
    from newsrec_cli.embed.providers import make_provider
    from newsrec_cli.embed.run import execute, plan_run
    from newsrec_cli.settings import EmbedSettings

    provider = make_provider(EmbedSettings(provider="hashing", dimensions=8))
    store = tmp_path / "s"
    ids, texts = ["N1", "N2"], ["one", "two"]
    plan = plan_run(
        store, ids, ["one", "old two"], provider.spec, kind="news", template="{title}", normalize=True
    )
    log = ChunkLog(store)
    log.start(plan.signature | {"dimension": provider.dimension})
    log.append(["N1", "N2"], provider.embed(["one", "old two"]), [text_hash("one"), text_hash("old two")])
    plan = plan_run(store, ids, texts, provider.spec, kind="news", template="{title}", normalize=True)
    assert plan.resumed == 1 and [ids[i] for i in plan.todo] == ["N2"]
    execute(plan, provider)
    opened = EmbeddingStore.open(store)
    assert opened.ids == ["N1", "N2"] and opened.hash_of("N2") == text_hash("two")
    expected = provider.embed(["two"])[0]
    np.testing.assert_allclose(opened.vectors[1], expected / np.linalg.norm(expected), rtol=1e-6)
    shutil.rmtree(store)
