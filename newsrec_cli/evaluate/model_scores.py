"""The model row of evaluate: a trained run (train's `load_run`) and its logits per candidate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from newsrec_cli.errors import InputError
from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.mind.dataset import MindDataset
from newsrec_cli.mind.popularity import PopularityView, protocol_view
from newsrec_cli.settings import DataSettings

if TYPE_CHECKING:
    from newsrec_cli.runs.loading import LoadedRun


@dataclass
class ModelScores:
    """A loaded run plus what evaluate takes from it: the data split and the text store it used."""

    run: LoadedRun
    data_settings: DataSettings
    store: Path | None

    @classmethod
    def open(cls, run_dir: Path, device: str = "auto", store: Path | None = None) -> ModelScores:
        """Load the run (best weights, eval mode); InputError when `run_dir` is not a run.

        `store`: the run's text store where it is now, in place of the path config.json names.
        """
        # Imported here: torch takes seconds to load, and baselines or a prediction file never need it.
        from newsrec_cli.runs.loading import load_run

        run = load_run(run_dir, device=device, store=store)
        return cls(run=run, data_settings=run.data_settings, store=run.store_path)

    def score(
        self,
        dataset: MindDataset,
        impressions: Impressions,
        batch_size: int = 512,
        *,
        known: Impressions | None = None,
        protocol: str = "offline",
    ) -> np.ndarray:
        """Logits aligned with `impressions.candidates` (news vectors once, users once, then scores)."""
        return run_scores(self.run, dataset, impressions, known, protocol, batch_size)


def run_scores(
    run: LoadedRun,
    dataset: MindDataset,
    target: Impressions,
    known: Impressions | None,
    protocol: str = "offline",
    batch_size: int = 512,
) -> np.ndarray:
    """A run's logits float64 [C] of `target`; a run trained with popularity adds its term, from
    the clicks of `known` (the labelled impressions before `target`) read as `protocol` says:
    offline frozen at the end of `known`, replay in time order through `target` too."""
    from newsrec_cli.model.inference import score_impressions

    logits = np.asarray(score_impressions(run, dataset, target, batch_size=batch_size), dtype=np.float64)
    head = run.model.popularity
    if head is None:
        return logits
    from newsrec_cli.model.popularity import popularity_logits

    view = popularity_view(run, dataset, target, known, protocol)
    return logits + popularity_logits(head, view.counts, target, at=view.at)


def popularity_view(
    run: LoadedRun, dataset: MindDataset, target: Impressions, known: Impressions | None, protocol: str
) -> PopularityView:
    """The clicks a popularity run scores `target` with: those of `known` read as `protocol` says;
    InputError when there are no labelled impressions to count."""
    if known is None or not known.labeled:
        raise InputError(
            "the run scores with popularity, which needs labelled training impressions (train/) to "
            f"count clicks in; none were found before the {protocol} split",
            path=target.source or dataset.root,
        )
    return protocol_view(
        protocol,
        known,
        target,
        half_life_hours=run.settings.popularity_half_life,
        prior=run.settings.popularity_prior,
    )
