"""History clicks as training signal (`train --history-positives`): the samples read only the
training impressions' histories, the option trains, is recorded, and resumes bit-identically."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_train_recovery import KillAt, Killed, assert_same_weights, fast
from train_helpers import hashing_store, synth

from newsrec_cli.mind import Impressions, load_dataset
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings
from newsrec_cli.train import train
from newsrec_cli.train.setup import RunRequest, TrainingData, load_training_data


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("history_synth")
    data = synth(root)
    return data, hashing_store(data, root / "store")


def training_data(data: Path, **settings: Any) -> TrainingData:
    """What `train` would train on with these settings (the default protocol)."""
    request = RunRequest(
        out=data,
        data=data,
        store=None,
        graph=None,
        settings=TrainSettings(**settings),
        data_settings=DataSettings(),
        graph_settings=GraphSettings(),
        resume=False,
        saved=None,
        trained_dim=None,
        started=time.monotonic(),
    )
    return load_training_data(request)


def clicked_pairs(imps: Impressions, *, history: bool) -> set[tuple[int, int]]:
    """(user, news) of every history click (`history`) or every labelled click of `imps`."""
    if history:
        users = np.repeat(imps.users, imps.history_lengths)
        return set(zip(users.tolist(), imps.history.tolist(), strict=True))
    clicks = imps.labels == 1
    return set(
        zip(
            imps.users[imps.candidate_impression][clicks].tolist(),
            imps.candidates[clicks].tolist(),
            strict=True,
        )
    )


@pytest.mark.parametrize("negatives", ["category", "random"])
def test_history_positives_come_from_training_histories_only(
    synthetic: tuple[Path, Path], negatives: str
) -> None:
    data, _ = synthetic
    fit = training_data(data, history_positives=1.0, history_negatives=negatives, history=10)
    assert fit.history is not None
    samples = fit.history.impressions
    train_clicks = int((fit.train.labels == 1).sum())
    assert len(samples) == min(train_clicks, fit.history.available) > 0  # one per training click
    assert np.array_equal(fit.fit.impression_ids[: len(fit.train)], fit.train.impression_ids)

    positives = samples.candidates[samples.candidate_offsets[:-1]]
    assert (samples.labels[samples.candidate_offsets[:-1]] == 1).all()
    assert samples.labels.sum() == len(samples)  # one positive each, the rest negatives
    pairs = set(zip(samples.users.tolist(), positives.tolist(), strict=True))
    own = clicked_pairs(fit.train, history=True)
    assert pairs <= own  # each positive is a click of its user's training history
    # The context is the user's other clicks: never the positive itself, at most --history long.
    for i in range(len(samples)):
        context = samples.history_of(i)
        assert positives[i] not in context and len(context) <= 10
        negs = samples.candidates_of(i)[1:]
        assert not any((int(samples.users[i]), int(n)) in own for n in negs)  # never the user's own click

    # No leak: the reported split's clicks, and those of the day that chooses the epoch, reach the
    # samples only where the user had already clicked them in training. Reading those splits'
    # histories would break this: they hold such clicks.
    dataset = load_dataset(data)
    for later in (dataset.splits["valid"], fit.valid):
        fresh = clicked_pairs(later, history=False) - own
        assert fresh, "the check needs later clicks that training never saw"
        assert not pairs & fresh
        assert clicked_pairs(later, history=True) - own  # their histories would leak
    reported = dataset.splits["valid"]
    reported_news = set(reported.candidates[reported.labels == 1].tolist()) - set(fit.train.history.tolist())
    assert reported_news and not set(positives.tolist()) & reported_news


def test_history_negatives_of_the_category_share_the_positives_category(synthetic: tuple[Path, Path]) -> None:
    from newsrec_cli.train.setup import news_categories

    data, _ = synthetic
    fit = training_data(data, history_positives=1.0, history_negatives="category")
    assert fit.history is not None
    samples = fit.history.impressions
    categories = news_categories(fit.dataset, fit.train)
    width = samples.candidate_counts[0]
    grid = categories[samples.candidates.reshape(-1, width)]
    same = (grid[:, 1:] == grid[:, :1]).mean()
    assert same > 0.95  # of its category, but where only the user's own clicks are left
    control = training_data(data, history_positives=1.0, history_negatives="random").history
    assert control is not None
    grid = categories[control.impressions.candidates.reshape(-1, width)]
    assert (grid[:, 1:] == grid[:, :1]).mean() < 0.5


def test_history_positives_train_record_and_resume_bit_identically(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    data, store = synthetic
    settings = fast(epochs=1, history_positives=0.5, checkpoint_every=2)
    full = train(data, tmp_path / "full", store=store, settings=settings)
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["settings"]["train"]["history_positives"] == 0.5
    assert config["settings"]["train"]["history_negatives"] == "category"
    recorded = config["samples"]
    plain_clicks = len(training_data(data).samples)
    assert recorded["history"]["samples"] == round(0.5 * plain_clicks) > 0
    assert recorded["clicks"] == plain_clicks + recorded["history"]["samples"]
    assert full.history[-1].steps == -(-recorded["clicks"] // settings.batch_size)

    with pytest.raises(Killed):
        train(data, tmp_path / "cut", store=store, settings=settings, callbacks=KillAt(epoch=1, step=3))
    resumed = train(None, tmp_path / "cut", resume=True)
    assert resumed.best_metrics == full.best_metrics
    assert_same_weights(tmp_path / "full" / "model.pt", tmp_path / "cut" / "model.pt")
    assert_same_weights(tmp_path / "full" / "last.pt", tmp_path / "cut" / "last.pt")
