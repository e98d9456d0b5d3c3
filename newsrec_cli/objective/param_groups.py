"""The optimiser's parameter groups: which parameters get weight decay, and which a scaled learning rate."""

from __future__ import annotations

from typing import Any

from torch import nn

from newsrec_cli.model.content_prior import ContentPrior
from newsrec_cli.model.popularity import PopularityHead
from newsrec_cli.model.scorer import LR_SCALE, ScoringHead


def param_groups(model: nn.Module, weight_decay: float, text_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: not on embeddings, norms, biases or single vectors.

    The score's scale, the content prior's weight and popularity's weight get `LR_SCALE` times the learning rate (key
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
            if isinstance(module, ScoringHead | ContentPrior | PopularityHead) and name.startswith("raw_"):
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
