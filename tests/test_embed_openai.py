"""The openai provider through the real SDK, against an OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from embed_helpers import FakeEmbeddingServer, fake_vector, write_news
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.embed.providers.base import ProviderError
from newsrec_cli.embed.providers.openai_api import OpenAIProvider
from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.embed.tokens import token_counter

runner = CliRunner()
SECRET = "sk-test-DO-NOT-LEAK-4f9c2a"
TITLES = [f"headline number {i} about markets and weather" for i in range(12)]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_news(tmp_path / "d", [(f"N{i}", "news", "us", t) for i, t in enumerate(TITLES)])


def run_embed(server: FakeEmbeddingServer, data: Path, out: Path, *extra: str, batch_tokens: int = 10_000):
    env = {
        "OPENAI_API_KEY": SECRET,
        "NEWSREC_EMBED_MAX_BATCH_TOKENS": str(batch_tokens),
        "NEWSREC_EMBED_MAX_RETRIES": "2",
    }
    args = ["embed", str(data), "--out", str(out), "--provider", "openai", "--base-url", server.base_url]
    return runner.invoke(app, [*args, "--template", "{title}", "--json", *extra], env=env)


def expected_rows(texts: list[str], dim: int = 1536) -> np.ndarray:
    rows = np.stack([fake_vector(t, dim) for t in texts])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def assert_no_secret(tmp_path: Path, *outputs: str) -> None:
    for text in outputs:
        assert SECRET not in text
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file


def test_batches_by_tokens_through_base_url(tmp_path: Path, data: Path) -> None:
    counter = token_counter()
    budget = 3 * max(counter.count(t) for t in TITLES)  # three titles per request
    with FakeEmbeddingServer() as server:
        result = run_embed(server, data, tmp_path / "s", batch_tokens=budget)
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 4  # reached our server (--base-url), 12 texts in 4 requests
    for request in server.requests:
        assert request["model"] == "text-embedding-3-small" and request["encoding_format"] == "float"
        assert sum(counter.count(t) for t in request["input"]) <= budget
    assert server.texts_seen() == TITLES
    assert server.auth_headers[0] == f"Bearer {SECRET}"  # the key is sent, and only there
    store = EmbeddingStore.open(tmp_path / "s")
    ids = [f"N{i}" for i in range(12)]
    np.testing.assert_allclose(store.lookup(ids)[0], expected_rows(TITLES), rtol=1e-5)
    assert store.meta["provider"] == "openai" and store.meta["dimension"] == 1536
    assert_no_secret(tmp_path, result.output)


def test_dimensions_are_sent(tmp_path: Path, data: Path) -> None:
    with FakeEmbeddingServer() as server:
        result = run_embed(server, data, tmp_path / "s", "--dimensions", "8")
    assert result.exit_code == 0, result.output
    assert server.requests[0]["dimensions"] == 8
    assert EmbeddingStore.open(tmp_path / "s").dim == 8


@pytest.mark.parametrize("failure", ["429", "500"])
def test_transient_failure_is_retried(tmp_path: Path, data: Path, failure: str) -> None:
    with FakeEmbeddingServer(script=[failure]) as server:
        result = run_embed(server, data, tmp_path / "s")
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 2 and server.requests[0] == server.requests[1]
    assert json.loads(result.stdout)["count"] == 12
    np.testing.assert_allclose(np.asarray(EmbeddingStore.open(tmp_path / "s").vectors), expected_rows(TITLES))


def test_retry_after_is_honoured_by_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's retries: a 429 asking for 10 ms is sent again; one asking for longer than the
    SDK waits (two minutes) fails at once instead of holding the run."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeEmbeddingServer(script=["429-after:0.01", "429-after:0.01"]) as server:
        provider = OpenAIProvider("text-embedding-3-small", base_url=server.base_url, max_retries=2)
        np.testing.assert_array_equal(provider.embed(["a"]), fake_vector("a", 1536)[None])
    assert len(server.requests) == 3
    with FakeEmbeddingServer(script=["429-after:3600"]) as server:
        provider = OpenAIProvider("text-embedding-3-small", base_url=server.base_url, max_retries=2)
        with pytest.raises(ProviderError, match=r"answered HTTP 429: slow down$"):
            provider.embed(["a"])
    assert len(server.requests) == 1
    # A 429 after every try says how many there were.
    with FakeEmbeddingServer(script=["429-after:0.01"] * 3) as server:
        provider = OpenAIProvider("text-embedding-3-small", base_url=server.base_url, max_retries=2)
        with pytest.raises(ProviderError, match="answered HTTP 429 after 3 tries: slow down"):
            provider.embed(["a"])
    assert len(server.requests) == 3


def test_a_refused_connection_fails_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, refused_port: int
) -> None:
    """Nothing listens: no retry (the SDK would otherwise wait through 6 backoffs, ~23 s)."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    provider = OpenAIProvider(base_url=f"http://127.0.0.1:{refused_port}/v1", max_retries=6)
    with caplog.at_level(logging.DEBUG, logger="openai"), pytest.raises(ProviderError) as error:
        provider.embed(["a"])
    assert "cannot reach http://127.0.0.1" in str(error.value) and "not retried" in str(error.value)
    sent = [r for r in caplog.records if r.getMessage().startswith("Sending HTTP Request")]
    retried = [r for r in caplog.records if r.getMessage().startswith("Retrying request")]
    assert (len(sent), len(retried)) == (1, 0)


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (["ok", "malformed"], "malformed response from http://127.0.0.1"),
        (["ok", "garbage"], "malformed response"),
        (["ok", "500", "500", "500"], "answered HTTP 500 after 3 tries"),
        (["ok", "401-echo"], "answered HTTP 401"),
    ],
)
def test_failed_batch_stops_cleanly_keeping_earlier_batches(
    tmp_path: Path, data: Path, script: list[str], message: str
) -> None:
    budget = 6 * max(token_counter().count(t) for t in TITLES)  # two requests of six
    with FakeEmbeddingServer(script=script) as server:
        result = run_embed(server, data, tmp_path / "s", batch_tokens=budget)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output
    report = json.loads(result.stdout)
    assert (report["embedded"], report["failed"], report["count"]) == (6, 6, 6)
    store = EmbeddingStore.open(tmp_path / "s")
    assert store.ids == [f"N{i}" for i in range(6)]
    assert_no_secret(tmp_path, result.output)
    # The rerun asks the server only for the six that failed.
    with FakeEmbeddingServer() as server:
        rerun = run_embed(server, data, tmp_path / "s", batch_tokens=budget)
    assert rerun.exit_code == 0, rerun.output
    assert server.texts_seen() == TITLES[6:]
    np.testing.assert_allclose(
        EmbeddingStore.open(tmp_path / "s").lookup([f"N{i}" for i in range(12)])[0],
        expected_rows(TITLES),
        rtol=1e-5,
    )


def test_dry_run_counts_tokens_and_cost_without_requests_or_key(tmp_path: Path, data: Path) -> None:
    with FakeEmbeddingServer() as server:
        args = [
            "embed",
            str(data),
            "--out",
            str(tmp_path / "s"),
            "--provider",
            "openai",
            "--dry-run",
            "--json",
        ]
        result = runner.invoke(app, [*args, "--template", "{title}"], env={"OPENAI_API_KEY": ""})
        table = runner.invoke(
            app, args[:-1] + ["--model", "text-embedding-3-large"], env={"OPENAI_API_KEY": ""}
        )
    assert result.exit_code == 0, result.output
    assert server.requests == [] and not (tmp_path / "s").exists()
    plan = json.loads(result.stdout)
    counter = token_counter()
    assert plan["to_embed"] == 12 and plan["tokens"] == counter.total(TITLES)
    assert plan["cost_usd"] == pytest.approx(plan["tokens"] / 1e6 * 0.02)
    assert plan["tokens_exact"] == counter.exact
    assert table.exit_code == 0 and "estimated cost" in table.stdout and "$" in table.stdout
    if not counter.exact:
        assert "upper bound" in table.stdout


def test_provider_sorts_by_index_and_checks_dimensions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeEmbeddingServer() as server:
        provider = OpenAIProvider("text-embedding-3-small", base_url=server.base_url, max_retries=0)
        # The server answers in reverse order; rows must come back in input order.
        expected = np.stack([fake_vector(t, 1536) for t in "abc"])
        np.testing.assert_array_equal(provider.embed(["a", "b", "c"]), expected)
    with FakeEmbeddingServer(dim=16) as server:
        provider = OpenAIProvider("text-embedding-3-small", base_url=server.base_url, max_retries=0)
        # text-embedding-3-small is 1536-d: a 16-d answer is an error, never stored.
        with pytest.raises(ProviderError, match="returned 16-d vectors, expected 1536"):
            provider.embed(["a"])
    assert repr(provider).startswith("OpenAIProvider(") and SECRET not in repr(provider)


def test_unknown_model_learns_its_dimension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a compatible server needs no key
    with FakeEmbeddingServer() as server:
        provider = OpenAIProvider("nomic-embed-text", base_url=server.base_url, max_retries=0)
        assert provider.dimension is None
        assert provider.embed(["x"]).shape == (1, 16) and provider.dimension == 16
    assert server.auth_headers == ["Bearer unused"]
