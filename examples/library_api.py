"""newsrec as a library: what `newsrec evaluate RUN --data DATA` does, in a dozen lines.

The engine knows nothing of the terminal, so a notebook can drive it directly:

    python examples/library_api.py demo/run demo/data

(after `bash scripts/quickstart.sh`, which writes demo/run and demo/data).
"""

from __future__ import annotations

import sys

from newsrec_cli.evaluate.metrics import compute_metrics
from newsrec_cli.mind import load_dataset
from newsrec_cli.model.inference import score_impressions
from newsrec_cli.runs.loading import load_run


def main(run_dir: str, data_dir: str) -> None:
    run = load_run(run_dir, device="auto")
    dataset = load_dataset(data_dir)
    # The split the run validated on: the valid/ folder, or the same time/impression split.
    d = run.data_settings
    _, valid, how = dataset.train_valid(d.split, d.valid_days, d.valid_fraction, d.seed, d.select_on)
    logits = score_impressions(run, dataset, valid)  # aligned with valid.candidates
    result = compute_metrics(logits, valid.labels, valid.candidate_offsets)
    print(how)
    for name, value in result.values.items():
        print(f"{name:>8}: {value:.4f}  ({result.counts[name]} impressions)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
