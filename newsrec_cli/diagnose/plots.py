"""PNG histograms of logits and cosines (`--plot DIR`); matplotlib is the optional `plot` extra."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from newsrec_cli.diagnose.stats import SATURATION_LOGIT
from newsrec_cli.errors import NewsrecError

BINS = 60


class PlotUnavailable(NewsrecError):
    """--plot was asked for but matplotlib is not installed."""

    exit_code = 2


def require_matplotlib() -> None:
    """Fail before any work when plots are asked for and cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            '--plot needs matplotlib (the optional "plot" extra of newsrec-cli): pip install matplotlib'
        ) from None


def pyplot():
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def histogram(
    values: dict[str, np.ndarray], path: Path, *, title: str, xlabel: str, marks: tuple[float, ...] = ()
) -> Path:
    """One PNG with an overlaid histogram per named array; vertical dashed lines at `marks`."""
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    finite = {
        k: v[np.isfinite(v)]
        for k, v in ((k, np.asarray(v, dtype=np.float64).ravel()) for k, v in values.items())
    }
    finite = {k: v for k, v in finite.items() if v.size}
    # Shared bins, and densities when several groups are overlaid: 45 clicks beside 900 non-clicks
    # would otherwise be a flat line at the bottom.
    density = len(finite) > 1
    edges = np.histogram_bin_edges(np.concatenate(list(finite.values())), bins=BINS) if finite else BINS
    for label, data in finite.items():
        ax.hist(data, bins=edges, alpha=0.55, density=density, label=f"{label} (n={data.size})")
    for x in marks:
        ax.axvline(x, color="grey", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density" if density else "count")
    if len(values) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def logit_plots(logits: np.ndarray, labels: np.ndarray, out_dir: Path) -> list[Path]:
    """Logits by label, with the saturation bounds of the sigmoid marked."""
    return [
        histogram(
            {"not clicked": logits[labels == 0], "clicked": logits[labels == 1]},
            out_dir / "logits.png",
            title="Logits before sigmoid (dashed: sigmoid 0.01 and 0.99)",
            xlabel="logit",
            marks=(-SATURATION_LOGIT, SATURATION_LOGIT),
        )
    ]


def cosine_plots(
    sims: dict[str, np.ndarray], labels: np.ndarray, norms: dict[str, np.ndarray], out_dir: Path
) -> list[Path]:
    """Cosines (after L2 normalisation) by label, the raw dot products, and the vector norms."""
    return [
        histogram(
            {"not clicked": sims["cosine"][labels == 0], "clicked": sims["cosine"][labels == 1]},
            out_dir / "cosines.png",
            title="Cosine of user and candidate (after L2 normalisation)",
            xlabel="cosine",
        ),
        histogram(
            {"not clicked": sims["dot"][labels == 0], "clicked": sims["dot"][labels == 1]},
            out_dir / "dots.png",
            title="Dot product of un-normalised user and candidate vectors",
            xlabel="u . n",
        ),
        histogram(norms, out_dir / "norms.png", title="Vector norms (L2)", xlabel="norm"),
    ]
