"""metrics.json: one file per protocol and way of ranking, rows merged with what it held before.

`evaluate` once replaced the whole file, so `--metrics auc,ndcg` after a run with baselines lost
the baseline rows and MRR that the web page shows. Now the file is named by what its figures
mean (protocol, way of ranking, re-ranker), and a new evaluation merges into it:

- a file about other figures (another split, data or selection) is replaced, and that is said;
- a row scored again replaces its old self; when it is the same source (same weights, same
  prediction file, same baseline and seed: its `source` fingerprint), the metrics not asked for
  this time are kept from the old row;
- a row not scored this time is kept as it was, with `"kept": true`;
- the metric list is the union, the new names first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newsrec_cli import atomic
from newsrec_cli.rerank import RerankSpec

METRICS_FILE = "metrics.json"
# What must match for two reports' rows to stand in one table.
CONTEXT = ("data", "split", "reported_on", "chosen_on", "protocol", "ranking", "rerank", "impressions")
DEFAULTS = {
    "protocol": "offline",
    "ranking": "impressions",
    "rerank": "none",
}  # files written before these keys


def variant_suffix(
    protocol: str = "offline", ranking: str = "impressions", rerank: RerankSpec | None = None
) -> str:
    """The part of a file name that says how its figures were made: "" for the offline protocol
    re-ranking each impression's candidates by the scores, else e.g. "-replay", "-retrieve",
    "-mmr-0.3", "-replay-retrieve-calibration-0.5"."""
    parts = [] if protocol == "offline" else [protocol]
    if ranking != "impressions":
        parts.append(ranking)
    if rerank is not None and rerank.active:
        parts.append(f"{rerank.method}-{rerank.weight:g}")
    return "".join(f"-{p}" for p in parts)


def with_suffix(path: Path, suffix: str) -> Path:
    """metrics.json + "-replay" -> metrics-replay.json."""
    return path.with_name(f"{path.stem}{suffix}{path.suffix}")


def fingerprint(path: Path) -> str:
    """A short hash of a file's bytes (model weights, a prediction file): rows of the same source
    may share their metrics across evaluations."""
    digest = hashlib.blake2b(digest_size=8)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Saved:
    """What writing the file did to what it held before."""

    path: Path
    kept: list[str] = field(default_factory=list)  # rows not scored this time, kept as they were
    completed: list[str] = field(default_factory=list)  # rows given back metrics not asked for now
    replaced: str | None = None  # the file held other figures (why), and was replaced

    def sentence(self) -> str | None:
        """One line for the terminal, or None when nothing was there before."""
        name = self.path.name
        if self.replaced:
            return f"note: {name} held {self.replaced}; replaced by these figures"
        parts = []
        if self.kept:
            parts.append(
                f"kept {len(self.kept)} earlier row(s) not scored this time ({', '.join(self.kept)})"
            )
        if self.completed:
            parts.append(f"kept the earlier metrics not asked for now of {', '.join(self.completed)}")
        return f"note: {name}: " + "; ".join(parts) if parts else None


def save_metrics(path: Path, report: dict[str, Any]) -> Saved:
    """Write `report` (EvaluationReport.to_dict()) to `path`, merged with the file there."""
    saved = Saved(path)
    old = _read(path)
    merged = dict(report)
    if old is not None:
        differs = [key for key in CONTEXT if old.get(key, DEFAULTS.get(key)) != report.get(key)]
        if differs:
            key = differs[0]
            saved.replaced = f"figures of another {key.replace('_', ' ')} ({old.get(key, DEFAULTS.get(key))})"
        else:
            merged = _merge(old, report, saved)
    atomic.write_text(path, json.dumps(merged, indent=2) + "\n")
    return saved


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a damaged file holds nothing worth keeping; it is rewritten whole
    return data if isinstance(data, dict) and isinstance(data.get("rows"), list) else None


def _merge(old: dict[str, Any], new: dict[str, Any], saved: Saved) -> dict[str, Any]:
    rows = [dict(row) for row in new["rows"]]
    by_name = {row["name"]: row for row in rows}
    for before in old["rows"]:
        if not isinstance(before, dict) or "name" not in before:
            continue
        now = by_name.get(before["name"])
        if now is None:
            rows.append({**before, "kept": True})
            saved.kept.append(str(before["name"]))
        elif before.get("source") is not None and before.get("source") == now.get("source"):
            extra = {k: v for k, v in before.get("values", {}).items() if k not in now.get("values", {})}
            if extra:
                now["values"] = {**now.get("values", {}), **extra}
                now["counts"] = {
                    **{k: v for k, v in before.get("counts", {}).items() if k in extra},
                    **now.get("counts", {}),
                }
                saved.completed.append(str(before["name"]))
    names = list(new.get("metrics", []))
    names += [n for n in old.get("metrics", []) if n not in names]
    return {**new, "metrics": names, "rows": rows}
