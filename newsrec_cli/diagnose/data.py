"""`newsrec diagnose data`: what a dataset (and its stores) will do to training, before training.

Each function below is one group of checks over a loaded `MindDataset`; `diagnose_data` runs them
all and collects a `Report`. Shares are of distinct news unless a column says occurrences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from newsrec_cli.diagnose.report import Check, Report, Status, Table
from newsrec_cli.diagnose.stats import share
from newsrec_cli.diagnose.vectors import vector_checks
from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.graph.graph import NewsGraph
from newsrec_cli.mind import Impressions, MindDataset
from newsrec_cli.plural import agree, counted

ACCURACY_WARNING_RATE = 0.2  # below this click rate, "never clicked" already looks like a good accuracy
ENTITY_COVERAGE_WARN = 0.5  # fewer news with entities than this: the graph modality sees little
ENTITY_VECTOR_WARN = 0.9  # linked entities with a .vec vector; the rest fall back to weaker features
EMPTY_HISTORY_WARN = 0.5  # more impressions without any click history than this: mostly cold users
HISTORY_PERCENTILES = (25, 50, 75, 90, 99)
FIRST_FEW = 5
NEWS_FILE, ALL_NEWS = "news.tsv", "all news"  # the coverage row of every news.tsv row

Gap = tuple[str, str, int, float]  # split, role, distinct news missing, share covered


@dataclass
class DataInputs:
    """A dataset and the optional vectors that go with it."""

    dataset: MindDataset
    store: EmbeddingStore | None = None
    graph: NewsGraph | None = None
    entity_vectors: dict[str, tuple[list[str], np.ndarray]] = field(
        default_factory=dict
    )  # file -> (ids, matrix)
    missing_allowed: bool = False  # train.missing == "learned": a text gap is a warning, not a failure


def diagnose_data(inputs: DataInputs) -> Report:
    """Every data check, in the order a reader wants them: reading, labels, users, coverage, vectors."""
    report = Report("data")
    ds = inputs.dataset
    report.notes.append(f"dataset {ds.root} ({', '.join(ds.splits) or 'no behaviors'}), {len(ds.news)} news")
    report.checks += read_checks(ds)
    for group in (click_checks(ds), duplicate_checks(ds), history_checks(ds)):
        checks, table = group
        report.checks += checks
        report.tables.append(table)
    checks, table = coverage_checks(inputs)
    report.checks += checks
    report.tables.append(table)
    checks, table = entity_checks(inputs)
    report.checks += checks
    if table.rows:
        report.tables.append(table)
    matrices = _matrices(inputs)
    if matrices:
        checks, table = vector_checks(matrices)
        report.checks += checks
        report.tables.append(table)
    return report


def _labeled_splits(ds: MindDataset) -> dict[str, Impressions]:
    return {name: imps for name, imps in ds.splits.items() if imps.labeled}


def read_checks(ds: MindDataset) -> list[Check]:
    """Lines the readers skipped (the other commands stop at them) and entity JSON that did not parse."""
    skipped = [bad for r in ds.reports for bad in r.skipped]
    bad_entities = [bad for r in ds.reports for lines in r.bad_entities.values() for bad in lines]
    checks = []
    if skipped:
        first = "; ".join(str(b) for b in skipped[:FIRST_FEW])
        checks.append(
            Check(
                "malformed lines",
                Status.FAIL,
                len(skipped),
                f"{counted(len(skipped), 'line')} cannot be read (first: {first})",
                'fix these lines, or set data.on_bad_lines = "skip" to leave them out everywhere',
            )
        )
    if bad_entities:
        first = "; ".join(str(b) for b in bad_entities[:FIRST_FEW])
        checks.append(
            Check(
                "entity JSON",
                Status.WARN,
                len(bad_entities),
                f"{counted(len(bad_entities), 'entity column')} {agree(len(bad_entities), 'does', 'do')} not parse (first: {first})",
                "those news get no entities (graph building collects them; other readers stop)",
            )
        )
    if not checks:
        lines = sum(r.lines for r in ds.reports)
        checks.append(Check("malformed lines", Status.OK, 0, f"all {counted(lines, 'line')} read"))
    return checks


def click_checks(ds: MindDataset) -> tuple[list[Check], Table]:
    """Click rate per split, the accuracy that "never clicked" would score, impressions without a click."""
    table = Table(
        "Clicks",
        [
            "split",
            "impressions",
            "candidates",
            "clicks",
            "click rate",
            "all-negative accuracy",
            "no click",
            "all clicked",
        ],
        percent=("click rate", "all-negative accuracy"),
    )
    clicks = candidates = no_click = 0
    for name, imps in ds.splits.items():
        if not imps.labeled:
            table.add(name, len(imps), len(imps.candidates), None, None, None, None, None)
            continue
        per_imp = np.bincount(imps.candidate_impression, weights=imps.labels, minlength=len(imps))
        counts = imps.candidate_counts
        n_clicks = int(imps.labels.sum(dtype=np.int64))
        rate = share(n_clicks, len(imps.labels))
        none = int((per_imp == 0).sum())
        every = int((per_imp == counts).sum())
        table.add(name, len(imps), len(imps.labels), n_clicks, rate, 1.0 - rate, none, every)
        clicks, candidates, no_click = clicks + n_clicks, candidates + len(imps.labels), no_click + none
    checks: list[Check] = []
    if not candidates:
        checks.append(
            Check("click rate", Status.WARN, None, "no labelled impressions: nothing to train or score on")
        )
        return checks, table
    rate = clicks / candidates
    value = {
        "click_rate": rate,
        "all_negative_accuracy": 1.0 - rate,
        "clicks": clicks,
        "candidates": candidates,
    }
    if rate < ACCURACY_WARNING_RATE:
        checks.append(
            Check(
                "click rate",
                Status.WARN,
                value,
                f"{rate:.2%} of candidates are clicked: accuracy is meaningless here, predicting "
                f"'no click' everywhere scores {1.0 - rate:.2%}",
                "judge models by AUC, MRR and nDCG@k (newsrec evaluate), never by accuracy",
            )
        )
    else:
        checks.append(Check("click rate", Status.OK, value, f"{rate:.2%} of candidates are clicked"))
    labeled = sum(len(imps) for imps in _labeled_splits(ds).values())
    status = Status.WARN if no_click else Status.OK
    checks.append(
        Check(
            "impressions without a click",
            status,
            {"count": no_click, "share": share(no_click, labeled)},
            f"{no_click} of {labeled} labelled impressions have no click",
            "they give no positive to train on and are skipped by AUC; filter them out" if no_click else "",
        )
    )
    return checks, table


def duplicate_checks(ds: MindDataset) -> tuple[list[Check], Table]:
    """News rows with an ID seen before, and the same news twice in one history or candidate list."""
    dup_rows = [b for r in ds.reports for b in r.skipped if b.field == "NewsID" and "duplicate" in b.reason]
    table = Table("Duplicates", ["split", "impressions", "repeated candidates", "repeated history clicks"])
    total_cand = 0
    for name, imps in ds.splits.items():
        cand = _repeats(imps.candidates, imps.candidate_offsets)
        hist = _repeats(imps.history, imps.history_offsets)
        table.add(name, len(imps), cand, hist)
        total_cand += cand
    checks = []
    if dup_rows:
        checks.append(
            Check(
                "duplicate news IDs",
                Status.FAIL,
                len(dup_rows),
                f"{counted(len(dup_rows), 'news.tsv row')} {agree(len(dup_rows), 'repeats', 'repeat')} an ID "
                f"(first: {'; '.join(str(b) for b in dup_rows[:FIRST_FEW])})",
                "keep one row per news ID; readers stop at the second one",
            )
        )
    else:
        checks.append(Check("duplicate news IDs", Status.OK, 0, "every news ID has one row"))
    checks.append(
        Check(
            "repeated candidates",
            Status.WARN if total_cand else Status.OK,
            total_cand,
            f"{counted(total_cand, 'candidate')} {agree(total_cand, 'repeats', 'repeat')} a news already listed in the same impression",
            "deduplicate impressions: a repeated candidate counts twice in AUC and nDCG"
            if total_cand
            else "",
        )
    )
    return checks, table


def _repeats(values: np.ndarray, offsets: np.ndarray) -> int:
    """How many entries repeat an earlier entry of the same segment."""
    if values.size == 0:
        return 0
    segment = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    keys = segment * (int(values.max()) + 1) + values.astype(np.int64)
    return int(values.size - np.unique(keys).size)


def history_checks(ds: MindDataset) -> tuple[list[Check], Table]:
    """Click-history length percentiles per split, and the share of users with no history at all."""
    cols = ["split", "impressions", "empty", "mean"] + [f"p{q}" for q in HISTORY_PERCENTILES] + ["max"]
    table = Table("History length (clicks before the impression)", cols, percent=("empty",))
    empty = total = 0
    for name, imps in ds.splits.items():
        lengths = imps.history_lengths
        if not len(lengths):
            continue
        pct = [float(v) for v in np.percentile(lengths, HISTORY_PERCENTILES)]
        n_empty = int((lengths == 0).sum())
        table.add(
            name, len(lengths), share(n_empty, len(lengths)), float(lengths.mean()), *pct, int(lengths.max())
        )
        empty, total = empty + n_empty, total + len(lengths)
    rate = share(empty, total)
    status = Status.WARN if total and rate > EMPTY_HISTORY_WARN else Status.OK
    return [
        Check(
            "empty histories",
            status,
            {"count": empty, "share": rate},
            f"{empty} of {total} impressions come with no click history ({rate:.1%})"
            if total
            else "no impressions",
            "most users are cold: content (text, category, entities) has to carry the ranking"
            if status == Status.WARN
            else "",
        )
    ], table


def _has_text(inputs: DataInputs) -> np.ndarray | None:
    if inputs.store is None:
        return None
    return np.array([False] + [inputs.store.has(i) for i in inputs.dataset.news_vocab.ids[1:]], dtype=bool)


def _has_entities(ds: MindDataset) -> np.ndarray:
    out = np.zeros(len(ds.news_vocab), dtype=bool)
    for row in range(len(ds.news)):
        out[row + 1] = bool(ds.news.title_entities[row] or ds.news.abstract_entities[row])
    return out


def _in_graph(inputs: DataInputs) -> np.ndarray | None:
    if inputs.graph is None:
        return None
    index = inputs.graph.news_index
    return np.array([False] + [i in index for i in inputs.dataset.news_vocab.ids[1:]], dtype=bool)


def coverage_checks(inputs: DataInputs) -> tuple[list[Check], Table]:
    """Per split and role: news with a news.tsv row, a text vector, entities, a graph node."""
    ds = inputs.dataset
    in_news = ds.in_news(np.arange(len(ds.news_vocab)))
    text, entities, graph = _has_text(inputs), _has_entities(ds), _in_graph(inputs)
    table = Table(
        "Coverage (share of distinct news; occ.: of all occurrences)",
        ["split", "role", "news", "occ.", "in news.tsv", "text", "text (occ.)", "entities", "graph"],
        percent=("in news.tsv", "text", "text (occ.)", "entities", "graph"),
    )
    gaps: dict[str, list[Gap]] = {"news": [], "text": [], "graph": []}
    roles = [
        (name, role, values)
        for name, imps in ds.splits.items()
        for role, values in (("history", imps.history), ("candidates", imps.candidates))
    ]
    # Every row of news.tsv, whether or not an impression names it (what `newsrec embed` covers).
    roles.append((NEWS_FILE, ALL_NEWS, np.arange(1, len(ds.news) + 1)))
    for name, role, values in roles:
        distinct = np.unique(values)
        table.add(
            name,
            role,
            int(distinct.size),
            int(values.size),
            _mean(in_news, distinct),
            _mean(text, distinct),
            _mean(text, values),
            _mean(entities, distinct),
            _mean(graph, distinct),
        )
        for key, mask in (("news", in_news), ("text", text), ("graph", graph)):
            if mask is not None and distinct.size and not mask[distinct].all():
                gaps[key].append((name, role, int((~mask[distinct]).sum()), float(mask[distinct].mean())))
    checks = [_news_row_check(gaps["news"])]
    if text is not None:
        checks.append(_text_check(gaps["text"], inputs))
    checks.append(_entity_share_check(ds, entities))
    if graph is not None:
        checks.append(
            _gap_check(
                "graph coverage",
                gaps["graph"],
                "have no node in the graph",
                Status.WARN,
                "rebuild the graph from this dataset (newsrec build-graph)",
            )
        )
    return checks, table


def _mean(mask: np.ndarray | None, index: np.ndarray) -> float | None:
    """Share of `index` where `mask` holds; None when there is no mask (that input was not given)."""
    if mask is None:
        return None
    return float(mask[index].mean()) if index.size else float("nan")


def _gap_text(gaps: list[Gap]) -> str:
    return "; ".join(f"{split} {role}: {n} missing ({s:.1%} covered)" for split, role, n, s in gaps)


def _gap_check(name: str, gaps: list[Gap], what: str, status: Status, fix: str) -> Check:
    if not gaps:
        return Check(name, Status.OK, 1.0, "every news of every split and role is covered")
    worst = min(s for *_, s in gaps)
    return Check(name, status, worst, f"news {what}: {_gap_text(gaps)}", fix)


def _news_row_check(gaps: list[Gap]) -> Check:
    # A candidate without a row cannot be scored from content; a history click without one
    # only weakens the user vector.
    status = Status.FAIL if any(role == "candidates" for _, role, _, _ in gaps) else Status.WARN
    return _gap_check(
        "news.tsv coverage",
        gaps,
        "named in behaviors.tsv but absent from news.tsv",
        status,
        "use the news.tsv that belongs to these behaviors (MIND's train and dev news differ)",
    )


def _text_check(gaps: list[Gap], inputs: DataInputs) -> Check:
    if not gaps:
        return Check(
            "text vector coverage", Status.OK, 1.0, "every news of every split and role has a text vector"
        )
    assert inputs.store is not None
    missing = [i for i in inputs.dataset.news_vocab.ids[1:] if not inputs.store.has(i)]
    # Training needs vectors only for the news its impressions use; the rest of news.tsv may lack them.
    used_gap = any(role != ALL_NEWS for _, role, _, _ in gaps)
    status = Status.WARN if inputs.missing_allowed or not used_gap else Status.FAIL
    return Check(
        "text vector coverage",
        status,
        min(s for *_, s in gaps),
        f"news without a text vector in {inputs.store.path}: {_gap_text(gaps)} "
        f"(first: {', '.join(missing[:FIRST_FEW])})",
        f"newsrec embed {inputs.dataset.root} --out {inputs.store.path} (embeds only what is missing), "
        'or train with missing = "learned"',
    )


def _entity_share_check(ds: MindDataset, entities: np.ndarray) -> Check:
    used = np.unique(
        np.concatenate(
            [np.concatenate([i.history, i.candidates]) for i in ds.splits.values()]
            or [np.zeros(0, dtype=np.int32)]
        )
    )
    used = used[used > 0]
    rate = float(entities[used].mean()) if used.size else share(int(entities.sum()), len(ds.news))
    if rate == 0:
        return Check(
            "entity coverage",
            Status.WARN,
            rate,
            "no news has a linked entity",
            "the graph modality has nothing to use: train with use_graph = false",
        )
    if rate < ENTITY_COVERAGE_WARN:
        return Check(
            "entity coverage",
            Status.WARN,
            rate,
            f"only {rate:.1%} of the news have a linked entity",
            "the graph modality sees few news; compare runs with and without it (use_graph)",
        )
    return Check("entity coverage", Status.OK, rate, f"{rate:.1%} of the news have a linked entity")


def entity_checks(inputs: DataInputs) -> tuple[list[Check], Table]:
    """Linked entities with a vector in entity_embedding.vec files and with input features in the graph."""
    ds = inputs.dataset
    linked = sorted({e.wikidata_id for row in range(len(ds.news)) for e in ds.news.entities_of(row)})
    table = Table("Entities", ["source", "linked entities", "with a vector", "share"], percent=("share",))
    checks: list[Check] = []
    if not linked:
        return checks, table
    if inputs.entity_vectors:
        files = {name: set(ids) for name, (ids, _) in inputs.entity_vectors.items()}
        files["all .vec files"] = set().union(*files.values())
        for name, have in files.items():
            n = sum(1 for e in linked if e in have)
            table.add(name, len(linked), n, share(n, len(linked)))
        rate = share(n, len(linked))  # the union, added last
        status = Status.OK if rate >= ENTITY_VECTOR_WARN else Status.WARN
        checks.append(
            Check(
                "entity vectors",
                status,
                rate,
                f"{n} of {len(linked)} linked entities have a vector in an entity_embedding.vec",
                "" if status == Status.OK else "the rest get label-text or learned graph features",
            )
        )
    if inputs.graph is not None:
        g = inputs.graph
        source = g.entity_source.numpy()
        index = g.entity_index
        rows = np.array([index[e] for e in linked if e in index], dtype=np.int64)
        featured = int((source[rows] != 0).sum()) if rows.size else 0
        table.add("graph nodes", len(linked), int(rows.size), share(int(rows.size), len(linked)))
        table.add("graph features (vec or label text)", len(linked), featured, share(featured, len(linked)))
    return checks, table


def _matrices(inputs: DataInputs) -> dict[str, tuple[np.ndarray, bool | None]]:
    out: dict[str, tuple[np.ndarray, bool | None]] = {}
    if inputs.store is not None:
        out["text vectors"] = (inputs.store.vectors, inputs.store.meta.get("normalized"))
    for name, (_, matrix) in inputs.entity_vectors.items():
        out[name] = (matrix, None)
    if inputs.graph is not None:
        for source, features in inputs.graph.features.items():
            out[f"graph entity features ({source})"] = (features.matrix, None)
    return out
