"""The `newsrec` command: one Typer app, one sub-app or command per pipeline stage."""

from __future__ import annotations

import os
from typing import Any

# OpenMP threads that spin while waiting starve each other on a shared or small CPU (training
# fell from ~220 to ~45 samples/s on a busy 2-core machine); passive waiting costs nothing
# measurable on a quiet one. Set before torch loads, only for the command-line process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from newsrec_cli import __version__  # noqa: E402
from newsrec_cli.commands import ablate as ablate_cmd
from newsrec_cli.commands import config as config_cmd
from newsrec_cli.commands import data as data_cmd
from newsrec_cli.commands import diagnose as diagnose_cmd
from newsrec_cli.commands import embed as embed_cmd
from newsrec_cli.commands import evaluate as evaluate_cmd
from newsrec_cli.commands import filter as filter_cmd
from newsrec_cli.commands import graph as graph_cmd
from newsrec_cli.commands import serve as serve_cmd
from newsrec_cli.commands import train as train_cmd
from newsrec_cli.commands import tune as tune_cmd
from newsrec_cli.commands.help_defaults import annotate

PIPELINE = [
    "data",
    "embed",
    "build-graph",
    "train",
    "evaluate",
    "diagnose",
    "ablate",
    "tune",
    "export",
    "serve",
    "recommend",
    "filter",
    "config",
]


class PipelineGroup(TyperGroup):
    """Lists commands in pipeline order (Typer lists plain commands before groups otherwise), and
    shows each option's default from the settings models in `--help` (see `help_defaults`)."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        # its own help lists its options before any subcommand is looked up
        params = super().get_params(ctx)
        for param in params:
            if param.param_type_name == "option" and param.is_flag:
                param.metavar = ""
        return params

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        # Here, not at build time: the defaults shown are resolved with the environment of the
        # call (a test runner sets it only around the call).
        annotate(self)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: typer.Context) -> list[str]:
        known = [name for name in PIPELINE if name in self.commands]
        return known + sorted(set(self.commands) - set(known))


app = typer.Typer(
    name="newsrec",
    cls=PipelineGroup,
    help="News recommendation on MIND-format data: from raw files to honest, reproducible metrics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# In pipeline order, so `newsrec --help` reads as the workflow.
app.add_typer(data_cmd.app, name="data")
app.add_typer(embed_cmd.app, name="embed")
app.command("build-graph")(graph_cmd.build_graph_command)
app.command("train")(train_cmd.train_command)
app.command("evaluate")(evaluate_cmd.evaluate_command)
app.add_typer(diagnose_cmd.app, name="diagnose")
app.command("ablate")(ablate_cmd.ablate_command)
app.add_typer(tune_cmd.app, name="tune")
app.command("export")(serve_cmd.export_command)
app.command("serve")(serve_cmd.serve_command)
app.command("recommend")(serve_cmd.recommend_command)
app.command("filter")(filter_cmd.filter_command)
app.add_typer(config_cmd.app, name="config")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsrec {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """News recommendation on MIND-format data: from raw files to honest, reproducible metrics.

    Example: newsrec data synth --out demo/data && newsrec embed demo/data --out demo/embeddings
    """


def main() -> None:
    app()
