"""The runs an ablation trains: the full model, each modality left out, and the choices to vary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from newsrec_cli.errors import SettingsError
from newsrec_cli.settings import TrainSettings


@dataclass(frozen=True)
class Variant:
    """One configuration: a name for the table and the train settings it changes."""

    name: str
    changes: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def ablation_variants(
    base: TrainSettings, *, has_graph: bool, vary: dict[str, list[str]] | None = None
) -> list[Variant]:
    """The full model, every modality subset that makes sense, and one run per value to vary.

    A modality the base settings already leave out has no "without" row; "text only" keeps the
    content prior (it is text too). `vary` maps a train setting to values, e.g.
    {"user_encoder": ["candidate"], "loss": ["infonce"]}; the base value of each is the full row.
    """
    variants = [Variant("full", {}, "every modality the settings turn on")]
    parts = {
        "id": base.use_id,
        "graph": base.use_graph and has_graph,
        "category": base.use_category,
    }
    for name, on in parts.items():
        if on:
            variants.append(Variant(f"without {name}", {f"use_{name}": False}))
    if base.use_popularity:  # off by default: `--vary use_popularity=true` adds the "with" row
        variants.append(Variant("without popularity", {"use_popularity": False}, "no click-stream term"))
    if base.use_text and base.content_prior:
        variants.append(Variant("without content prior", {"content_prior": False}, "learned score only"))
    if base.use_text and any(parts.values()):
        off = {f"use_{name}": False for name, on in parts.items() if on}
        variants.append(Variant("text only", off, "text projection and content prior"))
    for key, values in (vary or {}).items():
        if key not in TrainSettings.model_fields:
            raise SettingsError(f"ablate --vary {key}: not a train setting (see `newsrec config show`)")
        for value in values:
            try:
                typed = getattr(TrainSettings.model_validate({**base.model_dump(), key: value}), key)
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"]
                raise SettingsError(f"ablate --vary {key}={value}: {reason}") from None
            if typed != getattr(base, key):
                variants.append(Variant(f"{key}={value}", {key: typed}))
    return variants


def parse_vary(specs: list[str]) -> dict[str, list[str]]:
    """`["user_encoder=candidate", "loss=infonce,pointwise"]` -> {"user_encoder": [...], ...}."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not values.strip():
            raise SettingsError(
                f"ablate --vary {spec!r}: expected SETTING=VALUE[,VALUE...], e.g. loss=infonce"
            )
        out.setdefault(key, []).extend(v.strip() for v in values.split(",") if v.strip())
    return out
