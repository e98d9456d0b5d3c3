"""A MIND-large-shaped synthetic dataset, written in bounded memory (`newsrec data synth --preset large`).

It exists for the scale benchmark (`benchmarks/bench_scale.py`), not for learning curves: the
shapes are MIND-large's (161,013 news, 1M users, 2,232,748 training impressions, log-normal
history and candidate counts with MIND's means, ~4% clicks, at least one click and one non-click
per impression), and clicks follow a simple taste (three favourite subcategories per user) so a
model has something to learn, but the rich generative story of `synth.py` is not repeated.

The valid split has 2.4M labelled impressions: the size of MIND-large's test set, labelled so
that the metrics of a full evaluation can be measured (MIND's own test set has no labels).

Memory stays bounded: news and users are small tables; impressions are drawn, labelled and
written in chunks, so no array ever spans all impressions. Deterministic for a seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.mind.synth import (
    CANDIDATE_AGE_P,
    START,
    Progress,
    SynthSummary,
    _make_entities,
    _make_news,
    _make_topics,
    _pick_in_groups,
    _vec_line,
)
from newsrec_cli.mind.writer import format_time, require_empty_folder, write_lines

CHUNK = 50_000  # impressions drawn and written per step: ~2M candidates, a few tens of MB
# MIND-large: news 161,013 (train+dev+test), users 1M; train impressions 2,232,748 over 6 days.
LARGE_NEWS, LARGE_USERS, LARGE_TRAIN, LARGE_VALID = 161_013, 1_000_000, 2_232_748, 2_400_000
TRAIN_DAYS = 6  # MIND's train log is 6 days, its dev log the 7th
# MIND behaviours: history mean ~33 clicks (median ~19, long tail), candidates mean ~37.
HISTORY_MEDIAN, HISTORY_SIGMA, HISTORY_EMPTY, HISTORY_MAX = 19.0, 1.05, 0.03, 800
CANDIDATES_MEDIAN, CANDIDATES_SIGMA, CANDIDATES_MIN, CANDIDATES_MAX = 25.0, 0.85, 2, 300
TASTE_LOGIT, POPULARITY_LOGIT = 2.0, 0.6  # click logit = 2.0*[favourite subcategory] + 0.6*z + bias
HISTORY_TASTE = 0.6  # share of history clicks on a favourite subcategory
CLICK_RATE = 0.04


@dataclass(frozen=True)
class ScaleShape:
    """Sizes of a scaled dataset: `large` times `scale` (at least a handful of each)."""

    news: int
    users: int
    train: int
    valid: int

    @classmethod
    def large(cls, scale: float = 1.0) -> ScaleShape:
        if not 0 < scale <= 4:
            raise SettingsError(f"--scale {scale}: give a fraction of MIND-large in (0, 4]")
        return cls(
            news=max(200, round(LARGE_NEWS * scale)),
            users=max(50, round(LARGE_USERS * scale)),
            train=max(100, round(LARGE_TRAIN * scale)),
            valid=max(50, round(LARGE_VALID * scale)),
        )


def synthesize_scale(
    out: str | Path,
    shape: ScaleShape,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    force: bool = False,
) -> SynthSummary:
    """Write `out/train` and `out/valid` (news.tsv, behaviors.tsv, entity_embedding.vec).

    `out` must be new or empty unless `force` (then its files are overwritten).
    """
    out = Path(out)
    require_empty_folder(out, force)
    report = progress or (lambda phase, done, total: None)
    pre_days = 3
    days = TRAIN_DAYS + 1
    streams = np.random.SeedSequence([seed, 12]).spawn(4)
    rng_topics, rng_news, rng_users, rng_imps = (np.random.default_rng(s) for s in streams)
    topics = _make_topics(rng_topics)
    entities = _make_entities(rng_topics, topics, max(4 * len(topics.subcategory), shape.news // 3))
    report("news", 0, shape.news)
    news = _make_news(
        rng_news, random.Random(seed * 7919 + 23), topics, entities, shape.news, pre_days, days, report
    )
    favourites = rng_users.choice(len(topics.share), size=(shape.users, 3), p=topics.share)
    histories, history_offsets = _histories(
        rng_users, news.subcat, news.publish, favourites, len(topics.share)
    )
    bias = _click_bias(rng_imps, news.popularity)

    summary = SynthSummary(root=out, news=shape.news, users=shape.users, entities=len(entities.ids))
    ids = np.asarray(news.ids, dtype=object)
    users = np.asarray([f"U{u + 1}" for u in range(shape.users)], dtype=object)
    labelled = np.stack([np.char.add(np.asarray(news.ids), "-0"), np.char.add(np.asarray(news.ids), "-1")])
    labelled = labelled.astype(object)
    try:
        for split, count, first_day, span in (
            ("train", shape.train, 0, TRAIN_DAYS),
            ("valid", shape.valid, TRAIN_DAYS, 1),
        ):
            folder = out / split
            folder.mkdir(parents=True, exist_ok=True)
            with atomic.text_handle(folder / "behaviors.tsv") as handle:
                for start in range(0, count, CHUNK):
                    n = min(CHUNK, count - start)
                    candidates, clicks = _write_chunk(
                        handle, rng_imps, start, n, count, first_day, span, pre_days,
                        news.publish, news.popularity, news.subcat, favourites, bias,
                        histories, history_offsets, ids, users, labelled,
                    )  # fmt: skip
                    summary.candidates += candidates
                    summary.clicks += clicks
                    report(f"write {split}", start + n, count)
            # train/ has the news published before the valid day; valid/ those its candidates
            # can be (the last few days): overlapping, as MIND's train and dev news are.
            if split == "train":
                rows = np.flatnonzero(news.publish < TRAIN_DAYS)
            else:
                rows = np.flatnonzero(news.publish >= TRAIN_DAYS - len(CANDIDATE_AGE_P) + 1)
            write_lines(folder / "news.tsv", (news.rows[i] for i in rows.tolist()))
            ents = np.unique(news.entities[rows])
            write_lines(
                folder / "entity_embedding.vec", (_vec_line(entities, e) for e in ents[ents >= 0].tolist())
            )
            summary.impressions[split] = count
            summary.files += [folder / f for f in ("news.tsv", "behaviors.tsv", "entity_embedding.vec")]
    except OSError as exc:
        raise InputError(f"cannot write the dataset: {exc.strerror or exc}", path=out) from None
    return summary


def _histories(
    rng: np.random.Generator, subcat: np.ndarray, publish: np.ndarray, favourites: np.ndarray, n_sub: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's clicks before the log (news indices, CSR): log-normal lengths, partly on taste."""
    n_users = len(favourites)
    lengths = np.floor(rng.lognormal(math.log(HISTORY_MEDIAN), HISTORY_SIGMA, size=n_users)).astype(np.int64)
    lengths = np.clip(lengths, 1, HISTORY_MAX)
    lengths[rng.random(n_users) < HISTORY_EMPTY] = 0
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    old = np.flatnonzero(publish < 0)
    old_sub = subcat[old]
    order = np.argsort(old_sub, kind="stable")
    sub_offsets = np.zeros(n_sub + 1, dtype=np.int64)
    np.cumsum(np.bincount(old_sub, minlength=n_sub), out=sub_offsets[1:])
    members = old[order]
    cum = np.cumsum(np.ones(len(members)))
    history = np.empty(int(offsets[-1]), dtype=np.int32)
    step = 2_000_000
    owner_all = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    for s in range(0, len(history), step):
        owner = owner_all[s : s + step]
        fav = favourites[owner, rng.integers(3, size=len(owner))]
        # a favourite subcategory that has old news, else any old news
        has = sub_offsets[fav + 1] > sub_offsets[fav]
        on_taste = (rng.random(len(owner)) < HISTORY_TASTE) & has
        picked = old[rng.integers(len(old), size=len(owner))]
        if on_taste.any():
            idx = _pick_in_groups(rng, fav[on_taste], sub_offsets, cum)
            picked[on_taste] = members[idx]
        history[s : s + len(owner)] = picked
    return history, offsets


def _click_bias(rng: np.random.Generator, popularity: np.ndarray) -> float:
    """The logit bias that gives about CLICK_RATE clicks (bisection on a sample of candidates)."""
    taste = rng.random(200_000) < 0.15  # share of candidates on a favourite subcategory, roughly
    base = TASTE_LOGIT * taste + POPULARITY_LOGIT * popularity[rng.integers(len(popularity), size=len(taste))]
    lo, hi = -20.0, 5.0
    for _ in range(40):
        mid = (lo + hi) / 2
        rate = float((1.0 / (1.0 + np.exp(-(base + mid)))).mean())
        lo, hi = (mid, hi) if rate < CLICK_RATE else (lo, mid)
    return (lo + hi) / 2


def _write_chunk(
    handle: TextIO,
    rng: np.random.Generator,
    start: int,
    n: int,
    total: int,
    first_day: int,
    span: int,
    pre_days: int,
    publish: np.ndarray,
    popularity: np.ndarray,
    subcat: np.ndarray,
    favourites: np.ndarray,
    bias: float,
    histories: np.ndarray,
    history_offsets: np.ndarray,
    ids: np.ndarray,
    users: np.ndarray,
    labelled: np.ndarray,
) -> tuple[int, int]:
    """Draw, label and write impressions start..start+n of a split; (candidates, clicks) written."""
    user = rng.integers(len(favourites), size=n)
    # times rise through the split (a log in time order), a few minutes of jitter
    seconds = (
        first_day * 86_400 + (np.arange(start, start + n) + rng.random(n)) * (span * 86_400 / total)
    ).astype(np.int64)
    day = seconds // 86_400
    counts = np.rint(rng.lognormal(math.log(CANDIDATES_MEDIAN), CANDIDATES_SIGMA, size=n))
    counts = np.clip(counts, CANDIDATES_MIN, CANDIDATES_MAX).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    imp_of = np.repeat(np.arange(n), counts)
    age = rng.choice(len(CANDIDATE_AGE_P), size=len(imp_of), p=CANDIDATE_AGE_P)
    publish_day = np.maximum(day[imp_of] - age, -pre_days) + pre_days
    n_days = int(publish.max()) + pre_days + 1
    order = np.argsort(publish + pre_days, kind="stable")
    day_offsets = np.zeros(n_days + 1, dtype=np.int64)
    np.cumsum(np.bincount(publish + pre_days, minlength=n_days), out=day_offsets[1:])
    exposure = np.cumsum(np.exp(0.5 * popularity[order]))
    cands = order[_pick_in_groups(rng, publish_day, day_offsets, exposure)]

    taste = (subcat[cands][:, None] == favourites[user[imp_of]]).any(axis=1)
    logit = TASTE_LOGIT * taste + POPULARITY_LOGIT * popularity[cands] + bias
    key = logit - np.log(-np.log(rng.random(len(cands))))  # Gumbel: the likeliest click
    labels = (rng.random(len(cands)) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    starts = offsets[:-1]
    # every impression has a click and a non-click, as in MIND
    no_click = np.add.reduceat(labels.astype(np.int64), starts) == 0
    labels[no_click[imp_of] & (key == np.maximum.reduceat(key, starts)[imp_of])] = 1
    all_clicked = np.add.reduceat(labels.astype(np.int64), starts) == counts
    labels[all_clicked[imp_of] & (key == np.minimum.reduceat(key, starts)[imp_of])] = 0

    base = int(START.timestamp())
    cand_text = labelled[labels, cands].tolist()
    user_text = users[user].tolist()
    off = offsets.tolist()
    h_off = history_offsets
    lines = []
    for i in range(n):  # the generator's own loop: one join per field of a line
        u = int(user[i])
        history = " ".join(ids[histories[h_off[u] : h_off[u + 1]]].tolist())
        lines.append(
            f"{start + i + 1}\t{user_text[i]}\t{format_time(base + int(seconds[i]))}\t{history}\t"
            f"{' '.join(cand_text[off[i] : off[i + 1]])}\n"
        )
    handle.write("".join(lines))
    return len(cands), int(labels.sum())
