"""The training loop of `newsrec train`, as a plain function tests and notebooks import.

    result = train("data/mind", "runs/nrms", store="data/mind/vectors", settings=TrainSettings())

Phases: read the data and split off validation (the dataset's valid/ folder, else by time, by
impression only for data without usable times) -> build vocabularies, per-news inputs and the
model -> per epoch: a seeded plan of clicks and negatives, steps (learning rate, forward,
backward, clip, step) -> validate (AUC, MRR, nDCG per impression) -> best model.pt, last.pt,
history.jsonl, TensorBoard. `resume=True` continues from last.pt exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from newsrec_cli.errors import InputError, NewsrecError, SettingsError
from newsrec_cli.evaluate.metrics import compute_metrics
from newsrec_cli.mind import Impressions, load_dataset
from newsrec_cli.model.content_prior import ContentPrior
from newsrec_cli.model.inference import autocast_for, score_with_model
from newsrec_cli.model.inputs import needed_news
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.model.scorer import LR_SCALE, ScoringHead
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings
from newsrec_cli.train import checkpoint
from newsrec_cli.train.batching import EpochBatches, EpochPlan, plan_epoch
from newsrec_cli.train.finetune import refresh
from newsrec_cli.train.losses import batch_loss
from newsrec_cli.train.run import (
    CONFIG,
    HISTORY,
    LAST,
    MODEL,
    NEWS_TABLE,
    TENSORBOARD,
    build_model,
    clear_run,
    prepare_context,
    read_config,
    resolve_device,
    run_config,
    save_news_table,
    settings_of,
    write_json,
)
from newsrec_cli.train.samples import click_samples
from newsrec_cli.train.schedule import Plateau, lr_at

TB_EVERY = 50  # steps between TensorBoard loss points


class TrainingInterrupted(NewsrecError):
    """Ctrl-C (or a callback) stopped training; last.pt holds the exact position."""

    exit_code = 130


class TrainingDiverged(NewsrecError):
    """The loss became NaN or infinite."""


@dataclass
class EpochRecord:
    """One line of history.jsonl: an epoch (or the part of one before a stop) and its validation."""

    epoch: int
    steps: int
    global_step: int
    train_loss: float
    metrics: dict[str, float]
    valid_impressions: int
    skipped_auc: int
    lr: float
    seconds: float
    samples_per_s: float
    partial: bool = False
    best: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = {k: (None if math.isnan(v) else v) for k, v in self.metrics.items()}
        data["train_loss"] = None if math.isnan(self.train_loss) else self.train_loss  # epoch 0
        return data


@dataclass
class TrainInfo:
    """What the run is about to do, for the command to show before the first step."""

    run_dir: Path
    device: str
    validation: str
    train_impressions: int
    valid_impressions: int
    clicks: int
    dropped_clicks: int
    news: int
    news_with_id: int
    modalities: list[str]
    parameters: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    missing_text: list[str] = field(default_factory=list)
    resumed_at: tuple[int, int] | None = None  # (epoch, step in epoch), 1-based epoch
    threads: int = 1
    unverified_texts: int = 0  # news whose store vector has no text fingerprint to check
    finetune_text: int = 0  # text layers fine-tuned (--finetune-text), 0 = frozen store vectors
    cached_tokens: int = 0  # tokens of the news texts the fine-tuned layers run over
    cached_news: int = 0
    step_tokens: int = 0  # at most this many tokens go through the fine-tuned layers per step


@dataclass
class TrainResult:
    run_dir: Path
    info: TrainInfo
    history: list[EpochRecord]
    best_epoch: int | None
    best_metrics: dict[str, float]
    stopped: str  # epochs | early_stopping | max_steps | time_budget | already_finished
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        info = asdict(self.info)
        info["run_dir"] = str(self.info.run_dir)
        info["missing_text"] = {"count": len(self.info.missing_text), "first": self.info.missing_text[:5]}
        return {
            "run_dir": str(self.run_dir),
            "best_epoch": self.best_epoch,
            "best_metrics": {k: (None if math.isnan(v) else v) for k, v in self.best_metrics.items()},
            "stopped": self.stopped,
            "seconds": round(self.seconds, 2),
            "info": info,
            "history": [r.to_dict() for r in self.history],
        }


class TrainCallbacks:
    """Hooks the command layer overrides to show progress; the engine never prints."""

    def on_start(self, info: TrainInfo) -> None: ...

    def on_epoch_start(self, epoch: int, steps: int, done: int) -> None: ...

    def on_step(self, done: int, loss: float, samples_per_s: float) -> bool:
        """After each step; return True to stop (saved to last.pt, resumable)."""
        return False

    def on_validate(self, epoch: int, impressions: int) -> None: ...

    def on_epoch_end(self, record: EpochRecord) -> None: ...


@dataclass
class _State:
    """Counters saved in last.pt with the weights, optimizer and RNG states."""

    epoch: int = 0  # 0-based epoch in progress
    step_in_epoch: int = 0  # next step of that epoch
    global_step: int = 0
    best_auc: float = -math.inf
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    epoch_seconds: float = 0.0
    finished: bool = False
    stop_reason: str = ""


def param_groups(model: nn.Module, weight_decay: float, text_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: not on embeddings, norms, biases or single vectors.

    The score's scale and the content prior's weight get `LR_SCALE` times the learning rate (key
    "lr_scale" of their group); the fine-tuned text layers (`--finetune-text`) get
    `text_lr_scale` times it (--finetune-lr / --lr: a pretrained transformer wants a far smaller
    step than freshly initialised layers).
    """
    tower = getattr(getattr(model, "news_encoder", None), "tower", None)
    text_params = {id(p) for p in tower.parameters()} if tower is not None else set()
    decay, plain, scale, text_decay, text_plain = [], [], [], [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if id(param) in text_params:
                (text_decay if param.ndim >= 2 else text_plain).append(param)
                continue
            if isinstance(module, ScoringHead | ContentPrior) and name.startswith("raw_"):
                scale.append(param)
            elif isinstance(module, nn.Embedding) or param.ndim < 2:
                plain.append(param)
            else:
                decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    if scale:
        groups.append({"params": scale, "weight_decay": 0.0, "lr_scale": LR_SCALE})
    if text_decay or text_plain:
        groups.append({"params": text_decay, "weight_decay": weight_decay, "lr_scale": text_lr_scale})
        groups.append({"params": text_plain, "weight_decay": 0.0, "lr_scale": text_lr_scale})
    return groups


@torch.no_grad()
def validate(
    model: NewsRecommender,
    imps: Impressions,
    settings: TrainSettings,
    user_rows: np.ndarray | None = None,
) -> Any:
    """Official MIND metrics (per impression, averaged) of the model on labelled impressions."""
    refresh(model)  # a fine-tuned text tower: every news vector from its current layers, once
    scores = score_with_model(
        model,
        imps,
        history=settings.history,
        batch_size=settings.eval_batch_size,
        user_rows=user_rows,
        bf16=settings.bf16,
    )
    return compute_metrics(scores, imps.labels.astype(np.int64), imps.candidate_offsets)


def _negative_scores(
    model: NewsRecommender, imps: Impressions, settings: TrainSettings, user_rows: np.ndarray | None
) -> np.ndarray:
    """The current model's logit of every unclicked candidate of the training impressions, in
    the order of `click_samples(imps).negatives` (for hard negatives)."""
    refresh(model)
    scores = score_with_model(
        model,
        imps,
        history=settings.history,
        batch_size=settings.eval_batch_size,
        user_rows=user_rows,
        bf16=settings.bf16,
    )
    return scores[imps.labels == 0]


@contextmanager
def _sigint_flag() -> Iterator[threading.Event]:
    """First Ctrl-C asks the loop to stop after the current step; a second one aborts at once."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _user_rows(settings: TrainSettings, vocabs: Any, imps: Impressions) -> np.ndarray | None:
    if not settings.use_user_id or vocabs.users is None:
        return None
    lookup = np.fromiter(
        (vocabs.users.get(u) for u in imps.user_vocab.ids), dtype=np.int64, count=len(imps.user_vocab)
    )
    return lookup[imps.users.astype(np.int64)]


def _resume_settings(
    out: Path, settings: TrainSettings
) -> tuple[dict[str, Any], TrainSettings, DataSettings, GraphSettings]:
    """Settings stored in the run; only stop and hardware settings may change on resume."""
    config = read_config(out)
    stored, data_settings, graph_settings = settings_of(config, out / CONFIG)
    changeable = ("time_budget", "device", "workers", "threads", "eval_batch_size")
    merged = stored.model_copy(update={name: getattr(settings, name) for name in changeable})
    return config, merged, data_settings, graph_settings


def train(
    data: str | Path | None,
    out: str | Path,
    *,
    store: str | Path | None = None,
    graph: str | Path | None = None,
    settings: TrainSettings | None = None,
    data_settings: DataSettings | None = None,
    graph_settings: GraphSettings | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: TrainCallbacks | None = None,
) -> TrainResult:
    """Train a recommender on a MIND dataset and write the run directory `out`.

    With `resume`, the settings, data, store and graph come from `out`'s config.json (only the
    time budget and hardware settings given here apply) and training continues from last.pt, or
    from step 0 when the run was stopped before its first last.pt. `overwrite` deletes the run
    files already in `out` and starts over.
    """
    out = Path(out)
    callbacks = callbacks or TrainCallbacks()
    settings = settings or TrainSettings()
    data_settings = data_settings or DataSettings()
    graph_settings = graph_settings or GraphSettings()
    saved: dict[str, Any] | None = None
    trained_dim: int | None = None  # on resume, the store must keep the dimension the run used
    if resume and overwrite:
        raise SettingsError("train: --resume continues the run in --out, --overwrite deletes it; choose one")
    if resume:
        config, settings, data_settings, graph_settings = _resume_settings(out, settings)
        # A run killed before its first last.pt has only config.json: it restarts from step 0.
        saved = checkpoint.load(out / LAST) if (out / LAST).exists() else None
        data = Path(data) if data else Path(config["data"]["path"])
        store = store or config["embeddings"]["path"]
        graph = graph or config["graph"]["path"]
        trained_dim = config["embeddings"].get("dim")
    elif overwrite:
        clear_run(out)
    elif (out / CONFIG).exists() or (out / LAST).exists():
        raise InputError(
            "already holds a run: continue it with --resume, start over with --overwrite, "
            "or choose another --out",
            path=out,
        )
    if data is None:
        raise SettingsError("train: a dataset folder is needed")
    data = Path(data)
    started = time.monotonic()

    # -- hardware and seeds
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)

    # -- data: training impressions, validation impressions (never a random split of candidates)
    dataset = load_dataset(data, on_bad_lines=data_settings.on_bad_lines)
    train_imps, valid_imps, validation = dataset.train_valid(
        data_settings.split, data_settings.valid_days, data_settings.valid_fraction, data_settings.seed
    )
    for name, imps in (("training", train_imps), ("validation", valid_imps)):
        if not imps.labeled:
            raise InputError(
                f"the {name} impressions have no click labels (NewsID-0/1)", path=imps.source or data
            )
    if settings.valid_impressions and len(valid_imps) > settings.valid_impressions:
        pick = np.random.default_rng(settings.seed).choice(
            len(valid_imps), settings.valid_impressions, replace=False
        )
        valid_imps = valid_imps.subset(np.sort(pick))
        validation += f"; validating on a fixed sample of {settings.valid_impressions} impressions"
    samples = click_samples(train_imps)
    if len(samples) == 0:
        raise InputError("no click with an unclicked candidate beside it: nothing to train on", path=data)

    # -- model inputs: vocabularies, text vectors, graph nodes, categories
    context, lacking = prepare_context(
        settings, dataset, train_imps, valid_imps, store=store, graph=graph, trained_dim=trained_dim
    )
    vocabs, features, news_graph = context.vocabs, context.features, context.graph
    torch.manual_seed(settings.seed)
    model = build_model(settings, graph_settings, context).to(device)
    model.attach(features)
    cached_tokens = cached_news = 0
    if model.news_encoder.tower is not None:
        # Tokenise once and run the frozen text layers once per news; a step runs only the last K.
        from newsrec_cli.train.finetune import cache_texts, store_template

        cached_tokens = cache_texts(
            model,
            dataset.news,
            dataset.news_vocab.ids,
            needed_news(train_imps, valid_imps),
            store_template(context.text_meta or {}),
        )
        cached_news = len(model.news_encoder.tower.cached_news)
    # fused: one kernel over all parameters; the for-loop version costs ~100 ms a step on CPU at
    # MIND-small scale (the news-ID table alone holds millions of weights).
    optimizer = torch.optim.AdamW(
        param_groups(model, settings.weight_decay, settings.finetune_lr / settings.lr),
        lr=settings.lr,
        fused=device.type in ("cpu", "cuda"),
    )
    train_users = _user_rows(settings, vocabs, train_imps)
    valid_users = _user_rows(settings, vocabs, valid_imps)

    steps_per_epoch = -(-len(samples) // settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    if settings.max_steps:
        total_steps = min(total_steps, settings.max_steps)
    warmup_steps = int(settings.warmup * total_steps)
    plateau = Plateau()
    state = _State()
    saved_plan: EpochPlan | None = None  # with hard negatives, the plan depends on the model: kept in last.pt

    # -- the run directory
    out.mkdir(parents=True, exist_ok=True)
    if saved is None:
        vocabs.save(out)
        save_news_table(out / NEWS_TABLE, dataset.news_vocab, dataset.news)
        extra = {
            "missing_text": {"policy": settings.missing, "count": len(lacking), "first": lacking[:20]},
            "samples": {"clicks": len(samples), "dropped_clicks": samples.dropped},
        }
        write_json(
            out / CONFIG,
            run_config(
                data=data,
                store=Path(store) if store else None,
                graph=Path(graph) if news_graph is not None else None,
                settings=settings,
                data_settings=data_settings,
                graph_settings=graph_settings,
                validation=validation,
                model=model,
                context=context,
                extra=extra,
            ),
        )
        (out / HISTORY).write_text("", encoding="utf-8")
    else:
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"last.pt does not fit this run ({str(exc).splitlines()[0]})", path=out / LAST
            ) from None
        plateau.load_state_dict(saved["plateau"])
        state = _State(**saved["state"])
        if "plan" in saved:
            saved_plan = EpochPlan(saved["plan"]["order"].numpy(), saved["plan"]["negatives"].numpy())
        torch.set_rng_state(saved["rng"]["torch"])
        if device.type == "cuda" and saved["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])

    info = TrainInfo(
        run_dir=out,
        device=str(device),
        validation=validation,
        train_impressions=len(train_imps),
        valid_impressions=len(valid_imps),
        clicks=len(samples),
        dropped_clicks=samples.dropped,
        news=len(dataset.news_vocab) - 1,
        news_with_id=len(vocabs.ids) - 1,
        modalities=model.news_encoder.modalities,
        parameters=sum(p.numel() for p in model.parameters()),
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        epochs=settings.epochs,
        missing_text=lacking,
        resumed_at=(state.epoch + 1, state.step_in_epoch) if resume else None,
        threads=torch.get_num_threads(),
        unverified_texts=context.text_check.unverified if context.text_check is not None else 0,
        finetune_text=settings.finetune_text if model.news_encoder.tower is not None else 0,
        cached_tokens=cached_tokens,
        cached_news=cached_news,
        step_tokens=settings.batch_size
        * (settings.history + 1 + settings.negatives)
        * cached_tokens
        // max(cached_news, 1),
    )
    history = _read_history(out / HISTORY)
    if state.finished:
        return TrainResult(
            out,
            info,
            history,
            state.best_epoch,
            state.best_metrics,
            "already_finished",
            time.monotonic() - started,
        )

    def save_last() -> None:
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint.save(
            out / LAST,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "plateau": plateau.state_dict(),
                "state": asdict(state),
                "rng": rng,
                "settings": _settings_dict(settings, data_settings, graph_settings),
                **(
                    {
                        "plan": {
                            "order": torch.from_numpy(saved_plan.order),
                            "negatives": torch.from_numpy(saved_plan.negatives),
                        }
                    }
                    if settings.hard_negatives and saved_plan is not None
                    else {}
                ),
            },
        )

    def save_model(record: EpochRecord, partial: bool = False) -> None:
        """model.pt: the weights of the epoch `record` describes (the best so far, or provisional)."""
        checkpoint.save(
            out / MODEL,
            {
                "model": model.state_dict(),
                "epoch": record.epoch,
                "global_step": record.global_step,
                "metrics": record.to_dict()["metrics"],
                "settings": _settings_dict(settings, data_settings, graph_settings),
                **({"partial": True} if partial else {}),
            },
        )

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(
        str(out / TENSORBOARD), purge_step=state.global_step if saved is not None else None
    )
    callbacks.on_start(info)
    stop = ""
    lr = settings.lr
    if saved is None and model.prior is not None:
        # -- epoch 0: the untrained model ranks as the content baseline; a trained epoch must beat it
        callbacks.on_validate(0, len(valid_imps))
        result = validate(model, valid_imps, settings, valid_users)
        record = EpochRecord(
            epoch=0,
            steps=0,
            global_step=0,
            train_loss=math.nan,
            metrics=dict(result.values),
            valid_impressions=result.impressions,
            skipped_auc=result.skipped_auc,
            lr=0.0,
            seconds=0.0,
            samples_per_s=0.0,
            best=True,
        )
        auc = result.values.get("auc", math.nan)
        state.best_auc = auc if math.isfinite(auc) else -math.inf
        state.best_epoch, state.best_metrics = 0, dict(result.values)
        save_model(record)
        _log_epoch(writer, record)
        with (out / HISTORY).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record.to_dict()) + "\n")
        history.append(record)
        callbacks.on_epoch_end(record)
        save_last()
    try:
        with _sigint_flag() as interrupted:
            while state.epoch < settings.epochs and not stop:
                # -- one epoch (or what is left of it): a plan that depends on (seed, epoch) only
                if settings.hard_negatives and saved_plan is not None and state.step_in_epoch > 0:
                    plan = saved_plan  # resumed mid-epoch: the hard negatives the epoch began with
                else:
                    plan = plan_epoch(
                        samples,
                        settings.negatives,
                        settings.seed,
                        state.epoch,
                        hard=settings.hard_negatives,
                        scores=_negative_scores(model, train_imps, settings, train_users)
                        if settings.hard_negatives
                        else None,
                    )
                saved_plan = plan
                batches = EpochBatches(
                    train_imps,
                    samples,
                    plan,
                    batch_size=settings.batch_size,
                    history=settings.history,
                    user_rows=train_users,
                )
                loader = DataLoader(
                    batches,
                    batch_size=None,
                    sampler=range(state.step_in_epoch, len(batches)),
                    num_workers=settings.workers,
                    pin_memory=device.type == "cuda",
                    generator=torch.Generator().manual_seed(settings.seed),  # leaves the global RNG alone
                )
                callbacks.on_epoch_start(state.epoch + 1, len(batches), state.step_in_epoch)
                model.train()
                tick, seen = time.monotonic(), 0
                for batch in loader:
                    # learning rate of this step
                    lr = (
                        lr_at(
                            state.global_step,
                            base_lr=settings.lr,
                            warmup_steps=warmup_steps,
                            total_steps=total_steps,
                            schedule=settings.schedule,
                        )
                        * plateau.factor
                    )
                    for group in optimizer.param_groups:
                        group["lr"] = lr * group.get("lr_scale", 1.0)
                    # forward, backward, clip, step
                    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                    with autocast_for(device, settings.bf16):
                        loss = batch_loss(settings, model, batch)
                    loss_value = float(loss.detach())
                    if not math.isfinite(loss_value):
                        raise TrainingDiverged(
                            f"the loss became {loss_value} at step {state.global_step + 1}; lower --lr or --clip"
                        )
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    # bookkeeping
                    rows = batch["candidates"].shape[0]
                    state.step_in_epoch += 1
                    state.global_step += 1
                    state.loss_sum += loss_value * rows
                    state.loss_count += rows
                    seen += rows
                    elapsed = time.monotonic() - tick
                    if state.global_step % TB_EVERY == 0:
                        writer.add_scalar("train/loss", loss_value, state.global_step)
                        writer.add_scalar("train/lr", lr, state.global_step)
                    if callbacks.on_step(
                        state.step_in_epoch, state.loss_sum / state.loss_count, seen / max(elapsed, 1e-9)
                    ):
                        interrupted.set()
                    if interrupted.is_set():
                        stop = "interrupted"
                    elif settings.max_steps and state.global_step >= settings.max_steps:
                        stop = "max_steps"
                    elif settings.time_budget and time.monotonic() - started >= settings.time_budget:
                        stop = "time_budget"
                    if stop:
                        break
                state.epoch_seconds += time.monotonic() - tick
                if stop == "interrupted":
                    save_last()
                    raise TrainingInterrupted(
                        f"interrupted at epoch {state.epoch + 1}, step {state.step_in_epoch}: saved {out / LAST}; "
                        f"continue with: newsrec train --resume --out {out}"
                    )
                epoch_done = state.step_in_epoch >= len(batches)

                # -- validate, keep the best model, early stopping
                callbacks.on_validate(state.epoch + 1, len(valid_imps))
                result = validate(model, valid_imps, settings, valid_users)
                auc = result.values.get("auc", math.nan)
                # Part of an epoch cut by --time-budget is shown, never chosen: the next full epoch
                # would be compared with it, and an uninterrupted run never sees it. (A --max-steps
                # end is final, so it competes.)
                selectable = epoch_done or stop == "max_steps"
                better = selectable and (
                    state.best_epoch is None
                    or (math.isfinite(auc) and auc > state.best_auc + settings.min_delta)
                )
                record = EpochRecord(
                    epoch=state.epoch + 1,
                    steps=state.step_in_epoch,
                    global_step=state.global_step,
                    train_loss=state.loss_sum / max(state.loss_count, 1),
                    metrics=dict(result.values),
                    valid_impressions=result.impressions,
                    skipped_auc=result.skipped_auc,
                    lr=lr,
                    seconds=state.epoch_seconds,
                    samples_per_s=seen / max(time.monotonic() - tick, 1e-9),
                    partial=not epoch_done,
                    best=better,
                )
                if better:
                    state.best_auc = auc if math.isfinite(auc) else -math.inf
                    state.best_epoch = record.epoch
                    state.best_metrics = dict(result.values)
                    save_model(record)
                elif state.best_epoch is None:
                    # No full epoch yet: a provisional model.pt so the run can be evaluated; the
                    # first full epoch replaces it whatever its score.
                    save_model(record, partial=True)
                if epoch_done:
                    state.bad_epochs = 0 if better else state.bad_epochs + 1
                    if settings.schedule == "plateau" and math.isfinite(auc):
                        plateau.update(auc)
                    state.epoch += 1
                    state.step_in_epoch = 0
                    state.loss_sum, state.loss_count, state.epoch_seconds = 0.0, 0, 0.0
                    if state.bad_epochs >= settings.patience:
                        stop = "early_stopping"
                _log_epoch(writer, record)
                with (out / HISTORY).open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record.to_dict()) + "\n")
                history.append(record)
                callbacks.on_epoch_end(record)
                state.stop_reason = stop or ("epochs" if state.epoch >= settings.epochs else "")
                state.finished = state.stop_reason in ("epochs", "early_stopping", "max_steps")
                save_last()
                if interrupted.is_set():
                    raise TrainingInterrupted(
                        f"interrupted after validating epoch {record.epoch}: saved {out / LAST}; "
                        f"continue with: newsrec train --resume --out {out}"
                    )
    finally:
        writer.close()
    return TrainResult(
        out,
        info,
        history,
        state.best_epoch,
        state.best_metrics,
        state.stop_reason or "epochs",
        time.monotonic() - started,
    )


def _settings_dict(train: TrainSettings, data: DataSettings, graph: GraphSettings) -> dict[str, Any]:
    return {
        "train": train.model_dump(mode="json"),
        "data": data.model_dump(mode="json"),
        "graph": graph.model_dump(mode="json"),
    }


def _log_epoch(writer: Any, record: EpochRecord) -> None:
    writer.add_scalar("train/epoch_loss", record.train_loss, record.global_step)
    for name, value in record.metrics.items():
        if math.isfinite(value):
            writer.add_scalar(f"valid/{name}", value, record.global_step)
    writer.flush()


def _read_history(path: Path) -> list[EpochRecord]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line)
            raw["metrics"] = {k: (math.nan if v is None else v) for k, v in raw["metrics"].items()}
            raw["train_loss"] = math.nan if raw["train_loss"] is None else raw["train_loss"]
            records.append(EpochRecord(**raw))
    return records
