"""Benchmark of `newsrec build-graph` and the GNN encoders at MIND-small scale.

    python benchmarks/bench_graph.py                  # synthetic, 65,238 news (MIND-small's count)
    python benchmarks/bench_graph.py --scale 0.05     # a quick check
    python benchmarks/bench_graph.py --data data/MINDsmall --device cuda

Measures (1) build: seconds and peak memory to read the news of all splits and build the graph
(Python-heap peak by tracemalloc, and the rise of the process RSS), save and load; (2) the GNN:
seconds per forward+backward of SAGE and GAT in full-graph mode (whole graph each step) and in
sampled mode (a training-sized batch of news nodes, [15, 10] neighbours), each in a fresh process, with the
RSS rise (CPU) or peak CUDA memory.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from newsrec_cli.graph import build_graph, build_graph_encoder, load_graph, save_graph
from newsrec_cli.mind.synth import synthesize
from newsrec_cli.settings import GraphSettings, SynthSettings

MIND_SMALL_NEWS = 65_238
PAGE = 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakRss:
    """Highest RSS above the starting point while the block runs (sampled every 2 ms)."""

    def __enter__(self) -> PeakRss:
        self.start = rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def rise_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def synth_dataset(folder: Path, scale: float, console: Console) -> Path:
    news = max(50, int(MIND_SMALL_NEWS * scale))
    console.print(f"synthesising {news:,} news ...")
    # Users and impressions do not enter the graph: keep them few so the data is quick to make.
    synthesize(folder, SynthSettings(news=news, users=max(10, news // 50), seed=0))
    return folder


def gnn_step(
    graph_path: str,
    kind: str,
    mode: str,
    hidden: int,
    batch: int,
    repeats: int,
    device: str,
    threads: int | None,
) -> tuple[float, float, int]:
    """In a fresh process: median seconds of one forward+backward, the memory it needs (MB) and
    the nodes the GNN runs on (the whole graph, or the sampled subgraph of the batch).

    Memory: the peak CUDA allocation on a GPU; on CPU the peak RSS above the process's RSS once
    the graph is loaded (a fresh process each time, so no earlier run's freed memory hides it).
    """
    if threads:
        torch.set_num_threads(threads)
    graph = load_graph(graph_path)
    dev = torch.device(device)
    torch.manual_seed(0)
    nodes = torch.randint(0, graph.num_news, (min(batch, graph.num_news),), device=dev)
    with PeakRss() as rss:
        encoder = build_graph_encoder(
            GraphSettings(encoder=kind, mode=mode, hidden=hidden), graph, hidden
        ).to(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats + 1):  # the first call warms up
            start = time.perf_counter()
            encoder.zero_grad(set_to_none=True)
            encoder(nodes).sum().backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    memory = rss.rise_mb if dev.type != "cuda" else torch.cuda.max_memory_allocated() / 2**20
    if encoder.sampler is None:
        size = graph.num_news + graph.num_entities
    else:
        size = sum(int(rows.numel()) for rows in encoder.sampler(nodes).nodes.values())
    return statistics.median(times[1:]), memory, size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="Share of MIND-small's 65,238 news.")
    parser.add_argument("--data", type=Path, help="Benchmark this MIND dataset instead of a synthetic one.")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (for the GNN timings).")
    parser.add_argument("--batch", type=int, default=2048, help="News nodes per training step (sampled).")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice).")
    args = parser.parse_args()
    console = Console()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synth_dataset(Path(tmp) / "mind", args.scale, console)
        settings = GraphSettings(cooccurrence_min=2)

        tracemalloc.start()
        with PeakRss() as rss:
            start = time.perf_counter()
            graph, _ = build_graph(data, settings)
            build_s = time.perf_counter() - start
        heap_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        start = time.perf_counter()
        save_graph(graph, Path(tmp) / "graph")
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        graph = load_graph(Path(tmp) / "graph")
        load_s = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in (Path(tmp) / "graph").iterdir()) / 2**20

        edges = sum(int(graph.data[t].edge_index.shape[1]) for t in graph.edge_types)
        build = Table(
            title=f"build-graph: {graph.num_news:,} news, {graph.num_entities:,} entities, {edges:,} edges"
        )
        build.add_column("step")
        build.add_column("seconds", justify="right")
        build.add_column("memory", justify="right")
        build.add_row(
            "read news + build", f"{build_s:.2f}", f"heap peak {heap_peak:.0f} MB, RSS +{rss.rise_mb:.0f} MB"
        )
        build.add_row("save", f"{save_s:.2f}", f"{size_mb:.1f} MB on disk")
        build.add_row("load", f"{load_s:.2f}", "")
        console.print(build)

        threads = torch.get_num_threads() if device.type == "cpu" else "-"
        gnn = Table(title=f"GNN forward+backward on {device} (hidden {args.hidden}, threads {threads})")
        for name in ("encoder", "mode", "news asked", "nodes in the pass", "s / step", "memory MB"):
            gnn.add_column(name, justify="left" if name in ("encoder", "mode") else "right")
        spawn = multiprocessing.get_context("spawn")
        for kind in ("sage", "gat"):
            for mode in ("full", "sampled"):
                with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                    seconds, memory, size = pool.submit(
                        gnn_step,
                        str(Path(tmp) / "graph"),
                        kind,
                        mode,
                        args.hidden,
                        args.batch,
                        args.repeats,
                        str(device),
                        args.threads,
                    ).result()
                requested = min(args.batch, graph.num_news)
                gnn.add_row(kind, mode, f"{requested:,}", f"{size:,}", f"{seconds:.3f}", f"{memory:.0f}")
        console.print(gnn)


if __name__ == "__main__":
    main()
