"""`newsrec build-graph`: the news-entity graph of a dataset, and its summary.

    newsrec build-graph DATA --out GRAPH [--min-confidence 0.5] [--cooccurrence-min 3]
    newsrec build-graph --info GRAPH [--json]

`--info` is an option rather than an `info` subcommand: a group that also takes DATA as a
positional argument cannot tell a dataset folder from a subcommand name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from newsrec_cli.commands.common import (
    JsonOption,
    console,
    err_console,
    fail,
    handle_errors,
    print_json,
    progress,
)
from newsrec_cli.commands.options import Stage, settings_options
from newsrec_cli.settings import DataSettings, GraphSettings

if TYPE_CHECKING:
    from newsrec_cli.graph import NewsGraph

# The engine imports torch and torch_geometric (seconds): it is imported inside the command, so
# `newsrec --help` and the other commands stay fast.


@handle_errors
# The graph's own settings; the GNN's (--graph-*) are train's. Of the data, how its lines are read.
@settings_options(
    Stage(GraphSettings, only=("min_confidence", "cooccurrence_min")),
    Stage(DataSettings, only=("on_bad_lines",)),
)
def build_graph_command(
    data: Annotated[
        Path | None,
        typer.Argument(help="MIND folder, or a parent of train/ valid/ test/ (all splits share one graph)."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Graph folder to write.")] = None,
    info: Annotated[
        Path | None,
        typer.Option("--info", help="Print the summary of an existing graph instead of building."),
    ] = None,
    entity_store: Annotated[
        Path | None,
        typer.Option(
            help="Entity-label store (`newsrec embed entities`): features of entities no .vec covers."
        ),
    ] = None,
    entity_vec: Annotated[
        list[Path] | None,
        typer.Option(
            help="entity_embedding.vec to use instead of those found in DATA (repeatable).",
            metavar="FILE",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    no_entity_vec: Annotated[
        bool, typer.Option("--no-entity-vec", help="Ignore entity_embedding.vec files found in DATA.")
    ] = False,
    stats: Annotated[
        bool, typer.Option("--stats/--no-stats", help="Print the summary tables at the end.")
    ] = True,
    json_out: JsonOption = False,
    *,
    settings: GraphSettings,
    data_settings: DataSettings,
) -> None:
    """Build the news-entity graph of DATA: news and Wikidata entity nodes, title and abstract links.

    Entity features: entity_embedding.vec in DATA, else --entity-store, else learned by the model.
    The summary says how many entities each source covers.
    Entity JSON that does not parse is counted per column and reported, never fatal.
    `newsrec build-graph --info GRAPH` prints the summary of a built graph again.

    Example: newsrec build-graph data/synth --out graph/synth --cooccurrence-min 3
    """
    if info is not None:
        if data is not None or out is not None:
            raise fail("--info GRAPH summarises an existing graph; give it alone (no DATA, no --out)", 2)
        _info(info, json_out)
        return
    if data is None or out is None:
        raise fail("give DATA --out GRAPH to build a graph, or --info GRAPH to summarise one", 2)
    if no_entity_vec and entity_vec:
        raise fail("--entity-vec and --no-entity-vec exclude each other", 2)
    _build(
        data,
        out,
        settings=settings,
        data_settings=data_settings,
        entity_store=entity_store,
        entity_vec=[] if no_entity_vec else entity_vec,
        show_stats=stats,
        json_out=json_out,
    )


def _build(
    data: Path,
    out: Path,
    *,
    settings: GraphSettings,
    data_settings: DataSettings,
    entity_store: Path | None,
    entity_vec: list[Path] | None,
    show_stats: bool,
    json_out: bool,
) -> None:
    from newsrec_cli.graph import build_graph, graph_stats, save_graph
    from newsrec_cli.graph.io import check_target

    check_target(out)  # before minutes of reading, not after
    reading = err_console.status(f"reading the news of {data} ...")
    bar = progress(unit="news", transient=True)
    task: list[Any] = []

    def on_progress(done: int, total: int) -> None:
        if not task:  # the news are read: one live display at a time, the bar replaces the spinner
            reading.stop()
            bar.start()
            task.append(bar.add_task("linking entities", total=total))
        bar.update(task[0], completed=done, total=total)

    reading.start()
    try:
        graph, report = build_graph(
            data,
            settings,
            entity_store=entity_store,
            entity_vec=entity_vec,
            on_bad_lines=data_settings.on_bad_lines,
            progress=on_progress,
        )
    finally:
        reading.stop()
        bar.stop()
    save_graph(graph, out)
    for warning in report.warnings():
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    summary = graph_stats(graph)
    if json_out:
        print_json({"graph": str(out), "stats": summary, "build": report.to_dict()})
        return
    if show_stats:
        _render(summary, graph, title=f"Graph {out}")
    console.print(
        f"wrote [bold]{out}[/] ({graph.num_news:,} news, {graph.num_entities:,} entities) "
        f"in {report.seconds:.2f} s",
        highlight=False,
    )


def _info(path: Path, json_out: bool) -> None:
    from newsrec_cli.graph import graph_stats, load_graph

    graph = load_graph(path)
    summary = graph_stats(graph)
    if json_out:
        print_json({"graph": str(path), "meta": graph.meta, "stats": summary})
        return
    _render(summary, graph, title=f"Graph {path}")


def _render(summary: dict[str, Any], graph: NewsGraph, *, title: str) -> None:
    meta = graph.meta
    settings = meta.get("settings", {})
    build = meta.get("build", {})
    head = Table(title=title, show_header=False)
    head.add_column("what")
    head.add_column("value")
    head.add_row("dataset", f"{build.get('dataset', '?')} (splits: {', '.join(build.get('splits', []))})")
    head.add_row("created", str(meta.get("created", "?")))
    head.add_row("settings", ", ".join(f"{k}={v}" for k, v in sorted(settings.items())))
    with_entities = summary["news_with_entities"]
    head.add_row("news with >= 1 entity", f"{with_entities['count']:,} ({with_entities['share']:.1%})")
    head.add_row(
        "news without entities", f"{summary['news_without_entities']:,} (shared learned base vector)"
    )
    isolated = summary["isolated"]
    head.add_row("isolated nodes", f"news {isolated['news']:,}, entity {isolated['entity']:,}")
    for column, bad in build.get("bad_entities", {}).items():
        if bad.get("count"):
            head.add_row(f"unparsable {column}", f"{bad['count']:,} (first: {', '.join(bad['first'])})")
    console.print(head)

    sizes = Table(title="Nodes and edges")
    sizes.add_column("type")
    sizes.add_column("count", justify="right")
    for node_type in ("news", "entity"):
        sizes.add_row(f"node {node_type}", f"{summary['nodes'][node_type]:,}")
    for edge_type, count in summary["edges"].items():
        if edge_type != "total":
            src, relation, dst = edge_type.split("__")
            sizes.add_row(f"edge {src} -{relation}-> {dst}", f"{count:,}")
    sizes.add_row("edges (all types)", f"{summary['edges']['total']:,}", style="bold")
    console.print(sizes)

    degrees = Table(title="Degrees (distinct neighbours)")
    for name in ("", "mean", "p50", "p90", "p99", "max"):
        degrees.add_column(name, justify="left" if not name else "right")
    for name, d in summary["degree"].items():
        degrees.add_row(
            name, f"{d['mean']:.2f}", f"{d['p50']:g}", f"{d['p90']:g}", f"{d['p99']:g}", f"{d['max']:,}"
        )
    console.print(degrees)

    features = Table(title="Entity features by source")
    for name in ("source", "entities", "share", "dim"):
        features.add_column(name, justify="left" if name == "source" else "right")
    for source, row in summary["entity_features"].items():
        features.add_row(source, f"{row['count']:,}", f"{row['share']:.1%}", str(row.get("dim", "-")))
    console.print(features)
