"""`newsrec filter`: a new MIND folder with the impressions that pass some rules."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newsrec_cli.commands.common import (
    JsonOption,
    console,
    err_console,
    handle_errors,
    print_json,
)
from newsrec_cli.commands.options import Stage, settings_options
from newsrec_cli.errors import InputError
from newsrec_cli.mind.filter import filter_dataset
from newsrec_cli.settings import DataSettings, FilterSettings


def _parse_date(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise InputError(f"{flag} {value!r} is not a date like 2019-11-14", field=flag.lstrip("-")) from None


@handle_errors
@settings_options(Stage(DataSettings, only=("on_bad_lines",)))
def filter_command(
    data: Annotated[Path, typer.Argument(help="A MIND folder, or a parent of train/ valid/ test/.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the filtered dataset (same layout).")],
    require_embeddings: Annotated[
        Path | None,
        typer.Option("--require-embeddings", help="Embedding store: keep only news IDs in its ids.txt."),
    ] = None,
    date_from: Annotated[str | None, typer.Option("--from", help="First day kept, YYYY-MM-DD.")] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="Last day kept, YYYY-MM-DD (inclusive).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty output folder.")] = False,
    json_out: JsonOption = False,
    *,
    settings: FilterSettings,
    data_settings: DataSettings,
) -> None:
    """Write a new MIND folder keeping whole impressions by rules, and show what each rule dropped.

    Candidates are never removed one by one: an impression with a candidate lacking a vector is
    dropped. History news lacking a vector are removed from the history (--history-missing).
    news.tsv and .vec files are copied as they are.

    Example: newsrec filter data/MINDsmall --out data/sub --require-embeddings stores/news --min-history 1
    """
    embedded = None
    if require_embeddings is not None:
        from newsrec_cli.embed.store import EmbeddingStore

        embedded = set(EmbeddingStore.open(require_embeddings).ids)
    result = filter_dataset(
        data,
        out,
        settings,
        embedded_ids=embedded,
        date_from=_parse_date(date_from, "--from"),
        date_to=_parse_date(date_to, "--to"),
        on_bad_lines=data_settings.on_bad_lines,
        force=force,
    )
    if json_out:
        print_json(result.to_dict())
        return
    table = Table(title=f"newsrec filter {data} -> {out}")
    table.add_column("rule")
    table.add_column("split")
    table.add_column("before", justify="right")
    table.add_column("dropped", justify="right")
    table.add_column("kept", justify="right")
    table.add_column("note")
    for c in result.counts:
        table.add_row(c.rule, c.split, f"{c.before:,}", f"{c.dropped:,}", f"{c.kept:,}", c.note)
    for split, removed in result.history_ids_removed.items():
        table.add_row(
            "history news without a vector",
            split,
            "",
            "",
            "",
            f"{removed:,} history IDs removed, impressions kept",
        )
    for split, kept in result.kept.items():
        table.add_row("[bold]written[/]", split, "", "", f"[bold]{kept:,}[/]", "")
    console.print(table)
    for line in result.skipped_lines:
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
