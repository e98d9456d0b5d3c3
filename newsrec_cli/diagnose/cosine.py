"""`newsrec diagnose cosine`: vector norms, cosines, and the logit range each temperature would give.

A dot product of un-normalised vectors is the cosine multiplied by the two norms, so large norms
push logits out of the sigmoid's working range however similar the vectors are. After L2
normalisation the logit is `scale x cosine`, bounded by +-scale: the temperature table shows, for
this model's actual vectors, which scale keeps the logits spread out but unsaturated.

Similarities come from the model's own head classes at scale 1 (`ScoringHead("dot")`,
`ScoringHead("cosine")`), so the table stays true when a head's formula changes.
"""

from __future__ import annotations

import numpy as np
import torch

from newsrec_cli.diagnose.forward import ModelOutputs
from newsrec_cli.diagnose.report import Check, Report, Status, Table
from newsrec_cli.diagnose.saturation import SATURATED_FAIL, SATURATED_WARN, Scoring
from newsrec_cli.diagnose.stats import saturation, summary
from newsrec_cli.model.scorer import ScoringHead

TEMPERATURES: tuple[float, ...] = (1, 2, 5, 10, 20)  # scales (inverse temperatures) tried on each similarity
COLLAPSE_SPREAD = 0.01  # within-impression std of cosines below this: candidates look the same to the user
SIMILARITY_PERCENTILES = (1, 50, 99)
SIMILARITIES = {  # key -> how the tables name it
    "cosine": "cosine (L2-normalised)",
    "dot_head": "dot head (scale 1)",
    "raw_dot": "u.n (raw, un-normalised)",
}


@torch.no_grad()
def similarities(out: ModelOutputs) -> dict[str, np.ndarray]:
    """Per candidate: the cosine and dot heads' similarities at scale 1, and the raw dot product u.n."""
    user = torch.from_numpy(out.users[out.user_of_candidate]).double()[:, None, :]  # (C, 1, D)
    news = torch.from_numpy(out.news).double()[:, None, :]  # (C, 1, D)
    dim = out.users.shape[1]
    sims = {}
    for key, kind in (("cosine", "cosine"), ("dot_head", "dot")):
        head = ScoringHead(kind, dim, init_scale=1.0).double()
        sims[key] = head(user[:, 0], news)[:, 0].numpy()
    sims["raw_dot"] = (user[:, 0] * news[:, 0]).sum(dim=1).numpy()
    return sims


def norm_table(out: ModelOutputs) -> Table:
    table = Table("Vector norms (L2)", ["vectors", "count", "min", "p50", "mean", "max", "std"])
    for name, matrix in (("users", out.users), ("candidate news", out.news)):
        s = summary(np.linalg.norm(matrix.astype(np.float64), axis=1), (50,))
        table.add(name, s["count"], s["min"], s["p50"], s["mean"], s["max"], s["std"])
    return table


def similarity_table(sims: dict[str, np.ndarray]) -> Table:
    pct = [f"p{q}" for q in SIMILARITY_PERCENTILES]
    table = Table("Similarity of user and candidate", ["similarity", "min", *pct, "max", "mean", "std"])
    for key, label in SIMILARITIES.items():
        s = summary(sims[key], SIMILARITY_PERCENTILES)
        table.add(label, s["min"], *(s[p] for p in pct), s["max"], s["mean"], s["std"])
    return table


def temperature_table(sims: dict[str, np.ndarray]) -> Table:
    """For each similarity and scale t: the range of t x similarity and how much of it saturates."""
    table = Table(
        "Temperatures: logit = t x similarity",
        ["similarity", "t", "logit min", "logit max", "saturated", "mean p(1-p)"],
        percent=("saturated",),
    )
    for key, label in SIMILARITIES.items():
        for t in TEMPERATURES:
            logits = t * sims[key]
            sat = saturation(logits)
            table.add(
                label, t, float(logits.min()), float(logits.max()), sat["saturated"], sat["grad_factor"]
            )
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


def _grade(share: float) -> Status:
    return Status.FAIL if share >= SATURATED_FAIL else Status.WARN if share >= SATURATED_WARN else Status.OK


def cosine_checks(out: ModelOutputs, scoring: Scoring, sims: dict[str, np.ndarray]) -> list[Check]:
    checks: list[Check] = []
    scale = best_scale(sims["cosine"])
    # How much the norms inflate the similarity this head sees, relative to the cosine.
    head_sim = sims["dot_head"] if scoring.kind == "dot" else sims["raw_dot"]
    amplification = float(np.median(np.abs(head_sim) / np.maximum(np.abs(sims["cosine"]), 1e-12)))
    current = saturation(out.logits)["saturated"]
    status = _grade(current)
    fix = ""
    if status > Status.OK:
        fix = (
            f"lower the cosine scale from {scoring.scale:.3g} to about {scale:g}"
            if scoring.normalized
            else f'L2-normalise (train.scoring = "cosine") with a scale of about {scale:g}'
        )
    message = f"{scoring.describe()}: {current:.1%} of the logits saturate the sigmoid"
    if not scoring.normalized:
        message += f"; the vector norms multiply each cosine by about {amplification:.3g}"
    checks.append(
        Check(
            "current temperature",
            status,
            {
                "saturated": current,
                "scale": scoring.scale,
                "suggested_cosine_scale": scale,
                "norm_product": amplification,
            },
            message,
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
    dim = out.users.shape[1]
    report.notes.append(f"{len(out.offsets) - 1} impressions, {len(out.logits)} candidates, D = {dim}")
    sims = similarities(out)
    report.tables += [norm_table(out), similarity_table(sims), temperature_table(sims)]
    report.checks += cosine_checks(out, scoring, sims)
    report.values = {
        **{key: summary(sims[key]) for key in SIMILARITIES},
        "user_norm": summary(np.linalg.norm(out.users, axis=1)),
        "news_norm": summary(np.linalg.norm(out.news, axis=1)),
        "scoring": vars(scoring),
    }
    return report
