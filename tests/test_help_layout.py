"""Every `--help` reads at 80 columns, states each default once, and its examples are real commands."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.commands import help_defaults

runner = CliRunner()
NARROW = {"COLUMNS": "80"}
WIDE = {"COLUMNS": "250"}


def _tree(command: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every command under `command`, groups (and the root) included: each has its own help."""
    found = {path: command}
    for name, sub in getattr(command, "commands", {}).items():
        found |= _tree(sub, (*path, name))
    return found


ROOT = typer.main.get_command(app)
help_defaults.annotate(ROOT)  # as `newsrec` does before any help: the defaults in each option's help
TREE = _tree(ROOT)


def _help(path: tuple[str, ...], env: dict[str, str]) -> str:
    result = runner.invoke(app, [*path, "--help"], env=env)
    assert result.exit_code == 0, (path, result.output)
    return result.stdout


@pytest.mark.parametrize("path", sorted(TREE), ids=lambda p: " ".join(p) or "newsrec")
def test_nothing_is_cut_at_80_columns(path: tuple[str, ...]) -> None:
    out = _help(path, NARROW)
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out, f"newsrec {' '.join(path)} --help cuts: " + next(
        line for line in out.splitlines() if "…" in line
    )
    words = set(re.findall(r"--?[\w-]+", out))
    for param in TREE[path].params:
        for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
            if param.param_type_name == "option" and not param.hidden:
                assert opt in words, (path, opt)


def test_the_80_column_check_fails_on_typers_own_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: with Typer's own layout (a column of its own for the `--no-...` forms) rich cuts
    `train`'s names at 80 columns, as it did before, so the test above can fail."""
    monkeypatch.setattr(help_defaults, "stack_switches", lambda command: None)
    out = _help(("train",), NARROW)
    assert any(line.startswith("│ --") and "…" in line.split("  ")[0] for line in out.splitlines())


def _paragraphs(help_text: str) -> list[str]:
    """Paragraphs (a line that starts with "Example" starts one), each on one line."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n|\n(?=\s*Example)", help_text or "")]


@pytest.mark.parametrize("path", sorted(TREE), ids=lambda p: " ".join(p) or "newsrec")
def test_help_text_is_not_broken_mid_sentence(path: tuple[str, ...]) -> None:
    """Each paragraph of a command's text is printed as one line when the terminal is wide."""
    lines = [" ".join(line.split()) for line in _help(path, WIDE).splitlines()]
    for paragraph in _paragraphs(TREE[path].help):
        if paragraph and not paragraph.startswith("\b") and len(paragraph) < 200:
            plain = re.sub(r"\[/?[a-z ]+\]", "", paragraph).replace("\\[", "[")  # rich markup
            assert any(plain in line for line in lines), (path, paragraph)


@pytest.mark.parametrize("path", sorted(TREE), ids=lambda p: " ".join(p) or "newsrec")
def test_no_default_is_stated_twice(path: tuple[str, ...]) -> None:
    """An option whose help shows `[default: X]` does not also say "(default ...)" in its text."""
    for param in TREE[path].params:
        typer_shows = param.show_default and param.default is not None and not isinstance(param.default, bool)
        if param.param_type_name != "option" or not ("[default:" in (param.help or "") or typer_shows):
            continue
        text = (param.help or "").split("[default:")[0]
        assert not re.search(r"\(default\b|\bdefault\)", text), (path, param.name, text)


SEPARATORS = r", then |; | && | \(| > | \| "


def examples(text: str) -> list[str]:
    """The `newsrec ...` command lines of a help text: in backticks, or from "newsrec " to the end
    of the sentence (one paragraph may hold several: "..., then newsrec ...")."""
    found = []
    for paragraph in _paragraphs(text):
        quoted = re.findall(r"`newsrec ([^`]*)`", paragraph)
        found += quoted
        rest = re.sub(r"`[^`]*`", "", paragraph)
        for match in re.finditer(r"(?<![\w./-])newsrec (.+)", rest):
            for part in re.split(r"(?<![\w./-])newsrec ", match.group(1)):
                line = re.split(SEPARATORS, part)[0].strip().removesuffix(".").strip()
                if line:
                    found.append(line)
            break
    return found


def parse_example(line: str) -> str | None:
    """None when `newsrec LINE` names a command and gives it known options, the required ones
    included, and no extra arguments; else what is wrong. Paths are not checked (they are examples)."""
    try:
        args = shlex.split(line)
    except ValueError as exc:
        return f"not a command line: {exc}"
    elided = "..." in args  # "DATA ...": more options of the user's choice
    args = [a for a in args if a != "..."]
    command = ROOT
    while hasattr(command, "commands"):  # a group
        if not args or args[0].startswith("-"):
            return None if "--help" in args or "-h" in args else "no subcommand"
        name = args.pop(0)
        sub = command.commands.get(name)
        if sub is None:  # `newsrec embed DATA --out STORE` reaches `embed news`
            default = getattr(command, "default_command", None)
            if default is None:
                return f"no command {name!r}"
            args.insert(0, name)
            sub = command.commands[default]
        command = sub
    if not args or "--help" in args or "-h" in args:
        return None  # a reference to the command (`newsrec train`), or its help
    ctx = typer.Context(command, info_name=command.name)
    try:
        opts, rest, _ = command.make_parser(ctx).parse_args(args)
    except Exception as exc:  # click's UsageError (no such option, a value missing), as Typer vendors it
        return f"{type(exc).__name__}: {exc}"
    if rest:
        return f"extra arguments {rest}"
    missing = [p.name for p in command.params if p.required and opts.get(p.name) is None and not elided]
    return f"missing {missing}" if missing else None


def test_every_example_parses_against_its_command() -> None:
    checked = 0
    wrong = []
    for path, command in TREE.items():
        for line in examples(command.help or ""):
            problem = parse_example(line)
            checked += 1
            if problem:
                wrong.append((" ".join(path), line, problem))
    assert wrong == []
    assert checked >= 40, checked


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("evaluate runs/nrms --baselines", "missing ['data']"),  # the example `train --help` gave
        ("train data/mind --out runs/x --no-such-flag", "No such option"),
        ("train data/mind extra --out runs/x", "extra arguments"),
        ("tarin data/mind", "no command"),
    ],
)
def test_a_wrong_example_is_found(line: str, problem: str) -> None:
    """Controls: what the examples test must catch."""
    found = parse_example(line)
    assert found is not None and problem in found, found


def test_examples_are_found_in_help_text() -> None:
    text = (
        "Example: newsrec train d --out r\nExample: newsrec serve x (then open it)\n\n"
        "Then: newsrec evaluate r --data d, then newsrec export x; `newsrec data stats D` reads it."
    )
    assert examples(text) == ["train d --out r", "serve x", "data stats D", "evaluate r --data d", "export x"]
