"""`newsrec evaluate RUN --tradeoff mmr`: the λ sweep's table (one row per λ, each metric with its
difference to λ = 0 and the 95% interval) and the plot it wrote; `--json` for scripts."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from newsrec_cli.commands.common import console, print_json, progress
from newsrec_cli.errors import SettingsError
from newsrec_cli.evaluate.tradeoff import (
    GRID,
    LOWER_IS_BETTER,
    TradeoffReport,
    evaluate_tradeoff,
    parse_grid,
    parse_method,
)


def run_tradeoff(
    settings: Any,
    *,
    data: Path,
    run_dir: Path | None,
    method: str,
    grid: str | None,
    retrieve: bool,
    run_embeddings: Path | None,
    json_out: bool,
    say: Callable[[str], None],
) -> None:
    """Check the flags, sweep, then print the table (or the JSON)."""
    name = parse_method(method)
    weights = parse_grid(grid) if grid is not None else list(GRID)
    if run_dir is None:
        raise SettingsError("--tradeoff needs a RUN_DIR (the model whose ranking is re-ranked)")
    with progress(unit="λ", transient=True) as bar:
        task = bar.add_task(f"{name} λ sweep", total=len(weights))
        report = evaluate_tradeoff(
            settings,
            data=data,
            run_dir=run_dir,
            method=name,
            grid=weights,
            retrieve=retrieve,
            run_embeddings=run_embeddings,
            say=say,
            advance=lambda n: bar.advance(task, n),
        )
    if json_out:
        print_json(report.to_dict())
        return
    render_tradeoff(report)


def render_tradeoff(report: TradeoffReport) -> None:
    caption = (
        f"{report.impressions:,} impressions; under each value: its difference to λ = 0 and the paired "
        f"bootstrap 95% interval ({report.resamples:,} resamples of impressions, seed {report.seed}); "
        + ", ".join(f"{m} lower is better" for m in report.metrics if m in LOWER_IS_BETTER)
    )
    table = Table(title=report.title, caption=caption)
    table.add_column("λ", justify="right")
    for name in report.metrics:
        table.add_column(name, justify="right", min_width=8)
    for row in report.rows:
        cells = []
        for name in report.metrics:
            value = row.values[name]
            text = "n/a" if math.isnan(value) else f"{value:.4f}"
            if row.weight > 0:
                mid, low, high = row.deltas[name]
                if not math.isnan(mid):
                    style = "dim" if low <= 0 <= high else "bold"
                    text += f"\n[{style}]{mid:+.4f} [{low:+.4f}, {high:+.4f}][/]"
            cells.append(text)
        table.add_row(f"{row.weight:g}", *cells, end_section=True)
    console.print(table)
    for path in report.written:
        console.print(f"wrote {path}", soft_wrap=True, highlight=False)
