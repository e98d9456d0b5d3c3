"""The model row of evaluate: a trained run (train's `load_run`) and its logits per candidate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.mind.dataset import MindDataset
from newsrec_cli.settings import DataSettings

if TYPE_CHECKING:
    from newsrec_cli.train.run import LoadedRun


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
        from newsrec_cli.train.run import load_run

        run = load_run(run_dir, device=device, store=store)
        return cls(run=run, data_settings=run.data_settings, store=run.store_path)

    def score(self, dataset: MindDataset, impressions: Impressions, batch_size: int = 512) -> np.ndarray:
        """Logits aligned with `impressions.candidates` (news vectors once, users once, then scores)."""
        from newsrec_cli.model.inference import score_impressions

        logits = score_impressions(self.run, dataset, impressions, batch_size=batch_size)
        return np.asarray(logits, dtype=np.float64)
