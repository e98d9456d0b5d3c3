"""The trade-off's plot: accuracy against diversity or calibration, one point per λ (PNG, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli.evaluate.tradeoff import LOWER_IS_BETTER, TradeoffReport, TradeoffRow


def write_plot(report: TradeoffReport, path: Path) -> Path:
    """Accuracy (y) against diversity or calibration (x), one labelled point per λ with its 95%
    intervals as bars, PNG (Agg backend)."""
    from newsrec_cli.diagnose.plots import pyplot

    plt = pyplot()
    accuracy = report.metrics[0]
    x_name = "calibration@10" if report.method == "calibration" else "ild@10"
    xs = [row.values[x_name] for row in report.rows]
    ys = [row.values[accuracy] for row in report.rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    try:
        # bars: each λ's 95% interval of the difference to λ = 0, drawn around λ = 0's value
        yerr = [_bar(row, accuracy, ys[0], y) for row, y in zip(report.rows, ys, strict=True)]
        xerr = [_bar(row, x_name, xs[0], x) for row, x in zip(report.rows, xs, strict=True)]
        ax.errorbar(
            xs, ys, yerr=np.array(yerr).T, xerr=np.array(xerr).T, fmt="-o", color="#2a6fdb", capsize=3
        )
        for row, x, y in zip(report.rows, xs, ys, strict=True):
            ax.annotate(f"λ={row.weight:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel(
            f"{x_name} ({'lower: better calibrated' if x_name in LOWER_IS_BETTER else 'higher: more diverse'})"
        )
        ax.set_ylabel(accuracy)
        how = "retrieved" if report.ranking == "retrieve" else "candidates re-ranked"
        ax.set_title(
            f"{report.method}: {accuracy} against {x_name}\n{report.protocol} protocol, {how}", fontsize=10
        )
        ax.grid(alpha=0.3)
        fig.tight_layout()
        from newsrec_cli import atomic

        atomic.write_bytes(path, _png(fig))
    finally:
        plt.close(fig)
    return path


def _bar(row: TradeoffRow, name: str, reference: float, value: float) -> tuple[float, float]:
    """Distances below and above `value` to the ends of its interval (0 where there is none)."""
    _, low, high = row.deltas[name]
    if not (np.isfinite(low) and np.isfinite(high)):
        return 0.0, 0.0
    return max(0.0, value - (reference + low)), max(0.0, reference + high - value)


def _png(fig: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: same bytes each run
    return buffer.getvalue()
