"""The ablation as a bar chart (`--plot FILE`): mean AUC per row, seed std and the content line."""

from __future__ import annotations

from pathlib import Path

from newsrec_cli.ablate.run import CONTENT, AblationResult
from newsrec_cli.diagnose.plots import pyplot


def plot_ablation(result: AblationResult, path: Path, metric: str = "auc") -> Path:
    """Horizontal bars of `metric` (mean ± std over seeds), baselines greyed, content as a line."""
    plt = pyplot()
    rows = result.rows
    means = [r.summary(metric)[0] for r in rows]
    stds = [r.summary(metric)[1] for r in rows]
    colors = ["tab:blue" if r.kind == "model" else "0.6" for r in rows]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, means, xerr=stds, color=colors, capsize=3)
    ax.set_yticks(y, [r.name for r in rows])
    content = next(r for r in rows if r.name == CONTENT).summary(metric)[0]
    ax.axvline(content, color="tab:red", linestyle="--", linewidth=1, label=CONTENT)
    low = min(m - s for m, s in zip(means, stds, strict=True))
    ax.set_xlim(max(0.0, low - 0.02), max(m + s for m, s in zip(means, stds, strict=True)) + 0.01)
    ax.set_xlabel(
        f"{metric.upper()} on {result.split} ({result.impressions:,} impressions), mean ± std over seeds"
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
