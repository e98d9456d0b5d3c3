"""`newsrec evaluate`: official MIND metrics for a run, a prediction file and baselines, in one table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newsrec_cli.commands.common import (
    ConfigOption,
    JsonOption,
    RunStoreOption,
    console,
    err_console,
    fail,
    handle_errors,
    print_json,
    settings_from,
)
from newsrec_cli.commands.options import DataOption
from newsrec_cli.evaluate.metrics import MetricResult
from newsrec_cli.evaluate.runner import EvaluationReport, evaluate
from newsrec_cli.plural import counted
from newsrec_cli.settings import DataSettings, EvaluateSettings


@handle_errors
def evaluate_command(
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="Run directory written by `newsrec train`.", exists=True, file_okay=False),
    ] = None,
    data: DataOption = ...,  # type: ignore[assignment]
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="auto: the split the run reports (never the one that chose); valid: valid/; test.",
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            help="Comma-separated: auc, mrr, ndcg@K, hit@K, logloss, ece; beyond (= ild, categories, "
            "calibration, novelty, popularity, coverage, gini; each @5,@10 or @K).",
        ),
    ] = None,
    baselines: Annotated[
        bool | None,
        typer.Option("--baselines/--no-baselines", help="Add random, popularity and content rows."),
    ] = None,
    run_embeddings: RunStoreOption = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(
            "--embeddings", help="Text store for the content baseline (default: the run's).", exists=True
        ),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            "--protocol",
            help="offline: popularity frozen at the end of training; replay: the split in time "
            "order, each impression scored with the clicks of all earlier ones.",
        ),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Break down by: category or history-length.")] = None,
    rerank: Annotated[
        str | None,
        typer.Option(
            "--rerank",
            help="Re-rank every row's top 10 first: mmr:λ (text vectors), calibration:λ (history's "
            "categories) or none; λ in [0, 1].",
        ),
    ] = None,
    write_predictions: Annotated[
        bool | None,
        typer.Option(
            "--write-predictions", help="Write prediction.txt and prediction.zip (leaderboard format)."
        ),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option("--predictions", help="Score this prediction file (ours or anyone's), .txt or .zip."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for metrics.json and predictions (default: RUN_DIR).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the random and popularity rows.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Impressions per batch.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")] = None,
    retrieve: Annotated[
        bool | None,
        typer.Option(
            "--retrieve",
            help="Retrieve each impression's top 10 from every news the split showed up to its time "
            "(history excluded), as serve does, instead of ranking its candidates: hit@k, recall@k.",
        ),
    ] = None,
    tradeoff: Annotated[
        str | None,
        typer.Option(
            "--tradeoff",
            help="Sweep a re-ranker's λ (mmr or calibration): accuracy, diversity and calibration per λ "
            "with bootstrap intervals against λ = 0, and RUN/tradeoff-METHOD-PROTOCOL.png.",
        ),
    ] = None,
    grid: Annotated[
        str | None,
        typer.Option("--grid", help="The λ of --tradeoff, in [0, 1] (default 0,0.1,0.2,0.3,0.5,0.7,1)."),
    ] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Score a split with MIND's official AUC, MRR, nDCG@5 and nDCG@10, beside baselines.

    Example: newsrec evaluate runs/nrms --data MINDsmall --metrics auc,ndcg --baselines

    Score a leaderboard file: newsrec evaluate --predictions prediction.txt --data MINDsmall

    Baselines without a run: newsrec evaluate --data MINDsmall --baselines --embeddings stores/minilm

    Online replay (a run trained with --use-popularity): newsrec evaluate runs/pop --data MINDsmall --protocol replay

    Diversity re-ranked: newsrec evaluate runs/nrms --data MINDsmall --baselines --rerank mmr:0.3

    Retrieve from the whole catalogue, as serve does: newsrec evaluate runs/nrms --data MINDsmall --retrieve

    The cost of diversity: newsrec evaluate runs/nrms --data MINDsmall --tradeoff mmr --grid 0,0.3,0.7,1
    """
    settings = settings_from(
        EvaluateSettings,
        config,
        split=split,
        metrics=metrics,
        baselines=baselines,
        protocol=protocol,
        by=by,
        rerank=rerank,
        retrieve=retrieve,
        write_predictions=write_predictions,
        seed=seed,
        batch_size=batch_size,
        device=device,
    ).settings
    data_settings = settings_from(DataSettings, config).settings
    say = (
        (lambda _msg: None)
        if json_out
        else (lambda msg: err_console.print(msg, style="dim", highlight=False))
    )
    if grid is not None and tradeoff is None:
        raise fail("--grid: only with --tradeoff METHOD (the λ values it sweeps)", 2)
    if tradeoff is not None:
        from newsrec_cli.commands.evaluate_tradeoff import run_tradeoff

        if settings.rerank.strip().lower() != "none":
            raise fail("--rerank: not with --tradeoff, whose sweep sets the re-ranker and its λ", 2)
        run_tradeoff(
            settings,
            data=data,
            run_dir=run_dir,
            method=tradeoff,
            grid=grid,
            retrieve=settings.retrieve,
            run_embeddings=run_embeddings,
            json_out=json_out,
            say=say,
        )
        return
    report = evaluate(
        settings,
        data=data,
        data_settings=data_settings,
        run_dir=run_dir,
        predictions=predictions,
        embeddings=embeddings,
        run_embeddings=run_embeddings,
        out_dir=out,
        say=say,
    )
    if json_out:
        print_json(report.to_dict())
        return
    render(report)


def render(report: EvaluationReport) -> None:
    """The accuracy table (rows = sources, columns = metrics), the beyond-accuracy tables (one per
    k), any breakdowns, then what was written."""
    caption = f"{report.impressions:,} impressions, {report.candidates:,} candidates; {report.split_note}"
    accuracy = [name for name in report.metrics if name not in report.beyond]
    if report.labeled:
        first = next((row.result for row in report.rows if row.result is not None), None)
        if first is not None and first.no_click:
            caption += f"; {first.no_click:,} impressions without a click left out"
        if accuracy:
            console.print(_accuracy_table(report, accuracy, caption))
        for k in _beyond_ks(report.beyond):
            console.print(_beyond_table(report, k))
        for row in report.rows:
            if row.groups:
                console.print(_group_table(report, row.name, row.groups, accuracy))
                if report.beyond:
                    k = _beyond_ks(report.beyond)[-1]
                    console.print(_group_beyond_table(report, row.name, row.groups, k))
    else:
        console.print(f"{report.split}: unlabeled, no metrics ({caption})", soft_wrap=True)
    for path in report.written:
        console.print(f"wrote {path}", soft_wrap=True, highlight=False)


def _how(report: EvaluationReport) -> str:
    """The title's words for the protocol, the way of ranking and the re-ranker."""
    how = f"{report.protocol} protocol"
    if report.ranking == "retrieve":
        how += ", top 10 retrieved from the split's news (evaluate --retrieve)"
    return how if report.rerank == "none" else f"{how}, re-ranked by {report.rerank}"


def _accuracy_table(report: EvaluationReport, names: list[str], caption: str) -> Table:
    title = f"MIND metrics: {report.data}, {report.selection}, {_how(report)}"
    table = Table(title=title, caption=caption)
    table.add_column("source")
    for name in names:
        table.add_column(name, justify="right", min_width=6)  # 0.1234 never truncated
    table.add_column("counted", justify="right")
    table.add_column("AUC skip", justify="right")
    table.add_column("s", justify="right", style="dim")
    best = _best(report, names)
    for row in report.rows:
        assert row.result is not None  # labelled data always has results
        cells = [_cell(row.result, name, best) for name in names]
        table.add_row(
            row.name,
            *cells,
            f"{row.result.impressions - row.result.no_click:,}",
            f"{row.result.skipped_auc:,}",
            f"{row.seconds:.1f}",
            style="bold" if row.kind == "model" else None,
        )
    return table


# Column headings of the beyond-accuracy tables, and how many decimals each value needs.
# Short enough (at most 7 characters) that the seven columns and the source fit 80 columns
# without a cut heading; the caption spells out the short ones.
_HEADINGS = {
    "ild": ("ILD", 4),
    "categories": ("cats", 2),
    "calibration": ("calib↓", 4),
    "novelty": ("novelty", 2),
    "popularity": ("pop", 1),
    "coverage": ("cover", 4),
    "gini": ("Gini↓", 4),
}
_SPELLED = "cats: distinct categories, calib: calibration, pop: popularity, cover: coverage"


def _beyond_ks(names: list[str]) -> list[int]:
    return sorted({int(name.partition("@")[2]) for name in names})


def _beyond_table(report: EvaluationReport, k: int) -> Table:
    names = [name for name in report.beyond if name.endswith(f"@{k}")]
    title = f"Beyond accuracy, top {k}: {report.data}, {report.selection}, {_how(report)}"
    table = Table(title=title, caption=_beyond_caption(report, names))
    table.add_column("source")
    for name in names:
        table.add_column(_HEADINGS[name.partition("@")[0]][0], justify="right", min_width=6)
    for row in report.rows:
        assert row.result is not None
        table.add_row(
            row.name,
            *[_beyond_cell(row.result, name) for name in names],
            style="bold" if row.kind == "model" else None,
        )
    return table


def _beyond_caption(report: EvaluationReport, names: list[str]) -> str:
    """What each figure is over: impressions averaged, those skipped, the catalogue."""
    first = next((row.result for row in report.rows if row.result is not None), None)
    parts = ["means over impressions (novelty in bits, popularity in clicks)"]
    if first is not None:
        ild = [n for n in names if n.startswith("ild@")]
        if ild and first.counts.get(ild[0], first.impressions) < first.impressions:
            parts.append(f"ILD over the {counted(first.counts[ild[0]], 'list')} of 2 news or more")
        if first.empty_history:
            parts.append(f"calibration skips {counted(first.empty_history, 'impression')} with no history")
    parts.append("coverage and Gini over the split's distinct candidates; ↓: lower is better")
    return "; ".join([_SPELLED, *parts])


def _beyond_cell(result: MetricResult, name: str) -> str:
    value = result.values.get(name)
    if value is None:
        return "—"
    if math.isnan(value):
        return "n/a"
    return f"{value:.{_HEADINGS[name.partition('@')[0]][1]}f}"


def _best(report: EvaluationReport, names: list[str]) -> dict[str, float]:
    """Best value per metric over rows (lower is better for logloss and ece)."""
    best: dict[str, float] = {}
    for name in names:
        values = [
            row.result.values[name]
            for row in report.rows
            if row.result is not None and not math.isnan(row.result.values.get(name, math.nan))
        ]
        if values:
            best[name] = min(values) if name.startswith(("logloss", "ece")) else max(values)
    return best


def _cell(result: MetricResult, name: str, best: dict[str, float]) -> str:
    value = result.values.get(name)
    if value is None:
        return "—"  # a probability metric on a row without probabilities
    if math.isnan(value):
        return "n/a"
    text = f"{value:.4f}"
    return f"[green]{text}[/]" if len(best) and value == best.get(name) else text


def _group_table(
    report: EvaluationReport, source: str, groups: list[tuple[str, MetricResult]], names: list[str]
) -> Table:
    table = Table(title=f"{source} by {report.by}")
    table.add_column(report.by)
    present = [n for n in names if n in groups[0][1].values]
    for name in present:
        table.add_column(name, justify="right", min_width=6)
    table.add_column("counted", justify="right")
    table.add_column("AUC skip", justify="right")
    for group, result in groups:
        cells = [("n/a" if math.isnan(result.values[n]) else f"{result.values[n]:.4f}") for n in present]
        counted = result.impressions - result.no_click
        table.add_row(group, *cells, f"{counted:,}", f"{result.skipped_auc:,}")
    return table


def _group_beyond_table(
    report: EvaluationReport, source: str, groups: list[tuple[str, MetricResult]], k: int
) -> Table:
    names = [n for n in report.beyond if n.endswith(f"@{k}")]
    table = Table(title=f"{source} by {report.by}, beyond accuracy, top {k} (--json: every k)")
    table.add_column(report.by)
    for name in names:
        table.add_column(_HEADINGS[name.partition("@")[0]][0], justify="right", min_width=6)
    for group, result in groups:
        table.add_row(group, *[_beyond_cell(result, n) for n in names])
    return table
