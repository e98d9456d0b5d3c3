"""`newsrec diagnose cosine`: vector norms, cosines, and the logit range each temperature would give.

A dot product of un-normalised vectors is the cosine multiplied by the two norms, so large norms
push logits out of the sigmoid's working range however similar the vectors are. After L2
normalisation the logit is `scale x cosine`, bounded by +-scale: the temperature table shows, for
this model's actual vectors, which scale keeps the logits spread out but unsaturated.
"""

from __future__ import annotations

import math

import numpy as np

from newsrec_cli.diagnose.forward import ModelOutputs
from newsrec_cli.diagnose.report import Check, Report, Status, Table
from newsrec_cli.diagnose.saturation import SATURATED_FAIL, SATURATED_WARN, Scoring
from newsrec_cli.diagnose.stats import saturation, summary

TEMPERATURES: tuple[float, ...] = (1, 2, 5, 10, 20)  # scales (inverse temperatures) tried on the cosines
COLLAPSE_SPREAD = 0.01  # within-impression std of cosines below this: candidates look the same to the user
SIMILARITY_PERCENTILES = (1, 50, 99)


def similarities(out: ModelOutputs) -> dict[str, np.ndarray]:
    """Per candidate: the raw dot u.n, the dot head's u.n/sqrt(D), and the cosine after L2 normalisation."""
    user = out.users[out.user_of_candidate].astype(np.float64)  # (C, D)
    news = out.news.astype(np.float64)  # (C, D)
    dot = (user * news).sum(axis=1)
    norms = np.linalg.norm(user, axis=1) * np.linalg.norm(news, axis=1)
    cosine = dot / np.maximum(norms, 1e-12)
    return {"dot": dot, "dot_scaled": dot / math.sqrt(out.users.shape[1]), "cosine": cosine}


def norm_table(out: ModelOutputs) -> Table:
    table = Table("Vector norms (L2)", ["vectors", "count", "min", "p50", "mean", "max", "std"])
    for name, matrix in (("users", out.users), ("candidate news", out.news)):
        s = summary(np.linalg.norm(matrix.astype(np.float64), axis=1), (50,))
        table.add(name, s["count"], s["min"], s["p50"], s["mean"], s["max"], s["std"])
    return table


def similarity_table(sims: dict[str, np.ndarray]) -> Table:
    pct = [f"p{q}" for q in SIMILARITY_PERCENTILES]
    table = Table("Similarity of user and candidate", ["similarity", "min", *pct, "max", "mean", "std"])
    names = {
        "dot": "u.n (un-normalised dot)",
        "dot_scaled": "u.n / sqrt(D) (dot head, scale 1)",
        "cosine": "cosine (after L2 normalisation)",
    }
    for key, label in names.items():
        s = summary(sims[key], SIMILARITY_PERCENTILES)
        table.add(label, s["min"], *(s[p] for p in pct), s["max"], s["mean"], s["std"])
    return table


def temperature_table(sims: dict[str, np.ndarray]) -> Table:
    """For each scale t: logits t x cosine (normalised) and t x u.n/sqrt(D) (un-normalised)."""
    table = Table(
        "Temperatures: logit = t x similarity",
        [
            "t",
            "cosine: min",
            "cosine: max",
            "cosine: saturated",
            "cosine: mean p(1-p)",
            "dot: min",
            "dot: max",
            "dot: saturated",
            "dot: mean p(1-p)",
        ],
        percent=("cosine: saturated", "dot: saturated"),
    )
    for t in TEMPERATURES:
        row: list[float] = [t]
        for key in ("cosine", "dot_scaled"):
            logits = t * sims[key]
            sat = saturation(logits)
            row += [float(logits.min()), float(logits.max()), sat["saturated"], sat["grad_factor"]]
        table.add(*row)
    return table


def best_scale(cosine: np.ndarray) -> float:
    """The largest scale of TEMPERATURES whose cosine logits saturate less than SATURATED_WARN."""
    fitting = [t for t in TEMPERATURES if saturation(t * cosine)["saturated"] < SATURATED_WARN]
    return float(max(fitting)) if fitting else float(min(TEMPERATURES))


def within_spread(cosine: np.ndarray, offsets: np.ndarray) -> float:
    """Median over impressions of the std of the cosines of its candidates."""
    counts = np.diff(offsets)
    imp = np.repeat(np.arange(len(counts)), counts)
    mean = np.bincount(imp, weights=cosine, minlength=len(counts)) / np.maximum(counts, 1)
    var = np.bincount(imp, weights=(cosine - mean[imp]) ** 2, minlength=len(counts)) / np.maximum(counts, 1)
    return float(np.median(np.sqrt(var))) if len(counts) else float("nan")


def cosine_checks(out: ModelOutputs, scoring: Scoring, sims: dict[str, np.ndarray]) -> list[Check]:
    checks: list[Check] = []
    scale = best_scale(sims["cosine"])
    amplification = float(np.median(np.abs(sims["dot_scaled"]) / np.maximum(np.abs(sims["cosine"]), 1e-12)))
    current = saturation(out.logits)["saturated"]
    status = (
        Status.FAIL if current >= SATURATED_FAIL else Status.WARN if current >= SATURATED_WARN else Status.OK
    )
    fix = ""
    if status > Status.OK:
        fix = (
            f'L2-normalise (train.scoring = "cosine") with a scale of about {scale:g}'
            if scoring.kind == "dot"
            else f"lower the cosine scale from {scoring.scale:.3g} to about {scale:g}"
        )
    checks.append(
        Check(
            "current temperature",
            status,
            {"saturated": current, "scale": scoring.scale, "suggested_cosine_scale": scale},
            f"{scoring.describe()}: {current:.1%} of the logits saturate the sigmoid"
            + (
                f"; the vector norms multiply each cosine by about {amplification:.3g}"
                if scoring.kind == "dot"
                else ""
            ),
            fix,
        )
    )
    spread = within_spread(sims["cosine"], out.offsets)
    collapsed = spread < COLLAPSE_SPREAD
    checks.append(
        Check(
            "cosine spread",
            Status.WARN if collapsed else Status.OK,
            spread,
            f"median std of the cosines within an impression is {spread:.3g}"
            + (": every candidate looks alike to the user (collapsed vectors)" if collapsed else ""),
            "check that the news inputs differ (newsrec diagnose data) and that training moved the model"
            if collapsed
            else "",
        )
    )
    return checks


def diagnose_cosine(out: ModelOutputs, scoring: Scoring) -> Report:
    report = Report("cosine")
    report.notes.append(scoring.describe())
    report.notes.append(
        f"{len(out.offsets) - 1} impressions, {len(out.logits)} candidates, D = {out.users.shape[1]}"
    )
    sims = similarities(out)
    report.tables += [norm_table(out), similarity_table(sims), temperature_table(sims)]
    report.checks += cosine_checks(out, scoring, sims)
    report.values = {
        "cosine": summary(sims["cosine"]),
        "dot": summary(sims["dot"]),
        "user_norm": summary(np.linalg.norm(out.users, axis=1)),
        "news_norm": summary(np.linalg.norm(out.news, axis=1)),
        "scoring": vars(scoring),
    }
    return report
