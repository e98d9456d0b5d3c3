"""PNG charts of a study (`tune show DIR --plot FOLDER`), drawn by Optuna's matplotlib module.

Optimisation history (validation AUC per trial, and the best so far), parameter importance
(fANOVA over the complete trials) and parallel coordinates (each trial a line through its
settings, coloured by AUC). A chart that the study cannot support yet (importance needs two
complete trials that differ) is skipped with the reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from newsrec_cli.diagnose.plots import require_matplotlib
from newsrec_cli.tune.study import TuneSetup, load_study, quiet_optuna

CHARTS = ("history", "importance", "parallel")


def _save(axes: Any, path: Path) -> Path:
    figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
    figure.set_size_inches(9, 5)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path


def write_plots(setup: TuneSetup, folder: Path) -> tuple[list[Path], dict[str, str]]:
    """(PNG files written, {chart: why it was skipped})."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    quiet_optuna()
    study = load_study(setup)
    folder.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    written, skipped = [], {}
    draws = {
        "history": lambda: ovm.plot_optimization_history(study, target_name="validation AUC"),
        "importance": lambda: ovm.plot_param_importances(study, target_name="validation AUC"),
        "parallel": lambda: ovm.plot_parallel_coordinate(study, target_name="validation AUC"),
    }
    for name in CHARTS:
        if not complete:
            skipped[name] = "no complete trial yet"
            continue
        if name == "importance" and len(complete) < 2:
            skipped[name] = "needs at least two complete trials"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = draws[name]()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            skipped[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            continue
        written.append(_save(axes, folder / f"{name}.png"))
    return written, skipped
