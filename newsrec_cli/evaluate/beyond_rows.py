"""The beyond-accuracy metrics of `evaluate`: their names, the per-news facts of a reported split
they read, and an accumulator over chunks of ranked impressions.

The formulas are in `newsrec_cli.evaluate.beyond` (pure functions over top-k lists); this module
gathers their inputs from a dataset and averages them over impressions, as `MetricAccumulator`
does for the accuracy metrics:

- `plan_metrics("auc,ndcg,beyond")`: accuracy names for `MetricAccumulator`, beyond names here.
- `SplitFacts.build(...)`: category codes, L2-normalised text vectors, training-user counts and
  the split's clicks, indexed by news; what a metric cannot have is said in `missing`.
- `BeyondAccumulator`: `add` each chunk's top-k lists, then `result()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.errors import SettingsError
from newsrec_cli.evaluate import beyond
from newsrec_cli.evaluate.metrics import parse_metrics
from newsrec_cli.mind.behaviors import Impressions, gather_segments
from newsrec_cli.mind.news import NewsTable

KINDS: tuple[str, ...] = ("ild", "categories", "calibration", "novelty", "popularity", "coverage", "gini")
KS: tuple[int, ...] = (5, 10)
SPLIT_LEVEL = ("coverage", "gini")  # one value over all lists, not a mean over impressions
LOWER_IS_BETTER = ("calibration",)
ALIAS = "beyond"  # every beyond-accuracy metric at k = 5 and 10 that the inputs allow
UNKNOWN_CATEGORY = "(no news row)"  # as `--by category` names it
NEEDS: dict[str, str] = {
    "ild": "the news' text vectors (the run's store, or --embeddings STORE)",
    "novelty": "labelled training impressions (train/) to count each news' users in",
}
PAIR_CHUNK = 1 << 23  # history and candidate entries of the users deduplicated at once (~8M)
_PATTERN = re.compile(rf"^({'|'.join(KINDS)})@(-?[0-9]+)$")


@dataclass
class MetricPlan:
    """What `--metrics` asked for: accuracy names, beyond names (in the order given), and the
    beyond names that only the `beyond` alias brought (left out, with a note, when their inputs
    are missing; a name asked for itself is an error then)."""

    accuracy: list[str]
    beyond: list[str]
    optional: set[str] = field(default_factory=set)

    @property
    def names(self) -> list[str]:
        return self.accuracy + self.beyond

    def kinds(self) -> set[str]:
        return {kind_of(name) for name in self.beyond}

    def drop(self, names: set[str]) -> None:
        self.beyond = [n for n in self.beyond if n not in names]


def kind_of(name: str) -> str:
    return name.partition("@")[0]


def k_of(name: str) -> int:
    return int(name.partition("@")[2])


def is_beyond(name: str) -> bool:
    return kind_of(name) in KINDS


def plan_metrics(spec: str) -> MetricPlan:
    """Split `--metrics` into accuracy names (`metrics.parse_metrics`) and beyond names.

    `ild` expands to ild@5,ild@10 (as every kind), `beyond` to all kinds at 5 and 10. Raises
    SettingsError naming --metrics for an unknown name or a k below 1.
    """
    accuracy: list[str] = []
    wanted: list[str] = []
    optional: set[str] = set()
    for raw in spec.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name == ALIAS:
            expanded = [f"{kind}@{k}" for k in KS for kind in KINDS]
            optional |= {n for n in expanded if n not in wanted}
        elif name in KINDS:
            expanded = [f"{name}@{k}" for k in KS]
        elif _PATTERN.match(name):
            if int(name.partition("@")[2]) < 1:
                raise SettingsError(
                    f"--metrics (evaluate.metrics): k must be at least 1, got {raw.strip()!r}"
                )
            expanded = [f"{kind_of(name)}@{int(name.partition('@')[2])}"]
        else:
            try:
                accuracy += [n for n in parse_metrics([name]) if n not in accuracy]
            except SettingsError:
                raise SettingsError(
                    f"--metrics (evaluate.metrics): unknown metric {raw.strip()!r}; allowed: auc, mrr, "
                    "ndcg, ndcg@K, hit, hit@K, logloss, ece, ece@BINS, and beyond accuracy: "
                    f"{', '.join(KINDS)} (each = @5,@10), KIND@K, beyond (= all of them)"
                ) from None
            continue
        for one in expanded:
            if one not in wanted:
                wanted.append(one)
            if name != ALIAS:
                optional.discard(one)
    if not accuracy and not wanted:
        raise SettingsError("--metrics (evaluate.metrics): no metric given")
    return MetricPlan(accuracy, wanted, optional)


@dataclass
class SplitFacts:
    """What the beyond-accuracy metrics read about the news of one reported split, by news index.

    categories: code per news (news without a news.tsv row share the code of UNKNOWN_CATEGORY);
    history_codes: the code of each entry of `target.history`; vectors: L2-normalised text
    vectors of the split's candidates (zeros elsewhere) or None; user_counts: distinct training
    users per news (histories and clicked candidates) or None, over `users` users; clicks: clicks
    in the reported split; catalogue: the split's distinct candidates.
    """

    categories: np.ndarray  # int64 [size]
    category_names: list[str]
    history_codes: np.ndarray  # int64 [H]
    clicks: np.ndarray  # float64 [size]
    catalogue: np.ndarray  # int64 [distinct candidates]
    vectors: np.ndarray | None = None  # float32 [size, D]
    user_counts: np.ndarray | None = None  # int64 [size]
    users: int = 0
    missing: dict[str, str] = field(default_factory=dict)  # metric kind -> what it needs

    @property
    def size(self) -> int:
        return len(self.categories)

    @classmethod
    def build(
        cls,
        news: NewsTable,
        train: Impressions | None,
        target: Impressions,
        store: EmbeddingStore | None,
        *,
        vectors: bool = True,
        novelty: bool = True,
    ) -> SplitFacts:
        """The facts of `target` (labelled) from the dataset's news, its training impressions and a
        text store; `vectors`/`novelty` False skip what no metric asked for."""
        parts = [target] if train is None else [target, train]
        size = max(
            len(target.news_vocab),
            *(int(a.max(initial=0)) + 1 for p in parts for a in (p.candidates, p.history)),
        )
        codes, names = category_codes(news, size)
        history_codes = codes[np.asarray(target.history, dtype=np.int64)]
        candidates = np.asarray(target.candidates, dtype=np.int64)
        clicks = np.bincount(candidates, weights=(np.asarray(target.labels) == 1), minlength=size)
        catalogue = np.flatnonzero(np.bincount(candidates, minlength=size)).astype(np.int64)
        facts = cls(codes, names, history_codes, clicks.astype(np.float64), catalogue)
        if vectors:
            facts.vectors = _unit_vectors(store, target, catalogue, size, facts.missing)
        if novelty:
            if train is None or not train.labeled or not len(train):
                facts.missing["novelty"] = NEEDS["novelty"] + "; none were found before the reported split"
            else:
                facts.user_counts, facts.users = training_users(train, size)
        return facts

    def history_distribution(self, history_offsets: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """(B, C) category distribution of the histories of impressions `rows` (all: None) of the
        target, whose `history_offsets` are given."""
        offsets = np.asarray(history_offsets, dtype=np.int64)
        C = len(self.category_names)
        if rows is None:
            return beyond.history_distribution(self.history_codes, offsets, C)
        sub_offsets, take = gather_segments(offsets, np.asarray(rows, dtype=np.int64))
        return beyond.history_distribution(self.history_codes[take], sub_offsets, C)


def category_codes(news: NewsTable, size: int) -> tuple[np.ndarray, list[str]]:
    """Category code per news index (index i is news row i-1) and the category names."""
    names, inverse = np.unique(
        np.asarray(news.category + [UNKNOWN_CATEGORY], dtype=object), return_inverse=True
    )
    codes = np.full(size, int(inverse[-1]), dtype=np.int64)  # no row: the unknown category
    rows = min(len(news), size - 1)
    codes[1 : rows + 1] = inverse[:rows]
    return codes, [str(n) for n in names]


def training_users(train: Impressions, size: int, chunk: int = PAIR_CHUNK) -> tuple[np.ndarray, int]:
    """c_n, the distinct users whose history or clicked candidates hold news n, and U, the
    distinct users of the training impressions.

    Impressions go in user order, in groups of whole users holding about `chunk` history entries
    (MIND-large's training histories: ~74M), so memory stays a few groups.
    """
    users = np.asarray(train.users, dtype=np.int64)
    order = np.argsort(users, kind="stable")  # impressions by user
    sorted_users = users[order]
    h_len = np.diff(np.asarray(train.history_offsets))[order]
    c_len = np.diff(np.asarray(train.candidate_offsets))[order]
    reach = np.cumsum(h_len + c_len)
    counts = np.zeros(size, dtype=np.int64)
    lo = 0
    while lo < len(order):
        hi = int(np.searchsorted(reach, (reach[lo - 1] if lo else 0) + chunk, side="right"))
        hi = max(hi, lo + 1)
        if hi < len(order):  # whole users: extend to the last impression of the last user
            hi = int(np.searchsorted(sorted_users, sorted_users[hi - 1], side="right"))
        rows = order[lo:hi]
        h_off, h_take = gather_segments(np.asarray(train.history_offsets), rows)
        c_off, c_take = gather_segments(np.asarray(train.candidate_offsets), rows)
        clicked = np.asarray(train.labels[c_take]) == 1
        owner = np.repeat(users[rows], np.diff(c_off))[clicked]
        pair_users = np.concatenate([np.repeat(users[rows], np.diff(h_off)), owner])
        pair_items = np.concatenate(
            [np.asarray(train.history[h_take]), np.asarray(train.candidates[c_take])[clicked]]
        )
        counts += beyond.distinct_user_counts(pair_users, pair_items, size)
        lo = hi
    return counts, int(len(np.unique(users)))


def _unit_vectors(
    store: EmbeddingStore | None, target: Impressions, used: np.ndarray, size: int, missing: dict[str, str]
) -> np.ndarray | None:
    """The L2-normalised vectors of the news `used` (the candidates) in a table by news index."""
    if store is None:
        missing["ild"] = NEEDS["ild"] + "; none was given"
        return None
    ids = [target.news_vocab.ids[i] for i in used]
    found, lacking = store.lookup(ids)
    if lacking:
        missing["ild"] = (
            f"{NEEDS['ild']}; {store.path} lacks {len(lacking):,} of the {len(ids):,} candidates "
            f"(first: {', '.join(lacking[:3])})"
        )
        return None
    norms = np.linalg.norm(found, axis=1, keepdims=True)
    table = np.zeros((size, found.shape[1]), dtype=np.float32)
    table[used] = found / np.where(norms > 0, norms, 1.0)
    return table


@dataclass
class BeyondResult:
    """Means over impressions (ILD, categories, calibration, novelty, popularity), split-level
    values (coverage, Gini), the count each is over, and the per-impression values."""

    values: dict[str, float]
    counts: dict[str, int]
    per_impression: dict[str, np.ndarray]
    empty_history: int  # impressions skipped by calibration for an empty history


class BeyondAccumulator:
    """Beyond-accuracy metrics of a stream of ranked impression chunks: `add(top, history)` each
    chunk's top-k lists (news indices, -1 padding, at least max k wide) and the (B, C) category
    distribution of its histories, then `result()`."""

    def __init__(self, names: list[str], facts: SplitFacts, catalogue: np.ndarray | None = None) -> None:
        self.names = list(names)
        self.facts = facts
        # what coverage and Gini are over: the split's distinct candidates, or a group's
        self.catalogue = facts.catalogue if catalogue is None else catalogue
        self.k = max((k_of(n) for n in names), default=1)
        self._per: dict[str, list[np.ndarray]] = {n: [] for n in names if kind_of(n) not in SPLIT_LEVEL}
        self._exposure = {k: np.zeros(facts.size, dtype=np.int64) for k in self._split_ks()}
        self._listed = {k: 0 for k in self._split_ks()}
        self._empty_history = 0

    def _split_ks(self) -> set[int]:
        return {k_of(n) for n in self.names if kind_of(n) in SPLIT_LEVEL}

    def needs_history(self) -> bool:
        return any(kind_of(n) == "calibration" for n in self.names)

    def add(self, top: np.ndarray, history: np.ndarray | None = None) -> None:
        facts = self.facts
        ild_ks = tuple(sorted({k_of(n) for n in self.names if kind_of(n) == "ild"}))
        ild = beyond.ild_prefixes(top, facts.vectors, ild_ks) if ild_ks and facts.vectors is not None else {}
        if history is not None:
            self._empty_history += int((history.sum(axis=1) == 0).sum())
        for k in self._exposure:
            self._exposure[k] += beyond.exposure(top[:, :k], facts.size)
            self._listed[k] += int((top[:, 0] >= 0).sum())
        for name, parts in self._per.items():
            kind, k = kind_of(name), k_of(name)
            lists = top[:, :k]
            if kind == "ild":
                value = ild[k]
            elif kind == "categories":
                value = beyond.category_count(lists, facts.categories)
                value[lists[:, 0] < 0] = np.nan  # an empty list has no categories to count
            elif kind == "calibration":
                assert history is not None  # needs_history() told the caller
                value = beyond.calibration(lists, facts.categories, history)
            elif kind == "novelty":
                assert facts.user_counts is not None
                value = beyond.novelty(lists, facts.user_counts, facts.users)
            else:  # popularity
                value = beyond.popularity(lists, facts.clicks)
            parts.append(value)

    def result(self) -> BeyondResult:
        values: dict[str, float] = {}
        counts: dict[str, int] = {}
        per_impression: dict[str, np.ndarray] = {}
        for name in self.names:
            kind, k = kind_of(name), k_of(name)
            if kind in SPLIT_LEVEL:
                measure = beyond.coverage if kind == "coverage" else beyond.gini
                values[name] = measure(self._exposure[k], self.catalogue)
                counts[name] = self._listed[k]
                continue
            parts = self._per[name]
            per = np.concatenate(parts) if parts else np.zeros(0)
            used = ~np.isnan(per)
            per_impression[name] = per
            counts[name] = int(used.sum())
            values[name] = float(per[used].mean()) if used.any() else float("nan")
        return BeyondResult(values, counts, per_impression, self._empty_history)
