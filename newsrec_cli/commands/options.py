"""Typer options built from the settings models, and the options that several commands share.

A setting is declared once, as a field of its stage model in settings.py (type, default,
description, and a `Flag` for its help panel and flag name). `settings_options` turns the fields
into the command's Typer options and hands the command the resolved models (defaults < TOML <
NEWSREC_* env < flags), so adding a field adds its flag, its `--help` line with the true default
(help_defaults.py), its `config show` row, its TOML key and its environment variable.

    @settings_options(Stage(GraphSettings, exclude=("min_confidence", "cooccurrence_min")))
    def train_command(data: ..., *, settings: TrainSettings, graph_settings: GraphSettings) -> None:
        ...  # both arrive resolved; every field of both (but the two) is a flag in `--help`
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
from newsrec_cli.settings import StageSettings, flag_name, flag_of, panel_of, resolve

F = TypeVar("F", bound=Callable[..., Any])
# Where a command built by `settings_options` records {option name: (stage model, field)}.
SETTINGS_ATTR = "newsrec_settings_options"

# -- options that several commands share, declared once

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data", help="MIND folder, or a parent of train/ valid/ test/.", exists=True, rich_help_panel="Data"
    ),
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
PANELS = ("data", "run", "model", "popularity", "loss", "schedule", "graph", "api", "hashing", "distributed")

PANEL_TITLES = {"api": "API"}


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
    """Which fields of a stage a command offers: `only` these, or all but `exclude` (settings it
    does not use)."""

    model: type[StageSettings]
    exclude: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None

    def fields(self) -> list[str]:
        names = self.model.model_fields if self.only is None else self.only
        return [name for name in names if name not in self.exclude]


def settings_options(
    *stages: Stage, config_of: Callable[[dict[str, Any]], Path | None] | None = None
) -> Callable[[F], F]:
    """Replace each parameter of the command annotated with a stage model by that stage's options.

    The command receives the model resolved from the settings file (`--config`, or what
    `config_of` picks from the command's arguments), the environment and the flags. A stage not
    listed in `stages` offers every field. Two fields with the same flag in one command are an
    error at import, not a silently shadowed setting.
    """
    chosen = {stage.model: stage for stage in stages}

    def decorate(func: F) -> F:
        kept: list[inspect.Parameter] = []
        stage_params: dict[str, type[StageSettings]] = {}
        for param in command_parameters(func):
            if isinstance(param.annotation, type) and issubclass(param.annotation, StageSettings):
                stage_params[param.name] = param.annotation
            else:
                kept.append(param)
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
            if config_of is not None:
                config = config_of({**kwargs, "config": config})
            flags: dict[type[StageSettings], dict[str, Any]] = {model: {} for model in stage_params.values()}
            for name, (model, field) in options.items():
                flags[model][field] = kwargs.pop(name)
            for name, model in stage_params.items():
                kwargs[name] = resolve(model, config=config, overrides=flags[model]).settings
            return func(**kwargs)

        setattr(wrapper, SETTINGS_ATTR, options)
        return with_parameters(wrapper, params)

    return decorate


def with_parameters(func: Callable[..., Any], params: list[inspect.Parameter]) -> Any:
    """`func` as Typer sees it: a command with these (evaluated) parameters, called by keyword."""
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    func.__annotations__ = {p.name: p.annotation for p in params}
    return func


def command_parameters(func: Callable[..., Any], **names: Any) -> list[inspect.Parameter]:
    """The parameters of `func`, annotations evaluated (`names`: stand-ins for names that are
    only imported for type checkers), keyword-only as Typer calls them."""
    signature = inspect.signature(func, eval_str=True, locals=names)
    return [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()]


def option_parameter(model: type[StageSettings], field: str) -> inspect.Parameter:
    """The Typer option of one field: its flag, its description as help, its panel.

    Its default is None, "not given", so that the file and the environment can decide; the help
    shows the resolved default instead (help_defaults.py)."""
    info = model.model_fields[field]
    kind = cli_type(info.annotation)
    flag = flag_name(model, field)
    declaration = f"{flag}/--no-{flag.removeprefix('--')}" if kind is bool else flag
    short = flag_of(model, field).short
    panel = panel_of(model, field)
    option = typer.Option(
        declaration,
        *([short] if short else []),
        help=info.description,
        show_default=False,
        rich_help_panel=PANEL_TITLES.get(panel, panel.capitalize()) if panel else None,
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
