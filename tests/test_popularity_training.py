"""Popularity as a modality: the head, the training batches, both protocols end to end.

The quality test trains on `data synth --preset trending` (clicks follow each news' buzz, which
no text or category shows) with and without --use-popularity and scores the held-out day by
online replay: the model with popularity must win by a margin, and the control without it fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_popularity_counts import _impressions
from train_helpers import hashing_store, invoke

from newsrec_cli.evaluate.metrics import compute_metrics
from newsrec_cli.evaluate.model_scores import run_scores
from newsrec_cli.evaluate.runner import evaluate
from newsrec_cli.mind import load_dataset
from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.mind.popularity import FEATURES, PopularityCounts, impression_seconds
from newsrec_cli.model.popularity import PopularityHead, transform
from newsrec_cli.objective.batching import EpochBatches, plan_epoch
from newsrec_cli.objective.samples import click_samples
from newsrec_cli.runs.loading import load_run
from newsrec_cli.settings import DataSettings, EvaluateSettings, TrainSettings
from newsrec_cli.train import train

REPLAY_MARGIN = 0.06  # replay AUC of the model with popularity over the same model without


@pytest.mark.parametrize("mode", ["ctr", "gate"])
def test_head_starts_at_zero_and_weighs_the_ctr_logit(mode: str) -> None:
    head = PopularityHead(mode)
    raw = torch.tensor([[[3.0, 10.0, 0.2, 5.0, 1.0], [0.0, 0.0, 0.04, 0.0, 0.0]]])  # (1, 2, F)
    lengths = torch.tensor([[4.0]])
    assert torch.equal(head(raw, lengths), torch.zeros(1, 2))  # training starts without popularity
    with torch.no_grad():
        head.raw_weight.fill_(1.5)
    expected = 1.5 * torch.log(torch.tensor([0.2 / 0.8, 0.04 / 0.96]))
    torch.testing.assert_close(head(raw, lengths)[0], expected)  # the gate starts at trust 1
    assert transform(raw).shape == raw.shape
    assert head.describe()["ctr_weight"] == pytest.approx(1.5)


def test_batches_carry_each_candidates_features_at_its_impressions_time() -> None:
    hour = 3600
    imps = _impressions(
        [0, hour, 2 * hour], [[1, 2, 3], [1, 2, 3], [1, 2, 3]], [[1, 0, 0], [1, 0, 0], [0, 1, 0]]
    )
    counts = PopularityCounts.from_impressions(imps, half_life_hours=1, prior=0)
    samples = click_samples(imps)
    plan = plan_epoch(samples, negatives=2, seed=0, epoch=0)
    for pairwise in (False, True):
        batches = EpochBatches(
            imps, samples, plan, batch_size=3, history=5, popularity=counts, pairwise=pairwise
        )
        batch = batches[0]
        candidates = batch["candidates"].numpy()  # (B, 3)
        rows = samples.impression[plan.order[:3]]
        seconds = impression_seconds(imps)[rows]
        news = candidates.reshape(1, -1) if pairwise else candidates
        expected = counts.features(news, seconds[:, None])
        np.testing.assert_array_equal(batch["popularity"].numpy(), expected)
        assert batch["popularity"].shape == (3, 9 if pairwise else 3, len(FEATURES))
        # the first impression (time 0) sees nothing: its own clicks never count
        first = int(np.flatnonzero(rows == 0)[0])
        assert batch["popularity"][first, :, FEATURES.index("seen")].sum() == 0


@pytest.fixture(scope="module")
def trending(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trending")
    data = root / "data"
    invoke(
        "data",
        "synth",
        "--out",
        data,
        "--preset",
        "trending",
        "--news",
        "1000",
        "--users",
        "1000",
        "--days",
        "4",
    )
    store = hashing_store(data, root / "store")
    runs = {}
    for name, on in (("popularity", True), ("control", False)):
        settings = TrainSettings(
            dim=32,
            heads=2,
            epochs=3,
            threads=1,
            device="cpu",
            seed=0,
            use_popularity=on,
            valid_protocol="replay",
        )
        train(data, root / name, store=store, settings=settings, data_settings=DataSettings(valid_days=1))
        runs[name] = root / name
    return {"data": data, **runs}


def _auc(data: Path, run: Path, protocol: str) -> dict[str, float]:
    report = evaluate(
        EvaluateSettings(baselines=True, metrics="auc", device="cpu", protocol=protocol),
        data=data,
        run_dir=run,
    )
    assert report.protocol == protocol
    return {row.name.split()[0]: row.result.values["auc"] for row in report.rows if row.result is not None}


def test_replay_gain_needs_popularity(trending: dict[str, Path]) -> None:
    data = trending["data"]
    with_pop = _auc(data, trending["popularity"], "replay")
    control = _auc(data, trending["control"], "replay")
    floor = control["model"] + REPLAY_MARGIN
    assert with_pop["model"] > floor, (with_pop, control)
    assert with_pop["model"] > with_pop["content"] + REPLAY_MARGIN
    # the control: no popularity, so the protocol changes nothing and the floor fails it
    assert _auc(data, trending["control"], "offline")["model"] == pytest.approx(control["model"])
    assert not control["model"] > floor


def _with_labels(imps: Impressions, labels: np.ndarray) -> Impressions:
    return Impressions(**{**imps.__dict__, "labels": labels})


def test_later_labels_never_reach_earlier_scores(trending: dict[str, Path]) -> None:
    """Replay: change the labels of every impression from the median time on (the one at the cut
    included): the scores of the earlier impressions and of the cut one do not move."""
    dataset = load_dataset(trending["data"])
    known, target = dataset.splits["train"], dataset.splits["valid"]
    run = load_run(trending["popularity"], "cpu")
    times = np.asarray(target.times)
    cut = int(np.argsort(times, kind="stable")[len(times) // 2])  # the impression at the cut
    later = times >= times[cut]
    owner = target.candidate_impression
    rng = np.random.default_rng(0)
    labels = np.asarray(target.labels).copy()
    labels[later[owner]] = rng.permutation(labels[later[owner]])
    changed = _with_labels(target, labels)
    for protocol in ("replay", "offline"):
        before = run_scores(run, dataset, target, known, protocol)
        after = run_scores(run, dataset, changed, known, protocol)
        earlier = ~later[owner] | (owner == cut)
        np.testing.assert_array_equal(before[earlier], after[earlier])
        if protocol == "replay":  # later impressions do read earlier ones' clicks: the test can tell
            assert not np.array_equal(before, after)
        else:  # offline: frozen at the end of train/, nothing of valid/ counts
            np.testing.assert_array_equal(before, after)
    # and the replay protocol beats offline on this data, where the buzz moves within the day
    labels_int, offsets = target.labels.astype(np.int64), target.candidate_offsets
    auc = {
        p: compute_metrics(run_scores(run, dataset, target, known, p), labels_int, offsets, ["auc"]).values[
            "auc"
        ]
        for p in ("offline", "replay")
    }
    assert auc["replay"] > auc["offline"]


def test_files_name_the_protocol(trending: dict[str, Path], tmp_path: Path) -> None:
    data, run = trending["data"], trending["popularity"]
    for protocol, metrics, prediction in (
        ("replay", "metrics-replay.json", "prediction-replay.txt"),
        ("offline", "metrics.json", "prediction.txt"),
    ):
        out = tmp_path / protocol
        invoke(
            "evaluate",
            run,
            "--data",
            data,
            "--protocol",
            protocol,
            "--write-predictions",
            "--out",
            out,
            "--device",
            "cpu",
        )
        written = json.loads((out / metrics).read_text())
        assert written["protocol"] == protocol
        assert (out / prediction).is_file() and (out / prediction.replace(".txt", ".zip")).is_file()
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [metrics, prediction, prediction.replace(".txt", ".zip")]
        )


def test_a_run_with_popularity_needs_training_clicks(trending: dict[str, Path]) -> None:
    dataset = load_dataset(trending["data"])
    run = load_run(trending["popularity"], "cpu")
    from newsrec_cli.errors import InputError

    with pytest.raises(InputError, match="needs labelled training impressions"):
        run_scores(run, dataset, dataset.splits["valid"], None, "offline")
