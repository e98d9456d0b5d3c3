"""Benchmark of `newsrec export`: size on disk and speed of the fp32 and the int8 export.

Builds (once, in --work) a run on the shared `mind_recon_dev` data (51,282 news, MIND-small's
train news list; hashing text vectors, which are as large as real ones), then exports it twice
with the command a user runs: `--quantize none` (fp32) and `--quantize int8-only` (the int8
graphs and int8 news-vector table alone). Prints:

- the bytes of each folder, by kind of file (graphs, news-vector table, news.tsv, the rest);
- the parity each export measured (AUC, and int8's AUC difference from fp32);
- per graph, the median time of one call through ONNX Runtime (1 thread) on real inputs:
  the news encoder on 4,096 news, the user encoder on one history of H clicks, the scorer on
  one user and 50 candidates, the keys of 4,096 news and one query; and the load of the table
  (read, dequantised for int8, every vector touched once).

    python benchmarks/bench_export.py              # ~4 minutes the first time (train + 2 exports)
    python benchmarks/bench_export.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "mind_recon_dev"
NEWSREC = [sys.executable, "-m", "newsrec_cli"]
EXPORTS = {"fp32": "none", "int8": "int8-only"}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--work", type=Path, default=Path("/tmp/newsrec_bench_export"), help="Build folder (reused)."
    )
    p.add_argument("--data", type=Path, default=SHARED, help="MIND data to train on (mind_recon_dev).")
    p.add_argument("--repeats", type=int, default=20, help="Timed calls per graph (median reported).")
    p.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
    return p.parse_args()


def sh(*cmd: str) -> None:
    # the command as a user runs it: no thread variables (newsrec caps its own threads)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=user_env())


def user_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}


def build(work: Path, data: Path) -> dict[str, Path]:
    """The run (once) and its two exports (each once)."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "run" / "model.pt").exists():
        sh(*NEWSREC, "embed", "news", str(data), "--out", str(work / "store"), "--provider", "hashing")
        sh(
            *NEWSREC, "train", str(data), "-e", str(work / "store"), "-o", str(work / "run"),
            "--epochs", "1", "--threads", "1", "--dim", "64", "--heads", "4", "--device", "cpu",
        )  # fmt: skip
    out = {}
    for name, quantize in EXPORTS.items():
        folder = work / f"export_{name}"
        if not (folder / "export.json").exists():
            sh(*NEWSREC, "export", str(work / "run"), "--out", str(folder), "--quantize", quantize)
        out[name] = folder
    return out


def sizes(folder: Path) -> dict[str, int]:
    """Bytes by kind: ONNX graphs, the news-vector table(s), news.tsv, everything else."""
    out = {"graphs": 0, "table": 0, "news.tsv": 0, "other": 0}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        size = path.stat().st_size
        if path.suffix == ".onnx":
            out["graphs"] += size
        elif path.parent.name.startswith("news_vectors"):
            out["table"] += size
        elif path.name == "news.tsv":
            out["news.tsv"] += size
        else:
            out["other"] += size
    out["total"] = sum(out.values())
    return out


def median_ms(call: Any, repeats: int) -> float:
    call()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def speeds(folder: Path, int8: bool, repeats: int) -> dict[str, float]:
    from newsrec_cli.serve.backends import NewsInputs, OnnxBackend
    from newsrec_cli.serve.export import graph_files, manifest_graphs, manifest_table, read_manifest
    from newsrec_cli.serve.vector_table import read_table

    manifest = read_manifest(folder)
    backend = OnnxBackend(graph_files(folder, manifest_graphs(manifest, int8)), "int8" if int8 else "onnx")

    def load() -> np.ndarray:  # read, and touch every vector (a float32 table is memory-mapped)
        _, vectors, _ = read_table(folder / manifest_table(manifest, int8))
        vectors.sum()
        return vectors

    vectors = load()
    load_ms = median_ms(load, 5)
    rng = np.random.default_rng(0)
    n, history = 4096, int(manifest["history"])
    text = manifest["shapes"]["text_vector"]
    inputs = NewsInputs(
        id_index=rng.integers(0, 1000, n),
        category=rng.integers(0, 5, n),
        subcategory=rng.integers(0, 5, n),
        text=rng.normal(size=(n, text[1])).astype(np.float32) if text else None,
        text_present=np.ones(n, bool) if text else None,
    )
    clicked = vectors[rng.integers(0, len(vectors), history)][None]
    mask = np.ones((1, history), bool)
    users = np.zeros(1, np.int64)
    state = backend.encode_users(clicked, mask, users)
    candidates = vectors[rng.integers(0, len(vectors), 50)][None]
    out = {
        "news encoder, 4,096 news": median_ms(lambda: backend.encode_news(inputs), max(3, repeats // 4)),
        f"user encoder, 1 x {history} clicks": median_ms(
            lambda: backend.encode_users(clicked, mask, users), repeats
        ),
        "scorer, 1 x 50 candidates": median_ms(lambda: backend.score(state, candidates), repeats),
    }
    if backend.inner_product:
        some = vectors[:4096]
        out["keys, 4,096 news"] = median_ms(lambda: backend.keys(some), repeats)
        out["query, 1 user"] = median_ms(lambda: backend.queries(state), repeats)
    out["table load"] = load_ms
    return out


def main() -> None:
    args = parse()
    console = Console(stderr=True)
    console.print(f"building the run and its exports in {args.work} (once)")
    folders = build(args.work, args.data)
    result: dict[str, Any] = {}
    for name, folder in folders.items():
        manifest = json.loads((folder / "export.json").read_text())
        parity = {r["backend"]: r for r in manifest["parity"]["rows"]}
        row = parity["onnx int8" if name == "int8" else "onnx fp32"]
        result[name] = {
            "folder": str(folder),
            "news": manifest["news"],
            "sizes": sizes(folder),
            "auc": row["auc"],
            "auc_diff_vs_fp32": row.get("auc_diff_vs_fp32", 0.0),
            "ms": speeds(folder, name == "int8", args.repeats),
        }
    ratio = result["fp32"]["sizes"]["total"] / result["int8"]["sizes"]["total"]
    result["size_ratio"] = ratio
    if args.json:
        print(json.dumps(result, indent=2))
        return
    mb = 1e6
    size = Table(title=f"export size on disk, {result['fp32']['news']:,} news (fp32 / int8 = {ratio:.2f}x)")
    for col in (
        "export",
        "graphs MB",
        "table MB",
        "news.tsv MB",
        "other MB",
        "total MB",
        "AUC",
        "ΔAUC vs fp32",
    ):
        size.add_column(col, justify="left" if col == "export" else "right")
    for name in folders:
        r = result[name]
        s = r["sizes"]
        size.add_row(
            f"{name} (--quantize {EXPORTS[name]})",
            *(f"{s[k] / mb:.2f}" for k in ("graphs", "table", "news.tsv", "other", "total")),
            f"{r['auc']:.4f}",
            f"{r['auc_diff_vs_fp32']:+.4f}",
        )
    speed = Table(title="median time per call, ONNX Runtime, 1 thread (ms)")
    for col in ("call", "fp32", "int8"):
        speed.add_column(col, justify="left" if col == "call" else "right")
    for call in result["fp32"]["ms"]:
        speed.add_row(
            call, f"{result['fp32']['ms'][call]:.2f}", f"{result['int8']['ms'].get(call, float('nan')):.2f}"
        )
    Console().print(size)
    Console().print(speed)


if __name__ == "__main__":
    main()
