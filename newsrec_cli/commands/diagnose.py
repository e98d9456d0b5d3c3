"""`newsrec diagnose`: data, saturation, cosine and gradient checks, each ending in a verdict.

The verdict is the worst status of the checks: OK and WARN exit 0, FAIL exits 1, so a CI job
or a script can gate on it. `--json` prints the same report (checks, tables, numbers) as JSON.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table as RichTable

from newsrec_cli.commands.common import (
    ConfigOption,
    JsonOption,
    RunStoreOption,
    console,
    handle_errors,
    print_json,
)
from newsrec_cli.commands.options import (
    DataOption,
    EmbeddingsOption,
    GraphOption,
    Stage,
    command_parameters,
    settings_options,
    with_parameters,
)
from newsrec_cli.diagnose.report import Cell, Report, Status, Table
from newsrec_cli.errors import SettingsError
from newsrec_cli.settings import DataSettings, DiagnoseSettings, GraphSettings, TrainSettings, resolve

if TYPE_CHECKING:
    from newsrec_cli.diagnose.subject import Subject

# The engine (torch, torch_geometric) is imported inside each command, so that `newsrec --help`
# and the other commands start in a fraction of a second.

app = typer.Typer(
    help="Check data and models before (and after) training; each command ends with OK, WARN or FAIL."
    "\n\nExample: newsrec diagnose saturation runs/synth",
    no_args_is_help=True,
)

F = TypeVar("F", bound=Callable[..., Any])
STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}

RunArgument = Annotated[
    Path | None,
    typer.Argument(
        help="Run directory written by `newsrec train` (or use --init).", exists=True, file_okay=False
    ),
]
InitOption = Annotated[
    Path | None,
    typer.Option(
        "--init",
        help="TOML settings (\\[train], \\[graph], \\[data], \\[diagnose]): check a freshly initialised "
        "model instead of a run (needs --data and, with text on, --embeddings). An empty file: the defaults.",
        exists=True,
        dir_okay=False,
    ),
]
PlotOption = Annotated[
    Path | None, typer.Option("--plot", help="Write PNG histograms into this folder (needs matplotlib).")
]


# ----------------------------------------------------------------------------- rendering


def format_cell(value: Cell, percent: bool = False) -> str:
    """How a number of a report reads in a table (the JSON keeps the exact value)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if percent:  # two decimals only where they matter (a 4.58 % click rate, not 100.00 %)
            return f"{value:.1%}" if value == 0 or abs(value) >= 0.1 else f"{value:.2%}"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def rich_table(table: Table) -> RichTable:
    out = RichTable(title=table.title, title_justify="left")
    for i, column in enumerate(table.columns):
        out.add_column(column, justify="left" if i == 0 else "right")
    for row in table.rows:
        out.add_row(*(format_cell(v, c in table.percent) for v, c in zip(row, table.columns, strict=True)))
    return out


def checks_table(report: Report) -> RichTable:
    out = RichTable(title="Checks", title_justify="left")
    out.add_column("status")
    out.add_column("check")
    out.add_column("finding")
    for check in report.checks:
        status = str(check.status)
        out.add_row(f"[{STYLE[check.status]}]{status}[/]", check.name, check.message)
    return out


def render(report: Report, json_out: bool, plots: list[Path] = ()) -> None:
    """Print the report (tables or JSON) and exit with its code (1 only for FAIL)."""
    if json_out:
        data = report.to_dict()
        data["plots"] = [str(p) for p in plots]
        print_json(data)
        raise typer.Exit(report.exit_code)
    for note in report.notes:
        console.print(note, style="dim", highlight=False)
    for table in report.tables:
        console.print(rich_table(table))
    console.print(checks_table(report))
    for path in plots:
        console.print(f"wrote {path}", highlight=False)
    status = report.status
    console.print(
        f"[{STYLE[status]}]{status}[/]: " + "; ".join(report.reasons), highlight=False, soft_wrap=True
    )
    for fix in report.fixes:
        console.print(f"  fix: {fix}", highlight=False, soft_wrap=True)
    raise typer.Exit(report.exit_code)


# ----------------------------------------------------------------------------- model under test


def _subject(
    run: Path | None,
    init: Path | None,
    data: Path | None,
    store: Path | None,
    graph: Path | None,
    run_store: Path | None,
    diag: DiagnoseSettings,
) -> Subject:
    from newsrec_cli.diagnose.subject import from_init, from_run

    if (run is None) == (init is None):
        raise SettingsError("give either a run directory (RUN) or --init CONFIG, not both and not neither")
    if run is not None:
        if diag.scale is not None or diag.normalize is not None:
            raise SettingsError(
                "diagnose.scale and diagnose.normalize change a fresh model (--init) only, not a run"
            )
        return from_run(
            run, data=data, sample=diag.sample, seed=diag.seed, device=diag.device, store=run_store
        )
    if data is None:
        raise SettingsError("--init needs --data DATA: a fresh model is run on real impressions")
    train = resolve(TrainSettings, config=init).settings
    if "device" in diag.model_fields_set or diag.device != "auto":
        train = train.model_copy(update={"device": diag.device})
    return from_init(
        data,
        store=store,
        graph=graph,
        train_settings=train,
        data_settings=resolve(DataSettings, config=init).settings,
        graph_settings=resolve(GraphSettings, config=init).settings,
        sample=diag.sample,
        seed=diag.seed,
        scale=diag.scale,
        normalize=diag.normalize,
    )


def model_check(*, steps: bool = False) -> Callable[[F], F]:
    """The options every model check shares, declared once: RUN or --init, the data and stores,
    and the diagnose settings. The command declares `subject` and `diag` and receives them built."""

    def decorate(func: F) -> F:
        def command(
            run: RunArgument = None,
            init: InitOption = None,
            data: DataOption = None,
            embeddings: EmbeddingsOption = None,
            run_embeddings: RunStoreOption = None,
            graph: GraphOption = None,
            **kwargs: Any,
        ) -> Any:
            subject = _subject(run, init, data, embeddings, graph, run_embeddings, kwargs["diag"])
            return func(subject=subject, **kwargs)

        shared = command_parameters(command)[:-1]  # without **kwargs
        own = [p for p in command_parameters(func, Subject=object) if p.name != "subject"]
        functools.update_wrapper(command, func)
        del command.__wrapped__  # Typer reads the signature below, not the function's
        with_parameters(command, shared + own)
        # --init's file also carries [diagnose] unless --config says otherwise
        stage = Stage(DiagnoseSettings, exclude=() if steps else ("steps",))
        return settings_options(stage, config_of=lambda kw: kw["config"] or kw["init"])(command)

    return decorate


# ----------------------------------------------------------------------------- commands


@app.command("data")
@handle_errors
def data_command(
    data: Annotated[
        Path, typer.Argument(help="MIND folder, or a parent of train/ valid/ test/.", exists=True)
    ],
    embeddings: EmbeddingsOption = None,
    graph: GraphOption = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Check a dataset (and its stores) before training.

    Click rate (and the accuracy "never clicked" would score), coverage of text vectors and entities
    per split and role, NaN/Inf and norms of the vectors, duplicate IDs, impressions without a click,
    history-length percentiles. Lines that other commands stop at are counted here, not fatal.

    Example: newsrec diagnose data data/MINDsmall --embeddings stores/minilm --graph graphs/small
    """
    from newsrec_cli.diagnose.api import check_data

    missing = resolve(TrainSettings, config=config).settings.missing
    report = check_data(data, store=embeddings, graph=graph, missing_allowed=missing == "learned")
    render(report, json_out)


@app.command("saturation")
@handle_errors
@model_check()
def saturation_command(
    plot: PlotOption = None,
    json_out: JsonOption = False,
    *,
    subject: Subject,
    diag: DiagnoseSettings,
) -> None:
    """Are the logits where the sigmoid still has a slope? FAIL with a fix when saturated.

    Runs the model on sampled impressions: logits before the sigmoid (min, max, mean, std,
    percentiles), the share of sigmoid outputs above 0.99 and below 0.01, the mean sigmoid'(logit)
    that scales every gradient through a probability, and the softmax within each impression.

    Example: newsrec diagnose saturation runs/nrms

    Example: newsrec diagnose saturation --init bad.toml --data data/synth --embeddings stores/hash
    """
    from newsrec_cli.diagnose.api import check_saturation

    report, plots = check_saturation(subject, plot)
    render(report, json_out, plots)


@app.command("cosine")
@handle_errors
@model_check()
def cosine_command(
    plot: PlotOption = None,
    json_out: JsonOption = False,
    *,
    subject: Subject,
    diag: DiagnoseSettings,
) -> None:
    """Vector norms, cosines, and the logit range each temperature would give.

    User and news vector norms; the similarity before (raw dot) and after L2 normalisation
    (cosine); for t in 1, 2, 5, 10, 20 the logit range and saturated share of t x similarity, and
    the largest cosine scale that does not saturate.

    Example: newsrec diagnose cosine runs/nrms --plot plots/
    """
    from newsrec_cli.diagnose.api import check_cosine

    report, plots = check_cosine(subject, plot)
    render(report, json_out, plots)


@app.command("gradients")
@handle_errors
@model_check(steps=True)
def gradients_command(
    json_out: JsonOption = False,
    *,
    subject: Subject,
    diag: DiagnoseSettings,
) -> None:
    """Gradient norms per module over a few training steps, and the fusion weights.

    Real training steps (the trainer's batches, loss, AdamW and clipping) on a copy in memory: the
    run's files are not changed. Vanishing (< 1e-7) and exploding (> 1e3) gradients are flagged.

    Example: newsrec diagnose gradients runs/nrms --steps 5
    """
    from newsrec_cli.diagnose.api import check_gradients

    render(check_gradients(subject, diag.steps, diag.seed), json_out)
