"""Checks of a MIND dataset, each a small function returning OK, WARN or FAIL with a reason.

The readers run in skip mode, so every malformed line of every file is found in one pass (not just
the first); their reports are then sorted into one check per kind of problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from newsrec_cli.errors import InputError, NewsrecError
from newsrec_cli.mind.behaviors import UNLABELED, Impressions, read_behaviors
from newsrec_cli.mind.dataset import find_splits
from newsrec_cli.mind.lines import ENCODING_FIELD
from newsrec_cli.mind.news import NewsTable, read_news
from newsrec_cli.mind.protocol import split_protocol
from newsrec_cli.mind.report import FIRST_FEW, BadLine, ReadReport
from newsrec_cli.mind.unknown import unknown_uses
from newsrec_cli.mind.vec import read_vec
from newsrec_cli.mind.vocab import Vocab
from newsrec_cli.plural import counted

Status = Literal["OK", "WARN", "FAIL"]


@dataclass(frozen=True)
class Check:
    name: str
    split: str
    status: Status
    detail: str
    count: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Split:
    name: str
    folder: Path
    news: NewsTable
    news_report: ReadReport
    imps: Impressions | None
    behaviors_report: ReadReport | None
    known: np.ndarray | None = None  # bool per news-vocabulary index: has a row in this news.tsv
    anywhere: np.ndarray | None = None  # ... in any split's news.tsv (train and evaluate read them all)


def validate_dataset(path: str | Path) -> list[Check]:
    """Run every check on a dataset folder; the folder itself being unusable is one FAIL."""
    try:
        folders = find_splits(path)
    except InputError as exc:
        return [Check("dataset layout", "-", "FAIL", str(exc))]
    checks = [_layout(folders)]
    news_vocab, user_vocab = Vocab(), Vocab()
    splits: list[_Split] = []
    for name, folder in folders.items():
        try:  # what skip mode cannot get past: a file that is not UTF-8 text
            news = read_news(folder / "news.tsv", on_bad_lines="skip", bad_entities="collect")
            for id_ in news.ids:
                news_vocab.add(id_)
            imps, report = None, None
            file = folder / "behaviors.tsv"
            if file.exists():
                report = ReadReport(path=str(file))
                imps = read_behaviors(file, news_vocab, user_vocab, on_bad_lines="skip", report=report)
        except InputError as exc:
            checks.append(Check("files readable", name, "FAIL", str(exc)))
            continue
        splits.append(_Split(name, folder, news, news.reports[-1], imps, report))
    anywhere = np.zeros(len(news_vocab), dtype=bool)
    for split in splits:
        anywhere[[news_vocab[id_] for id_ in split.news.ids]] = True
    for split in splits:
        if split.imps is not None:
            split.known = np.zeros(len(news_vocab), dtype=bool)
            split.known[[news_vocab[id_] for id_ in split.news.ids]] = True
            split.anywhere = anywhere
        for check in SPLIT_CHECKS:
            checks.extend(check(split))
    checks.extend(_train_before_valid(splits))
    read = {s.name: s.imps for s in splits if s.imps is not None}
    # Unreadable, empty or malformed files already FAIL (train refuses them first): no protocol then.
    if len(read) == len(folders) and not any(c.status == "FAIL" and c.name not in COVERAGE for c in checks):
        checks.append(_default_protocol(Path(path), folders, read))
    return checks


def _default_protocol(root: Path, folders: dict[str, Path], splits: dict[str, Impressions]) -> Check:
    """What the default `train` (and `evaluate` of its run) would train, choose and report on, or
    the reason it refuses: the same protocol code, the same checks of labels and clicks."""
    name = "default protocol (train, evaluate)"
    try:
        chosen = split_protocol(splits, folders, root)
    except NewsrecError as exc:
        return Check(name, "-", "FAIL", f"`train` refuses this dataset: {exc}")
    for part, words in ((chosen.train, "training impressions"), (chosen.select, chosen.select_name)):
        if not part.labeled:
            return Check(
                name, "-", "FAIL", f"`train` refuses it: the {words} have no click labels (NewsID-0/1)"
            )
    if not chosen.report.labeled:
        return Check(
            name,
            "-",
            "FAIL",
            f"`evaluate` refuses it: {chosen.report_name} has no click labels, so no metrics",
        )
    if not _trainable(chosen.train):
        return Check(
            name,
            "-",
            "FAIL",
            f"`train` refuses it: none of the {len(chosen.train):,} training impressions has both a click and "
            "a non-click (nothing to train on)",
        )
    return Check(name, "-", "OK", chosen.title)


def _trainable(imps: Impressions) -> bool:
    """Whether some impression has a click and a non-click (train's click samples need both)."""
    impression = imps.candidate_impression
    clicks = np.bincount(impression, weights=imps.labels == 1, minlength=len(imps))
    return bool(((clicks > 0) & (clicks < imps.candidate_counts)).any())


def _layout(folders: dict[str, Path]) -> Check:
    if "all" in folders:
        return Check(
            "dataset layout", "-", "OK", "one MIND folder (no train/ valid/): validation is split from it"
        )
    names = ", ".join(f"{k} ({v.name}/)" for k, v in folders.items())
    if "train" not in folders:
        # evaluate can still score a run trained elsewhere on these splits: not a FAIL
        return Check(
            "dataset layout",
            "-",
            "WARN",
            f"splits: {names}; no train/ to learn from: `train` refuses this dataset (no training "
            "impressions), `evaluate RUN --data` can score a run trained elsewhere on it",
        )
    return Check("dataset layout", "-", "OK", f"splits: {names}")


# the singular of each `what` below, for "1 malformed row"
SINGULAR = {
    "malformed rows": "malformed row",
    "repeated news IDs": "repeated news ID",
    "unparsable entity columns": "unparsable entity column",
    "bad impression IDs": "bad impression ID",
    "empty user IDs": "empty user ID",
    "unparsable times": "unparsable time",
    "impressions without candidates": "impression without candidates",
    "bad candidate tokens": "bad candidate token",
    "lines that are not UTF-8": "line that is not UTF-8",
    "malformed lines": "malformed line",
}


def _from_bad_lines(name: str, split: str, bad: list[BadLine], what: str) -> Check:
    if not bad:
        return Check(name, split, "OK", f"no {what}")
    first = "; ".join(f"line {b.line}: {b.reason}" for b in bad[:FIRST_FEW])
    count = counted(len(bad), SINGULAR.get(what, what), what)
    return Check(name, split, "FAIL", f"{count} ({Path(bad[0].path).name}; first: {first})", len(bad))


def _is_duplicate(bad: BadLine) -> bool:
    return bad.reason.startswith("duplicate")


# --- news.tsv -------------------------------------------------------------------------------


def _news_rows(s: _Split) -> list[Check]:
    skipped = s.news_report.skipped
    rows = [b for b in skipped if not _is_duplicate(b)]
    dups = [b for b in skipped if _is_duplicate(b)]
    bad_json = s.news_report.bad_entities.get("TitleEntities", []) + s.news_report.bad_entities.get(
        "AbstractEntities", []
    )
    bad_json.sort(key=lambda b: b.line)
    empty_titles = sum(1 for t in s.news.title if not t.strip())
    return [
        _present("news present", s.name, len(s.news), "news", "news", s.folder / "news.tsv"),
        _from_bad_lines("news.tsv rows (8 columns, an ID)", s.name, rows, "malformed rows"),
        _from_bad_lines("news IDs unique", s.name, dups, "repeated news IDs"),
        _from_bad_lines("entity JSON", s.name, bad_json, "unparsable entity columns"),
        Check(
            "titles present",
            s.name,
            "WARN" if empty_titles else "OK",
            f"{empty_titles:,} news with an empty title" if empty_titles else f"{len(s.news):,} news",
            empty_titles,
        ),
    ]


def _present(name: str, split: str, n: int, singular: str, plural: str, file: Path) -> Check:
    """An empty file is a FAIL: nothing can be trained or scored on it."""
    if n == 0:
        return Check(name, split, "FAIL", f"no {plural} in {file}")
    return Check(name, split, "OK", counted(n, singular, plural), n)


# --- behaviors.tsv --------------------------------------------------------------------------

_BEHAVIOR_FIELDS = (
    ("behaviors.tsv text (UTF-8)", "lines that are not UTF-8", lambda b: b.field == ENCODING_FIELD),
    ("behaviors.tsv rows (5 columns)", "malformed rows", lambda b: b.field == "columns"),
    ("impression IDs (integer, unique)", "bad impression IDs", lambda b: b.field == "ImpressionID"),
    ("user IDs present", "empty user IDs", lambda b: b.field == "UserID"),
    ("times (M/D/YYYY h:mm:ss AM)", "unparsable times", lambda b: b.field == "Time"),
    (
        "candidate lists not empty",
        "impressions without candidates",
        lambda b: b.field == "Impressions" and b.reason == "no candidates",
    ),
    (
        "candidate labels (ID-0 / ID-1)",
        "bad candidate tokens",
        lambda b: b.field == "Impressions" and b.reason != "no candidates",
    ),
)


def _behavior_rows(s: _Split) -> list[Check]:
    if s.behaviors_report is None:
        return [Check("behaviors.tsv present", s.name, "FAIL", f"no behaviors.tsv in {s.folder}")]
    skipped = s.behaviors_report.skipped
    count = len(s.imps) if s.imps is not None else 0
    checks = [
        _present(
            "impressions present", s.name, count, "impression", "impressions", s.folder / "behaviors.tsv"
        )
    ]
    for name, what, match in _BEHAVIOR_FIELDS:
        checks.append(
            _from_bad_lines(
                name, s.name, sorted((b for b in skipped if match(b)), key=lambda b: b.line), what
            )
        )
    # A kind of bad line no check above names is still a FAIL, never dropped from the report.
    other = [b for b in skipped if not any(match(b) for _, _, match in _BEHAVIOR_FIELDS)]
    if other:
        checks.append(_from_bad_lines("behaviors.tsv lines (other)", s.name, other, "malformed lines"))
    return checks


COVERAGE = ("history IDs in news.tsv", "candidate IDs in news.tsv")
REFUSED_UNKNOWN = (
    "`train` and `evaluate` refuse impressions that use them (with the default --missing error: a "
    "news without a row would be scored on padding); drop them with `newsrec filter "
    "--require-embeddings STORE`, or train with --missing learned"
)


def _coverage(s: _Split) -> list[Check]:
    """History and candidate IDs without a news.tsv row: a FAIL when no split's news.tsv has them
    (what train and evaluate refuse), a WARN when only another split's has them (they read all)."""
    if s.imps is None or s.known is None or s.anywhere is None:
        return []
    checks = []
    uses = None  # where the unknown IDs are, found once (it reads the file up to them)
    for name, ids in zip(COVERAGE, (s.imps.history, s.imps.candidates), strict=True):
        nowhere = ~s.anywhere[ids]
        n = int(nowhere.sum())
        if n:
            distinct = np.unique(ids[nowhere])
            first = ", ".join(s.imps.news_vocab.ids[i] for i in distinct[:FIRST_FEW])
            field = "History" if name.startswith("history") else "Impressions"
            uses = uses if uses is not None else unknown_uses([s.imps], ~s.anywhere)
            use = next(u for u in uses if u.field == field)
            detail = (
                f"{n:,} of {len(ids):,} missing from every news.tsv, {len(distinct):,} distinct (first: {first}); "
                f"{Path(use.path).name} {use.describe(with_path=False)}; {REFUSED_UNKNOWN}"
            )
            checks.append(Check(name, s.name, "FAIL", detail, n))
            continue
        elsewhere = ~s.known[ids]
        n = int(elsewhere.sum())
        if n:
            detail = (
                f"{n:,} of {len(ids):,} not in this split's news.tsv but in another split's "
                "(train and evaluate read every news.tsv: accepted)"
            )
            checks.append(Check(name, s.name, "WARN", detail, n))
            continue
        checks.append(Check(name, s.name, "OK", f"all {len(ids):,} present"))
    return checks


def _labels(s: _Split) -> list[Check]:
    imps = s.imps
    if imps is None or len(imps) == 0:
        return []
    if (imps.labels == UNLABELED).all():
        return [
            Check(
                "clicks per impression", s.name, "OK", "unlabeled split (a test set; see the protocol check)"
            )
        ]
    counts = imps.candidate_counts
    clicks = np.bincount(imps.candidate_impression, weights=imps.labels == 1, minlength=len(imps))
    no_click = int(((counts > 0) & (clicks == 0)).sum())
    all_click = int(((counts > 0) & (clicks == counts)).sum())
    return [
        _share_check(
            "a click in every impression",
            s,
            no_click,
            "impressions without a click (MIND has none; MRR and nDCG are 0 there)",
        ),
        _share_check(
            "a non-click in every impression",
            s,
            all_click,
            "impressions where every candidate is clicked (AUC skips them)",
        ),
    ]


def _share_check(name: str, s: _Split, n: int, what: str) -> Check:
    total = len(s.imps) if s.imps is not None else 0
    if n == 0:
        return Check(name, s.name, "OK", f"all {total:,} impressions")
    return Check(name, s.name, "WARN", f"{n:,} of {total:,} {what}", n)


def _duplicate_candidates(s: _Split) -> list[Check]:
    imps = s.imps
    if imps is None or len(imps) == 0:
        return []
    key = imps.candidate_impression * (len(imps.news_vocab) + 1) + imps.candidates
    n = len(key) - len(np.unique(key))
    return [
        Check(
            "candidates unique per impression",
            s.name,
            "WARN" if n else "OK",
            counted(n, "repeated candidate") if n else "no repeats",
            n,
        )
    ]


def _times(s: _Split) -> list[Check]:
    imps = s.imps
    if imps is None or len(imps) == 0:
        return []
    times = imps.times
    if (times == times[0]).all():
        return [
            Check(
                "times vary",
                s.name,
                "WARN",
                f"every impression has the time {str(times[0]).replace('T', ' ')}: no split by time "
                "is possible (use --split impression)",
                len(imps),
            )
        ]
    first, last = (str(t.astype("datetime64[m]")).replace("T", " ") for t in (times.min(), times.max()))
    return [Check("times vary", s.name, "OK", f"{first} to {last}")]


def _entity_vectors(s: _Split) -> list[Check]:
    checks = []
    entity_ids = {e.wikidata_id for row in range(len(s.news)) for e in s.news.entities_of(row)}
    for name in ("entity_embedding.vec", "relation_embedding.vec"):
        file = s.folder / name
        if not file.exists():
            continue
        try:
            ids, _ = read_vec(file)
        except InputError as exc:
            checks.append(Check(name, s.name, "FAIL", str(exc), 1))
            continue
        if name == "entity_embedding.vec" and entity_ids:
            missing = len(entity_ids - set(ids))
            status: Status = "WARN" if missing > 0.05 * len(entity_ids) else "OK"
            checks.append(
                Check(
                    name,
                    s.name,
                    status,
                    f"{len(ids):,} vectors; {missing:,} of {len(entity_ids):,} entities of "
                    "the news have none",
                    missing,
                )
            )
        else:
            checks.append(Check(name, s.name, "OK", f"{len(ids):,} vectors"))
    return checks


SPLIT_CHECKS: tuple[Callable[[_Split], list[Check]], ...] = (
    _news_rows,
    _behavior_rows,
    _coverage,
    _labels,
    _duplicate_candidates,
    _times,
    _entity_vectors,
)


def _train_before_valid(splits: list[_Split]) -> list[Check]:
    by_name = {s.name: s for s in splits if s.imps is not None and len(s.imps)}
    if "train" not in by_name or "valid" not in by_name:
        return []
    last_train = by_name["train"].imps.times.max()
    first_valid = by_name["valid"].imps.times.min()
    if last_train <= first_valid:
        return [
            Check("train before valid in time", "-", "OK", "every training impression precedes validation")
        ]
    late = int((by_name["train"].imps.times > first_valid).sum())
    return [
        Check(
            "train before valid in time",
            "-",
            "WARN",
            f"{late:,} training impressions are later than the first validation one "
            f"({str(first_valid).replace('T', ' ')})",
            late,
        )
    ]


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == "FAIL" for c in checks) else 0
