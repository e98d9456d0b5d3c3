"""`newsrec embed`: a text vector for every news item, in a store keyed by news ID.

Commands: `newsrec embed DATA --out STORE` (the same as `newsrec embed news DATA --out STORE`),
`embed entities DATA --out STORE`, `embed import VECTORS.npy --ids IDS.txt --model NAME --out STORE`
and `embed info STORE [--data DATA]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table
from typer.core import TyperGroup

from newsrec_cli.commands.common import (
    JsonOption,
    console,
    err_console,
    handle_errors,
    print_json,
    progress,
)
from newsrec_cli.commands.options import Stage, settings_options
from newsrec_cli.embed.data import entity_labels, read_split_news
from newsrec_cli.embed.importer import import_vectors
from newsrec_cli.embed.info import Coverage, coverage, describe_store
from newsrec_cli.embed.providers import describe, make_provider
from newsrec_cli.embed.run import EmbedPlan, EmbedReport, EmbedRunError, execute, plan_run
from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.embed.text import news_texts, template_fields
from newsrec_cli.embed.tokens import estimated_cost, token_counter
from newsrec_cli.errors import InputError
from newsrec_cli.settings import DataSettings, EmbedSettings

ENTITY_TEMPLATE = "{label}"
INFO_ROWS = ("kind", "provider", "model", "dimension", "count", "template", "normalized", "fallback_texts")


class DefaultToNews(TyperGroup):
    """A group whose first argument, when it is not a subcommand, goes to `news`.

    So `newsrec embed DATA --out STORE` runs `newsrec embed news DATA --out STORE`, while
    `newsrec embed info STORE` still reaches `info`. (A folder named like a subcommand needs
    `newsrec embed news ./info`.)
    """

    default_command = "news"

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=DefaultToNews,
    help="Text vectors for news (and entity labels), in a resumable store keyed by ID.\n\n"
    "Example: newsrec embed demo/data --out demo/embeddings (embeds every news item of DATA; "
    "the same as `newsrec embed news DATA --out STORE`)",
    no_args_is_help=True,
)

DataArg = Annotated[
    Path, typer.Argument(help="MIND folder, or a parent of train/ valid/ test/ (news of all splits).")
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Store folder (created, resumed or extended).")]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace a store (or discard chunks) made with other settings.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Count texts and tokens and estimate the cost; embed nothing.")
]


# The news' text is read with the dataset's on_bad_lines; the other data settings do not apply.
READ = Stage(DataSettings, only=("on_bad_lines",))


@app.command("news")
@handle_errors
@settings_options(READ)
def news(
    data: DataArg,
    out: OutOption,
    force: ForceOption = False,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
    *,
    settings: EmbedSettings,
    data_settings: DataSettings,
) -> None:
    """Embed the text of every news item of DATA (all splits) into the store STORE.

    Reruns continue an interrupted run and embed only news the store lacks.

    Example: newsrec embed data/MINDsmall --out stores/minilm
    """
    template_fields(settings.template)
    split_news = read_split_news(data, on_bad_lines=data_settings.on_bad_lines)
    texts = news_texts(split_news.table, settings.template)
    _embed(
        settings,
        out,
        kind="news",
        ids=texts.ids,
        texts=texts.texts,
        fallback_ids=texts.fallback_ids,
        template=settings.template,
        split_ids=split_news.split_ids,
        force=force,
        dry_run=dry_run,
        json_out=json_out,
    )


@app.command("entities")
@handle_errors
@settings_options(Stage(EmbedSettings, exclude=("template",)), READ)  # entities embed their labels
def entities(
    data: DataArg,
    out: OutOption,
    force: ForceOption = False,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
    *,
    settings: EmbedSettings,
    data_settings: DataSettings,
) -> None:
    """Embed the labels of the entities that the news of DATA mention, keyed by WikidataId.

    For graph entity features when the dataset has no entity_embedding.vec.

    Example: newsrec embed entities data/MINDsmall --out stores/entities-minilm
    """
    split_news = read_split_news(data, on_bad_lines=data_settings.on_bad_lines)
    labels = entity_labels(split_news.table)
    if not labels.ids:
        raise InputError("the news mention no entities (TitleEntities/AbstractEntities are empty)", path=data)
    _embed(
        settings,
        out,
        kind="entities",
        ids=labels.ids,
        texts=labels.labels,
        fallback_ids=labels.fallback_ids,
        template=ENTITY_TEMPLATE,
        split_ids={"entities": labels.ids},
        force=force,
        dry_run=dry_run,
        json_out=json_out,
    )


@app.command("import")
@handle_errors
@settings_options(Stage(EmbedSettings, only=("normalize",)))  # the rest describe how vectors are made
def import_(
    vectors: Annotated[Path, typer.Argument(help="A float matrix [N, D] saved with numpy (.npy).")],
    ids: Annotated[Path, typer.Option("--ids", help="The ID of row i on line i.")],
    model: Annotated[str, typer.Option("--model", "-m", help="The model that made the vectors.")],
    out: OutOption,
    provider: Annotated[
        str, typer.Option(help="Provider recorded in the store (openai, local, ... or import).")
    ] = "import",
    template: Annotated[
        str | None, typer.Option(help="The text template the vectors were made from, if known.")
    ] = None,
    entities_store: Annotated[
        bool, typer.Option("--entities", help="The IDs are WikidataIds (an entity store).")
    ] = False,
    force: ForceOption = False,
    json_out: JsonOption = False,
    *,
    settings: EmbedSettings,
) -> None:
    """Bring precomputed vectors into a store (never unpickles; rows are matched by ID).

    Example: newsrec embed import llm_embeddings.npy --ids llm_embeddings_ids.txt
    --model text-embedding-3-small --provider openai --out stores/openai
    """
    report = import_vectors(
        vectors,
        ids,
        out,
        model=model,
        provider=provider,
        template=template,
        normalize=settings.normalize,
        kind="entities" if entities_store else "news",
        force=force,
    )
    if json_out:
        print_json(report.to_dict())
        return
    console.print(
        f"imported {report.imported:,} vectors ({report.already_present:,} already present) into {out}: "
        f"{report.count:,} x {report.dimension}"
    )


@app.command("info")
@handle_errors
def info(
    store: Annotated[Path, typer.Argument(help="An embedding store folder.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Report coverage of this dataset's news.")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Show a store's provider, model, dimension, size, vector norms and coverage of a dataset.

    Example: newsrec embed info stores/minilm --data data/MINDsmall
    """
    opened = EmbeddingStore.open(store)
    summary = describe_store(opened)
    covered: list[Coverage] = []
    if data is not None:
        split_news = read_split_news(data)
        ids = entity_labels(split_news.table).ids if summary["kind"] == "entities" else None
        covered = coverage(opened, {"entities": ids} if ids is not None else split_news.split_ids)
    if json_out:
        print_json({**summary, "coverage": [c.to_dict() for c in covered]})
        return
    table = Table(title=f"Embedding store {store}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key in INFO_ROWS:
        table.add_row(key, str(summary[key]))
    norms = summary["norms"]
    table.add_row("norms", f"min {norms['min']:.4f}  mean {norms['mean']:.4f}  max {norms['max']:.4f}")
    if norms["zero_rows"]:
        table.add_row("zero rows", f"[red]{norms['zero_rows']}[/]")
    table.add_row("updated", str(summary["updated"]))
    known = summary["fingerprinted"]
    table.add_row(
        "text fingerprints",
        "none (store made before newsrec recorded them)"
        if known is None
        else f"{known:,} of {summary['count']:,} rows",
    )
    if summary["source"]:
        table.add_row("imported from", str(summary["source"].get("vectors")))
    console.print(table)
    if not summary["semantic"]:
        err_console.print("[yellow]note:[/] hashing vectors are NOT semantic (smoke tests only)")
    if covered:
        console.print(_coverage_table(covered))


def _embed(
    settings: EmbedSettings,
    out: Path,
    *,
    kind: Literal["news", "entities"],
    ids: list[str],
    texts: list[str],
    fallback_ids: list[str],
    template: str,
    split_ids: dict[str, list[str]],
    force: bool,
    dry_run: bool,
    json_out: bool,
) -> None:
    """Plan, then (unless --dry-run) embed with a progress bar and print the summary."""
    provider = None
    if not dry_run:  # a dry run loads no model and needs no API key
        with err_console.status(f"loading the {settings.provider} provider"):
            provider = make_provider(settings)
    plan = plan_run(
        out,
        ids,
        texts,
        describe(settings) if provider is None else provider.spec,
        kind=kind,
        template=template,
        normalize=settings.normalize,
        force=force,
        fallback_ids=fallback_ids,
    )
    if provider is None:
        _dry_run(settings, plan, json_out)
        return
    if not provider.spec.semantic:
        err_console.print("[yellow]note:[/] the hashing provider is NOT semantic: for smoke tests only")
    with progress(unit="texts", transient=not plan.todo) as bar:
        task = bar.add_task(f"embedding {kind}", total=len(plan.todo))
        try:
            report = execute(plan, provider, on_progress=lambda n: bar.advance(task, n))
        except EmbedRunError as exc:
            bar.stop()
            _show_report(exc.report, split_ids, json_out)
            raise
    _show_report(report, split_ids, json_out)


def _dry_run(settings: EmbedSettings, plan: EmbedPlan, json_out: bool) -> None:
    todo = plan.todo_texts
    result: dict[str, Any] = {
        "provider": plan.signature["provider"],
        "model": plan.signature["model"],
        "texts": len(plan.ids),
        "to_embed": len(todo),
        "reused": plan.reused,
        "resumed": plan.resumed,
        "changed": {"count": len(plan.changed), "first": plan.changed[:10]},
        "fallbacks": len(plan.fallback_ids),
    }
    if settings.provider == "openai":
        counter = token_counter()
        tokens = counter.total(todo)
        cost = estimated_cost(plan.signature["model"], tokens)
        result.update(tokens=tokens, tokens_exact=counter.exact, token_source=counter.source, cost_usd=cost)
    if json_out:
        print_json(result)
        return
    table = Table(title="Dry run: nothing embedded", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("provider / model", f"{result['provider']} / {result['model']}")
    table.add_row("news texts", f"{result['texts']:,}")
    table.add_row("to embed", f"{result['to_embed']:,}")
    table.add_row("already in store / resumed", f"{plan.reused:,} / {plan.resumed:,}")
    table.add_row("in store, text changed (embedded again)", f"{len(plan.changed):,}")
    table.add_row("empty texts (fallback)", f"{len(plan.fallback_ids):,}")
    if "tokens" in result:
        bound = "" if result["tokens_exact"] else " (upper bound, tiktoken encoding unavailable offline)"
        table.add_row("tokens", f"{result['tokens']:,}{bound}")
        cost = result["cost_usd"]
        price = "unknown (no price for this model)" if cost is None else f"${cost:,.4f}"
        table.add_row("estimated cost", price)
    else:
        table.add_row("estimated cost", "none (runs on this machine)")
    console.print(table)


def _show_report(report: EmbedReport, split_ids: dict[str, list[str]], json_out: bool) -> None:
    covered = coverage(EmbeddingStore.open(report.store_path), split_ids) if report.count else []
    if json_out:
        print_json({**report.to_dict(), "coverage": [c.to_dict() for c in covered]})
        return
    table = Table(title=f"Embedded into {report.store_path}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("embedded now", f"{report.embedded:,}")
    if report.changed:
        first = ", ".join(report.changed[:3]) + (", ..." if len(report.changed) > 3 else "")
        table.add_row("of which text changed", f"{len(report.changed):,} ({first})")
    table.add_row("reused from the store", f"{report.reused:,}")
    table.add_row("resumed (interrupted run)", f"{report.resumed:,}")
    table.add_row("failed", f"[red]{report.failed:,}[/]" if report.failed else "0")
    table.add_row("empty texts (fallback)", f"{report.fallbacks:,}")
    table.add_row("store size", f"{report.count:,} x {report.dimension}")
    rate = report.embedded / report.seconds if report.seconds > 0 else 0.0
    table.add_row("time", f"{report.seconds:,.1f} s ({rate:,.0f} texts/s)")
    console.print(table)
    if report.unverified:
        err_console.print(
            f"[yellow]note:[/] {report.unverified:,} vectors were reused by ID alone: the store holds no "
            "fingerprint of their text (made before newsrec recorded them, or imported); embed into a "
            "new store to check every text"
        )
    if covered:
        console.print(_coverage_table(covered))


def _coverage_table(covered: list[Coverage]) -> Table:
    table = Table(title="Coverage")
    table.add_column("split")
    table.add_column("IDs", justify="right")
    table.add_column("with vector", justify="right")
    table.add_column("share", justify="right")
    table.add_column("first missing")
    for c in covered:
        style = "green" if c.covered == c.total else "red"
        table.add_row(
            c.split, f"{c.total:,}", f"{c.covered:,}", f"[{style}]{c.share:.1%}[/]", ", ".join(c.missing[:3])
        )
    return table
