"""`--help` shows the effective default of every option that feeds a setting, and no `<bool>`."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.commands.help_defaults import COMMAND_SETTINGS, format_default, setting_of
from newsrec_cli.settings import TrainSettings

runner = CliRunner()
WIDE = {"COLUMNS": "250"}  # one table row per line


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    found = {}
    for name, command in group.commands.items():
        path = (*prefix, name)
        if hasattr(command, "commands"):
            found |= _commands(command, path)
        else:
            found[path] = command
    return found


def _row(help_text: str, option: str) -> str:
    """The help of `option`: its line (its long name followed by a space or line end, as the table
    prints it) and the continuation lines below it, joined."""
    lines = help_text.splitlines()
    starts = [
        i
        for i, line in enumerate(lines)
        if line.startswith("│") and (f" {option} " in line or f" {option}\n" in line + "\n")
    ]
    assert starts, f"{option} not in help"
    row = [lines[starts[0]].strip("│ ")]
    for line in lines[starts[0] + 1 :]:
        inner = line[1:]
        # a continuation: nothing in the name columns (an on/off flag's --no-... form aside)
        if (
            not line.startswith("│")
            or not inner.startswith("    ")
            and not inner.lstrip().startswith("--no-")
        ):
            break
        text = line.strip("│ ")
        row.append(text.split(" ", 1)[-1].strip() if text.startswith("--no-") else text)
    return " ".join(row)


def test_train_help_shows_the_settings_defaults() -> None:
    out = runner.invoke(app, ["train", "--help"], env=WIDE).stdout
    defaults = TrainSettings()
    assert f"[default: {defaults.epochs}]" in _row(out, "--epochs")
    assert "[default: 0.001]" in _row(out, "--lr")
    assert f"[default: {defaults.batch_size}]" in _row(out, "--batch-size")
    assert "[default: attention]" in _row(out, "--fusion")
    assert "[default: --use-id]" in _row(out, "--use-id")
    assert "[default: --no-use-user-id]" in _row(out, "--use-user-id")
    assert "[default: sage]" in _row(out, "--graph-encoder")  # graph.encoder, named otherwise
    assert "[default:" not in _row(out, "--max-steps")  # None: no default to show
    assert "<bool>" not in out


def test_environment_changes_the_default_shown() -> None:
    out = runner.invoke(app, ["train", "--help"], env={**WIDE, "NEWSREC_TRAIN_EPOCHS": "3"}).stdout
    assert "[default: 3, from NEWSREC_TRAIN_EPOCHS]" in _row(out, "--epochs")
    # a bad value is reported when the command runs; help still shows the plain default
    bad = runner.invoke(app, ["train", "--help"], env={**WIDE, "NEWSREC_TRAIN_EPOCHS": "many"})
    assert bad.exit_code == 0
    assert "[default: 5]" in _row(bad.stdout, "--epochs")


def test_every_option_of_a_setting_shows_its_default() -> None:
    """For every command, every option named like a field of its settings (with a default)
    shows that default, formatted from the model; flags show no `<bool>`."""
    commands = _commands(typer.main.get_command(app))
    assert "<bool>" not in runner.invoke(app, ["--help"], env=WIDE).stdout
    assert set(COMMAND_SETTINGS) <= {" ".join(p) for p in commands}, "a mapped command does not exist"
    checked = 0
    for path, command in commands.items():
        out = runner.invoke(app, [*path, "--help"], env=WIDE).stdout
        assert "<bool>" not in out, path
        for param in command.params:
            if param.param_type_name != "option" or param.default is not None:
                continue
            found = setting_of(command, path, param)
            if found is not None:
                model, field = found
                shown = format_default(getattr(model(), field), param)
                if shown is not None:
                    assert f"[default: {shown}]" in _row(out, param.opts[-1]), (path, param.name)
                    checked += 1
    assert checked >= 70, checked


def test_no_help_text_states_a_default_other_than_the_real_one() -> None:
    """An option's text naming "X (default)" must agree with its `[default: Y]` (the real one)."""
    import re

    wrong = []
    for path in _commands(typer.main.get_command(app)):
        out = runner.invoke(app, [*path, "--help"], env=WIDE).stdout
        for line in out.splitlines():
            stated = re.findall(r"([\w@.,-]+) \(default\)", line)
            real = re.search(r"\[default: ([^\]]+)\]", line)
            if stated and real and stated[0] != real.group(1).strip():
                wrong.append((" ".join(path), stated[0], real.group(1)))
    assert wrong == []
