"""`newsrec tune`: an Optuna search over training settings; `tune show`, `tune space`.

`newsrec tune DATA ...` is short for `newsrec tune run DATA ...` (the group routes anything that
is not a subcommand name to `run`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table
from typer.core import TyperGroup

from newsrec_cli.commands.common import (
    ConfigOption,
    JsonOption,
    console,
    err_console,
    fail,
    handle_errors,
    print_json,
    progress,
)
from newsrec_cli.commands.options import EmbeddingsOption, GraphOption
from newsrec_cli.settings import SEED_MAX, DataSettings, GraphSettings, TrainSettings, resolve

EXAMPLE = "newsrec tune data/mind --embeddings stores/minilm --out tune/mind --trials 30 --time-budget 1800"


class _TuneGroup(TyperGroup):
    """`tune DATA ...` runs a study; `tune show DIR` and `tune space` are subcommands."""

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_TuneGroup,
    help="Search training settings with Optuna (TPE + pruning on validation AUC), resumable, in parallel."
    f"\n\nExample: {EXAMPLE}"
    "\n\nThen: newsrec tune show tune/mind --plot tune/mind/plots"
    "\n\n`newsrec tune DATA ...` is short for `newsrec tune run DATA ...` (see `newsrec tune run --help`).",
    no_args_is_help=True,
)

OutDir = Annotated[Path, typer.Option("--out", "-o", help="Study folder: study.db, trials/NNN, best.toml.")]


@app.command("run")
@handle_errors
def run_command(
    data: Annotated[
        Path, typer.Argument(help="MIND folder, or a parent of train/ valid/ (test/).", exists=True)
    ],
    out: OutDir = ...,  # type: ignore[assignment]
    embeddings: EmbeddingsOption = None,
    graph: GraphOption = None,
    trials: Annotated[
        int, typer.Option("--trials", help="Trials in the study, the defaults' trial included.")
    ] = 20,
    time_budget: Annotated[
        float | None,
        typer.Option(
            "--time-budget", help="Seconds for this invocation; a trial cut by it counts as pruned."
        ),
    ] = None,
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL (default: sqlite:///OUT/study.db).")
    ] = None,
    study: Annotated[str, typer.Option("--study", help="Study name in the storage.")] = "newsrec",
    n_jobs: Annotated[int, typer.Option("--n-jobs", help="Worker processes sharing the storage.")] = 1,
    space: Annotated[
        Path | None,
        typer.Option(
            "--space",
            help="TOML with \\[tune.space] (default: the packaged space, see `newsrec tune space`).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    pruner: Annotated[str, typer.Option("--pruner", help="median, hyperband or none.")] = "median",
    seed: Annotated[
        int,
        typer.Option(
            "--seed", min=0, max=SEED_MAX, help="Seed of the sampler (trials train with train.seed)."
        ),
    ] = 0,
    defaults: Annotated[
        bool,
        typer.Option("--defaults/--no-defaults", help="Trial 0 trains the default settings (never pruned)."),
    ] = True,
    final_test: Annotated[
        bool,
        typer.Option(
            "--final-test",
            help="Then evaluate the best trial once on the split that chose nothing (valid/ when "
            "train/'s last day chose the epochs, a labelled test/ when valid/ did).",
        ),
    ] = False,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Epochs of every trial.", show_default=False)
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads of each worker's torch.", show_default=False)
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda, ...", show_default=False)
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Trials in the table.")] = 10,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also write the study's PNG charts into this folder.")
    ] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run (or resume) a study: each trial trains into OUT/trials/NNN; the best goes to OUT/best.toml.

    Example: newsrec tune data/mind --embeddings stores/minilm --out tune/mind --trials 30 --time-budget 1800

    Fixed settings of every trial come from --config (\\[train], \\[data], \\[graph]); the searched ones
    from \\[tune.space] (--space, or in the --config file). Rerun the same command to resume a killed study.
    A trial is worth its best trained epoch (never the untrained epoch 0) on the selection split (train/'s last day by default), so the best trial's figure there is optimistic; --final-test reports the split that chose nothing.
    """
    from newsrec_cli.train import train_job as run_training
    from newsrec_cli.tune.report import check_test_split, study_report, write_best_toml
    from newsrec_cli.tune.report import final_test as run_final_test
    from newsrec_cli.tune.space import load_space, parse_space, read_tune_config
    from newsrec_cli.tune.study import TuneSetup, tune

    file_data, space_table, text = read_tune_config(config)
    if space is not None:
        search = load_space(space)
    elif space_table is not None:
        if not isinstance(space_table, dict) or not space_table:
            raise typer.BadParameter("[tune.space] of --config is empty", param_hint="--config")
        search = parse_space(space_table, str(config), text)
    else:
        search = load_space(None)
    train = resolve(
        TrainSettings,
        config=config,
        file_data=file_data,
        overrides={"epochs": epochs, "threads": threads, "device": device},
    ).settings
    data_settings = resolve(DataSettings, config=config, file_data=file_data).settings
    graph_settings = resolve(GraphSettings, config=config, file_data=file_data).settings
    if final_test:
        check_test_split(data, data_settings)  # before hours of search, not after
    setup = TuneSetup(
        data=data,
        out=out,
        store=embeddings,
        graph=graph,
        space=search,
        train=train.model_dump(mode="json"),
        data_settings=data_settings.model_dump(mode="json"),
        graph_settings=graph_settings.model_dump(mode="json"),
        trials=trials,
        n_jobs=n_jobs,
        time_budget=time_budget,
        storage=storage,
        study=study,
        pruner=pruner,
        seed=seed,
        defaults=defaults,
    )
    view = _Progress(quiet=json_out, total=trials, names=search.names)
    try:
        view.start(search.source, out)
        run = tune(setup, run_training, events=view)
    finally:
        view.close()
    report = study_report(setup)
    write_best_toml(setup, report)
    if final_test and report.best is not None:
        run_final_test(setup, report, device=train.device)
    if json_out:
        data_out = report.to_dict()
        data_out["run"] = {
            "created": run.created,
            "requeued": run.recovered,
            "seconds": round(run.seconds, 1),
        }
        print_json(data_out)
    else:
        if run.recovered:
            err_console.print(
                f"trials {', '.join(map(str, run.recovered))} had lost their worker: recorded as failed, run again"
            )
        render(report, top)
    if plot is not None:
        from newsrec_cli.tune.plots import write_plots

        written, skipped = write_plots(setup, plot)
        for path in written:
            err_console.print(f"wrote {path}", highlight=False)
        for name, why in skipped.items():
            err_console.print(f"{name} chart skipped: {why}", style="dim", highlight=False)
    if report.best is None:
        raise fail("no trial completed, so there is no best.toml; the errors are in the table (tune show)")


@app.command("show")
@handle_errors
def show_command(
    out: Annotated[
        Path, typer.Argument(help="Study folder written by `newsrec tune`.", exists=True, file_okay=False)
    ],
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Write history, importance and parallel-coordinate PNGs into this folder."
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Trials in the table.")] = 10,
    json_out: JsonOption = False,
) -> None:
    """The table of a finished or running study (best trials, the defaults' row), with --json.

    Example: newsrec tune show tune/mind --plot tune/mind/plots
    """
    from newsrec_cli.tune.report import study_report
    from newsrec_cli.tune.study import setup_from_file

    setup = setup_from_file(out)
    plots: list[Path] = []
    skipped: dict[str, str] = {}
    if plot is not None:
        from newsrec_cli.tune.plots import write_plots

        plots, skipped = write_plots(setup, plot)
    report = study_report(setup)
    if json_out:
        data = report.to_dict()
        data["plots"] = [str(p) for p in plots]
        data["plots_skipped"] = skipped
        print_json(data)
        return
    render(report, top)
    for path in plots:
        console.print(f"wrote {path}", highlight=False)
    for name, why in skipped.items():
        console.print(f"{name} chart skipped: {why}", style="dim", highlight=False)


@app.command("space")
@handle_errors
def space_command() -> None:
    """Print the default search space (TOML): copy it, edit it, pass it back with --space FILE.

    Example: newsrec tune space > space.toml
    """
    from newsrec_cli.tune.space import default_space_text

    console.file.write(default_space_text())


# ----------------------------------------------------------------------------- rendering


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def settings_text(params: dict[str, Any]) -> str:
    return " ".join(f"{name}={_value(value)}" for name, value in params.items())


def render(report: Any, top: int) -> None:
    shown = [r for r in report.rows if r.state != "failed"][:top]
    if report.defaults is not None and report.defaults not in shown:
        shown.append(report.defaults)
    table = Table(
        title=f"newsrec tune: {report.out} (study {report.study!r}, {report.counted} of {report.wanted} trials; "
        "metrics on validation)",
        title_justify="left",
    )
    for name, justify in (
        ("trial", "right"),
        ("state", "left"),
        ("AUC", "right"),
        ("nDCG@10", "right"),
        ("epochs", "right"),
        ("seconds", "right"),
        ("settings", "left"),
    ):
        # fold: a long setting wraps onto the next line rather than ending in an ellipsis
        table.add_column(name, justify=justify, overflow="fold" if name == "settings" else "ellipsis")  # type: ignore[arg-type]
    for row in shown:
        label = f"{row.number}" + (" defaults" if row.defaults else "")
        style = "bold green" if report.best is not None and row.number == report.best.number else None
        style = style or ("dim" if row.state in ("running", "queued") else None)
        table.add_row(
            label,
            row.state,
            _fmt(row.metrics.get("auc")),
            _fmt(row.metrics.get("ndcg@10")),
            "-" if row.epochs is None else str(row.epochs),
            "-" if row.seconds is None else f"{row.seconds:.0f}",
            escape(settings_text(row.params)),
            style=style,
        )
    console.print(table)
    failed = [r for r in report.rows if r.state == "failed"]
    for row in failed[:5]:
        console.print(
            f"trial {row.number} failed: {row.error}",
            style="red" if not row.retried else "dim",
            highlight=False,
            soft_wrap=True,
        )
    if len(failed) > 5:
        console.print(f"... and {len(failed) - 5} more failed trials (tune show --json)", style="dim")
    best, base = report.best, report.defaults
    if best is not None:
        against = ""
        if base is not None and math.isfinite(base.auc):
            against = (
                f"; defaults (trial {base.number}) {base.auc:.4f}, difference {best.auc - base.auc:+.4f}"
            )
        console.print(
            f"best: trial {best.number} ({best.run_dir}), validation AUC {best.auc:.4f}{against}",
            highlight=False,
        )
    if report.best_toml is not None:
        console.print(
            f"best settings: {report.best_toml} (newsrec train --config {report.best_toml})", highlight=False
        )
    console.print(f"note: {report.note}", style="yellow", highlight=False)
    final = report.final_test
    if final is not None:
        values = final["test"]["values"]
        again = (
            " (evaluated before, not again: a test split is looked at once)" if final.get("repeated") else ""
        )
        console.print(
            f"final test of trial {final['trial']}: AUC {_fmt(values.get('auc'))}, MRR {_fmt(values.get('mrr'))}, "
            f"nDCG@10 {_fmt(values.get('ndcg@10'))} on {final['test']['impressions']:,} impressions "
            f"({final['split_note']}){again}",
            highlight=False,
            soft_wrap=True,
        )


class _Progress:
    """The study's events as a progress bar over trials (stderr) and one line per finished trial."""

    def __init__(self, quiet: bool, total: int, names: list[str]) -> None:
        self.quiet = quiet
        self.total = total
        self.names = names
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.done = 0

    def start(self, source: str, out: Path) -> None:
        if self.quiet:
            return
        err_console.print(
            f"[bold]tune[/] {out}: search space {source}: {', '.join(self.names)}", highlight=False
        )
        self.bar = progress(unit="trials")
        self.bar.start()
        self.task = self.bar.add_task("trials", total=self.total)

    def on_trial_start(self, number: int, params: dict[str, Any], defaults: bool) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, description=f"trial {number}" + (" (defaults)" if defaults else ""))

    def on_epoch_end(self, number: int, record: Any) -> None: ...

    def on_trial_end(self, trial: Any) -> None:
        from newsrec_cli.tune.report import trial_row

        row = trial_row(trial)
        if self.quiet or self.bar is None:
            return
        if row.retried:
            text = f"trial {row.number} interrupted: queued again"
        elif row.state == "failed":
            text = f"trial {row.number} failed: {row.error}"
        else:
            text = (
                f"trial {row.number} {row.state}: AUC {_fmt(row.metrics.get('auc'))}, "
                f"nDCG@10 {_fmt(row.metrics.get('ndcg@10'))}, {row.epochs} epochs, {row.seconds or 0:.0f} s"
                + (" (defaults)" if row.defaults else "")
            )
        self.bar.console.print(escape(text), highlight=False)
        self.done += 0 if row.retried else 1
        if self.task is not None:
            self.bar.advance(self.task)

    def on_poll(self, counted: int, total: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=counted, description="waiting for the other workers")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
