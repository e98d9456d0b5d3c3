"""`newsrec diagnose saturation`: are the logits in the range where the sigmoid still has a slope?

sigmoid(x) is flat beyond |x| ~ 4.6 (outputs above 0.99 or below 0.01): there sigmoid'(x) =
p(1-p) is near 0, and every gradient that flows through a probability is multiplied by it. The
original failure of this project had logits at 84-113, every output 1.0 and no learning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from newsrec_cli.diagnose.forward import ModelOutputs
from newsrec_cli.diagnose.report import Check, Report, Status, Table
from newsrec_cli.diagnose.stats import PERCENTILES, SATURATION_LOGIT, saturation, summary

SATURATED_FAIL = 0.5  # share of sigmoid outputs above 0.99 or below 0.01
SATURATED_WARN = 0.2
GRAD_FACTOR_FAIL = 0.005  # mean p(1-p), at most 0.25 (logit 0); 0.005 is |logit| ~ 5.3 everywhere
GRAD_FACTOR_WARN = 0.015  # a calibrated model at a 4 % click rate sits near 0.04
SOFTMAX_PEAK = 0.99  # an impression whose softmax gives one candidate more than this is saturated
HEALTHY_LOGIT = 4.0  # the |logit| a suggested temperature aims the bulk of the logits at


@dataclass
class Scoring:
    """The score head: `kind` ("dot", "cosine" or "cosine without L2 normalisation") times `scale`."""

    kind: str
    scale: float
    loss: str = "listwise"

    @property
    def normalized(self) -> bool:
        """Whether the logits are bounded by +-scale (cosine of L2-normalised vectors)."""
        return self.kind == "cosine"

    def describe(self) -> str:
        return (
            f"score head {self.kind}, scale {self.scale:.3g} (logit = scale x similarity), loss {self.loss}"
        )


def logit_table(out: ModelOutputs) -> Table:
    """Logit statistics over all candidates, and clicked / not clicked apart.

    One column per group and one row per statistic, so it stays readable in 80 columns.
    """
    groups = []
    for name, mask in (
        ("all", np.ones(len(out.logits), dtype=bool)),
        ("clicked", out.labels == 1),
        ("not clicked", out.labels == 0),
    ):
        if mask.any():
            groups.append((name, summary(out.logits[mask])))
    table = Table("Logits (before sigmoid)", ["statistic", *(name for name, _ in groups)])
    for stat in ["count", "min", "max", "mean", "std"] + [f"p{q}" for q in PERCENTILES]:
        table.add(stat, *(s[stat] for _, s in groups))
    return table


def softmax_peaks(logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Largest softmax probability within each impression, float64 [I]."""
    imp = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    x = logits.astype(np.float64)
    top = np.full(len(offsets) - 1, -np.inf)
    np.maximum.at(top, imp, x)
    denom = np.bincount(imp, weights=np.exp(x - top[imp]), minlength=len(offsets) - 1)
    return 1.0 / denom  # the top candidate's exp(0) over the sum


def suggest_fix(scoring: Scoring, logits: np.ndarray) -> str:
    """What to change so that the bulk of the logits lands inside about (-4, 4)."""
    finite = np.abs(logits[np.isfinite(logits)])
    bulk = float(np.percentile(finite, 95)) if finite.size else float("nan")
    divide = max(bulk / HEALTHY_LOGIT, 1.0)
    lower = (
        f"lower the scale (inverse temperature) from {scoring.scale:.3g} "
        f"to about {scoring.scale / divide:.2g} "
        f"(95 % of |logit| are below {bulk:.3g}; dividing by {divide:.3g} brings them to {HEALTHY_LOGIT:g})"
    )
    if scoring.normalized:
        return f"{lower}: cosines lie in [-1, 1], so logits stay within +-scale"
    return (
        'L2-normalise user and news vectors (train.scoring = "cosine": logits then stay within +-scale, '
        f"and a scale of 3 to 5 is a good start), or {lower}"
    )


def saturation_checks(out: ModelOutputs, scoring: Scoring) -> list[Check]:
    """Finite logits, sigmoid saturation, the gradient factor and softmax saturation."""
    checks: list[Check] = []
    finite = np.isfinite(out.logits)
    if not finite.all():
        bad = int((~finite).sum())
        checks.append(
            Check(
                "finite logits",
                Status.FAIL,
                bad,
                f"{bad} of {len(finite)} logits are NaN or Inf",
                "check the input vectors (newsrec diagnose data --embeddings STORE)",
            )
        )
    sat = saturation(out.logits)
    lo, hi = (
        (float(out.logits[finite].min()), float(out.logits[finite].max())) if finite.any() else (0.0, 0.0)
    )
    status = _grade(sat["saturated"], SATURATED_WARN, SATURATED_FAIL)
    checks.append(
        Check(
            "sigmoid saturation",
            status,
            {**sat, "logit_min": lo, "logit_max": hi},
            f"{sat['high']:.1%} of sigmoid outputs are above 0.99 and {sat['low']:.1%} below 0.01 "
            f"(logits from {lo:.3g} to {hi:.3g}; the sigmoid is flat beyond +-{SATURATION_LOGIT:.2f})",
            suggest_fix(scoring, out.logits) if status > Status.OK else "",
        )
    )
    factor = sat["grad_factor"]
    f_status = (
        Status.FAIL if factor < GRAD_FACTOR_FAIL else Status.WARN if factor < GRAD_FACTOR_WARN else Status.OK
    )
    checks.append(
        Check(
            "gradient factor",
            f_status,
            factor,
            f"mean sigmoid'(logit) = p(1-p) is {factor:.3g} (at most 0.25): gradients through the sigmoid "
            f"are scaled by {factor / 0.25:.1%} of their best",
            suggest_fix(scoring, out.logits) if f_status > Status.OK else "",
        )
    )
    peaks = softmax_peaks(out.logits, out.offsets)
    peaked = float((peaks > SOFTMAX_PEAK).mean()) if peaks.size else float("nan")
    p_status = _grade(peaked, SATURATED_WARN, SATURATED_FAIL)
    checks.append(
        Check(
            "softmax saturation",
            p_status,
            {"share": peaked, "median_peak": float(np.median(peaks)) if peaks.size else float("nan")},
            f"in {peaked:.1%} of impressions one candidate takes more than {SOFTMAX_PEAK:.0%} of the softmax "
            "(the listwise loss then has almost no gradient for the rest)",
            suggest_fix(scoring, out.logits) if p_status > Status.OK else "",
        )
    )
    return checks


def _grade(value: float, warn: float, fail: float) -> Status:
    if not np.isfinite(value):
        return Status.WARN
    return Status.FAIL if value >= fail else Status.WARN if value >= warn else Status.OK


def diagnose_saturation(out: ModelOutputs, scoring: Scoring) -> Report:
    """The saturation report of one model on one sample of impressions."""
    report = Report("saturation")
    report.notes.append(scoring.describe())
    report.notes.append(f"{len(out.offsets) - 1} impressions, {len(out.logits)} candidates")
    report.tables.append(logit_table(out))
    sat = saturation(out.logits)
    peaks = softmax_peaks(out.logits, out.offsets)
    shares = ("sigmoid > 0.99", "sigmoid < 0.01", "saturated", f"softmax peak > {SOFTMAX_PEAK}")
    table = Table("Sigmoid and softmax", [*shares[:3], "mean p(1-p)", shares[3]], percent=shares)
    table.add(
        sat["high"], sat["low"], sat["saturated"], sat["grad_factor"], float((peaks > SOFTMAX_PEAK).mean())
    )
    report.tables.append(table)
    report.checks += saturation_checks(out, scoring)
    report.values = {"logits": summary(out.logits), "sigmoid": sat, "scoring": vars(scoring)}
    return report
