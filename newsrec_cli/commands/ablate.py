"""`newsrec ablate`: train each variant with several seeds and show what each part adds, with CIs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from newsrec_cli.commands.common import (
    JsonOption,
    console,
    err_console,
    handle_errors,
    print_json,
)
from newsrec_cli.commands.options import EmbeddingsOption, GraphOption, Stage, settings_options
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings


@handle_errors
# The variants and seeds are ablate's; of the rest, the budget and the epoch choice are asked for
# here, every other setting comes from the file or the environment as for train.
@settings_options(
    Stage(TrainSettings, only=("epochs", "threads")),
    Stage(DataSettings, only=("valid_days", "select_on")),
    Stage(GraphSettings, only=()),
)
def ablate_command(
    data: Annotated[
        Path, typer.Argument(help="MIND folder, or a parent of train/ and valid/ (and test/).", exists=True)
    ],
    embeddings: EmbeddingsOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the runs and ablation.json.")],
    graph: GraphOption = None,  # adds the graph rows
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per variant (0, 1, ...).")] = 3,
    vary: Annotated[
        list[str] | None,
        typer.Option(
            "--vary",
            help="Also train SETTING=VALUE[,VALUE] (repeatable), e.g. --vary user_encoder=candidate "
            "--vary loss=infonce.",
        ),
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a bar chart PNG here.")] = None,
    json_out: JsonOption = False,
    *,
    settings: TrainSettings,
    data_settings: DataSettings,
    graph_settings: GraphSettings,
) -> None:
    """Train the full model, each modality left out, and the --vary choices, with the same seeds and budget; print mean ± std over seeds and paired bootstrap 95% intervals over impressions.

    The runs choose their epochs as `newsrec train` does by default (train/'s last day, or valid/ when a labelled test/ is reported) and the table reports the split that chose nothing: valid/, or test/. Rerunning the same command skips finished runs and resumes an interrupted one.

    Example: newsrec ablate demo/data -e demo/embeddings --graph demo/graph --out demo/ablation --seeds 3 --vary user_encoder=candidate
    """
    from newsrec_cli.ablate import ablation_variants, run_ablation
    from newsrec_cli.ablate.variants import parse_vary
    from newsrec_cli.train import train_job

    if plot is not None:
        from newsrec_cli.diagnose.plots import require_matplotlib

        require_matplotlib()
    variants = ablation_variants(settings, has_graph=graph is not None, vary=parse_vary(vary or []))
    total = len(variants) * seeds

    done = 0

    def say(message: str) -> None:
        nonlocal done
        if message.startswith("baselines"):
            err_console.print(message, highlight=False)
            return
        done += 1
        if not json_out:
            err_console.print(f"[{done}/{total}] {message}", highlight=False)

    result = run_ablation(
        data,
        out,
        store=embeddings,
        graph=graph,
        variants=variants,
        seeds=list(range(seeds)),
        settings=settings,
        data_settings=data_settings,
        graph_settings=graph_settings,
        say=say,
        train=train_job,
    )
    if plot is not None:
        from newsrec_cli.ablate.plot import plot_ablation

        plot_ablation(result, plot)
    if json_out:
        print_json(result.to_dict())
        return
    _render(result, seeds)
    if plot is not None:
        console.print(f"bar chart: {plot}")


def _ci(value: tuple[float, float, float] | None) -> str:
    if value is None:
        return ""
    diff, low, high = value
    return f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"


def _render(result: Any, seeds: int) -> None:
    table = Table(
        title=f"newsrec ablate: {result.split_note}; {result.impressions:,} impressions, {seeds} seed(s)",
        title_justify="left",
        caption="± is the std over seeds; [..] a paired bootstrap 95% interval over impressions.",
        caption_justify="left",
    )
    table.add_column("row")
    for name in ("AUC", "MRR", "nDCG@5", "nDCG@10"):
        table.add_column(name, justify="right")
    table.add_column("ΔAUC vs full", justify="right")
    table.add_column("ΔAUC vs content (centred)", justify="right")
    table.add_column("ΔnDCG@10 vs content (centred)", justify="right")
    for row in result.rows:
        cells = []
        for metric in ("auc", "mrr", "ndcg@5", "ndcg@10"):
            mean, std = row.summary(metric)
            cells.append(f"{mean:.4f} ± {std:.4f}" if row.kind == "model" else f"{mean:.4f}")
        table.add_row(
            row.name,
            *cells,
            _ci(row.vs_full.get("auc")),
            _ci(row.vs_content.get("auc")),
            _ci(row.vs_content.get("ndcg@10")),
            style="dim" if row.kind == "baseline" else None,
        )
    console.print(table)
