"""Each setting is declared once: every field of a stage model has one flag, every flag one field,
and the commands' options are built from those declarations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from pydantic import Field
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.commands.help_defaults import COMMAND_SETTINGS
from newsrec_cli.commands.options import SETTINGS_ATTR, Stage, option_parameter, settings_options
from newsrec_cli.settings import STAGES, Flag, StageSettings, TrainSettings, flag_name

runner = CliRunner()


def _tree(command: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    found = {path: command}
    for name, sub in getattr(command, "commands", {}).items():
        found |= _tree(sub, (*path, name))
    return found


TREE = _tree(typer.main.get_command(app))


def _built(command: Any) -> dict[str, tuple[type[StageSettings], str]]:
    return getattr(getattr(command, "callback", None), SETTINGS_ATTR, None) or {}


@pytest.mark.parametrize("model", STAGES, ids=lambda m: m.section)
def test_every_field_has_exactly_one_flag_and_every_flag_one_field(model: type[StageSettings]) -> None:
    flags = [flag_name(model, name) for name in model.model_fields]
    assert len(set(flags)) == len(flags), sorted(f for f in flags if flags.count(f) > 1)
    assert all(f.startswith("--") and "_" not in f for f in flags)
    # ... and each flag of a command that takes the stage sets that one field
    for path, command in TREE.items():
        for param in command.params:
            found = _built(command).get(param.name)
            if found is None or found[0] is not model:
                continue
            assert param.opts[0] == flag_name(model, found[1]), (path, param.opts)
            assert [p.name for p in command.params].count(param.name) == 1


def test_no_two_options_of_a_command_share_a_flag() -> None:
    for path, command in TREE.items():
        opts = [o for p in command.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]]
        assert len(set(opts)) == len(opts), (path, sorted(o for o in opts if opts.count(o) > 1))


def test_every_field_is_offered_by_a_command() -> None:
    """Every field of a stage whose commands are built from the settings has a flag somewhere;
    `train` offers every training setting."""
    offered = {found for command in TREE.values() for found in _built(command).values()}
    by_hand = {model for models in COMMAND_SETTINGS.values() for model in models}
    for model in STAGES:
        missing = [name for name in model.model_fields if (model, name) not in offered]
        if model in by_hand and missing:
            continue  # its command still declares its options itself (COMMAND_SETTINGS)
        assert missing == [], (model.section, missing)
    train = _built(TREE[("train",)])
    assert {f for m, f in train.values() if m is TrainSettings} == set(TrainSettings.model_fields)


def test_a_new_field_is_a_flag_with_its_help_panel_and_type() -> None:
    """What adding a field gives: the option, named from the field, in its panel, None by default
    (so that a file or the environment can decide), its description as help."""

    class Stage2(StageSettings):
        section = "toy"
        warm_restarts: Annotated[int, Flag("schedule")] = Field(0, ge=0, description="Restarts.")
        use_cache: bool = Field(True, description="Cache.")

    param = option_parameter(Stage2, "warm_restarts")
    option = param.annotation.__metadata__[0]
    # in Annotated, Typer reads the first name given to typer.Option as its `default`
    assert (param.name, param.default, option.default, option.help) == (
        "warm_restarts",
        None,
        "--warm-restarts",
        "Restarts.",
    )
    assert option.rich_help_panel == "Schedule"
    assert option_parameter(Stage2, "use_cache").annotation.__metadata__[0].default == (
        "--use-cache/--no-use-cache"
    )


def test_a_command_gets_its_settings_resolved_flags_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """defaults < TOML < env < flags, through a command built with `settings_options`."""
    seen: list[TrainSettings] = []
    toy = typer.Typer()

    @toy.command()
    @settings_options(Stage(TrainSettings, only=("epochs", "lr", "batch_size", "seed")))
    def run(settings: TrainSettings) -> None:
        seen.append(settings)

    config = tmp_path / "n.toml"
    config.write_text("[train]\nepochs = 7\nlr = 0.5\nbatch_size = 3\n", encoding="utf-8")
    monkeypatch.setenv("NEWSREC_TRAIN_LR", "0.25")
    monkeypatch.setenv("NEWSREC_TRAIN_BATCH_SIZE", "9")
    result = runner.invoke(toy, ["--config", str(config), "--batch-size", "11"])
    assert result.exit_code == 0, result.output
    got = seen[-1]
    assert (got.seed, got.epochs, got.lr, got.batch_size) == (42, 7, 0.25, 11)
    with pytest.raises(TypeError, match="--seed is declared twice"):

        @settings_options()
        def twice(seed: int = 0, *, settings: TrainSettings) -> None: ...
