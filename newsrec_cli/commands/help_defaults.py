"""`--help` shows each option's effective default, taken from the settings models.

Options that feed a setting default to None on the command line, so that "not given" lets a TOML
file or a NEWSREC_* variable decide (see `settings.resolve`); Typer then has no default to show.
This fills it in from the stage's settings model, resolved with the environment as the command
itself would resolve it (`[default: 5]`, or `[default: 3, from NEWSREC_TRAIN_EPOCHS]`), and drops
the `<bool>` placeholder of on/off flags, which take no value. Which field an option sets comes
from the command (`options.settings_options` records it); the few commands that still declare
their options by hand are matched by name (`COMMAND_SETTINGS`).

It also keeps help readable at 80 columns: a paragraph's lines are joined (rich wraps them
again), and an on/off flag's two names share the name column.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any

from rich.markup import escape

from newsrec_cli.commands.options import SETTINGS_ATTR
from newsrec_cli.errors import NewsrecError
from newsrec_cli.settings import (
    DataSettings,
    EvaluateSettings,
    StageSettings,
    SynthSettings,
    resolve,
)

# Commands whose options are not built from the settings yet (`options.settings_options`): the
# models their options feed, matched by option name, first match wins.
COMMAND_SETTINGS: dict[str, tuple[type[StageSettings], ...]] = {
    "evaluate": (EvaluateSettings, DataSettings),
    "data synth": (SynthSettings,),
}
MARK = "_newsrec_defaults_shown"


def effective_defaults(model: type[StageSettings]) -> tuple[StageSettings, dict[str, str]]:
    """The model resolved without flags (environment and NEWSREC_CONFIG applied), and the sources.

    A bad variable or file is reported when the command runs; help then shows the plain defaults.
    """
    config = os.environ.get("NEWSREC_CONFIG")
    try:
        resolved = resolve(model, config=Path(config) if config and Path(config).is_file() else None)
        return resolved.settings, resolved.sources
    except (NewsrecError, OSError):
        return model(), {name: "default" for name in model.model_fields}


def format_default(value: Any, option: Any) -> str | None:
    """How a default reads in help; None for no default (the option's help says what happens)."""
    if value is None:
        return None
    if isinstance(value, bool):
        if option.secondary_opts:  # --use-id/--no-use-id: name the switch that is on
            return option.opts[-1] if value else option.secondary_opts[-1]
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def setting_of(command: Any, path: tuple[str, ...], param: Any) -> tuple[type[StageSettings], str] | None:
    """The stage model and field that option `param` of `command` sets, if any."""
    built = getattr(command.callback, SETTINGS_ATTR, None)
    if built is not None:
        return built.get(param.name)
    for model in COMMAND_SETTINGS.get(" ".join(path), ()):
        if param.name in model.model_fields:
            return model, param.name
    return None


def annotate(command: Any, path: tuple[str, ...] = ()) -> None:
    """Add `[default: ...]` to the help of every option of `command` and its subcommands."""
    for name, sub in getattr(command, "commands", {}).items():
        annotate(sub, (*path, name))
    if getattr(command, MARK, False):
        return
    setattr(command, MARK, True)
    hide_flag_types(command)
    stack_switches(command)
    command.help = unwrap_paragraphs(command.help)
    resolved: dict[type[StageSettings], tuple[StageSettings, dict[str, str]]] = {}
    for param in getattr(command, "params", []):
        if param.param_type_name != "option" or param.default is not None:
            continue  # Typer shows a real default itself where the option asks for it
        found = setting_of(command, path, param)
        if found is None:
            continue
        model, field = found
        if model not in resolved:
            resolved[model] = effective_defaults(model)
        settings, origin = resolved[model]
        shown = format_default(getattr(settings, field), param)
        if shown is not None:
            where = origin.get(field, "default")
            if where != "default":
                shown += ", from " + where.replace("env ", "").replace("file ", "")
            # escaped: help is rich markup, and "[default: 5]" would read as a style tag
            param.help = f"{param.help or ''} {escape(f'[default: {shown}]')}".strip()


def unwrap_paragraphs(text: str | None) -> str | None:
    """Join the lines of each paragraph: Typer's rich help keeps a docstring's line breaks, which
    then fall mid-sentence once the terminal wraps the text again. A line that starts with
    "Example" keeps its own line."""
    if text is None:
        return None
    paragraphs = inspect.cleandoc(text).split("\n\n")
    # "\b" asks click to keep a paragraph's lines as they are
    return "\n\n".join(p if p.startswith("\b") else re.sub(r"\n(?!Example)", " ", p) for p in paragraphs)


def stack_switches(command: Any) -> None:
    """In help, `--use-popularity` and `--no-use-popularity` share one column, one above the other.

    Typer's table gives the `--no-...` forms a column of their own; at 80 columns rich then cuts
    the longest names of both (`--popularity-h…`). Only while help is written: parsing keeps both.
    """
    make = command.format_help

    def format_help(ctx: Any, formatter: Any) -> None:
        saved = []
        for param in command.params:
            if param.param_type_name == "option" and param.secondary_opts:
                saved.append((param, param.opts, param.secondary_opts))
                param.opts = ["\n".join([*param.opts, *param.secondary_opts])]
                param.secondary_opts = []
        try:
            make(ctx, formatter)
        finally:
            for param, opts, secondary in saved:
                param.opts, param.secondary_opts = opts, secondary

    command.format_help = format_help


def hide_flag_types(command: Any) -> None:
    """A flag takes no value: no `<bool>` beside it, `--help` (made per call by click) included."""
    for param in getattr(command, "params", []):
        if param.param_type_name == "option" and param.is_flag:
            param.metavar = ""
    make = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
