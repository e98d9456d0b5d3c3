"""`newsrec diagnose gradients`: gradient norms per module over a few real training steps.

The steps are the trainer's own: its batches (one click + K sampled non-clicks per row, recent
history), its loss on logits, AdamW at the run's learning rate, its clipping. Norms are taken
before clipping. A module whose gradient is tiny but not zero is *vanishing* (the saturation
failure looks like this); one that is huge is *exploding*; one whose gradient is exactly zero
took no part in these batches (e.g. the "empty history" vector when every user has clicks).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from newsrec_cli.diagnose.report import Check, Report, Status, Table
from newsrec_cli.errors import InputError
from newsrec_cli.mind import Impressions
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.objective.batching import EpochBatches, plan_epoch
from newsrec_cli.objective.losses import batch_loss
from newsrec_cli.objective.param_groups import param_groups
from newsrec_cli.objective.samples import click_samples
from newsrec_cli.settings import TrainSettings

VANISHING = 1e-7
EXPLODING = 1e3
IGNORED_WEIGHT = 0.05  # a modality whose mean fusion weight is below this barely reaches the news vector
LOSS_WARN, LOSS_FAIL = 1.5, 5.0  # first loss over the loss of uninformative scores (all logits 0)


def module_of(param_name: str) -> str:
    """Group a parameter by its module two levels down (news_encoder.text.net.0.weight ->
    news_encoder.text); a parameter held directly by a top module keeps its name (scorer.log_scale)."""
    parts = param_name.split(".")
    return ".".join(parts[:2])


def gradient_norms(model: NewsRecommender) -> dict[str, float | None]:
    """L2 norm of the gradient of each module group (None: no parameter of it got a gradient)."""
    squares: dict[str, float | None] = {}  # insertion order = the model's parameter order
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = module_of(name)
        squares.setdefault(group, None)
        if param.grad is not None:
            squares[group] = (squares[group] or 0.0) + float(param.grad.detach().float().pow(2).sum())
    return {g: None if sq is None else math.sqrt(sq) for g, sq in squares.items()}


def train_steps(
    model: NewsRecommender,
    settings: TrainSettings,
    imps: Impressions,
    *,
    steps: int,
    seed: int,
    user_rows: np.ndarray | None = None,
) -> tuple[list[dict[str, float | None]], list[float], list[dict[str, float] | None]]:
    """Run `steps` training steps; per step the gradient norms, the loss and the fusion weights."""
    samples = click_samples(imps)
    if len(samples) == 0:
        raise InputError(
            "no click with an unclicked candidate beside it in the sampled training impressions: "
            "nothing to train on",
            path=imps.source or None,
        )
    plan = plan_epoch(samples, settings.negatives, seed, 0)
    batches = EpochBatches(
        imps, samples, plan, batch_size=settings.batch_size, history=settings.history, user_rows=user_rows
    )
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(
        param_groups(model, settings.weight_decay, settings.finetune_lr / settings.lr), lr=settings.lr
    )
    for group in optimizer.param_groups:  # as the trainer does: the score's scale learns faster
        group["lr"] = settings.lr * group.get("lr_scale", 1.0)
    torch.manual_seed(seed)
    model.train()
    norms, losses, weights = [], [], []
    for step in range(steps):
        batch = {k: v.to(device) for k, v in batches[step % len(batches)].items()}
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(settings, model, batch)  # the trainer's loss, auxiliary terms included
        loss.backward()
        norms.append(gradient_norms(model))
        losses.append(float(loss.detach()))
        weights.append(model.fusion_weights())
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
        optimizer.step()
    model.eval()
    return norms, losses, weights


def chance_loss(settings: TrainSettings) -> float:
    """The loss when every logit is 0 (a model that knows nothing, and is not sure of it either)."""
    k = settings.negatives
    if settings.loss == "listwise":
        return math.log(1 + k)
    if settings.loss == "infonce":
        return math.log(settings.batch_size * (1 + k))  # every candidate of the batch competes
    if settings.loss == "pointwise":
        weight = settings.pos_weight or 1.0
        return math.log(2) * (weight + k) / (1 + k)
    return 0.5**settings.gamma * math.log(2)  # focal, p_t = 1/2 everywhere


def _flag(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "no gradient"
    top = max(known)
    if top == 0.0:
        return "unused"
    if not math.isfinite(top) or top > EXPLODING:
        return "exploding"
    if top < VANISHING:
        return "vanishing"
    return "ok"


def diagnose_gradients(
    norms: list[dict[str, float | None]],
    losses: list[float],
    weights: list[dict[str, float] | None],
    chance: float | None = None,
) -> Report:
    """Gradient, loss and fusion checks; `chance` is the loss of all-zero logits (see `chance_loss`)."""
    report = Report("gradients")
    steps = len(norms)
    groups = list(norms[0]) if norms else []
    table = Table(
        "Gradient norm per module (before clipping)",
        ["module", *(f"step {i + 1}" for i in range(steps)), "mean", "flag"],
    )
    flags: dict[str, list[str]] = defaultdict(list)
    for g in groups:
        values = [n.get(g) for n in norms]
        known = [v for v in values if v is not None]
        flag = _flag(values)
        flags[flag].append(g)
        table.add(g, *values, float(np.mean(known)) if known else None, flag)
    report.tables.append(table)
    loss_table = Table("Loss per step", ["step", "loss"])
    for i, loss in enumerate(losses):
        loss_table.add(i + 1, loss)
    report.tables.append(loss_table)
    report.checks += _gradient_checks(flags, losses)
    if chance is not None and losses and math.isfinite(losses[0]):
        report.checks.append(_first_loss_check(losses[0], chance))
    fusion = _mean_weights(weights)
    if fusion is None:
        report.notes.append("this fusion has no per-modality weights (concat)")
    else:
        wt = Table("Mean fusion weight per modality", ["modality", "weight"], percent=("weight",))
        for name, w in fusion.items():
            wt.add(name, w)
        report.tables.append(wt)
        report.checks.append(_fusion_check(fusion))
    report.values = {"losses": losses, "norms": norms, "fusion_weights": fusion}
    return report


def _gradient_checks(flags: dict[str, list[str]], losses: list[float]) -> list[Check]:
    checks = []
    bad_loss = [i + 1 for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad_loss:
        checks.append(
            Check(
                "finite loss",
                Status.FAIL,
                bad_loss,
                f"the loss is NaN or Inf at steps {bad_loss}",
                "run newsrec diagnose data and saturation; lower train.lr",
            )
        )
    vanishing, exploding = flags.get("vanishing", []), flags.get("exploding", [])
    checks.append(
        Check(
            "vanishing gradients",
            Status.FAIL if vanishing else Status.OK,
            vanishing,
            f"gradient norm below {VANISHING:g} at every step: {', '.join(vanishing)}"
            if vanishing
            else f"every module's gradient is above {VANISHING:g} (or exactly zero when unused)",
            "saturated scores stop the gradient: run newsrec diagnose saturation and follow its fix"
            if vanishing
            else "",
        )
    )
    checks.append(
        Check(
            "exploding gradients",
            Status.FAIL if exploding else Status.OK,
            exploding,
            f"gradient norm above {EXPLODING:g}: {', '.join(exploding)}"
            if exploding
            else f"no module's gradient is above {EXPLODING:g}",
            "lower train.lr, keep train.clip, and check the inputs for huge values (newsrec diagnose data)"
            if exploding
            else "",
        )
    )
    if flags.get("no gradient"):
        names = ", ".join(flags["no gradient"])
        checks.append(
            Check(
                "modules without gradient",
                Status.WARN,
                flags["no gradient"],
                f"trainable but never reached by the loss: {names}",
                "a modality that is built but not used wastes memory; check the train settings",
            )
        )
    return checks


def _first_loss_check(loss: float, chance: float) -> Check:
    ratio = loss / chance
    status = Status.FAIL if ratio > LOSS_FAIL else Status.WARN if ratio > LOSS_WARN else Status.OK
    return Check(
        "first loss",
        status,
        {"loss": loss, "chance": chance, "ratio": ratio},
        f"the first step's loss is {loss:.4g}, {ratio:.3g} x the {chance:.4g} of all-zero logits"
        + (": the scores start confidently wrong (saturated)" if status > Status.OK else ""),
        "run newsrec diagnose saturation and follow its fix" if status > Status.OK else "",
    )


def _mean_weights(weights: list[dict[str, float] | None]) -> dict[str, float] | None:
    known = [w for w in weights if w]
    if not known:
        return None
    return {name: float(np.mean([w[name] for w in known])) for name in known[0]}


def _fusion_check(fusion: dict[str, float]) -> Check:
    ignored = [name for name, w in fusion.items() if w < IGNORED_WEIGHT]
    text = ", ".join(f"{name} {w:.1%}" for name, w in fusion.items())
    if ignored:
        return Check(
            "fusion weights",
            Status.WARN,
            fusion,
            f"nearly ignored (below {IGNORED_WEIGHT:.0%}): {', '.join(ignored)} ({text})",
            "check the inputs of these modalities (coverage in newsrec diagnose data) or turn them off",
        )
    return Check("fusion weights", Status.OK, fusion, f"mean weight per modality: {text}")


@torch.no_grad()
def candidate_attention(
    model: NewsRecommender,
    settings: TrainSettings,
    imps: Impressions,
    *,
    seed: int,
    user_rows: np.ndarray | None = None,
) -> tuple[Table, Check] | None:
    """How a candidate-aware user encoder spreads each candidate's attention over the clicks, on
    one training batch: the largest weight and the entropy against uniform (None for NRMS)."""
    samples = click_samples(imps)
    if len(samples) == 0:
        return None
    plan = plan_epoch(samples, settings.negatives, seed, 0)
    batch = EpochBatches(
        imps, samples, plan, batch_size=settings.batch_size, history=settings.history, user_rows=user_rows
    )[0]
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    model.eval()
    clicked = model.encode_news(batch["history"])
    user = model.encode_user_state(clicked, batch["history_mask"], batch.get("users"))
    weights = model.history_attention(user, model.encode_news(batch["candidates"]))
    if weights is None:
        return None
    mask = batch["history_mask"][:, None, :].expand_as(weights)  # (B, K, H)
    clicks = mask.sum(dim=-1).float()  # (B, K)
    usable = clicks > 1  # with one click there is nothing to choose
    if not bool(usable.any()):
        return None
    w = weights.float().clamp_min(1e-12)
    entropy = -(w * w.log() * mask).sum(dim=-1) / clicks.log().clamp_min(1e-12)  # 1 = uniform
    top = weights.float().max(dim=-1).values
    table = Table("Candidate attention over the clicks (one batch)", ["statistic", "value"])
    table.add("candidates with 2+ clicks", int(usable.sum()))
    table.add("mean largest weight", float(top[usable].mean()))
    table.add("mean uniform weight (1 / clicks)", float((1 / clicks[usable]).mean()))
    table.add("mean entropy / uniform entropy", float(entropy[usable].mean()))
    spread = float(entropy[usable].mean())
    check = Check(
        "candidate attention",
        Status.OK,
        {"largest": float(top[usable].mean()), "entropy_ratio": spread},
        f"each candidate puts on average {float(top[usable].mean()):.0%} of its attention on one click "
        f"(uniform would be {float((1 / clicks[usable]).mean()):.0%}); entropy {spread:.2f} of uniform",
        "",
    )
    return table, check
