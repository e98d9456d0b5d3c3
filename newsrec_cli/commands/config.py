"""`newsrec config`: show the effective settings and where each came from; write an example file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newsrec_cli import atomic
from newsrec_cli.commands.common import ConfigOption, JsonOption, console, handle_errors, print_json
from newsrec_cli.errors import SettingsError
from newsrec_cli.settings import STAGES, example_toml, read_config_file, resolve

app = typer.Typer(
    help="Show or write settings (defaults < TOML file < NEWSREC_* env < flags)."
    "\n\nExample: newsrec config show --stage train",
    no_args_is_help=True,
)


@app.command("show")
@handle_errors
def show(
    config: ConfigOption = None,
    stage: Annotated[str | None, typer.Option(help="Only this stage (data, embed, train, ...).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Print the effective settings of every stage and where each value came from.

    Example: NEWSREC_TRAIN_LR=3e-4 newsrec config show --config newsrec.toml --stage train
    """
    stages = [s for s in STAGES if stage is None or s.section == stage]
    if not stages:
        raise SettingsError(f"stage {stage!r} is not known; allowed: {', '.join(s.section for s in STAGES)}")
    file_data = read_config_file(config)
    resolved = {s.section: resolve(s, config=config, file_data=file_data) for s in stages}
    if json_out:
        print_json(
            {
                name: {k: {"value": v, "source": r.sources[k]} for k, v in r.settings.model_dump().items()}
                for name, r in resolved.items()
            }
        )
        return
    table = Table(title="Effective settings", show_lines=False)
    table.add_column("setting")
    table.add_column("value")
    table.add_column("source", style="dim")
    for name, r in resolved.items():
        for key, value in r.settings.model_dump().items():
            source = r.sources[key]
            style = None if source == "default" else "bold"
            table.add_row(f"{name}.{key}", repr(value), source, style=style)
    console.print(table)


@app.command("init")
@handle_errors
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the file.")] = Path("newsrec.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example settings file with every stage and default.

    Example: newsrec config init newsrec.toml
    """
    if path.exists() and not force:
        raise SettingsError(f"{path} exists; pass --force to overwrite it")
    atomic.write_text(path, example_toml())
    console.print(f"wrote {path}")
