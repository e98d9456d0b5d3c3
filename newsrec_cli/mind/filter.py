"""Subsets of a MIND dataset: keep whole impressions by rules, write a new folder of the same layout.

Rules run in this order, each on what the previous ones kept: dates, then vectors required on
candidates (an impression with any candidate lacking a vector is dropped: impressions stay whole),
then vectors required on the history (by default the history IDs without a vector are removed and
the impression kept, since the history is only context; `history_missing="drop-impression"` drops
it instead), then a minimum history length (counted after that removal), then a sample of users
(drawn over all splits together, so a sampled user keeps their train and valid impressions).
news.tsv and the .vec files are copied unchanged; behaviors.tsv is rewritten from what is kept.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np

from newsrec_cli.errors import InputError
from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.mind.dataset import load_dataset
from newsrec_cli.mind.layout import SINGLE
from newsrec_cli.mind.writer import behavior_lines, require_empty_folder, write_lines
from newsrec_cli.settings import FilterSettings

COPIED = ("news.tsv", "entity_embedding.vec", "relation_embedding.vec")


@dataclass
class RuleCount:
    """Impressions of one split before and after one rule."""

    rule: str
    split: str
    before: int
    kept: int
    note: str = ""

    @property
    def dropped(self) -> int:
        return self.before - self.kept


@dataclass
class FilterResult:
    out: Path
    counts: list[RuleCount] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)
    history_ids_removed: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    skipped_lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "out": str(self.out),
            "kept": self.kept,
            "rules": [
                {
                    "rule": c.rule,
                    "split": c.split,
                    "before": c.before,
                    "kept": c.kept,
                    "dropped": c.dropped,
                    "note": c.note,
                }
                for c in self.counts
            ],
            "history_ids_removed": self.history_ids_removed,
            "skipped_lines": self.skipped_lines,
        }


def filter_dataset(
    data: str | Path,
    out: str | Path,
    settings: FilterSettings,
    *,
    embedded_ids: set[str] | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    on_bad_lines: Literal["error", "skip"] = "error",
    force: bool = False,
) -> FilterResult:
    """Write the impressions of `data` that pass the rules to `out` (same split layout)."""
    data, out = Path(data), Path(out)
    if date_from and date_to and date_from > date_to:
        raise InputError(f"--from {date_from} is after --to {date_to}", field="from")
    if out.resolve() == data.resolve() or data.resolve() in out.resolve().parents:
        raise InputError("the output folder must not be the dataset or inside it", path=out)
    require_empty_folder(out, force)
    dataset = load_dataset(data, on_bad_lines=on_bad_lines)
    result = FilterResult(out=out, skipped_lines=[r.summary() for r in dataset.reports if not r.ok])
    has_vector = None
    if embedded_ids is not None:
        has_vector = np.fromiter(
            (i in embedded_ids for i in dataset.news_vocab.ids), dtype=bool, count=len(dataset.news_vocab)
        )
        has_vector[0] = False

    kept: dict[str, Impressions] = {}
    for name, imps in dataset.splits.items():
        imps = _apply(
            result,
            name,
            imps,
            "dates",
            _date_mask(imps, date_from, date_to),
            _date_note(date_from, date_to),
            active=date_from is not None or date_to is not None,
        )
        on_candidates = settings.require_on in ("candidates", "both")
        on_history = settings.require_on in ("history", "both")
        if has_vector is not None and on_candidates:
            mask = _all_in_segments(has_vector[imps.candidates], imps.candidate_offsets)
            imps = _apply(
                result,
                name,
                imps,
                "vectors for every candidate",
                mask,
                "impressions with a candidate lacking a vector",
            )
        if has_vector is not None and on_history:
            if settings.history_missing == "drop-impression":
                mask = _all_in_segments(has_vector[imps.history], imps.history_offsets)
                imps = _apply(
                    result,
                    name,
                    imps,
                    "vectors for the whole history",
                    mask,
                    "impressions with a history news lacking a vector",
                )
            else:
                before = len(imps.history)
                imps = _drop_history_ids(imps, has_vector)
                result.history_ids_removed[name] = before - len(imps.history)
        imps = _apply(
            result,
            name,
            imps,
            f"history >= {settings.min_history}",
            imps.history_lengths >= settings.min_history,
            "",
            active=settings.min_history > 0,
        )
        kept[name] = imps

    if settings.users_sample is not None:
        users = np.unique(np.concatenate([imps.users for imps in kept.values()]))
        rng = np.random.default_rng(settings.seed)
        chosen = (
            users
            if settings.users_sample >= len(users)
            else rng.choice(users, settings.users_sample, replace=False)
        )
        note = f"{min(settings.users_sample, len(users)):,} of {len(users):,} users, seed {settings.seed}"
        for name, imps in kept.items():
            kept[name] = _apply(result, name, imps, "users sample", np.isin(imps.users, chosen), note)

    order = list(kept)
    result.counts.sort(key=lambda c: order.index(c.split))  # stable: rules stay in order within a split
    for name, imps in kept.items():
        source = dataset.folders[name]
        folder = out if name == SINGLE else out / source.name
        folder.mkdir(parents=True, exist_ok=True)
        write_lines(folder / "behaviors.tsv", behavior_lines(imps))
        result.files.append(folder / "behaviors.tsv")
        for file in COPIED:
            if (source / file).exists():
                shutil.copyfile(source / file, folder / file)
                result.files.append(folder / file)
        result.kept[name] = len(imps)
    return result


def _apply(
    result: FilterResult,
    split: str,
    imps: Impressions,
    rule: str,
    mask: np.ndarray,
    note: str,
    *,
    active: bool = True,
) -> Impressions:
    if not active:
        return imps
    result.counts.append(RuleCount(rule, split, len(imps), int(mask.sum()), note))
    return imps if mask.all() else imps.subset(mask)


def _date_mask(imps: Impressions, date_from: date | None, date_to: date | None) -> np.ndarray:
    days = imps.times.astype("datetime64[D]")
    mask = np.ones(len(imps), dtype=bool)
    if date_from is not None:
        mask &= days >= np.datetime64(date_from, "D")
    if date_to is not None:
        mask &= days <= np.datetime64(date_to, "D")
    return mask


def _date_note(date_from: date | None, date_to: date | None) -> str:
    return f"{date_from or '...'} to {date_to or '...'} (days inclusive)"


def _all_in_segments(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per segment of a flat bool array: are all values true (an empty segment counts as true)."""
    failures = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(~values, out=failures[1:])
    return failures[offsets[1:]] == failures[offsets[:-1]]


def _drop_history_ids(imps: Impressions, has_vector: np.ndarray) -> Impressions:
    """The same impressions with the history news that lack a vector left out."""
    keep = has_vector[imps.history]
    if keep.all():
        return imps
    kept_before = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    return Impressions(
        impression_ids=imps.impression_ids,
        users=imps.users,
        times=imps.times,
        history_offsets=kept_before[imps.history_offsets],
        history=imps.history[keep],
        candidate_offsets=imps.candidate_offsets,
        candidates=imps.candidates,
        labels=imps.labels,
        news_vocab=imps.news_vocab,
        user_vocab=imps.user_vocab,
        source=imps.source,
    )
