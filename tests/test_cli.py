"""The command tree: pipeline order in `newsrec --help`, and an example in every command's help."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from newsrec_cli.cli import PIPELINE, app

runner = CliRunner()


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `group`, groups included (their own help counts too)."""
    paths = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        paths.append(path)
        if hasattr(command, "commands"):
            paths += _commands(command, path)
    return paths


def test_help_lists_the_pipeline_in_order() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    positions = [result.stdout.index(f" {name} ") for name in PIPELINE]
    assert positions == sorted(positions)


def test_every_command_help_has_an_example() -> None:
    paths = _commands(typer.main.get_command(app))
    assert len(paths) >= 20
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.stdout, f"newsrec {' '.join(path)} --help shows no example"
