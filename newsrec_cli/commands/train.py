"""`newsrec train`: parse flags into settings, run the training loop, render progress and tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from newsrec_cli.commands.common import JsonOption, console, err_console, handle_errors, print_json, progress
from newsrec_cli.commands.options import EmbeddingsOption, GraphOption, Stage, settings_options
from newsrec_cli.runs.records import TrainJob
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings

METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10")


@handle_errors
@settings_options(Stage(GraphSettings, exclude=("min_confidence", "cooccurrence_min")))
def train_command(
    data: Annotated[
        Path | None,
        typer.Argument(
            help="MIND folder, or a parent of train/ valid/ (optional with --resume).", exists=True
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Run directory to write (or to resume).", rich_help_panel="Run"),
    ] = ...,  # type: ignore[assignment]
    embeddings: EmbeddingsOption = None,
    graph: GraphOption = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the run in --out from its last.pt.", rich_help_panel="Run"),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Delete the run files in --out and start over.", rich_help_panel="Run"
        ),
    ] = False,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            min=1,
            show_default=False,
            rich_help_panel="Distributed",
            help="Train with N processes (DistributedDataParallel) started by torch.distributed.run; "
            "the global batch stays --batch-size. Under torchrun, leave it out.",
        ),
    ] = None,
    *,
    settings: TrainSettings,
    data_settings: DataSettings,
    graph_settings: GraphSettings,
    json_out: JsonOption = False,
) -> None:
    """Train a news recommender (ID + text + graph + category, NRMS user encoder, content prior) on a MIND dataset.

    Example: newsrec train data/mind --embeddings data/mind/minilm --out runs/nrms

    By default the epoch is chosen on the last day of train/ and valid/, a later day, is reported (with a labelled test/: valid/ chooses, test/ is reported): newsrec evaluate runs/nrms --data data/mind --baselines

    Choose on valid/ and report it too (the figures are then optimistic, and every table says so): newsrec train data/mind -e stores/minilm --select-on valid --out runs/opt

    With a graph and GAT: newsrec train data/mind -e stores/minilm --graph graphs/mind --graph-encoder gat --out runs/gat

    With popularity from the click stream, the epoch chosen by online replay: newsrec train data/mind -e stores/minilm --valid-days 1 --use-popularity --valid-protocol replay --out runs/pop, then newsrec evaluate runs/pop --data data/mind --protocol replay

    Continue an interrupted run: newsrec train --resume --out runs/nrms

    Start over in the same folder: newsrec train data/mind -e stores/minilm --out runs/nrms --overwrite

    Fine-tune the last 2 layers of the local text model (a GPU, or small data): newsrec train data/mind -e stores/minilm-torch --finetune-text 2 --out runs/ft

    Two processes on this machine (DDP): newsrec train data/mind -e stores/minilm --out runs/ddp --nproc 2; on a cluster, per node: torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 -m newsrec_cli train data/mind -e stores/minilm --out runs/ddp. --resume works with the same or another number of processes.
    """
    if data is None and not resume:
        raise typer.BadParameter(
            "give the dataset folder DATA (only --resume can do without it)", param_hint="DATA"
        )
    job = TrainJob(
        data=data,
        out=out,
        store=embeddings,
        graph=graph,
        settings=settings,
        data_settings=data_settings,
        graph_settings=graph_settings,
        resume=resume,
        overwrite=overwrite,
    )
    if nproc is not None and nproc > 1:
        from newsrec_cli.train.distributed import launched_world
        from newsrec_cli.train.launch import launch

        if launched_world() is not None:
            raise typer.BadParameter(
                "this process was started by torchrun already: leave --nproc out", param_hint="--nproc"
            )
        launch(nproc, {"job": job.to_json(), "json_out": json_out}, out=out, threads=settings.threads)
        return
    run_job(job, json_out=json_out)


def run_job(job: TrainJob, *, json_out: bool) -> None:
    """Train as asked, in this process (or as one rank under torchrun: rank 0 alone renders)."""
    from newsrec_cli.train.distributed import launched_world
    from newsrec_cli.train.loop import train_job

    launched = launched_world()
    main = launched is None or launched[0] == 0
    view = _Progress(quiet=json_out or not main)
    try:
        result = train_job(job, view)
    finally:
        view.close()
    if not main:
        return
    if json_out:
        print_json(result.to_dict())
        return
    _render(result)


class _Progress:
    """The engine's callbacks as a rich progress bar (stderr) and one line per epoch."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.batch = 1
        self.clicks = 0

    def on_start(self, info: Any) -> None:
        self.clicks = info.clicks
        self.batch = max(1, -(-info.clicks // max(info.steps_per_epoch, 1)))
        if self.quiet:
            return
        resumed = (
            f", resumed at epoch {info.resumed_at[0]} step {info.resumed_at[1]}" if info.resumed_at else ""
        )
        err_console.print(
            f"[bold]train[/] {info.train_impressions:,} impressions ({info.clicks:,} clicks), "
            f"{info.valid_impressions:,} to validate; {info.validation}",
            highlight=False,
        )
        missing = (
            f"; {len(info.missing_text):,} news use the learned missing-text vector"
            if info.missing_text
            else ""
        )
        err_console.print(
            f"model: {' + '.join(info.modalities)}, {info.parameters:,} parameters, "
            f"{info.news_with_id:,} of {info.news:,} news with an ID vector{missing}; device {info.device} "
            f"({info.threads} threads{_processes(info)}, {info.determinism}); "
            f"{info.steps_per_epoch:,} steps per epoch{resumed}",
            highlight=False,
        )
        if info.finetune_text:
            slow = (
                ""
                if info.device.startswith("cuda")
                else "; [yellow]on CPU this is slow[/]: each step runs those layers forward and backward over "
                f"up to {info.step_tokens:,} tokens (the texts of its batch's news), about 3x the cost of "
                "embedding them; use a GPU, or small data"
            )
            err_console.print(
                f"text: fine-tuning the last {info.finetune_text} layers of the local model on the texts of "
                f"{info.cached_news:,} news ({info.cached_tokens:,} tokens){slow}",
                highlight=False,
            )
        if info.unverified_texts:
            err_console.print(
                f"[yellow]note:[/] {info.unverified_texts:,} text vectors could not be checked against "
                "the news texts: the store has no fingerprints (made before newsrec recorded them, or "
                "imported); a new `newsrec embed` store has them",
                highlight=False,
            )

    def on_epoch_start(self, epoch: int, steps: int, done: int) -> None:
        if self.quiet:
            return
        self.close()
        self.bar = progress(unit="samples", transient=True, extra="loss {task.fields[loss]}")
        self.bar.start()
        self.task = self.bar.add_task(
            f"epoch {epoch}", total=self.clicks, completed=min(done * self.batch, self.clicks), loss="…"
        )

    def on_step(self, done: int, loss: float, samples_per_s: float) -> bool:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=min(done * self.batch, self.clicks), loss=f"{loss:.4f}")
        return False

    def on_validate(self, epoch: int, impressions: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, description=f"epoch {epoch}: validating {impressions:,} impressions")

    def on_epoch_end(self, record: Any) -> None:
        self.close()
        if self.quiet:
            return
        m = record.metrics
        tag = " [green]best[/]" if record.best else ""
        part = f" (partial: {record.steps:,} steps)" if record.partial else ""
        if record.epoch == 0:
            part = " (untrained: the content prior)"
        err_console.print(
            f"epoch {record.epoch}{part}: loss {_fmt(record.train_loss)}, AUC {_fmt(m.get('auc'))}, "
            f"MRR {_fmt(m.get('mrr'))}, nDCG@10 {_fmt(m.get('ndcg@10'))}, {record.seconds:.0f} s, "
            f"{record.samples_per_s:,.0f} samples/s{tag}",
            highlight=False,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _processes(info: Any) -> str:
    processes = getattr(info, "processes", 1)
    return f" per process, {processes} processes" if processes > 1 else ""


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


STOPS = {
    "epochs": "all epochs done",
    "early_stopping": "early stopping (no better validation AUC)",
    "max_steps": "--max-steps reached",
    "time_budget": "--time-budget reached (continue with --resume)",
    "already_finished": "this run had already finished; nothing to do",
}


def _render(result: Any) -> None:
    table = Table(title=f"newsrec train: {result.run_dir} (metrics on validation)", title_justify="left")
    table.add_column("epoch", justify="right")
    table.add_column("train loss", justify="right")
    for name in METRICS:
        table.add_column(
            name.upper() if name in ("auc", "mrr") else name.replace("ndcg", "nDCG"), justify="right"
        )
    table.add_column("seconds", justify="right")
    table.add_column("samples/s", justify="right")
    for record in result.history:
        label = f"{record.epoch}" + ("*" if record.partial else "")
        style = "bold green" if record.best and record.epoch == result.best_epoch else None
        table.add_row(
            label,
            _fmt(record.train_loss),
            *(_fmt(record.metrics.get(m)) for m in METRICS),
            f"{record.seconds:.1f}",
            f"{record.samples_per_s:,.0f}",
            style=style,
        )
    console.print(table)
    if any(r.partial for r in result.history):
        console.print("* part of an epoch, validated when training stopped", style="dim")
    best = result.best_metrics
    if result.best_epoch is None:
        console.print(
            f"no full epoch yet: {result.run_dir / 'model.pt'} holds the partial one until the first full "
            f"epoch replaces it; stopped: {STOPS.get(result.stopped, result.stopped)}; {result.seconds:.0f} s",
            highlight=False,
        )
        console.print(f"{result.info.validation}", style="dim", highlight=False)
        return
    console.print(
        f"best epoch: {result.best_epoch} (valid AUC {_fmt(best.get('auc'))}, nDCG@10 {_fmt(best.get('ndcg@10'))}) "
        f"saved as {result.run_dir / 'model.pt'}; stopped: {STOPS.get(result.stopped, result.stopped)}; "
        f"{result.seconds:.0f} s",
        highlight=False,
    )
    console.print(f"{result.info.validation}", style="dim", highlight=False)
