"""`evaluate()`: score one split with a trained run, a prediction file and baselines, in one report.

The command layer calls `evaluate(...)` and renders the report; notebooks can call it too.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli.embed.store import EmbeddingStore, TextCheck
from newsrec_cli.embed.text import check_store_texts
from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.evaluate import baselines
from newsrec_cli.evaluate.beyond_rows import MetricPlan, SplitFacts, k_of, kind_of, plan_metrics
from newsrec_cli.evaluate.breakdown import Groups, category_groups, history_groups, results_by_group
from newsrec_cli.evaluate.metrics import MetricResult, needs_probabilities
from newsrec_cli.evaluate.metrics_file import (
    METRICS_FILE,
    fingerprint,
    save_metrics,
    variant_suffix,
    with_suffix,
)
from newsrec_cli.evaluate.model_scores import ModelScores
from newsrec_cli.evaluate.predictions import (
    align_ranks,
    read_predictions,
    scores_from_ranks,
    write_predictions,
)
from newsrec_cli.evaluate.reranking import rerank_scores
from newsrec_cli.evaluate.rows import Lists, score_lists
from newsrec_cli.mind.behaviors import Impressions, distinct_news
from newsrec_cli.mind.dataset import SINGLE, MindDataset, load_dataset
from newsrec_cli.mind.popularity import slot_features
from newsrec_cli.mind.protocol import carve
from newsrec_cli.plural import agree, counted
from newsrec_cli.rerank import RerankSpec
from newsrec_cli.settings import DataSettings, EvaluateSettings, TrainSettings

__all__ = ["METRICS_FILE", "EvaluationReport", "EvaluationRow", "evaluate", "select_split"]

Say = Callable[[str], None]


@dataclass
class EvaluationRow:
    """One line of the table: a model, a prediction file or a baseline, with its metrics."""

    name: str
    kind: str  # "model", "file" or "baseline"
    result: MetricResult | None
    seconds: float
    groups: list[tuple[str, MetricResult]] = field(default_factory=list)
    source: str | None = None  # what the scores come from (weights' or file's hash, baseline and seed)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "seconds": round(self.seconds, 3)}
        if self.source is not None:
            out["source"] = self.source
        if self.result is not None:
            out.update(self.result.to_dict())
        if self.groups:
            out["groups"] = {name: result.to_dict() for name, result in self.groups}
        return out


@dataclass
class EvaluationReport:
    """Everything `newsrec evaluate` shows and writes."""

    data: str
    split: str
    split_note: str
    chosen_on: str | None  # the split that chose the run's epoch (None: no run)
    reported_on: str
    optimistic: bool  # chosen and reported on the same split
    metrics: list[str]
    impressions: int
    candidates: int
    labeled: bool
    by: str
    rows: list[EvaluationRow] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    run_dir: str | None = None
    protocol: str = "offline"  # how popularity reached the scores: offline or replay
    ranking: str = "impressions"  # the way of ranking: each impression's candidates
    rerank: str = "none"  # the re-ranker applied to every row (`RerankSpec`), "none" for the scores' order
    beyond: list[str] = field(default_factory=list)  # the beyond-accuracy names among `metrics`
    left_out: dict[str, str] = field(default_factory=dict)  # beyond names `beyond` could not have: why

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "split": self.split,
            "split_note": self.split_note,
            "chosen_on": self.chosen_on,
            "reported_on": self.reported_on,
            "optimistic": self.optimistic,
            "selection": self.selection,
            "protocol": self.protocol,
            "ranking": self.ranking,
            "rerank": self.rerank,
            "run_dir": self.run_dir,
            "metrics": self.metrics,
            "beyond": self.beyond,
            "left_out": self.left_out,
            "impressions": self.impressions,
            "candidates": self.candidates,
            "labeled": self.labeled,
            "by": self.by,
            "rows": [row.to_dict() for row in self.rows],
            "written": self.written,
        }

    @property
    def selection(self) -> str:
        """Which split chose the epoch and which is reported, in words (every title says it)."""
        return protocol_title(self.chosen_on, self.reported_on, self.optimistic)


def protocol_title(chosen_on: str | None, reported_on: str, same: bool) -> str:
    """The choosing and the reported split, as every table of a run's figures names them."""
    if chosen_on is None:
        return f"reported on {reported_on}"
    if same:
        return f"chosen and reported on {reported_on} (the same split: optimistic)"
    return f"chosen on {chosen_on}, reported on {reported_on}"


@dataclass(frozen=True)
class Target:
    """The impressions a run is scored on, with the protocol that produced them."""

    train: Impressions | None  # the run's training impressions (popularity, the content centre)
    impressions: Impressions
    note: str  # where they come from, in words
    chosen_on: str | None  # the split that chose the epoch (None: no run chose anything)
    reported_on: str
    same: bool  # the reported split is the one that chose: optimistic figures


def select_split(
    dataset: MindDataset, split: str, data_settings: DataSettings, *, from_run: bool = False
) -> Target:
    """The impressions to score and where they come from (`mind/protocol.py`).

    auto: the protocol's reported split (valid/ when train/'s last day chose, test/ when valid/
    chose, a held-out tail of a single folder). valid: the valid/ folder, else the selection split.
    test: the test/ folder, labelled or not. A dataset without training impressions still has its
    valid/ folder scored.
    """
    if not from_run and SINGLE in dataset.splits and split != "test":
        # Baselines alone on one folder: its tail is scored, knowing everything before it.
        ds, imps = data_settings, dataset.splits[SINGLE]
        where = f"{dataset.folders[SINGLE].name}/"
        before, tail, name = carve(imps, where, ds.split, ds.valid_days, ds.valid_fraction, ds.seed)
        return Target(before, tail, protocol_title(None, name, False), None, name, False)
    if not from_run and SINGLE not in dataset.splits:
        # Baselines alone: nothing chooses, so the folders are scored whole, knowing all of train/.
        train, test = dataset.splits.get("train"), dataset.splits.get("test")
        if split == "test" or (split == "auto" and test is not None and test.labeled):
            if test is None:
                raise InputError("no test/ folder with behaviors.tsv (use --split valid)", path=dataset.root)
            name = f"test/ ({dataset.folders['test']})"
            return Target(train, test, protocol_title(None, name, False), None, name, False)
        if "valid" in dataset.splits:
            name = f"valid/ ({dataset.folders['valid']})"
            return Target(
                train, dataset.splits["valid"], protocol_title(None, name, False), None, name, False
            )
        if train is None:
            raise InputError(
                f"no valid/ (or dev/) folder with behaviors.tsv (found: {', '.join(dataset.folders)}); "
                "use --split test",
                path=dataset.root,
            )
    chosen = dataset.protocol(
        data_settings.split,
        data_settings.valid_days,
        data_settings.valid_fraction,
        data_settings.seed,
        data_settings.select_on,
    )
    chooser = chosen.select_name if from_run else None
    if split == "auto":
        target, name = chosen.report, chosen.report_name
    elif split == "valid" and "valid" in dataset.splits:
        target, name = dataset.splits["valid"], f"valid/ ({dataset.folders['valid']})"
    elif split == "valid":
        target, name = chosen.select, chosen.select_name
    elif "test" not in dataset.splits:
        raise InputError("no test/ folder with behaviors.tsv (use --split valid)", path=dataset.root)
    else:
        target, name = dataset.splits["test"], f"test/ ({dataset.folders['test']})"
    same = from_run and target is chosen.select
    return Target(chosen.train, target, protocol_title(chooser, name, same), chooser, name, same)


def file_split(dataset: MindDataset, split: str) -> tuple[Impressions | None, Impressions, str]:
    """The impressions a prediction file is scored against when no run chooses them.

    A single MIND folder: all of its behaviors.tsv. A parent: the folder of `split` (valid/ or
    dev/, test/), whole (auto: valid). Scoring a file needs labelled behaviors only, never training data.
    """
    split = "valid" if split == "auto" else split
    if SINGLE in dataset.splits:
        imps = dataset.splits[SINGLE]
        return None, imps, f"all {len(imps):,} impressions of {dataset.folders[SINGLE] / 'behaviors.tsv'}"
    if split not in dataset.splits:
        wanted = "valid/ (or dev/)" if split == "valid" else f"{split}/"
        raise InputError(
            f"no {wanted} folder with behaviors.tsv to score the file against "
            f"(found: {', '.join(dataset.folders)}); name one with --split",
            path=dataset.root,
        )
    imps = dataset.splits[split]
    return dataset.splits.get("train"), imps, f"{split}: all of {dataset.folders[split] / 'behaviors.tsv'}"


def evaluate(
    settings: EvaluateSettings,
    *,
    data: Path,
    data_settings: DataSettings | None = None,  # used without a run; a run brings its own
    run_dir: Path | None = None,
    predictions: Path | None = None,
    embeddings: Path | None = None,
    run_embeddings: Path | None = None,
    out_dir: Path | None = None,
    say: Say | None = None,
) -> EvaluationReport:
    """Score the chosen split with every source asked for and write metrics.json (and predictions).

    Sources: the run in `run_dir`, the prediction file `predictions`, and with `settings.baselines`
    random, popularity and (given a store, or the run's) content. metrics.json goes to `out_dir`,
    else the run directory; with neither it is not written. With `settings.rerank`, every source's
    ranking is re-ranked before any metric.
    """
    say = say or (lambda _msg: None)
    if run_dir is None and predictions is None and not settings.baselines:
        raise SettingsError("nothing to evaluate: give a RUN_DIR, --predictions FILE or --baselines")
    if settings.retrieve and (predictions is not None or settings.write_predictions):
        raise SettingsError(
            "--retrieve: a prediction file ranks each impression's candidates; evaluate it (or write "
            "one) without --retrieve"
        )
    if settings.write_predictions and run_dir is None:
        raise SettingsError("--write-predictions needs a RUN_DIR (the model whose ranking is written)")
    plan = plan_metrics(settings.metrics)
    spec = parse_rerank(settings.rerank)
    if spec.active and needs_probabilities(plan.accuracy):
        raise SettingsError(
            "--metrics: logloss and ece read the model's probabilities, which --rerank does not change; "
            "evaluate them without --rerank"
        )

    model: ModelScores | None = None
    if run_dir is not None:
        model = ModelScores.open(run_dir, device=settings.device, store=run_embeddings)
        # The run's own split, so "valid" means the impressions it was validated on.
        data_settings = model.data_settings
    data_settings = data_settings or DataSettings()

    say(f"reading {data}")
    dataset = load_dataset(data, on_bad_lines=data_settings.on_bad_lines)
    if model is None and predictions is not None:
        train, target, note = file_split(dataset, settings.split)
        chosen_on, reported_on, same = None, note, False
    else:
        chosen = select_split(dataset, settings.split, data_settings, from_run=model is not None)
        train, target, note = chosen.train, chosen.impressions, chosen.note
        chosen_on, reported_on, same = chosen.chosen_on, chosen.reported_on, chosen.same
    report = EvaluationReport(
        data=str(data),
        split=settings.split,
        split_note=note,
        chosen_on=chosen_on,
        reported_on=reported_on,
        optimistic=same,
        metrics=plan.names,
        impressions=len(target),
        candidates=len(target.candidates),
        labeled=target.labeled,
        by=settings.by,
        run_dir=str(run_dir) if run_dir else None,
        protocol=settings.protocol,
        rerank=str(spec),
    )
    if model is not None:
        _check_news_rows(dataset, target, model.run.settings.missing, say)
    if not target.labeled and not settings.write_predictions:
        raise InputError(
            f"{target.source}: the {settings.split} impressions have no labels, so there is nothing to "
            "score; pass --write-predictions to write a leaderboard file",
        )
    store = embeddings or (model.store if model else None)
    facts = _split_facts(
        plan, spec, dataset, train, target, model.store if model else embeddings, report, say
    )
    report.metrics, report.beyond = plan.names, list(plan.beyond)
    groups = _groups(settings.by, target, dataset)
    lists = Lists(target.candidates, target.labels, target.candidate_offsets, np.arange(len(target)))
    depth = max([k_of(n) for n in plan.names if "@" in n and not n.startswith("ece")], default=10)

    def add(
        name: str, kind: str, scores: np.ndarray, seconds: float, source: str | None = None
    ) -> np.ndarray:
        """Score one row; returns its ranking's scores (re-ranked when asked)."""
        if not target.labeled:
            report.rows.append(EvaluationRow(name, kind, None, seconds, source=source))
            return scores
        start = time.perf_counter()
        if spec.active:
            assert facts is not None  # built whenever a re-ranker is active
            scores = rerank_scores(scores, lists, spec, depth, facts, target.history_offsets)
        # logloss and ECE read probabilities: only a model's logits have them.
        accuracy = [m for m in plan.accuracy if kind == "model" or not needs_probabilities([m])]

        def score(group: str | None, part: np.ndarray, sub: Lists) -> MetricResult:
            names = plan.beyond
            if group is not None and settings.by == "category":  # constant within one category
                names = [n for n in names if kind_of(n) not in ("categories", "calibration")]
            history = target.history_offsets
            return score_lists(part, sub, accuracy, names, facts, history, own_catalogue=group is not None)

        result = score(None, scores, lists)
        for metric in plan.beyond:  # 8 bytes per impression and metric, read by no one: memory stays flat
            result.per_impression.pop(metric, None)
        by_group = results_by_group(scores, lists, groups, score) if groups else []
        seconds += time.perf_counter() - start
        report.rows.append(EvaluationRow(name, kind, result, seconds, by_group, source))
        return scores

    if settings.retrieve:  # every row retrieves from the split's catalogue (evaluate/retrieve.py)
        _add_retrieval_rows(report, settings, plan.beyond, spec, facts, dataset, train, target, model, say)
    elif model is not None:
        say(f"scoring {len(target):,} impressions with {run_dir}")
        start = time.perf_counter()
        logits = model.score(
            dataset, target, batch_size=settings.batch_size, known=train, protocol=settings.protocol
        )
        weights = model.run.run_dir / "model.pt"
        source = f"model {fingerprint(weights)}" if weights.is_file() else None
        ranked = add(f"model {run_dir.name}", "model", logits, time.perf_counter() - start, source)
        if settings.protocol != "offline" and model.run.model.popularity is None:
            say(f"note: {run_dir.name} was trained without popularity: it scores alike under both protocols")
        _say_unverified(say, model.run.text_check)
        if settings.write_predictions:
            folder = out_dir or run_dir
            assert folder is not None  # run_dir is set whenever predictions are written
            name = "prediction" + variant_suffix(settings.protocol, report.ranking, spec)
            if spec.active and not target.labeled:
                assert facts is not None
                ranked = rerank_scores(logits, lists, spec, depth, facts, target.history_offsets)
            txt, zipped = write_predictions(folder, target, ranked, name)
            report.written += [str(txt), str(zipped)]

    if predictions is not None and target.labeled and not settings.retrieve:
        start = time.perf_counter()
        ranks = align_ranks(predictions, read_predictions(predictions), target, scope=note)
        add(
            f"file {predictions.name}",
            "file",
            scores_from_ranks(ranks),
            time.perf_counter() - start,
            f"file {fingerprint(predictions)}",
        )

    if settings.baselines and target.labeled and not settings.retrieve:  # unlabeled: only the model's file
        _add_baselines(add, settings, dataset, train, target, store, say)

    folder = out_dir or run_dir
    if folder is not None and target.labeled:
        path = folder / METRICS_FILE
        if out_dir is None and model is not None:
            path = folder / metrics_file_name(model.run.config, data, settings.split)
        # metrics.json is the offline protocol's, each impression's candidates ranked by the scores.
        path = with_suffix(path, variant_suffix(settings.protocol, report.ranking, spec))
        saved = save_metrics(path, report.to_dict())
        if saved.sentence():
            say(saved.sentence() or "")
        report.written.append(str(path))
    return report


def _add_retrieval_rows(
    report: EvaluationReport,
    settings: EvaluateSettings,
    beyond_names: list[str],
    spec: RerankSpec,
    facts: SplitFacts | None,
    dataset: MindDataset,
    train: Impressions | None,
    target: Impressions,
    model: ModelScores | None,
    say: Say,
) -> None:
    """`--retrieve`: the model's (and baselines') top 10 from the split's catalogue, hit@k and
    recall@k in place of the candidate-ranking metrics."""
    from newsrec_cli.evaluate.retrieve import retrieval_metrics, retrieval_rows

    if settings.by != "none":
        raise SettingsError("--by: not available with --retrieve (a retrieved list has no candidate groups)")
    asked = [m for m in plan_metrics(settings.metrics).accuracy if not m.startswith(("hit@", "recall@"))]
    if asked:
        say(
            f"note: --retrieve reports hit@k and recall@k; {', '.join(asked)} rank an impression's candidates"
        )
    report.ranking = "retrieve"
    report.metrics = retrieval_metrics(beyond_names)
    rows = retrieval_rows(
        model=model,
        dataset=dataset,
        train=train,
        target=target,
        protocol=settings.protocol,
        seed=settings.seed,
        baselines=settings.baselines,
        spec=spec,
        beyond_names=beyond_names,
        facts=facts,
        batch_size=settings.batch_size,
        say=say,
    )
    report.rows += [EvaluationRow(name, kind, result, seconds) for name, kind, result, seconds in rows]


def parse_rerank(text: str) -> RerankSpec:
    """`--rerank` as a RerankSpec; SettingsError naming the flag for a bad value."""
    try:
        return RerankSpec.parse(text)
    except ValueError as exc:
        raise SettingsError(f"--rerank (evaluate.rerank): {exc}") from None


def _split_facts(
    plan: MetricPlan,
    spec: RerankSpec,
    dataset: MindDataset,
    train: Impressions | None,
    target: Impressions,
    store_path: Path | None,
    report: EvaluationReport,
    say: Say,
) -> SplitFacts | None:
    """The split's facts for the beyond-accuracy metrics and the re-ranker (None: neither asked).

    A metric whose input is missing is left out with a note when only `beyond` asked for it; a
    metric named itself, or the MMR re-ranker, stops with one line saying what it needs.
    """
    if not spec.active and (not plan.beyond or not target.labeled):
        return None
    kinds = plan.kinds() if target.labeled else set()  # unlabeled: only the re-ranker reads them
    store = EmbeddingStore.open(store_path) if store_path is not None else None
    facts = SplitFacts.build(
        dataset.news,
        train,
        target,
        store,
        vectors="ild" in kinds or spec.method == "mmr",
        novelty="novelty" in kinds,
    )
    if spec.method == "mmr" and spec.active and "ild" in facts.missing:
        raise SettingsError(f"--rerank {spec}: MMR needs {facts.missing['ild']}")
    for kind, why in facts.missing.items():
        names = [n for n in plan.beyond if kind_of(n) == kind and target.labeled]
        required = [n for n in names if n not in plan.optional]
        if required:
            raise SettingsError(f"--metrics: {', '.join(required)} need {why}")
        if names:
            plan.drop(set(names))
            report.left_out.update({n: why for n in names})
            say(f"note: {', '.join(names)} left out: {'they need' if len(names) > 1 else 'it needs'} {why}")
    return facts


def metrics_file_name(run_config: dict[str, Any], data: Path, split: str) -> str:
    """metrics.json for the run's own data and validation split; for any other data or split a
    name of its own (metrics-<folder>-<split>-<hash of the path>.json), so evaluating a run on
    other data never overwrites the metrics of its own."""
    own = run_config.get("data", {}).get("path")
    resolved = data.resolve()
    if split == "auto" and own and Path(own) == resolved:
        return METRICS_FILE
    digest = hashlib.sha1(str(resolved).encode("utf-8")).hexdigest()[:8]
    return f"metrics-{resolved.name or 'data'}-{split}-{digest}.json"


def _check_news_rows(dataset: MindDataset, target: Impressions, missing: str, say: Say) -> None:
    """As train does: news without a news.tsv row are refused, unless the run learned a vector for them."""
    if missing == "error":
        dataset.require_rows(target)
        return
    unknown = len(dataset.without_rows(target))
    if unknown:
        say(
            f"note: {counted(unknown, 'news ID')} of the impressions {agree(unknown, 'has', 'have')} no row "
            "in news.tsv: scored with the run's learned missing vector (trained with --missing learned)"
        )


def _say_unverified(say: Say, check: TextCheck | None) -> None:
    if check is not None and check.unverified:
        say(
            f"note: {check.unverified:,} text vectors could not be checked against the news texts "
            "(a store without fingerprints: made before newsrec recorded them, or imported)"
        )


def _groups(by: str, target: Impressions, dataset: MindDataset) -> Groups | None:
    if by == "history-length":
        return history_groups(target)
    if by == "category":
        return category_groups(target, dataset.news)
    return None


def _add_baselines(
    add: Callable[..., None],
    settings: EvaluateSettings,
    dataset: MindDataset,
    train: Impressions | None,
    target: Impressions,
    store_path: Path | None,
    say: Say,
) -> None:
    start = time.perf_counter()
    scores = baselines.random_scores(target, settings.seed)
    add("random", "baseline", scores, time.perf_counter() - start, f"random seed {settings.seed}")
    if train is None or not train.labeled:
        say("popularity baseline skipped: no labelled training impressions to count clicks in")
    elif settings.protocol == "replay":
        # Replay: each impression ranked by the smoothed CTR from every impression before it.
        start = time.perf_counter()
        defaults = TrainSettings()  # the half-life and smoothing a run has by default
        view = baselines.causal_view(train, target)
        ctr = slot_features(view.counts, target, view.at, columns=("ctr",))[:, 0].astype(np.float64)
        source = f"causal ctr {defaults.popularity_half_life} {defaults.popularity_prior}"
        add("popularity (causal CTR)", "baseline", ctr, time.perf_counter() - start, source)
    else:
        start = time.perf_counter()
        scores = baselines.popularity_scores(train, target, settings.seed)
        add("popularity", "baseline", scores, time.perf_counter() - start, f"popularity seed {settings.seed}")
    if store_path is None:
        say("content baseline skipped: no embedding store (pass --embeddings STORE)")
        return
    start = time.perf_counter()
    store = EmbeddingStore.open(store_path)
    used = [dataset.news_vocab.ids[i] for i in distinct_news(target)]
    _say_unverified(say, check_store_texts(store, dataset.news, used, data=dataset.root))
    scores = baselines.content_scores(store, target, dataset.news_vocab)
    source = f"content {store_path.resolve()}"
    add(f"content ({store_path.name})", "baseline", scores, time.perf_counter() - start, source)
    # The model's content prior starts from this one: the row shows what training adds to it.
    start = time.perf_counter()
    if train is None:
        say("centred content baseline skipped: no training impressions to take the centre from")
        return
    scores = baselines.content_scores(store, target, dataset.news_vocab, centred_on=train)
    source = f"content centred {store_path.resolve()}"
    add(f"content centred ({store_path.name})", "baseline", scores, time.perf_counter() - start, source)
