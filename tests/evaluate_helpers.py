"""A tiny hand-made MIND dataset (train/ + valid/) and text store whose baseline metrics are known.

Training clicks: N2 twice, N3 once, N4 once. Valid impressions:
  10  history N1 N3 (sports, news)   candidates N2-1 N5-0 N6-0
  11  history N5 (tv)                candidates N4-0 N6-1 N2-0
  12  no history                     candidates N1-0 N3-1
Popularity ranks N2 > N3 = N4 > others: impressions 10 and 12 perfect, 11 clicked news last
  -> AUC (1 + 0 + 1) / 3 = 2/3, MRR (1 + 1/3 + 1) / 3 = 7/9.
Content (sports, news and tv vectors): 10 and 11 perfect; 12 has no history, so every candidate
  scores 0 and the later-listed N3 ranks first (tie rule) -> AUC (1 + 1 + 0.5) / 3 = 5/6, MRR 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from newsrec_cli.embed.store import commit, new_meta
from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.mind.vocab import Vocab

NEWS = {
    "N1": ("sports", "football", [1.0, 0.0, 0.0]),
    "N2": ("sports", "tennis", [1.0, 0.1, 0.0]),
    "N3": ("news", "politics", [0.0, 1.0, 0.0]),
    "N4": ("news", "world", [0.1, 1.0, 0.0]),
    "N5": ("tv", "shows", [0.0, 0.0, 1.0]),
    "N6": ("tv", "celebrity", [0.0, 0.1, 1.0]),
}
TRAIN = [
    "1\tU1\t11/14/2019 9:00:00 AM\tN1 N3\tN2-1 N4-0 N5-0",
    "2\tU2\t11/14/2019 10:00:00 AM\tN2\tN2-1 N3-0 N1-0",
    "3\tU3\t11/14/2019 11:00:00 AM\tN4\tN4-1 N5-0",
    "4\tU6\t11/14/2019 11:30:00 AM\tN5\tN3-1 N1-0",
]
VALID = [
    "10\tU1\t11/15/2019 9:00:00 AM\tN1 N3\tN2-1 N5-0 N6-0",
    "11\tU4\t11/15/2019 9:30:00 AM\tN5\tN4-0 N6-1 N2-0",
    "12\tU5\t11/15/2019 10:00:00 AM\t\tN1-0 N3-1",
]
POPULARITY = {"auc": 2 / 3, "mrr": 7 / 9}
CONTENT = {"auc": 5 / 6, "mrr": 1.0}


def news_line(news_id: str) -> str:
    category, sub, _ = NEWS[news_id]
    return "\t".join([news_id, category, sub, f"Title of {news_id}", "An abstract.", "", "[]", "[]"])


def make_mind(root: Path, valid: list[str] | None = None, test: list[str] | None = None) -> Path:
    """train/ and valid/ (and test/ when given) folders under `root`; returns root."""
    splits = {"train": TRAIN, "valid": VALID if valid is None else valid}
    if test is not None:
        splits["test"] = test
    for name, lines in splits.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "news.tsv").write_text("".join(news_line(n) + "\n" for n in NEWS), encoding="utf-8")
        (folder / "behaviors.tsv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return root


def make_store(path: Path, skip: tuple[str, ...] = ()) -> Path:
    """A news text store with the vectors of NEWS (minus `skip`)."""
    ids = [n for n in NEWS if n not in skip]
    vectors = np.asarray([NEWS[n][2] for n in ids], dtype=np.float32)
    signature = {
        "kind": "news",
        "provider": "hashing",
        "model": "hand-made",
        "dimension": 3,
        "template": "{title}",
        "normalized": False,
    }
    commit(path, ids, vectors, new_meta(signature))
    return path


def make_impressions(lengths: list[int], labels: np.ndarray | None = None, seed: int = 0) -> Impressions:
    """Impressions with the given candidate counts (news IDs N<k>), random labels unless given."""
    rng = np.random.default_rng(seed)
    total = int(sum(lengths))
    vocab = Vocab(f"N{k}" for k in range(total))
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    n = len(lengths)
    return Impressions(
        impression_ids=np.arange(100, 100 + n, dtype=np.int64),
        users=np.ones(n, dtype=np.int32),
        times=np.full(n, np.datetime64("2019-11-15T09:00:00", "s")),
        history_offsets=np.zeros(n + 1, dtype=np.int64),
        history=np.zeros(0, dtype=np.int32),
        candidate_offsets=offsets,
        candidates=np.arange(1, total + 1, dtype=np.int32),
        labels=(rng.random(total) < 0.3).astype(np.int8) if labels is None else labels.astype(np.int8),
        news_vocab=vocab,
        user_vocab=Vocab(["U1"]),
        source="behaviors.tsv",
    )


def train_tiny_run(data: Path, run: Path, store: Path, **settings: object) -> Path:
    """One epoch of a tiny model on `make_mind` data; its 4 training impressions leave none to hold
    out, so valid/ chooses the epoch (and is then also reported)."""
    from newsrec_cli.settings import DataSettings, TrainSettings
    from newsrec_cli.train import train

    tiny = TrainSettings(**{"dim": 8, "heads": 2, "epochs": 1, "device": "cpu", "threads": 1, **settings})
    train(data, run, store=store, settings=tiny, data_settings=DataSettings(select_on="valid"))
    return run
