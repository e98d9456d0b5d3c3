"""The loop's counters and its checkpoints: last.pt (resume exactly where it stopped) and
model.pt (the weights of the chosen epoch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from newsrec_cli.errors import InputError
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.objective.batching import EpochPlan
from newsrec_cli.runs.records import EpochRecord
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings
from newsrec_cli.train.schedule import Plateau


@dataclass
class LoopState:
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
    # Records of history.jsonl when this state was saved: a resume drops the ones written after
    # it (an epoch validated, then killed while its last.pt was written, is trained again).
    # None in a last.pt older than this field.
    history_lines: int | None = None


def position(state: LoopState) -> str:
    """Where a saved state stands, for the user: "epoch 2, step 13 (global step 40)"."""
    if state.step_in_epoch:
        return f"epoch {state.epoch + 1}, step {state.step_in_epoch} (global step {state.global_step})"
    if state.epoch:
        return f"the end of epoch {state.epoch} (global step {state.global_step})"
    return "the start of epoch 1 (global step 0)"


def saved_position(path: Path) -> str:
    """What the last.pt at `path` holds, or that there is none (a resume then starts at step 0)."""
    if not path.is_file():
        return f"there is no {path.name} yet (--resume starts again from step 0)"
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["state"]
        return f"{path.name} holds {position(LoopState(**raw))}"
    except Exception:  # torch raises many types for a bad file; --resume names the problem
        return f"{path.name} is unreadable"


def settings_dict(train: TrainSettings, data: DataSettings, graph: GraphSettings) -> dict[str, Any]:
    return {
        "train": train.model_dump(mode="json"),
        "data": data.model_dump(mode="json"),
        "graph": graph.model_dump(mode="json"),
    }


def rng_states(device: torch.device) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def last_payload(
    *,
    model: NewsRecommender,
    optimizer: torch.optim.Optimizer,
    plateau: Plateau,
    state: LoopState,
    rng: dict[str, Any],
    settings: dict[str, Any],
    plan: EpochPlan | None,
) -> dict[str, Any]:
    """last.pt: everything a resumed run needs to continue with the same numbers. `plan` is
    kept only when it depends on the model (hard negatives): otherwise (seed, epoch) rebuild it."""
    payload: dict[str, Any] = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "plateau": plateau.state_dict(),
        "state": asdict(state),
        "rng": rng,
        "settings": settings,
    }
    if plan is not None:
        payload["plan"] = {
            "order": torch.from_numpy(plan.order),
            "negatives": torch.from_numpy(plan.negatives),
        }
    return payload


def model_payload(
    model: NewsRecommender, record: EpochRecord, settings: dict[str, Any], partial: bool = False
) -> dict[str, Any]:
    """model.pt: the weights of the epoch `record` describes (the best so far, or provisional)."""
    return {
        "model": model.state_dict(),
        "epoch": record.epoch,
        "global_step": record.global_step,
        "metrics": record.to_dict()["metrics"],
        "settings": settings,
        **({"partial": True} if partial else {}),
    }


def restore_last(
    saved: dict[str, Any],
    path: Path,
    *,
    model: NewsRecommender,
    optimizer: torch.optim.Optimizer,
    plateau: Plateau,
    device: torch.device,
) -> tuple[LoopState, EpochPlan | None]:
    """Weights, optimizer, plateau and RNG from last.pt; the counters and the saved plan back."""
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise InputError(f"last.pt does not fit this run ({str(exc).splitlines()[0]})", path=path) from None
    plateau.load_state_dict(saved["plateau"])
    state = LoopState(**saved["state"])
    plan = None
    if "plan" in saved:
        plan = EpochPlan(saved["plan"]["order"].numpy(), saved["plan"]["negatives"].numpy())
    torch.set_rng_state(saved["rng"]["torch"])
    if device.type == "cuda" and saved["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return state, plan
