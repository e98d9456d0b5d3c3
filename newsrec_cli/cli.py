"""The `newsrec` command: one Typer app, one sub-app or command per pipeline stage."""

from __future__ import annotations

import typer

from newsrec_cli import __version__
from newsrec_cli.commands import config as config_cmd
from newsrec_cli.commands import data as data_cmd
from newsrec_cli.commands import diagnose as diagnose_cmd
from newsrec_cli.commands import embed as embed_cmd
from newsrec_cli.commands import evaluate as evaluate_cmd
from newsrec_cli.commands import filter as filter_cmd
from newsrec_cli.commands import graph as graph_cmd
from newsrec_cli.commands import train as train_cmd

app = typer.Typer(
    name="newsrec",
    help="News recommendation on MIND-format data: from raw files to honest, reproducible metrics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.add_typer(data_cmd.app, name="data")
app.add_typer(config_cmd.app, name="config")
# Stages register below, one line each, as they land.
app.command("filter")(filter_cmd.filter_command)
app.add_typer(embed_cmd.app, name="embed")
app.command("evaluate")(evaluate_cmd.evaluate_command)
app.command("build-graph")(graph_cmd.build_graph_command)
app.command("train")(train_cmd.train_command)
app.add_typer(diagnose_cmd.app, name="diagnose")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsrec {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """News recommendation on MIND-format data: from raw files to honest, reproducible metrics."""


def main() -> None:
    app()
