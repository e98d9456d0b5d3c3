"""Messages a user reads: the line of a non-UTF-8 byte, entity JSON reasons, refused checkpoints,
counts, an unreachable --base-url, and `config init` lines that stay valid TOML when uncommented."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
import torch
from embed_helpers import write_news
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.embed.providers import openai_api
from newsrec_cli.embed.providers.base import ProviderError
from newsrec_cli.embed.providers.openai_api import OpenAIProvider
from newsrec_cli.errors import InputError, MissingVectorsError
from newsrec_cli.mind import read_news
from newsrec_cli.mind.entities import parse_entities
from newsrec_cli.mind.synth import synthesize
from newsrec_cli.mind.validate import validate_dataset
from newsrec_cli.plural import agree, counted
from newsrec_cli.runs.checkpoint import load, save
from newsrec_cli.settings import STAGES, SynthSettings, example_toml, resolve

runner = CliRunner()


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SynthSettings(news=400, users=300, days=4, seed=3))
    return out


def _break_line(path: Path, number: int, bad: bytes = b"\xff\xfe") -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = lines[number - 1].replace(b"\t", b"\t" + bad, 1)
    path.write_bytes(b"\n".join(lines))


def test_non_utf8_names_the_line_and_validate_runs_the_rest(synth: Path, tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    for name in ("news.tsv", "behaviors.tsv"):
        (root / "train" / name).write_bytes((synth / "train" / name).read_bytes())
    _break_line(root / "train" / "news.tsv", 200)
    with pytest.raises(InputError) as caught:
        read_news(root / "train" / "news.tsv")
    message = str(caught.value)
    assert f"{root / 'train' / 'news.tsv'}:200: not UTF-8 text" in message, message
    assert re.search(r"at byte \d+ of the line", message)
    checks = validate_dataset(root)
    rows = next(c for c in checks if c.name.startswith("news.tsv rows"))
    assert (
        rows.status == "FAIL" and "1 malformed row (" in rows.detail and "line 200: not UTF-8" in rows.detail
    )
    names = {c.name for c in checks}
    # the other checks still ran on the readable lines
    assert {
        "titles present",
        "candidate IDs in news.tsv",
        "times vary",
        "behaviors.tsv rows (5 columns)",
    } <= names
    assert "files readable" not in names


def test_cli_names_the_line(synth: Path, tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    for name in ("news.tsv", "behaviors.tsv"):
        (root / "train" / name).write_bytes((synth / "train" / name).read_bytes())
    _break_line(root / "train" / "behaviors.tsv", 7)
    result = runner.invoke(app, ["data", "stats", str(root)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "behaviors.tsv:7: not UTF-8 text" in result.stderr


def test_entity_json_reason_reads_once() -> None:
    with pytest.raises(ValueError) as caught:
        parse_entities('[{"Label": "Denver Hawks, "WikidataId": "Q1"')
    assert "at at" not in str(caught.value)
    with pytest.raises(ValueError, match=r"Unterminated string starting at char \d+"):
        parse_entities('[{"Label": "Denver')


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo this should never run",))


def test_tampered_checkpoint_is_refused_in_our_words(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save(path, {"model": {"w": torch.zeros(2)}})
    assert load(path)["model"]["w"].shape == (2,)
    torch.save({"model": {"w": torch.zeros(2)}, "extra": _RunsCode()}, path)
    with pytest.raises(InputError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: refused: the file holds code or objects that are not tensors")
    assert "weights_only" not in message and "\n" not in message


def test_counts_have_separators_and_plurals(synth: Path, tmp_path: Path) -> None:
    assert counted(1, "row") == "1 row" and counted(2300, "row") == "2,300 rows"
    assert counted(0, "news ID") == "0 news IDs" and counted(1, "entity", "entities") == "1 entity"
    assert agree(1, "has", "have") == "has" and agree(3, "has", "have") == "have"
    one = str(MissingVectorsError(["N1"], 12345, "store"))
    assert "1 of 12,345 IDs has no vector" in one
    many = str(MissingVectorsError([f"N{i}" for i in range(1200)], 5000, "store"))
    assert "1,200 of 5,000 IDs have no vector" in many
    result = runner.invoke(app, ["diagnose", "data", str(synth)], env={"COLUMNS": "200"})
    assert "all 1 lines" not in result.stdout
    lines = re.search(r"all ([\d,]+) lines read", result.stdout)
    assert lines is not None and "," in lines.group(1)  # over a thousand lines: 1,234


def test_refused_base_url_fails_at_once_and_leaves_nothing(
    tmp_path: Path, refused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{refused_port}/v1"
    provider = OpenAIProvider(base_url=url, max_retries=6)
    # Every retry waits _backoff(attempt) first: count the waits, not the seconds they take.
    waits: list[int] = []
    backoff = openai_api._backoff
    monkeypatch.setattr(
        openai_api, "_backoff", lambda attempt, *a: waits.append(attempt) or backoff(attempt, *a)
    )
    with pytest.raises(ProviderError, match=r"cannot reach .*Connection refused.*not retried"):
        provider.embed(["a headline"])
    assert waits == []  # six retries with backoff would have waited ~15 s
    data = write_news(tmp_path / "d", [("N1", "news", "us", "a headline")])
    result = runner.invoke(
        app, ["embed", str(data), "--out", str(tmp_path / "s"), "--provider", "openai", "--base-url", url]
    )
    assert result.exit_code == 1 and "not retried" in result.stderr
    assert not (tmp_path / "s").exists()  # no empty store folder, no empty chunks/


def test_config_init_lines_are_valid_toml_when_uncommented() -> None:
    text = example_toml()
    setting = re.compile(r"^# ([a-z_]+) = ")
    uncommented = [line[2:] if setting.match(line) else line for line in text.splitlines()]
    assert sum(1 for line in text.splitlines() if setting.match(line)) >= 60
    data = tomllib.loads("\n".join(uncommented))  # every line at once
    for stage in STAGES:
        resolve(stage, file_data=data, env={})  # and every value is allowed
