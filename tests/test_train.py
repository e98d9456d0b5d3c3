"""Training end to end on tiny data: the model learns (overfit, falling loss, no NaN), every fusion,
modality, loss and GNN runs, resume equals an uninterrupted run, validation is never a random split
of candidates, trained runs load back and score the same, and bad input is one clear error."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from train_helpers import graph, hashing_store, memorable, need_shared, synth, write_mind, write_store

from newsrec_cli.errors import InputError, MissingVectorsError, SettingsError
from newsrec_cli.evaluate.metrics import compute_metrics
from newsrec_cli.mind import load_dataset
from newsrec_cli.model.inference import score_impressions
from newsrec_cli.runs.loading import load_run
from newsrec_cli.runs.records import TrainCallbacks, TrainingInterrupted
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings
from newsrec_cli.train import train

FAST: dict[str, Any] = {
    "dim": 16,
    "heads": 2,
    "history": 10,
    "batch_size": 32,
    "threads": 1,
    "valid_impressions": 60,
}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train_synth")
    data = synth(root)
    return data, hashing_store(data, root / "store")


@pytest.fixture(scope="module")
def synthetic_graph(synthetic: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return graph(synthetic[0], tmp_path_factory.mktemp("train_graph") / "graph")


def fast(**overrides: Any) -> TrainSettings:
    return TrainSettings(**{**FAST, **overrides})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_overfits_a_tiny_dataset_loss_falls_and_nothing_is_nan(tmp_path: Path) -> None:
    data, store = memorable(tmp_path)
    settings = TrainSettings(
        dim=32,
        heads=2,
        history=5,
        batch_size=16,
        epochs=25,
        lr=5e-3,
        id_dropout=0.0,
        dropout=0.0,
        warmup=0.0,
        patience=25,
        threads=1,
        loss="listwise",  # InfoNCE cannot go to 0 here: 60 news, so a batch repeats them
    )
    result = train(data, tmp_path / "run", store=store, settings=settings)
    trained = [r for r in result.history if r.epoch > 0]  # epoch 0: the untrained model, no loss
    assert result.history[0].epoch == 0 and math.isnan(result.history[0].train_loss)
    losses = [r.train_loss for r in trained]
    assert all(math.isfinite(v) for r in trained for v in [r.train_loss, *r.metrics.values()])
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_metrics["auc"] > 0.95
    assert result.history[0].metrics["auc"] < result.best_metrics["auc"]


@pytest.mark.parametrize(
    "overrides",
    [
        # Whether each fusion, loss and graph encoder learns is tested against the baselines in
        # test_train_quality.py; here each fusion, loss and modality switch builds and trains.
        {"loss": "focal", "gamma": 2.0, "schedule": "plateau"},
        {"fusion": "concat"},
        {"fusion": "gate", "loss": "listwise"},
        {"use_id": False},
        {"use_text": False},
        {"use_category": False, "text_projection": "mlp"},
        {"use_id": False, "use_category": False, "use_user_id": True},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_each_fusion_loss_and_modality_trains_end_to_end(
    synthetic: tuple[Path, Path], tmp_path: Path, overrides: dict[str, Any]
) -> None:
    data, store = synthetic
    result = train(data, tmp_path / "run", store=store, settings=fast(max_steps=6, **overrides))
    record = result.history[-1]
    assert result.stopped == "max_steps" and record.global_step == 6
    assert math.isfinite(record.train_loss)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    expected = [
        m
        for m, on in [
            ("id", overrides.get("use_id", True)),
            ("text", overrides.get("use_text", True)),
            ("category", overrides.get("use_category", True)),
        ]
        if on
    ]
    assert config["model"]["modalities"] == expected
    assert config["settings"]["train"]["fusion"] == overrides.get("fusion", "attention")
    fusion = type(load_run(tmp_path / "run", device="cpu").model.news_encoder.fusion).__name__.lower()
    assert overrides.get("fusion", "attention") in fusion, fusion
    assert (tmp_path / "run" / "model.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()


@pytest.mark.parametrize("encoder", ["sage", "gat"])
def test_graph_encoders_train_and_score(
    synthetic: tuple[Path, Path], synthetic_graph: Path, tmp_path: Path, encoder: str
) -> None:
    data, store = synthetic
    result = train(
        data,
        tmp_path / "run",
        store=store,
        graph=synthetic_graph,
        settings=fast(max_steps=4),
        graph_settings=GraphSettings(encoder=encoder, hidden=16, heads=2),
    )
    assert result.info.modalities == ["id", "text", "graph", "category"]
    run = load_run(tmp_path / "run", device="cpu")
    assert run.graph_settings.encoder == encoder and run.graph_path == synthetic_graph.resolve()
    dataset = load_dataset(data)
    valid = dataset.splits["valid"].subset(np.arange(40))
    scores = score_impressions(run, dataset, valid)
    assert scores.shape == valid.candidates.shape and np.isfinite(scores).all()
    assert set(run.model.fusion_weights()) == {"id", "text", "graph", "category"}


class StopAt(TrainCallbacks):
    """Asks the loop to stop (as Ctrl-C does) after `step` steps of epoch `epoch`."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step, self.current = epoch, step, 0

    def on_epoch_start(self, epoch: int, steps: int, done: int) -> None:
        self.current = epoch

    def on_step(self, done: int, loss: float, samples_per_s: float) -> bool:
        return self.current == self.epoch and done == self.step


def test_resume_from_last_equals_an_uninterrupted_run(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    data, store = synthetic
    settings = fast(epochs=2, valid_impressions=40)
    full = train(data, tmp_path / "full", store=store, settings=settings)
    with pytest.raises(TrainingInterrupted, match="continue with: newsrec train --resume"):
        train(data, tmp_path / "cut", store=store, settings=settings, callbacks=StopAt(epoch=2, step=3))
    resumed = train(None, tmp_path / "cut", settings=settings, resume=True)
    assert resumed.info.resumed_at == (2, 3)
    for name in ("model.pt", "last.pt"):
        a, b = weights(tmp_path / "full" / name), weights(tmp_path / "cut" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert [r.metrics for r in resumed.history] == [r.metrics for r in full.history]
    again = train(None, tmp_path / "cut", settings=settings, resume=True)
    assert again.stopped == "already_finished"


def test_same_seed_same_numbers_other_seed_other_numbers(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    data, store = synthetic
    runs = [
        train(data, tmp_path / f"run{i}", store=store, settings=fast(max_steps=5, seed=seed))
        for i, seed in enumerate([1, 1, 2])
    ]
    assert runs[0].history[-1].metrics == runs[1].history[-1].metrics
    assert runs[0].history[-1].train_loss == runs[1].history[-1].train_loss
    assert runs[0].history[-1].train_loss != runs[2].history[-1].train_loss


def test_time_budget_stops_with_a_partial_validation_and_resume_finishes(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    data, store = synthetic
    result = train(data, tmp_path / "run", store=store, settings=fast(epochs=2, time_budget=1e-3))
    assert result.stopped == "time_budget"
    assert result.history[-1].partial and result.history[-1].steps == 1
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["epoch"] == 0 and json.loads(lines[1])["partial"] is True
    finished = train(None, tmp_path / "run", settings=fast(epochs=2), resume=True)
    assert finished.stopped in ("epochs", "early_stopping")
    assert not finished.history[-1].partial


def test_loaded_run_scores_reproduce_the_validation_metrics(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    data, store = synthetic
    result = train(data, tmp_path / "run", store=store, settings=fast(max_steps=8, valid_impressions=None))
    run = load_run(tmp_path / "run", device="cpu")
    assert not run.model.training and run.store_path == store.resolve()
    dataset = load_dataset(data)
    valid = dataset.protocol().select  # the split the run validated on: train/'s last day
    scores = score_impressions(run, dataset, valid)
    metrics = compute_metrics(scores, valid.labels.astype(np.int64), valid.candidate_offsets).values
    for name, value in result.best_metrics.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6)
    for file in (
        "config.json",
        "vocab_news.tsv",
        "vocab_news_ids.txt",
        "vocab_categories.txt",
        "history.jsonl",
    ):
        assert (tmp_path / "run" / file).is_file()
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_validation_split_by_time_keeps_impressions_whole(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    data, store = synthetic
    result = train(
        data,
        tmp_path / "run",
        store=store,
        settings=fast(max_steps=2, valid_impressions=None),
        data_settings=DataSettings(split="time"),
    )
    assert "the last day of train/" in result.info.validation
    train_imps, valid_imps, _ = load_dataset(data).train_valid("time")
    assert result.info.valid_impressions == len(valid_imps)
    assert train_imps.times.max() < valid_imps.times.min()


def test_real_fixture_without_times_is_split_by_impression(tmp_path: Path) -> None:
    data = need_shared("llm4rec_mind")
    store = hashing_store(data, tmp_path / "store")
    result = train(data, tmp_path / "run", store=store, settings=fast(max_steps=3, valid_impressions=None))
    # one folder without times: 10% reported, 10% of the rest chooses, both held out at random
    assert "held out at random" in result.info.validation
    assert result.info.valid_impressions == round(0.1 * (1788 - round(0.1 * 1788)))
    # the kept model is the best validated one (epoch 0, the content prior, included; a --max-steps
    # end competes)
    assert result.best_metrics["auc"] == max(r.metrics["auc"] for r in result.history)
    assert len(result.history) == 2 and result.history[0].epoch == 0


def test_missing_text_vectors_are_an_error_unless_learned(tmp_path: Path) -> None:
    data, _ = memorable(tmp_path)
    partial = write_store(tmp_path / "partial", [f"N{i}" for i in range(55)], np.ones((55, 16)))
    with pytest.raises(MissingVectorsError, match=r"5 of 60 IDs have no vector \(first: N55, N56"):
        train(data, tmp_path / "run", store=partial, settings=fast(max_steps=2))
    result = train(data, tmp_path / "run2", store=partial, settings=fast(max_steps=2, missing="learned"))
    assert result.info.missing_text == ["N55", "N56", "N57", "N58", "N59"]
    config = json.loads((tmp_path / "run2" / "config.json").read_text())
    assert config["missing_text"]["count"] == 5


def test_a_store_of_another_dimension_is_refused_when_loading(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    data, store = synthetic
    train(data, tmp_path / "run", store=store, settings=fast(max_steps=2))
    ids = load_dataset(data, behaviors=False).news.ids
    other = write_store(tmp_path / "other", ids, np.ones((len(ids), 8)))
    # the store's signature in config.json is checked first; it names the dimension among the rest
    with pytest.raises(
        InputError, match="is not the store this run was trained with .*dimension 8, the run's"
    ):
        load_run(tmp_path / "run", device="cpu", store=other)


def test_settings_that_cannot_build_a_model_are_errors(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    data, store = synthetic
    with pytest.raises(SettingsError, match="every modality is off"):
        train(
            data,
            tmp_path / "a",
            store=store,
            settings=fast(use_id=False, use_text=False, use_category=False, use_graph=False),
        )
    with pytest.raises(SettingsError, match="train.dim = 16 must be divisible by train.heads = 3"):
        train(data, tmp_path / "b", store=store, settings=fast(heads=3))
    with pytest.raises(SettingsError, match="need --embeddings"):
        train(data, tmp_path / "c", settings=fast())
    train(data, tmp_path / "d", store=store, settings=fast(max_steps=1))
    with pytest.raises(InputError, match="already holds a run"):
        train(data, tmp_path / "d", store=store, settings=fast(max_steps=1))


def test_unlabeled_training_data_is_refused(tmp_path: Path) -> None:
    news = [f"N{i}\tnews\tworld\tT\tA\t\t[]\t[]" for i in range(4)]
    data = write_mind(tmp_path / "test_only", news, [("U1", "N0", "N1 N2"), ("U2", "", "N2 N3")])
    store = write_store(tmp_path / "store", [f"N{i}" for i in range(4)], np.ones((4, 4)))
    with pytest.raises(InputError):
        train(
            data,
            tmp_path / "run",
            store=store,
            settings=fast(max_steps=1),
            data_settings=DataSettings(split="impression", valid_fraction=0.5),
        )


def test_dataloader_workers_build_the_same_batches(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    data, store = synthetic
    for workers in (0, 1):
        train(data, tmp_path / f"w{workers}", store=store, settings=fast(max_steps=3, workers=workers))
    a, b = weights(tmp_path / "w0" / "last.pt"), weights(tmp_path / "w1" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
