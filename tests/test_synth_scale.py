"""`newsrec data synth --preset large`: MIND-large's shapes, at a small --scale for the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.mind.dataset import load_dataset
from newsrec_cli.mind.synth_scale import ScaleShape, synthesize_scale


def test_shape_of_a_scaled_large_set(tmp_path: Path) -> None:
    shape = ScaleShape.large(0.002)
    assert (shape.news, shape.users, shape.train, shape.valid) == (322, 2000, 4465, 4800)
    summary = synthesize_scale(tmp_path / "a", shape, seed=1)
    assert summary.impressions == {"train": 4465, "valid": 4800}
    data = load_dataset(tmp_path / "a", cache=False)
    assert len(data.news) == shape.news
    for split in ("train", "valid"):
        imps = data.splits[split]
        clicks = np.add.reduceat(imps.labels.astype(np.int64), imps.candidate_offsets[:-1])
        # every impression has a click and a non-click, as in MIND; ~4-6% of candidates clicked
        assert (clicks >= 1).all() and (clicks < imps.candidate_counts).all()
        assert 0.03 < imps.labels.mean() < 0.08
        # MIND's means: ~37 candidates, ~33 history clicks (log-normal, long tail)
        assert 30 < imps.candidate_counts.mean() < 45
        assert 22 < imps.history_lengths.mean() < 45 and imps.history_lengths.max() > 150
        assert bool((np.diff(imps.times.astype(np.int64)) >= 0).all())  # a log in time order
        # every ID resolves to a news.tsv row (no coverage gap)
        assert int(imps.candidates.max()) <= len(data.news)
    assert data.splits["valid"].times.min() > data.splits["train"].times.max()
    again = synthesize_scale(tmp_path / "b", shape, seed=1)
    assert again.candidates == summary.candidates
    for split in ("train", "valid"):
        a = (tmp_path / "a" / split / "behaviors.tsv").read_bytes()
        assert a == (tmp_path / "b" / split / "behaviors.tsv").read_bytes()


def test_synth_preset_large_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["data", "synth", "--preset", "large", "--scale", "0.001", "--out", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["impressions"] == {"train": 2233, "valid": 2400}
    assert summary["news"] == 200
    bad = CliRunner().invoke(
        app, ["data", "synth", "--preset", "large", "--scale", "0", "--out", str(tmp_path)]
    )
    assert bad.exit_code != 0 and "--scale" in bad.output
