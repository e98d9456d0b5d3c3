"""The clean protocol is the default: the split that chooses the epoch is never the one reported,
unless `--select-on valid` asks for it, and then every table says so. The text centre comes from
the training impressions' news, never from the reported split's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import hashing_store, news_row, synth
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.errors import InputError
from newsrec_cli.evaluate.baselines import news_center
from newsrec_cli.mind import load_dataset
from newsrec_cli.mind.behaviors import distinct_news
from newsrec_cli.runs.loading import load_run
from newsrec_cli.settings import TrainSettings
from newsrec_cli.train import train

runner = CliRunner()
FAST = ["--dim", "16", "--heads", "2", "--history", "10", "--threads", "1", "--epochs", "1"]


def write_days(folder: Path, days: list[int], news: list[str], start: int = 1) -> Path:
    """A MIND folder with one impression per entry of `days` (day of November 2019)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("".join(news_row(n) + "\n" for n in news), encoding="utf-8")
    lines = [
        f"{i}\tU{i % 7}\t11/{d}/2019 {1 + i % 11}:00:00 AM\t{news[0]}\t{news[1]}-1 {news[2]}-0\n"
        for i, d in enumerate(days, start=start)
    ]
    (folder / "behaviors.tsv").write_text("".join(lines), encoding="utf-8")
    return folder


NEWS = ["N1", "N2", "N3"]


def test_train_and_valid_choose_on_the_last_day_of_train_and_report_valid(tmp_path: Path) -> None:
    write_days(tmp_path / "d" / "train", [9] * 5 + [10] * 4 + [11] * 3, NEWS)
    write_days(tmp_path / "d" / "valid", [12] * 2, NEWS, start=100)
    chosen = load_dataset(tmp_path / "d").protocol()
    assert len(chosen.train) == 9 and len(chosen.select) == 3 and len(chosen.report) == 2
    assert set(chosen.select.times.astype("datetime64[D]").astype(str)) == {"2019-11-11"}
    assert chosen.report.impression_ids.min() >= 100 and not chosen.same
    assert chosen.title.startswith("chosen on the last day of train/ (2019-11-11")
    assert "reported on valid/" in chosen.title and "optimistic" not in chosen.title


def test_a_labelled_test_is_reported_and_valid_chooses(tmp_path: Path) -> None:
    write_days(tmp_path / "d" / "train", [9, 10], NEWS)
    write_days(tmp_path / "d" / "valid", [11], NEWS, start=100)
    write_days(tmp_path / "d" / "test", [12], NEWS, start=200)
    chosen = load_dataset(tmp_path / "d").protocol()
    assert len(chosen.train) == 2 and chosen.select.impression_ids.tolist() == [100]
    assert chosen.report.impression_ids.tolist() == [200] and not chosen.same


def test_choosing_on_the_reported_split_needs_the_flag_and_says_so(tmp_path: Path) -> None:
    write_days(tmp_path / "d" / "train", [9, 10], NEWS)
    write_days(tmp_path / "d" / "valid", [11], NEWS, start=100)
    chosen = load_dataset(tmp_path / "d").protocol(select_on="valid")
    assert chosen.same and chosen.select is chosen.report and len(chosen.train) == 2
    assert "the same split: optimistic" in chosen.title


def test_a_single_day_of_train_is_split_by_impression_and_says_so(tmp_path: Path) -> None:
    write_days(tmp_path / "d" / "train", [9] * 20, NEWS)
    write_days(tmp_path / "d" / "valid", [10] * 2, NEWS, start=100)
    chosen = load_dataset(tmp_path / "d").protocol()
    assert len(chosen.select) == 2 and len(chosen.train) == 18
    assert "held out at random (its impressions span one day" in chosen.select_name


def test_too_little_of_train_to_hold_out_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    write_days(tmp_path / "d" / "train", [9] * 3, NEWS)
    write_days(tmp_path / "d" / "valid", [10], NEWS, start=100)
    with pytest.raises(InputError, match="--select-on valid") as caught:
        load_dataset(tmp_path / "d").protocol()
    assert "\n" not in str(caught.value)


def test_a_single_folder_reports_its_last_day_and_chooses_on_the_day_before(tmp_path: Path) -> None:
    write_days(tmp_path / "one", [9] * 4 + [10] * 3 + [11] * 2, NEWS)
    chosen = load_dataset(tmp_path / "one").protocol()
    assert (len(chosen.train), len(chosen.select), len(chosen.report)) == (4, 3, 2)
    assert chosen.title == (
        "chosen on the last day of one/ before those (2019-11-10, 3 of 7 impressions), "
        "reported on the last day of one/ (2019-11-11, 2 of 9 impressions)"
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("protocol")
    data = synth(root)
    store = hashing_store(data, root / "store")
    result = runner.invoke(app, ["train", str(data), "-e", str(store), "-o", str(root / "run"), *FAST])
    assert result.exit_code == 0, result.output
    return data, store, root / "run"


def test_newsrec_train_with_no_option_chooses_on_train_and_evaluate_reports_valid(
    run: tuple[Path, Path, Path],
) -> None:
    data, _, out = run
    dataset = load_dataset(data)
    last_day = dataset.splits["train"].times.astype("datetime64[D]").max()
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    selection = int((dataset.splits["train"].times.astype("datetime64[D]") == last_day).sum())
    assert history[0]["valid_impressions"] == selection != len(dataset.splits["valid"])

    shown = runner.invoke(app, ["evaluate", str(out), "--data", str(data)])
    assert shown.exit_code == 0, shown.output
    flat = " ".join(shown.stdout.split())
    assert f"chosen on the last day of train/ ({last_day}" in flat and "reported on valid/" in flat
    assert "optimistic" not in flat
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["chosen_on"].startswith("the last day of train/") and metrics["reported_on"].startswith(
        "valid/"
    )
    assert metrics["optimistic"] is False and metrics["impressions"] == len(dataset.splits["valid"])


def test_select_on_valid_is_said_in_the_title_and_in_metrics_json(
    run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, store, _ = run
    out = tmp_path / "opt"
    args = ["train", str(data), "-e", str(store), "-o", str(out), "--select-on", "valid", *FAST]
    assert runner.invoke(app, args).exit_code == 0
    shown = runner.invoke(app, ["evaluate", str(out), "--data", str(data)])
    assert shown.exit_code == 0, shown.output
    assert "the same split: optimistic" in " ".join(shown.stdout.split())
    assert json.loads((out / "metrics.json").read_text())["optimistic"] is True


def test_the_text_centre_is_the_mean_of_the_training_impressions_news(run: tuple[Path, Path, Path]) -> None:
    data, store, out = run
    dataset = load_dataset(data)
    chosen = dataset.protocol()
    opened = EmbeddingStore.open(store)
    known = [dataset.news_vocab.ids[i] for i in distinct_news(chosen.train)]
    expected = opened.lookup(known)[0].mean(axis=0)
    everything = opened.lookup([i for i in dataset.news_vocab.ids[1:] if i in opened])[0].mean(axis=0)
    assert np.abs(expected - everything).max() > 1e-3  # valid/'s fresh news would move it
    model = load_run(out, device="cpu").model
    for centre in (model.prior.center, model.news_encoder.text.center):
        assert torch.allclose(centre, torch.from_numpy(expected), atol=1e-5)
    baseline = news_center(opened, dataset.news_vocab, chosen.train)
    assert np.allclose(baseline, expected, atol=1e-6)


def test_choose_untrained_off_never_keeps_epoch_0(run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, store, _ = run
    # lr ~ 0: every trained epoch equals epoch 0, so only the setting decides which one is kept
    settings = TrainSettings(dim=16, heads=2, epochs=1, threads=1, lr=1e-12, min_delta=0.0)
    kept = train(data, tmp_path / "on", store=store, settings=settings)
    assert kept.best_epoch == 0
    off = settings.model_copy(update={"choose_untrained": False})
    assert train(data, tmp_path / "off", store=store, settings=off).best_epoch == 1
