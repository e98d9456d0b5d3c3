"""Typer options built from the settings models, and the options that several commands share.

A setting is declared once, as a field of its stage model in settings.py (type, default,
description, and a `Flag` for its help panel and flag name). `settings_options` turns the fields
into the command's Typer options and hands the command the resolved models (defaults < TOML <
NEWSREC_* env < flags), so adding a field adds its flag, its `--help` line with the true default
(help_defaults.py), its `config show` row, its TOML key and its environment variable.

    @settings_options(Stage(GraphSettings, exclude=("min_confidence",)))
    def train_command(out: OutOption, settings: TrainSettings, graph_settings: GraphSettings) -> None:
        ...  # settings and graph_settings arrive resolved; the flags of both are in `--help`
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer

from newsrec_cli.commands.common import ConfigOption
from newsrec_cli.settings import StageSettings, flag_name, panel_of, resolve

F = TypeVar("F", bound=Callable[..., Any])
# Where a command built by `settings_options` records {option name: (stage model, field)}.
SETTINGS_ATTR = "newsrec_settings_options"

# -- options that several commands share, declared once

DataPathOption = Annotated[
    Path, typer.Option("--data", help="MIND dataset folder.", exists=True, file_okay=False)
]
EmbeddingsOption = Annotated[
    Path | None,
    typer.Option(
        "--embeddings", "-e", help="Text vector store (newsrec embed).", exists=True, rich_help_panel="Data"
    ),
]
GraphOption = Annotated[
    Path | None,
    typer.Option(
        "--graph", help="News-entity graph (newsrec build-graph).", exists=True, rich_help_panel="Data"
    ),
]


# The order of the help panels of a command; options in no panel come first, under "Options".
PANELS = ("data", "run", "model", "popularity", "loss", "schedule", "graph", "distributed")


def _panel_rank(param: inspect.Parameter) -> int:
    if param.name == "json_out":
        return len(PANELS) + 1
    info = next(
        (m for m in getattr(param.annotation, "__metadata__", ()) if hasattr(m, "rich_help_panel")), None
    )
    panel = (getattr(info, "rich_help_panel", None) or "").lower()
    return PANELS.index(panel) + 1 if panel in PANELS else 0


@dataclass(frozen=True)
class Stage:
    """Which fields of a stage a command offers: all but `exclude` (settings it does not use)."""

    model: type[StageSettings]
    exclude: tuple[str, ...] = ()

    def fields(self) -> list[str]:
        return [name for name in self.model.model_fields if name not in self.exclude]


def settings_options(*stages: Stage) -> Callable[[F], F]:
    """Replace each parameter of the command annotated with a stage model by that stage's options.

    The command receives the model resolved from `--config`, the environment and the flags. A
    stage not listed in `stages` offers every field. Two fields with the same flag in one command
    are an error at import, not a silently shadowed setting.
    """
    chosen = {stage.model: stage for stage in stages}

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        kept: list[inspect.Parameter] = []
        stage_params: dict[str, type[StageSettings]] = {}
        for param in signature.parameters.values():
            if isinstance(param.annotation, type) and issubclass(param.annotation, StageSettings):
                stage_params[param.name] = param.annotation
            else:
                kept.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        options: dict[str, tuple[type[StageSettings], str]] = {}
        generated: list[inspect.Parameter] = []
        taken = {p.name for p in kept}
        for model in stage_params.values():
            for field in chosen.get(model, Stage(model)).fields():
                param = option_parameter(model, field)
                if param.name in taken or param.name in options:
                    raise TypeError(f"{func.__name__}: {flag_name(model, field)} is declared twice")
                options[param.name] = (model, field)
                generated.append(param)
        has_config = "config" in taken
        if not has_config:
            generated.append(
                inspect.Parameter(
                    "config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOption
                )
            )
        # In the order of PANELS (Typer prints panels as their first option comes), --json last.
        params = sorted(kept + generated, key=_panel_rank)

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            config = kwargs["config"] if has_config else kwargs.pop("config")
            flags: dict[type[StageSettings], dict[str, Any]] = {model: {} for model in stage_params.values()}
            for name, (model, field) in options.items():
                flags[model][field] = kwargs.pop(name)
            for name, model in stage_params.items():
                kwargs[name] = resolve(model, config=config, overrides=flags[model]).settings
            return func(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        setattr(wrapper, SETTINGS_ATTR, options)
        return wrapper  # type: ignore[return-value]

    return decorate


def option_parameter(model: type[StageSettings], field: str) -> inspect.Parameter:
    """The Typer option of one field: its flag, its description as help, its panel.

    Its default is None, "not given", so that the file and the environment can decide; the help
    shows the resolved default instead (help_defaults.py)."""
    info = model.model_fields[field]
    kind = cli_type(info.annotation)
    flag = flag_name(model, field)
    declaration = f"{flag}/--no-{flag.removeprefix('--')}" if kind is bool else flag
    panel = panel_of(model, field)
    option = typer.Option(
        declaration,
        help=info.description,
        show_default=False,
        rich_help_panel=panel.capitalize() if panel else None,
    )
    name = flag.removeprefix("--").replace("-", "_")
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def cli_type(annotation: Any) -> Any:
    """The type a flag parses: `int | None` -> int, a Literal -> str (pydantic checks the choice and
    names what is allowed), `list[int]` as it is."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is Literal:
        return str
    return annotation
