"""`newsrec export`, `newsrec serve` and `newsrec recommend`: a trained run, callable."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from newsrec_cli.commands.common import (
    JsonOption,
    RunStoreOption,
    console,
    err_console,
    handle_errors,
    print_json,
)
from newsrec_cli.errors import NewsrecError, SettingsError
from newsrec_cli.rerank import RerankSpec

if TYPE_CHECKING:
    from newsrec_cli.serve.engine import ListDiversity

RerankOption = Annotated[
    str,
    typer.Option(
        "--rerank",
        help="Re-rank the top k: mmr:λ (diversity, text vectors), calibration:λ (the history's "
        "categories) or none; λ in [0, 1].",
    ),
]


def rerank_spec(text: str) -> RerankSpec:
    """--rerank's value, or one line naming the flag."""
    try:
        return RerankSpec.parse(text)
    except ValueError as exc:
        raise SettingsError(f"--rerank {text!r}: {exc}") from None


def _diversity_note(diversity: ListDiversity) -> str:
    parts = [] if diversity.ild is None else [f"ILD {diversity.ild:.3f}"]
    parts.append(f"{diversity.categories} categories")
    if diversity.calibration is not None:
        parts.append(f"calibration {diversity.calibration:.3f}")
    return ", ".join(parts)


if TYPE_CHECKING:
    from newsrec_cli.serve.engine import ServeConfig

SERVE_EXTRA = "the serve extra is not installed: pip install 'newsrec-cli[serve]'"


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything says "serving": a port in use is one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says
    # TCP; with proto 0 every keep-alive response waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SettingsError(
            f"--port {port}: cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(is another server running there? pick another --port)"
        ) from None
    return sock


def _need_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SettingsError(SERVE_EXTRA) from None


@handle_errors
def export_command(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory written by `newsrec train`.", exists=True, file_okay=False)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Export folder to write.")],
    quantize: Annotated[
        str,
        typer.Option(
            "--quantize",
            help="none (fp32), int8 (fp32 and int8: every backend) or int8-only (the int8 graphs and "
            "int8 news-vector table alone: the smallest export, --backend int8).",
        ),
    ] = "int8",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (13-21).")] = 17,
    parity_impressions: Annotated[
        int,
        typer.Option("--parity-impressions", help="Validation impressions the parity check scores.", min=1),
    ] = 2000,
    run_embeddings: RunStoreOption = None,
    json_out: JsonOption = False,
) -> None:
    """Export a run to ONNX (fp32 and int8), a news-vector table by ID and export.json, with a parity check.

    Example: newsrec export runs/nrms --out exports/nrms --quantize int8-only
    """
    _need_serve_extra()
    from newsrec_cli.serve.export import export_run

    say = (lambda _m: None) if json_out else (lambda m: err_console.print(m, style="dim", highlight=False))
    report = export_run(
        run_dir,
        out,
        quantize=quantize,
        opset=opset,
        parity_impressions=parity_impressions,
        store=run_embeddings,
        say=say,
    )
    if json_out:
        print_json(report.to_dict())
        return
    table = Table(
        title=f"export parity: {report.model_version}",
        caption=f"{report.parity_impressions:,} validation impressions scored by each backend; "
        "fp32 must match torch within 1e-4, int8 must keep AUC within 0.003 of fp32",
    )
    for col in ("backend", "max |Δlogit|", "AUC", "ΔAUC vs fp32", "MRR", "nDCG@10", "s"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for row in report.parity:
        diff = row.get("max_abs_logit_diff")
        table.add_row(
            row["backend"],
            "—" if diff is None else f"{diff:.2e}",
            f"{row['auc']:.4f}",
            f"{row['auc_diff_vs_fp32']:+.4f}" if "auc_diff_vs_fp32" in row else "—",
            f"{row['mrr']:.4f}",
            f"{row['ndcg@10']:.4f}",
            f"{row['seconds']:.2f}",
        )
    console.print(table)
    console.print(
        f"exported {report.news:,} news vectors ({report.dim}-d), opset {report.opset}, "
        f"quantize {report.quantize} to {report.out} in {report.seconds:.1f}s",
        highlight=False,
        soft_wrap=True,
    )


@handle_errors
def serve_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="Export folder (any backend) or run directory (torch).", exists=True, file_okay=False
        ),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port", help="Port to listen on; 0: a free one, named in the serving line.", min=0, max=65535
        ),
    ] = 8000,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="auto, torch, onnx or int8 (onnx and int8 need an export). auto: onnx for an "
            "export (int8 for an int8-only one), torch for a run directory.",
        ),
    ] = "auto",
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="Cache user states in Redis (else an in-process LRU).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="uvicorn worker processes.", min=1)] = 1,
    threads: Annotated[
        int,
        typer.Option(
            "--threads", help="Compute threads per worker (numpy's BLAS, torch, onnxruntime).", min=1
        ),
    ] = 1,
    search_threads: Annotated[
        int | None,
        typer.Option(
            "--search-threads",
            help="Threads of the batched retrieval, which runs one batch at a time "
            "(default: the cores divided by --workers).",
            min=1,
        ),
    ] = None,
    batch: Annotated[
        bool,
        typer.Option(
            "--batch/--no-batch", help="Concurrent retrievals share one pass over the news (exact search)."
        ),
    ] = True,
    future_events: Annotated[
        bool,
        typer.Option(
            "--future-events",
            help="POST /v1/events takes times ahead of this machine's clock (a simulated stream). "
            "By default a time over 5 minutes ahead is refused: it would move the popularity "
            "counts' clock there for good.",
        ),
    ] = False,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Where ingested news persist (default: SOURCE/served).")
    ] = None,
    ann_threshold: Annotated[
        int | None, typer.Option("--ann-threshold", help="Use a usearch HNSW index from this many news on.")
    ] = None,
    cache_ttl: Annotated[
        int,
        typer.Option(
            "--cache-ttl",
            help="Seconds a cached user state lives, in Redis and in-process alike (0: no cache).",
            min=0,
        ),
    ] = 3600,
    cache_size: Annotated[
        int, typer.Option("--cache-size", help="User states the in-process cache holds.", min=1)
    ] = 10_000,
    max_body: Annotated[
        int,
        typer.Option(
            "--max-body",
            help="Bytes a request body may hold; a longer one is refused (413) before it is read.",
            min=1024,
        ),
    ] = 1 << 20,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "warning",
    ui: Annotated[
        bool,
        typer.Option(
            "--ui/--no-ui", help="Serve the web page at /ui (recommendations, reasons, run charts)."
        ),
    ] = True,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="MIND dataset whose users the page offers (history, impressions).", exists=True
        ),
    ] = None,
    ablation: Annotated[
        Path | None,
        typer.Option(
            "--ablation",
            help="ablation.json for the page's run view (default: found in or above the run directory).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    run_embeddings: RunStoreOption = None,
    rerank: RerankOption = "none",
) -> None:
    """Serve recommendations over HTTP (FastAPI on uvicorn); OpenAPI docs at /docs, the web page at /ui.

    A model that cannot load (a tampered checkpoint, a missing file) stops the server with the
    reason and a non-zero exit; so does a port in use, before anything is served.

    Example: newsrec serve exports/nrms --backend onnx --port 8000 --redis-url redis://127.0.0.1:6379/0
    Example: newsrec serve demo/run --data demo/data   (then open http://127.0.0.1:8000/ui/)
    """
    _need_serve_extra()
    from newsrec_cli.serve.engine import Engine, ServeConfig, default_backend, default_search_threads
    from newsrec_cli.serve.index import DEFAULT_ANN_THRESHOLD

    if backend not in ("auto", "torch", "onnx", "int8"):
        raise SettingsError(f"--backend {backend!r}: auto, torch, onnx or int8")
    if backend == "auto":
        backend = default_backend(source)
    config = ServeConfig(
        source=str(source.resolve()),
        backend=backend,
        search_threads=search_threads or default_search_threads(workers),
        redis_url=redis_url,
        state_dir=str(state_dir.resolve()) if state_dir else None,
        threads=threads,
        ann_threshold=ann_threshold if ann_threshold is not None else DEFAULT_ANN_THRESHOLD,
        cache_ttl=cache_ttl,
        cache_size=cache_size,
        batch=batch,
        future_events=future_events,
        ui=ui,
        data=str(data.resolve()) if data else None,
        ablation=str(ablation.resolve()) if ablation else None,
        run_store=str(run_embeddings.resolve()) if run_embeddings else None,
        rerank=str(rerank_spec(rerank)),
        max_body=max_body,
    )
    sock = _listen(host, port)
    port = sock.getsockname()[1]  # the one the system chose for --port 0
    if workers > 1:
        # Each worker loads its own copy; one load here first, so a model that cannot load is
        # one line and an exit, not workers restarted for ever.
        sock.close()
        try:
            with _interrupt_stops_serving():
                Engine(config).load()
        except NewsrecError as exc:
            raise NewsrecError(f"serve {source}: the model cannot be loaded: {exc}") from None
        except Exception as exc:  # a library's error (torch, onnxruntime): still one line
            raise NewsrecError(
                f"serve {source}: the model cannot be loaded: {type(exc).__name__}: {exc}"
            ) from None
    page = f", page at http://{host}:{port}/ui/" if ui else ""
    # soft_wrap: one line whatever the width (rich would break a piped line at 80 columns, inside
    # the URL that scripts and the tests read the port from)
    err_console.print(
        f"serving {source} ({backend}) on http://{host}:{port} (docs at /docs{page})",
        highlight=False,
        soft_wrap=True,
    )
    with _interrupt_stops_serving():
        _run_server(config, sock, source, workers, host, port, log_level)


@contextlib.contextmanager
def _interrupt_stops_serving() -> Iterator[None]:
    """Ctrl-C stops the server in one line (not embed's and train's "rerun to resume": a server
    has nothing to resume); uvicorn has shut down gracefully by then."""
    try:
        yield
    except KeyboardInterrupt:
        err_console.print("stopped serving (interrupted)", highlight=False)
        raise typer.Exit(130) from None


def _run_server(
    config: ServeConfig, sock: socket.socket, source: Path, workers: int, host: str, port: int, log_level: str
) -> None:
    """uvicorn on `sock` (one worker) or on `host:port` (--workers N, each loading its own engine)."""
    import uvicorn

    from newsrec_cli.serve.app import CONFIG_ENV, create_app

    if workers > 1:
        os.environ[CONFIG_ENV] = config.to_json()
        uvicorn.run(
            "newsrec_cli.serve.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
        )
        return
    server: uvicorn.Server | None = None

    def stop(_reason: str) -> None:  # from the loading thread: the model will never be ready
        assert server is not None
        server.should_exit = True

    app = create_app(config, on_fatal=stop)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
    server.run(sockets=[sock])
    if app.state.engine.error:
        raise NewsrecError(f"serve {source}: the model cannot be loaded: {app.state.engine.error}")


@handle_errors
def recommend_command(
    source: Annotated[
        Path, typer.Argument(help="Run directory or export folder.", exists=True, file_okay=False)
    ],
    history: Annotated[
        str, typer.Option("--history", help='Clicked news IDs, oldest first: "N1 N2 ...".')
    ] = "",
    candidates: Annotated[
        str | None, typer.Option("--candidates", help="News IDs to rank (default: retrieve from all news).")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="How many to show.", min=1)] = 10,
    user: Annotated[
        str | None, typer.Option("--user", help="User ID (for runs trained with user IDs).")
    ] = None,
    backend: Annotated[
        str,
        typer.Option("--backend", help="auto (onnx for an export, torch for a run), torch, onnx or int8."),
    ] = "auto",
    include_history: Annotated[
        bool, typer.Option("--include-history", help="Allow news from the history in the result.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict/--skip-unknown", help="Unknown news IDs: error or skip.")
    ] = True,
    run_embeddings: RunStoreOption = None,
    rerank: RerankOption = "none",
    json_out: JsonOption = False,
) -> None:
    """Rank candidates (or retrieve from all news) for a history, as a table with titles.

    Example: newsrec recommend exports/nrms --history "N55189 N42782" --candidates "N1 N2 N3" -k 10
    Example: newsrec recommend demo/run --history "N1 N2" --rerank mmr:0.3   (a more diverse top 10)
    """
    from newsrec_cli.serve.engine import Engine, ServeConfig, default_backend
    from newsrec_cli.serve.errors import ServeError, UnknownNews

    engine = Engine(
        ServeConfig(
            source=str(source),
            backend=default_backend(source) if backend == "auto" else backend,
            threads=1,
            run_store=str(run_embeddings) if run_embeddings else None,
        )
    )
    engine.load()
    try:
        result = engine.recommend(
            history=history.split(),
            candidates=candidates.split() if candidates is not None else None,
            k=k,
            user_id=user,
            exclude_history=not include_history,
            strict=strict,
            rerank=rerank_spec(rerank),
        )
    except UnknownNews as exc:
        # The HTTP message names the request field (strict=false); here the flag is the way out.
        raise SettingsError(
            f"recommend: unknown news IDs: {', '.join(exc.ids)} (pass --skip-unknown to skip them)"
        ) from None
    except ServeError as exc:
        raise SettingsError(f"recommend: {exc.reason}") from None
    if json_out:
        print_json(result.as_json())
        return
    notes = [f"model {result.model_version} ({result.backend})", result.mode]
    if result.cold_start:
        notes.append("cold start: no known history")
    if result.history_truncated:
        notes.append(f"history truncated to the last {result.history_used}")
    if result.unknown:
        notes.append(f"skipped unknown: {' '.join(result.unknown)}")
    if result.rerank.active:
        notes.append(f"re-ranked: {result.rerank}")
    if result.diversity is not None:
        notes.append(_diversity_note(result.diversity))
    table = Table(title="recommendations", caption="; ".join(notes))
    for col in ("rank", "news", "score", "category", "title"):
        table.add_column(col, justify="right" if col in ("rank", "score") else "left")
    for item in result.items:
        rec = engine.get_news(item.news_id)
        table.add_row(
            str(item.rank),
            item.news_id,
            f"{item.score:.4f}",
            f"{rec.category}/{rec.subcategory}" if rec else "",
            rec.title if rec else "",
        )
    console.print(table)
