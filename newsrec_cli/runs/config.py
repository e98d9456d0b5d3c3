"""A run's config.json: written once by training (everything that made the run), read back by
everything that loads the run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsrec_cli import __version__, atomic
from newsrec_cli.embed.store import SIGNATURE_FIELDS
from newsrec_cli.errors import InputError
from newsrec_cli.manifests import read_manifest
from newsrec_cli.runs.files import CONFIG, RUN_FORMAT
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings

if TYPE_CHECKING:
    from newsrec_cli.model.recommender import NewsRecommender
    from newsrec_cli.runs.context import DataContext


def write_json(path: Path, data: dict[str, Any]) -> None:
    """config.json in its own key order (what made the run first), through atomic.py."""
    atomic.write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def run_config(
    *,
    data: Path,
    store: Path | None,
    graph: Path | None,
    settings: TrainSettings,
    data_settings: DataSettings,
    graph_settings: GraphSettings,
    validation: str,
    model: NewsRecommender,
    context: DataContext,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Everything that made the run, JSON-ready (config.json)."""
    return {
        "format": RUN_FORMAT,
        "version": 1,
        "newsrec": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"path": str(data.resolve()), "validation": validation},
        "embeddings": {
            "path": str(store.resolve()) if store else None,
            "dim": context.text_dim,
            # what the store is, so that a store given in its place (it moved) can be checked
            "signature": {name: context.text_meta.get(name) for name in SIGNATURE_FIELDS}
            if context.text_meta
            else None,
        },
        "graph": {"path": str(graph.resolve()) if graph else None},
        "settings": {
            "train": settings.model_dump(mode="json"),
            "data": data_settings.model_dump(mode="json"),
            "graph": graph_settings.model_dump(mode="json"),
        },
        "model": {
            "modalities": model.news_encoder.modalities,
            "parameters": sum(p.numel() for p in model.parameters()),
            "news": len(context.vocabs.news) - 1,
            "news_with_id": len(context.vocabs.ids) - 1,
            "categories": len(context.vocabs.categories) - 1,
            "subcategories": len(context.vocabs.subcategories) - 1,
            "users": len(context.vocabs.users) - 1 if context.vocabs.users is not None else None,
        },
        **extra,
    }


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise InputError("run directory not found", path=run_dir)
    if not path.is_file():
        raise InputError("not a run directory (no config.json); train one with `newsrec train`", path=run_dir)
    return read_manifest(path, RUN_FORMAT, "the config.json of a run")


def settings_of(config: dict[str, Any], path: Path) -> tuple[TrainSettings, DataSettings, GraphSettings]:
    """The three settings objects a run was trained with (InputError if config.json is off)."""
    try:
        stored = config["settings"]
        return (
            TrainSettings(**stored["train"]),
            DataSettings(**stored["data"]),
            GraphSettings(**stored["graph"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"settings of the run are unreadable ({str(exc).splitlines()[0]})", path=path
        ) from None
