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
    handle_errors,
    print_json,
    settings_from,
)
from newsrec_cli.commands.options import DataOption
from newsrec_cli.evaluate.metrics import MetricResult
from newsrec_cli.evaluate.runner import EvaluationReport, evaluate
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
        typer.Option("--metrics", help="Comma-separated: auc, mrr, ndcg@K, hit@K, logloss, ece."),
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
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Score a split with MIND's official AUC, MRR, nDCG@5 and nDCG@10, beside baselines.

    Example: newsrec evaluate runs/nrms --data MINDsmall --metrics auc,ndcg --baselines

    Score a leaderboard file: newsrec evaluate --predictions prediction.txt --data MINDsmall

    Baselines without a run: newsrec evaluate --data MINDsmall --baselines --embeddings stores/minilm

    Online replay (a run trained with --use-popularity): newsrec evaluate runs/pop --data MINDsmall --protocol replay
    """
    settings = settings_from(
        EvaluateSettings,
        config,
        split=split,
        metrics=metrics,
        baselines=baselines,
        protocol=protocol,
        by=by,
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
    """The main table (rows = sources, columns = metrics), any breakdowns, then what was written."""
    caption = f"{report.impressions:,} impressions, {report.candidates:,} candidates; {report.split_note}"
    if report.labeled:
        first = next((row.result for row in report.rows if row.result is not None), None)
        if first is not None and first.no_click:
            caption += f"; {first.no_click:,} impressions without a click left out"
        title = f"MIND metrics: {report.data}, {report.selection}, {report.protocol} protocol"
        table = Table(title=title, caption=caption)
        table.add_column("source")
        for name in report.metrics:
            table.add_column(name, justify="right", min_width=6)  # 0.1234 never truncated
        table.add_column("counted", justify="right")
        table.add_column("AUC skip", justify="right")
        table.add_column("s", justify="right", style="dim")
        best = _best(report)
        for row in report.rows:
            assert row.result is not None  # labelled data always has results
            cells = [_cell(row.result, name, best) for name in report.metrics]
            table.add_row(
                row.name,
                *cells,
                f"{row.result.impressions - row.result.no_click:,}",
                f"{row.result.skipped_auc:,}",
                f"{row.seconds:.1f}",
                style="bold" if row.kind == "model" else None,
            )
        console.print(table)
        for row in report.rows:
            if row.groups:
                console.print(_group_table(report, row.name, row.groups))
    else:
        console.print(f"{report.split}: unlabeled, no metrics ({caption})", soft_wrap=True)
    for path in report.written:
        console.print(f"wrote {path}", soft_wrap=True, highlight=False)


def _best(report: EvaluationReport) -> dict[str, float]:
    """Best value per metric over rows (lower is better for logloss and ece)."""
    best: dict[str, float] = {}
    for name in report.metrics:
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


def _group_table(report: EvaluationReport, source: str, groups: list[tuple[str, MetricResult]]) -> Table:
    table = Table(title=f"{source} by {report.by}")
    table.add_column(report.by)
    names = list(groups[0][1].values)
    for name in names:
        table.add_column(name, justify="right", min_width=6)
    table.add_column("counted", justify="right")
    table.add_column("AUC skip", justify="right")
    for group, result in groups:
        cells = [("n/a" if math.isnan(result.values[n]) else f"{result.values[n]:.4f}") for n in names]
        counted = result.impressions - result.no_click
        table.add_row(group, *cells, f"{counted:,}", f"{result.skipped_auc:,}")
    return table
