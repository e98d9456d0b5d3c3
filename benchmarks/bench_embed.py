"""Throughput of the local embedding provider (all-MiniLM-L6-v2 by default) per batch size.

Embeds real MIND news texts (../shared/data/llm4rec_mind, default template) at batch sizes
32..256, prints texts/s and the time extrapolated to MIND-small's 65,238 news, plus one full
`newsrec embed` pipeline run (store writes included) at the default batch size.

    python benchmarks/bench_embed.py --texts 256              # quick check
    python benchmarks/bench_embed.py --texts 4096 --device auto   # the figures in the README
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from newsrec_cli.embed.providers.local import LocalProvider
from newsrec_cli.embed.run import execute, plan_run
from newsrec_cli.embed.text import news_texts
from newsrec_cli.mind.news import read_news
from newsrec_cli.settings import EmbedSettings

MIND_SMALL_NEWS = 65_238  # unique news of MINDsmall train + dev
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_texts(count: int, template: str) -> list[str]:
    """`count` real news texts (cycled when the fixture has fewer)."""
    for name in ("llm4rec_mind", "mind_tiny"):
        path = SHARED / name / "news.tsv"
        if path.exists():
            texts = news_texts(read_news(path), template).texts
            return [texts[i % len(texts)] for i in range(count)]
    raise SystemExit(f"no news.tsv under {SHARED}; the benchmark needs the shared MIND fixtures")


def time_provider(provider: LocalProvider, texts: list[str]) -> float:
    """Seconds to embed `texts` the way a run does: the provider's batches, one call each."""
    provider.embed(texts[: provider.batch_size])  # warm-up: first-call allocations, kernels
    start = time.perf_counter()
    for batch in provider.batches(texts):
        provider.embed([texts[i] for i in batch])
    return time.perf_counter() - start


def time_pipeline(provider: LocalProvider, texts: list[str], template: str) -> float:
    """Seconds for a whole run into a fresh store (chunks, commit)."""
    ids = [f"N{i}" for i in range(len(texts))]
    with tempfile.TemporaryDirectory() as folder:
        plan = plan_run(Path(folder) / "store", ids, texts, provider.spec, kind="news", template=template,
                        normalize=True)  # fmt: skip
        start = time.perf_counter()
        execute(plan, provider)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=1024, help="Texts embedded per batch size.")
    parser.add_argument("--batch-sizes", default="32,64,128,256", help="Comma-separated batch sizes.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto.")
    parser.add_argument("--model", default=None, help="Model name or folder (default: all-MiniLM-L6-v2).")
    args = parser.parse_args()

    template = EmbedSettings().template
    texts = load_texts(args.texts, template)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    console = Console()
    table = Table(
        title=f"Local embedding throughput ({len(texts):,} real MIND news texts, template {template!r})"
    )
    for column in ("batch size", "what", "device", "seconds", "texts/s", f"{MIND_SMALL_NEWS:,} news"):
        table.add_column(column, justify="right")
    device = None
    for size in sizes:
        provider = LocalProvider(args.model, device=args.device, batch_size=size)
        device = provider.device
        seconds = time_provider(provider, texts)
        rate = len(texts) / seconds
        table.add_row(
            str(size), "provider", device, f"{seconds:.2f}", f"{rate:,.0f}", _minutes(MIND_SMALL_NEWS / rate)
        )
    default = EmbedSettings().batch_size
    provider = LocalProvider(args.model, device=args.device, batch_size=default)
    seconds = time_pipeline(provider, texts, template)
    rate = len(texts) / seconds
    table.add_row(
        str(default),
        "full run",
        str(device),
        f"{seconds:.2f}",
        f"{rate:,.0f}",
        _minutes(MIND_SMALL_NEWS / rate),
    )
    console.print(table)
    console.print(f"model: {provider.spec.model}; extrapolation is linear in the number of news.")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


if __name__ == "__main__":
    main()
