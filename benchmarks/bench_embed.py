"""Throughput and accuracy of the local embedding backends (all-MiniLM-L6-v2 by default).

Speed: real MIND news texts (../shared/data/llm4rec_mind, default template) embedded by torch,
ONNX Runtime float and ONNX Runtime int8 at the same batch sizes and thread count. The backends
take turns, `--rounds` times, and each keeps its best round, so a busy shared machine slows them
alike; texts/s, the speed-up over torch and the time extrapolated to MIND-small's 65,238 news.

Accuracy (`--quality DATA`): every news of DATA embedded by torch and by ONNX int8 through the
real pipeline into stores under `--stores` (reused when complete, resumed when interrupted), then
the cosine between the two vectors of every news item and the content baseline's AUC (history-mean
cosine) on DATA's valid split with each store.

    python benchmarks/bench_embed.py --texts 512                       # quick speed check
    python benchmarks/bench_embed.py --texts 2048 --threads 2          # the speed figures of docs/embedding.md
    python benchmarks/bench_embed.py --quality ../shared/data/mind_recon_dev --stores /tmp/recon \\
        --threads 1                                                    # the accuracy figures of docs/embedding.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from newsrec_cli.commands.common import progress
from newsrec_cli.embed.providers import make_provider
from newsrec_cli.embed.run import execute, plan_run
from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.embed.text import news_texts
from newsrec_cli.evaluate.baselines import content_scores
from newsrec_cli.evaluate.metrics import compute_metrics
from newsrec_cli.mind import load_dataset
from newsrec_cli.mind.news import read_news
from newsrec_cli.settings import EmbedSettings

MIND_SMALL_NEWS = 65_238  # unique news of MINDsmall train + dev
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BACKENDS: dict[str, dict[str, Any]] = {
    "torch": {"backend": "torch"},
    "onnx": {"backend": "onnx", "int8": False},
    "onnx-int8": {"backend": "onnx", "int8": True},
}


def load_texts(count: int, template: str) -> list[str]:
    """`count` real news texts (cycled when the fixture has fewer)."""
    for name in ("llm4rec_mind", "mind_tiny"):
        path = SHARED / name / "news.tsv"
        if path.exists():
            texts = news_texts(read_news(path), template).texts
            return [texts[i % len(texts)] for i in range(count)]
    raise SystemExit(f"no news.tsv under {SHARED}; the benchmark needs the shared MIND fixtures")


def settings_for(name: str, args: argparse.Namespace, batch_size: int | None = None) -> EmbedSettings:
    return EmbedSettings(
        provider="local",
        model=args.model,
        device="cpu",
        threads=args.threads,
        batch_size=batch_size or EmbedSettings().batch_size,
        **BACKENDS[name],
    )


def time_provider(provider: Any, texts: list[str]) -> float:
    """Seconds to embed `texts` the way a run does: the provider's batches, one call each."""
    start = time.perf_counter()
    for batch in provider.batches(texts):
        provider.embed([texts[i] for i in batch])
    return time.perf_counter() - start


def speed(args: argparse.Namespace, console: Console) -> None:
    template = EmbedSettings().template
    texts = load_texts(args.texts, template)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    table = Table(
        title=f"Local embedding throughput, CPU, {args.threads or 'default'} thread(s) "
        f"({len(texts):,} real MIND news texts, best of {args.rounds} interleaved rounds)"
    )
    for column in ("batch size", "backend", "seconds", "texts/s", "x torch", f"{MIND_SMALL_NEWS:,} news"):
        table.add_column(column, justify="right")
    for size in sizes:
        providers = {name: make_provider(settings_for(name, args, size)) for name in BACKENDS}
        for provider in providers.values():
            provider.embed(texts[:size])  # warm-up: first-call allocations, kernels
        best = dict.fromkeys(providers, float("inf"))
        for _ in range(args.rounds):
            for name, provider in providers.items():
                best[name] = min(best[name], time_provider(provider, texts))
        for name, seconds in best.items():
            rate = len(texts) / seconds
            table.add_row(
                str(size),
                name,
                f"{seconds:.2f}",
                f"{rate:,.0f}",
                f"{best['torch'] / seconds:.2f}",
                _minutes(MIND_SMALL_NEWS / rate),
            )
    console.print(table)


def build_store(name: str, args: argparse.Namespace, ids: list[str], texts: list[str]) -> tuple[Path, float]:
    """The store of backend `name` under --stores (the real pipeline; reused when complete)."""
    settings = settings_for(name, args)
    provider = make_provider(settings)
    path = Path(args.stores) / name
    plan = plan_run(path, ids, texts, provider.spec, kind="news", template=settings.template, normalize=True)
    if not plan.todo:
        return path, float("nan")
    with progress(unit="texts") as bar:
        task = bar.add_task(f"embed ({name})", total=len(plan.todo))
        report = execute(plan, provider, on_progress=lambda n: bar.advance(task, n))
    return path, report.embedded / report.seconds


def quality(args: argparse.Namespace, console: Console) -> None:
    dataset = load_dataset(args.quality)
    template = EmbedSettings().template
    texts = news_texts(dataset.news, template)
    target = dataset.splits["valid"]
    rows, vectors = [], {}
    for name in ("torch", "onnx-int8"):
        path, rate = build_store(name, args, texts.ids, texts.texts)
        store = EmbeddingStore.open(path)
        vectors[name], missing = store.lookup(texts.ids)
        assert not missing, f"{path} lacks {len(missing)} news"
        scores = content_scores(store, target, dataset.news_vocab)
        auc = compute_metrics(scores, target.labels, target.candidate_offsets, ["auc"]).values["auc"]
        rows.append((name, store.meta.get("model", "?"), rate, auc))
    a, b = vectors["torch"], vectors["onnx-int8"]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    table = Table(title=f"int8 vs float on every news of {args.quality} ({len(cos):,} news)")
    for column in ("store", "model", "texts/s (full run)", "content AUC (valid)"):
        table.add_column(column, justify="right")
    for name, model, rate, auc in rows:
        table.add_row(name, model, "reused" if np.isnan(rate) else f"{rate:,.0f}", f"{auc:.4f}")
    console.print(table)
    worst = int(np.argmin(cos))
    console.print(
        f"cosine int8 vs torch: min {cos.min():.4f} ({texts.ids[worst]}), 0.1% {np.percentile(cos, 0.1):.4f}, "
        f"mean {cos.mean():.4f}; below 0.99: {int((cos < 0.99).sum()):,} of {len(cos):,}; "
        f"content AUC difference {rows[1][3] - rows[0][3]:+.4f} ({len(target):,} valid impressions)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=1024, help="Texts embedded per batch size and round.")
    parser.add_argument("--batch-sizes", default="64", help="Comma-separated batch sizes.")
    parser.add_argument(
        "--rounds", type=int, default=3, help="Interleaved rounds; each backend keeps its best."
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of every backend.")
    parser.add_argument("--model", default=None, help="Model folder (default: all-MiniLM-L6-v2).")
    parser.add_argument("--quality", default=None, help="MIND folder with train/ and valid/: accuracy mode.")
    parser.add_argument("--stores", default="bench-stores", help="Where --quality keeps its stores.")
    args = parser.parse_args()
    console = Console()
    if args.quality:
        quality(args, console)
    else:
        speed(args, console)
    console.print("model: all-MiniLM-L6-v2 unless --model; extrapolation is linear in the number of news.")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


if __name__ == "__main__":
    main()
