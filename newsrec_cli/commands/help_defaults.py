"""`--help` shows each option's effective default, taken from the settings models.

Options that feed a setting default to None on the command line, so that "not given" lets a TOML
file or a NEWSREC_* variable decide (see `settings.resolve`); Typer then has no default to show.
This fills it in from the stage's settings model, resolved with the environment as the command
itself would resolve it (`[default: 5]`, or `[default: 3, from NEWSREC_TRAIN_EPOCHS]`), and drops
the `<bool>` placeholder of on/off flags, which take no value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.markup import escape

from newsrec_cli.errors import NewsrecError
from newsrec_cli.settings import (
    DataSettings,
    DiagnoseSettings,
    EmbedSettings,
    EvaluateSettings,
    FilterSettings,
    GraphSettings,
    StageSettings,
    SynthSettings,
    TrainSettings,
    resolve,
)

# Per command path: the settings models its options feed, first match wins, and options whose
# name differs from the field's ("graph_encoder" sets graph.encoder).
Source = tuple[type[StageSettings], dict[str, str]]
COMMAND_SETTINGS: dict[str, tuple[Source, ...]] = {
    "build-graph": ((GraphSettings, {}), (DataSettings, {})),
    "train": ((TrainSettings, {}), (DataSettings, {}), (GraphSettings, {"graph_encoder": "encoder"})),
    "evaluate": ((EvaluateSettings, {}), (DataSettings, {})),
    "ablate": ((TrainSettings, {}), (DataSettings, {})),
    "filter": ((FilterSettings, {}), (DataSettings, {})),
    "data synth": ((SynthSettings, {}),),
    "data stats": ((DataSettings, {}),),
    "data validate": ((DataSettings, {}),),
    "embed news": ((EmbedSettings, {}),),
    "embed entities": ((EmbedSettings, {}),),
    "embed import": ((EmbedSettings, {}),),
    "diagnose data": ((DiagnoseSettings, {}),),
    "diagnose saturation": ((DiagnoseSettings, {}),),
    "diagnose cosine": ((DiagnoseSettings, {}),),
    "diagnose gradients": ((DiagnoseSettings, {}),),
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


def annotate(command: Any, path: tuple[str, ...] = ()) -> None:
    """Add `[default: ...]` to the help of every option of `command` and its subcommands."""
    for name, sub in getattr(command, "commands", {}).items():
        annotate(sub, (*path, name))
    if getattr(command, MARK, False):
        return
    setattr(command, MARK, True)
    sources = COMMAND_SETTINGS.get(" ".join(path), ())
    resolved = [(effective_defaults(model), aliases) for model, aliases in sources]
    hide_flag_types(command)
    for param in getattr(command, "params", []):
        if param.param_type_name != "option" or param.default is not None:
            continue  # Typer shows a real default itself where the option asks for it
        for (settings, origin), aliases in resolved:
            field = aliases.get(param.name, param.name)
            if field not in type(settings).model_fields:
                continue
            shown = format_default(getattr(settings, field), param)
            if shown is not None:
                where = origin.get(field, "default")
                if where != "default":
                    shown += ", from " + where.replace("env ", "").replace("file ", "")
                # escaped: help is rich markup, and "[default: 5]" would read as a style tag
                param.help = f"{param.help or ''} {escape(f'[default: {shown}]')}".strip()
            break


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
