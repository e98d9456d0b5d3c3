"""What every command shares: the consoles, the error boundary, settings from flags."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from newsrec_cli.errors import NewsrecError
from newsrec_cli.settings import Resolved, S, resolve

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML settings file (defaults < file < NEWSREC_* env < flags).",
        exists=True,
        dir_okay=False,
        envvar="NEWSREC_CONFIG",
    ),
]
RunStoreOption = Annotated[
    Path | None,
    typer.Option(
        "--run-embeddings",
        help="The run's text store, where it is now (default: the path in the run's config.json); "
        "checked to be the store the run was trained with.",
        exists=True,
        file_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    # escape(): messages quote paths and extras like `newsrec-cli[plot]`, which are not markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


class _WarningLine(logging.Handler):
    """An engine warning (logger `newsrec.data`) as one `warning:` line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(
            f"[yellow]warning:[/] {escape(record.getMessage())}", highlight=False, soft_wrap=True
        )


def show_engine_warnings() -> None:
    """Route the data layer's warnings (a damaged cache parsed again, ...) to stderr, once."""
    logger = logging.getLogger("newsrec.data")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(logging.WARNING))
        logger.propagate = False  # one line, not a second copy from the root logger


def handle_errors(func: F) -> F:
    """Turn engine errors into one line on stderr and a non-zero exit; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        show_engine_warnings()
        try:
            return func(*args, **kwargs)
        except NewsrecError as exc:
            if getattr(exc, "quiet", False):  # another process (rank 0 of a distributed run) says why
                raise typer.Exit(exc.exit_code) from None
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: what was finished is saved; rerun the same command to resume")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            sys.stderr.close()
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def settings_from(model: type[S], config: Path | None, /, **flags: Any) -> Resolved[S]:
    """Resolve one stage's settings; flags left at None were not given on the command line."""
    return resolve(model, config=config, overrides=flags)


def print_json(data: Any) -> None:
    """JSON on stdout, nothing else, so scripts can parse it."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class RateColumn(ProgressColumn):
    """Items per second, e.g. `812 texts/s`."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s", style="cyan")


def progress(*, unit: str = "items", transient: bool = False, extra: str | None = None) -> Progress:
    """The progress bar of long work: count, rate and ETA, on stderr so stdout stays clean.

    `extra` is a format string over task fields, e.g. "loss {task.fields[loss]:.4f}".
    """
    columns: list[ProgressColumn | str] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if extra:
        columns.append(TextColumn(extra))
    # A transient bar off a terminal has nothing to show and leaves a blank line behind: skip it.
    disable = transient and not err_console.is_terminal
    return Progress(*columns, console=err_console, transient=transient, disable=disable)
