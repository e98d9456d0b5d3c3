"""The phases of training after set-up, as methods of one object that holds the run's state:

- the run directory: a new run writes its files, a resumed one restores last.pt
- an epoch: its seeded plan, then steps (learning rate, forward, backward, clip, step)
- after the steps: validation, the best model.pt, early stopping, last.pt, history.jsonl

`train()` in `loop.py` calls them in order. In a distributed run (`distributed.py`) every rank
runs the same phases: the steps go through DistributedDataParallel on the rank's share of each
batch, validation is sharded, the stop rules are agreed, and rank 0 alone writes and reports.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from newsrec_cli import clock
from newsrec_cli.errors import SettingsError
from newsrec_cli.mind.popularity import PopularityView
from newsrec_cli.model.inference import autocast_for
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.objective.batching import EpochBatches, EpochPlan, plan_epoch
from newsrec_cli.objective.losses import batch_loss
from newsrec_cli.objective.shard import BatchShard
from newsrec_cli.runs import checkpoint
from newsrec_cli.runs.config import run_config, write_json
from newsrec_cli.runs.files import CONFIG, HISTORY, LAST, MODEL, NEWS_TABLE, TENSORBOARD, save_news_table
from newsrec_cli.runs.records import (
    EpochRecord,
    TrainCallbacks,
    TrainInfo,
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    append_history,
    keep_history,
    log_epoch,
    read_history,
)
from newsrec_cli.train import determinism
from newsrec_cli.train.distributed import Ranks, rank_seed
from newsrec_cli.train.faults import planned_fault
from newsrec_cli.train.schedule import Plateau, lr_at
from newsrec_cli.train.setup import ModelParts, RunRequest, TrainingData
from newsrec_cli.train.state import (
    LoopState,
    last_payload,
    model_payload,
    position,
    restore_last,
    rng_states,
    settings_dict,
)
from newsrec_cli.train.validation import negative_scores, validate

TB_EVERY = 50  # steps between TensorBoard loss points


@dataclass
class EpochSteps:
    """What one pass over an epoch's steps did."""

    stop: str  # "" (the epoch ran to its end), interrupted, max_steps or time_budget
    steps: int  # steps of the whole epoch
    seen: int  # samples trained on in this pass
    tick: float  # time.monotonic() when the pass began


class StepLoss(nn.Module):
    """The training loss as a module's forward: DistributedDataParallel hooks `forward`."""

    def __init__(self, settings: Any, model: nn.Module) -> None:
        super().__init__()
        self.settings = settings
        self.model = model
        self.shard: BatchShard | None = None  # this rank's part of the step's batch, set per step

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch_loss(self.settings, self.model, batch, self.shard)


def wrap_ddp(settings: Any, model: NewsRecommender, device: torch.device) -> DistributedDataParallel:
    """DDP over the loss module.

    - find_unused_parameters only where a parameter can sit out a step: with a graph (the GNN's
      last layer into entity nodes never reaches a news vector) or the auxiliary category loss
      (a batch without a known category); elsewhere every parameter is used in every step.
    - buffers are neither synchronised at the start nor broadcast each step: they are the
      per-news inputs and the content prior's centre, built from the same files on every rank
      and never trained (broadcasting the text-vector table each step would dominate the step).
      `broadcast_buffers=False` is the one public switch for both: its torch 2.13 replacement,
      `forward_sync_buffers=False`, still syncs buffers at the start, and torch's own warning
      says to keep `broadcast_buffers=False` until an `init_sync_buffers` exists.
    """
    module = StepLoss(settings, model)
    unused = model.news_encoder.graph is not None or (
        settings.aux_category > 0 and model.category_head is not None
    )
    with warnings.catch_warnings():
        # The deprecation warning of broadcast_buffers (see above) is for users of torch, not ours.
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        return DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,
            find_unused_parameters=unused,
        )


class Trainer:
    """One training run from its first step (or where last.pt left it) to its stop."""

    def __init__(
        self,
        run: RunRequest,
        data: TrainingData,
        parts: ModelParts,
        device: torch.device,
        callbacks: TrainCallbacks,
        ranks: Ranks | None = None,
    ) -> None:
        self.run, self.data, self.parts, self.device, self.callbacks = run, data, parts, device, callbacks
        self.ranks = ranks or Ranks()
        self.settings = settings = run.settings
        self.model, self.optimizer = parts.model, parts.optimizer
        self.steps_per_epoch = -(-len(data.samples) // settings.batch_size)
        total = settings.epochs * self.steps_per_epoch
        self.total_steps = min(total, settings.max_steps) if settings.max_steps else total
        self.warmup_steps = int(settings.warmup * self.total_steps)
        self.plateau = Plateau()
        self.state = LoopState()
        # The epoch's plan; with hard negatives it depends on the model, so last.pt keeps it.
        self.plan: EpochPlan | None = None
        self.lr = settings.lr  # of the last step taken
        self.history: list[EpochRecord] = []
        self.writer: Any = None
        self.info: TrainInfo | None = None  # set when the run directory is open
        self.ddp: DistributedDataParallel | None = None  # set by start_ddp in a distributed run
        self.determinism = determinism.plan(device)
        self.fault = planned_fault(self.ranks.rank)  # test fault injection (faults.py), else None

    # -- the run directory --------------------------------------------------------------------

    def open_run_dir(self) -> None:
        """A new run writes its vocabularies, news table, config.json and an empty history; a
        resumed one restores weights, optimizer, counters and RNG from last.pt, and keeps the
        history that last.pt had seen. A run resumed before its first last.pt starts again from
        step 0 and keeps its config.json (the settings it was started with)."""
        run, out, ranks = self.run, self.run.out, self.ranks
        if ranks.main:
            out.mkdir(parents=True, exist_ok=True)
        if run.saved is None:
            if ranks.main:
                self._write_new_run(config=not run.resume)
            if ranks.distributed:
                torch.manual_seed(rank_seed(self.settings.seed, ranks.rank))  # each rank its own dropout
        else:
            self.state, self.plan = restore_last(
                run.saved,
                out / LAST,
                model=self.model,
                optimizer=self.optimizer,
                plateau=self.plateau,
                device=self.device,
            )
            if ranks.distributed:
                self._restore_rank_rng(run.saved["rng"])
        if ranks.main:
            if self.state.history_lines is not None:
                keep_history(out / HISTORY, self.state.history_lines)
            self.history = read_history(out / HISTORY)
        self.info = self.describe()  # before the first step: where it resumed

    def _write_new_run(self, config: bool = True) -> None:
        run, data, parts = self.run, self.data, self.parts
        parts.context.vocabs.save(run.out)
        save_news_table(run.out / NEWS_TABLE, data.dataset.news_vocab, data.dataset.news)
        (run.out / HISTORY).write_text("", encoding="utf-8")
        if not config:
            return
        extra = {
            "missing_text": {
                "policy": self.settings.missing,
                "count": len(parts.lacking),
                "first": parts.lacking[:20],
            },
            "samples": {"clicks": len(data.samples), "dropped_clicks": data.samples.dropped},
            "determinism": self.determinism.to_dict(),
        }
        if data.history is not None:
            extra["samples"]["history"] = {
                "samples": len(data.history.impressions),
                "available": data.history.available,
                "dropped": data.history.dropped,
            }
        write_json(
            run.out / CONFIG,
            run_config(
                data=run.data,
                store=Path(run.store) if run.store else None,
                graph=Path(run.graph) if parts.context.graph is not None and run.graph else None,
                settings=self.settings,
                data_settings=run.data_settings,
                graph_settings=run.graph_settings,
                validation=data.validation,
                model=self.model,
                context=parts.context,
                extra=extra,
            ),
        )

    def _restore_rank_rng(self, rng: dict[str, Any]) -> None:
        """The rank's own RNG from last.pt when it was saved by as many processes; else a fresh
        seed from (seed, rank, step): the same plan and weights, other dropout draws."""
        states = rng.get("ranks")
        if states is not None and len(states) == self.ranks.world:
            mine = states[self.ranks.rank]
            torch.set_rng_state(mine["torch"])
            if self.device.type == "cuda" and mine.get("cuda") is not None:
                torch.cuda.set_rng_state(mine["cuda"], self.device)
        else:
            torch.manual_seed(rank_seed(self.settings.seed, self.ranks.rank, self.state.global_step))

    def start_ddp(self) -> None:
        if self.ranks.distributed:
            self.ddp = wrap_ddp(self.settings, self.model, self.device)

    def describe(self) -> TrainInfo:
        """What the run is about to do, for `callbacks.on_start`."""
        data, parts, state = self.data, self.parts, self.state
        check = parts.context.text_check
        return TrainInfo(
            run_dir=self.run.out,
            device=str(self.device),
            validation=data.validation,
            train_impressions=len(data.train),
            valid_impressions=len(data.valid),
            clicks=len(data.samples),
            dropped_clicks=data.samples.dropped,
            news=len(data.dataset.news_vocab) - 1,
            news_with_id=len(parts.context.vocabs.ids) - 1,
            modalities=self.model.news_encoder.modalities,
            parameters=sum(p.numel() for p in self.model.parameters()),
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps,
            epochs=self.settings.epochs,
            missing_text=parts.lacking,
            resumed_at=(state.epoch + 1, state.step_in_epoch) if self.run.resume else None,
            threads=torch.get_num_threads(),
            determinism=self.determinism.describe(),
            unverified_texts=check.unverified if check is not None else 0,
            processes=self.ranks.world,
            finetune_text=self.settings.finetune_text if self.model.news_encoder.tower is not None else 0,
            cached_tokens=parts.cached_tokens,
            cached_news=parts.cached_news,
            step_tokens=self.settings.batch_size
            * (self.settings.history + 1 + self.settings.negatives)
            * parts.cached_tokens
            // max(parts.cached_news, 1),
        )

    def result(self, stopped: str) -> TrainResult:
        state = self.state
        seconds = clock.monotonic() - self.run.started
        return TrainResult(
            self.run.out,
            self.info or self.describe(),
            self.history,
            state.best_epoch,
            state.best_metrics,
            stopped,
            seconds,
        )

    # -- checkpoints and reports --------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return settings_dict(self.settings, self.run.data_settings, self.run.graph_settings)

    def save_last(self) -> None:
        """last.pt, by rank 0; in a distributed run every rank calls it (its RNG state is kept)."""
        rng = rng_states(self.device)
        if self.ranks.distributed:
            mine = {"torch": torch.get_rng_state()}
            if self.device.type == "cuda":
                mine["cuda"] = torch.cuda.get_rng_state(self.device)
            rng["ranks"] = self.ranks.gather_objects(mine)
        if not self.ranks.main:
            return
        self.state.history_lines = len(self.history)
        fault = (
            self.fault if self.fault is not None and self.fault.due("save", self.state.global_step) else None
        )
        checkpoint.save(
            self.run.out / LAST,
            last_payload(
                model=self.model,
                optimizer=self.optimizer,
                plateau=self.plateau,
                state=self.state,
                rng=rng,
                settings=self._settings(),
                plan=self.plan if self.settings.hard_negatives else None,
            ),
            before_replace=fault.strike if fault is not None else None,
        )

    def save_model(self, record: EpochRecord, partial: bool = False) -> None:
        if self.ranks.main:
            checkpoint.save(
                self.run.out / MODEL, model_payload(self.model, record, self._settings(), partial)
            )

    def open_writer(self) -> None:
        if not self.ranks.main:
            return
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run drops the points written after its last.pt (they are trained again).
        purge = self.state.global_step if self.run.resume else None
        self.writer = SummaryWriter(str(self.run.out / TENSORBOARD), purge_step=purge)

    def close_writer(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def report(self, record: EpochRecord) -> None:
        """An epoch's record to TensorBoard, history.jsonl and the callbacks (rank 0)."""
        if not self.ranks.main:
            return
        log_epoch(self.writer, record)
        append_history(self.run.out / HISTORY, record)
        self.history.append(record)
        self.callbacks.on_epoch_end(record)

    # -- epoch 0 --------------------------------------------------------------------------------

    def validate_untrained(self) -> None:
        """The untrained model ranks as the content baseline; a trained epoch must beat it."""
        self.callbacks.on_validate(0, len(self.data.valid))
        result = validate(
            self.model,
            self.data.valid,
            self.settings,
            self.parts.valid_users,
            self.ranks,
            popularity=self.data.valid_popularity,
        )
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
            best=self.settings.choose_untrained,
        )
        if self.settings.choose_untrained:
            auc = result.values.get("auc", math.nan)
            self.state.best_auc = auc if math.isfinite(auc) else -math.inf
            self.state.best_epoch, self.state.best_metrics = 0, dict(result.values)
            self.save_model(record)
        else:
            # Shown, never chosen: a provisional model.pt that the first trained epoch replaces.
            self.save_model(record, partial=True)
        self.report(record)
        self.save_last()

    # -- an epoch's steps -----------------------------------------------------------------------

    def epoch_plan(self) -> EpochPlan:
        """A plan that depends on (seed, epoch) only, or with hard negatives on the model too."""
        settings, state = self.settings, self.state
        if settings.hard_negatives and self.plan is not None and state.step_in_epoch > 0:
            return self.plan  # resumed mid-epoch: the hard negatives the epoch began with
        scores = None
        if settings.hard_negatives:
            scores = negative_scores(
                self.model,
                self.data.fit,
                settings,
                self.parts.train_users,
                self.ranks,
                popularity=None
                if self.data.popularity is None
                else PopularityView(self.data.popularity, at=None),  # as the batches see it
            )
        return plan_epoch(
            self.data.samples,
            settings.negatives,
            settings.seed,
            state.epoch,
            hard=settings.hard_negatives,
            scores=scores,
        )

    def train_epoch(self, interrupted: threading.Event) -> EpochSteps:
        """The epoch's steps from `state.step_in_epoch` until its end or a stop rule."""
        settings, state = self.settings, self.state
        pairwise = settings.loss == "infonce"
        if self.data.popularity is not None and pairwise and self.ranks.world > 1:
            raise self.ranks.fail(
                SettingsError(
                    "train: --use-popularity with --loss infonce runs in one process only; "
                    "use --loss listwise with --nproc"
                )
            )
        self.plan = self.epoch_plan()
        batches = EpochBatches(
            self.data.fit,
            self.data.samples,
            self.plan,
            batch_size=settings.batch_size,
            history=settings.history,
            user_rows=self.parts.train_users,
            popularity=self.data.popularity,
            pairwise=pairwise,
            rank=self.ranks.rank,
            world=self.ranks.world,
        )
        loader = DataLoader(
            batches,
            batch_size=None,
            sampler=range(state.step_in_epoch, len(batches)),
            num_workers=settings.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(settings.seed),  # leaves the global RNG alone
        )
        self.callbacks.on_epoch_start(state.epoch + 1, len(batches), state.step_in_epoch)
        self.model.train()
        tick, seen, stop = time.monotonic(), 0, ""
        for batch in loader:
            if self.fault is not None and self.fault.due("step", state.global_step + 1):
                self.fault.strike()
            loss_value, rows = self.step(batch)
            state.step_in_epoch += 1
            state.global_step += 1
            state.loss_sum += loss_value * rows
            state.loss_count += rows
            seen += rows
            elapsed = time.monotonic() - tick
            if self.writer is not None and state.global_step % TB_EVERY == 0:
                self.writer.add_scalar("train/loss", loss_value, state.global_step)
                self.writer.add_scalar("train/lr", self.lr, state.global_step)
            if self.callbacks.on_step(
                state.step_in_epoch, state.loss_sum / state.loss_count, seen / max(elapsed, 1e-9)
            ):
                interrupted.set()
            stop = self.stop_after_step(interrupted)
            if stop:
                break
            if settings.checkpoint_every and state.global_step % settings.checkpoint_every == 0:
                # Every rank reaches the same step, so save_last's RNG gather stays collective.
                # The saved seconds include this part of the epoch; the loop adds it at its end.
                spent = time.monotonic() - tick
                state.epoch_seconds += spent
                self.save_last()
                state.epoch_seconds -= spent
        state.epoch_seconds += time.monotonic() - tick
        return EpochSteps(stop=stop, steps=len(batches), seen=seen, tick=tick)

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
        """One optimizer step; the batch's mean loss and its rows."""
        settings, state = self.settings, self.state
        # learning rate of this step
        self.lr = (
            lr_at(
                state.global_step,
                base_lr=settings.lr,
                warmup_steps=self.warmup_steps,
                total_steps=self.total_steps,
                schedule=settings.schedule,
            )
            * self.plateau.factor
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group.get("lr_scale", 1.0)
        # forward, backward, clip, step
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.ddp is None:
            with autocast_for(self.device, settings.bf16):
                loss = batch_loss(settings, self.model, batch)
            loss_value, rows = float(loss.detach()), batch["candidates"].shape[0]
        else:
            loss, loss_value, rows = self._ddp_forward(batch)
        if not math.isfinite(loss_value):
            raise self.ranks.for_this_rank(
                TrainingDiverged(
                    f"the loss became {loss_value} at step {state.global_step + 1}; lower --lr or --clip"
                )
            )
        loss.backward()  # DDP: the gradients are averaged over the ranks here
        nn.utils.clip_grad_norm_(self.model.parameters(), settings.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, rows

    def _ddp_forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float, int]:
        """This rank's share of the step: its scaled loss, the global batch's loss and rows."""
        assert self.ddp is not None
        state, ranks = self.state, self.ranks
        start = state.step_in_epoch * self.settings.batch_size
        shard = ranks.batch_shard(min(self.settings.batch_size, len(self.data.samples) - start))
        self.ddp.module.shard = shard
        with autocast_for(self.device, self.settings.bf16):
            loss = self.ddp(batch)
        # The ranks' scaled losses sum to world x the global batch's loss (see BatchShard).
        loss_value = ranks.sum([float(loss.detach())])[0] / ranks.world
        return loss, loss_value, shard.total

    def stop_after_step(self, interrupted: threading.Event) -> str:
        """The stop rule that ends training after this step, if any; in a distributed run the
        ranks agree (Ctrl-C on any rank stops all, the time budget is rank 0's clock)."""
        settings = self.settings
        rules = ("", "time_budget", "max_steps", "interrupted")  # later ones win
        rule = 0
        if interrupted.is_set():
            rule = 3
        elif settings.max_steps and self.state.global_step >= settings.max_steps:
            rule = 2
        elif (
            self.ranks.main
            and settings.time_budget
            and clock.monotonic() - self.run.started >= settings.time_budget
        ):
            rule = 1
        return rules[self.ranks.max(rule)]

    # -- after the steps: validation, the best model, early stopping, checkpoints ---------------

    def end_epoch(self, steps: EpochSteps, interrupted: threading.Event) -> str:
        """Validate what the steps reached, keep the best model.pt, apply the stop rules, write
        last.pt and the history; the reason to stop ("" to go on)."""
        settings, state, out = self.settings, self.state, self.run.out
        stop = steps.stop
        if stop == "interrupted":
            self.save_last()
            raise self.ranks.for_this_rank(
                TrainingInterrupted(
                    f"interrupted at {position(state)}: saved {out / LAST}; "
                    f"continue with: newsrec train --resume --out {out} (every setting of the run, "
                    "--threads included, comes back from it)"
                )
            )
        epoch_done = state.step_in_epoch >= steps.steps

        self.callbacks.on_validate(state.epoch + 1, len(self.data.valid))
        result = validate(
            self.model,
            self.data.valid,
            settings,
            self.parts.valid_users,
            self.ranks,
            popularity=self.data.valid_popularity,
        )
        auc = result.values.get("auc", math.nan)
        # Part of an epoch cut by --time-budget is shown, never chosen: the next full epoch
        # would be compared with it, and an uninterrupted run never sees it. (A --max-steps
        # end is final, so it competes.)
        selectable = epoch_done or stop == "max_steps"
        better = selectable and (
            state.best_epoch is None or (math.isfinite(auc) and auc > state.best_auc + settings.min_delta)
        )
        record = EpochRecord(
            epoch=state.epoch + 1,
            steps=state.step_in_epoch,
            global_step=state.global_step,
            train_loss=state.loss_sum / max(state.loss_count, 1),
            metrics=dict(result.values),
            valid_impressions=result.impressions,
            skipped_auc=result.skipped_auc,
            lr=self.lr,
            seconds=state.epoch_seconds,
            samples_per_s=steps.seen / max(time.monotonic() - steps.tick, 1e-9),
            partial=not epoch_done,
            best=better,
        )
        if better:
            state.best_auc = auc if math.isfinite(auc) else -math.inf
            state.best_epoch = record.epoch
            state.best_metrics = dict(result.values)
            self.save_model(record)
        elif state.best_epoch is None:
            # No full epoch yet: a provisional model.pt so the run can be evaluated; the
            # first full epoch replaces it whatever its score.
            self.save_model(record, partial=True)
        if epoch_done:
            state.bad_epochs = 0 if better else state.bad_epochs + 1
            if settings.schedule == "plateau" and math.isfinite(auc):
                self.plateau.update(auc)
            state.epoch += 1
            state.step_in_epoch = 0
            state.loss_sum, state.loss_count, state.epoch_seconds = 0.0, 0, 0.0
            if state.bad_epochs >= settings.patience:
                stop = "early_stopping"
        self.report(record)
        state.stop_reason = stop or ("epochs" if state.epoch >= settings.epochs else "")
        state.finished = state.stop_reason in ("epochs", "early_stopping", "max_steps")
        self.save_last()
        if self.ranks.max(int(interrupted.is_set())):
            raise self.ranks.for_this_rank(
                TrainingInterrupted(
                    f"interrupted after validating epoch {record.epoch}: saved {out / LAST}; "
                    f"continue with: newsrec train --resume --out {out} (every setting of the run, "
                    "--threads included, comes back from it)"
                )
            )
        return stop
