"""Embedding providers behind one protocol: local (default), openai, hashing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from newsrec_cli.embed.providers.base import EmbeddingProvider, ProviderError, ProviderSpec
from newsrec_cli.embed.providers.hashing import MODEL, HashingProvider
from newsrec_cli.embed.providers.local import LocalProvider, model_location, model_name, resolve_device
from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.settings import EmbedSettings

__all__ = ["EmbeddingProvider", "ProviderError", "ProviderSpec", "describe", "local_runtime", "make_provider"]

INT8_SUFFIX = " (onnx int8)"  # appended to the model name of int8 stores: their vectors differ slightly


def describe(settings: EmbedSettings) -> ProviderSpec:
    """What `make_provider(settings)` will record, without loading a model or opening a client."""
    if settings.provider == "openai":
        # why here: the OpenAI SDK loads only for --provider openai (not at every CLI start)
        from newsrec_cli.embed.providers.openai_api import describe as describe_openai

        return describe_openai(settings.model, settings.dimensions)
    if settings.provider == "hashing":
        return ProviderSpec(name="hashing", model=MODEL, dimension=_hashing_dim(settings), semantic=False)
    if settings.dimensions is not None:
        raise SettingsError(
            "embed.dimensions: a local model has a fixed size; --dimensions is for openai and hashing"
        )
    model, backend, int8 = local_runtime(settings)
    label = model_name(model) + (INT8_SUFFIX if int8 else "")
    return ProviderSpec(name="local", model=label, dimension=None, semantic=True)


def local_runtime(settings: EmbedSettings) -> tuple[str | None, str, bool]:
    """The local model to load, its runtime (torch or onnx) and whether it is int8.

    `auto` is onnx on CPU when onnxruntime is installed, torch on CUDA. int8 applies to onnx only.
    A model name that a store recorded with INT8_SUFFIX asks for those int8 vectors again, so that
    a store's own settings reproduce it (`newsrec serve` embeds fresh news that way).
    """
    model = settings.model
    if model is not None and model.endswith(INT8_SUFFIX):
        return model.removesuffix(INT8_SUFFIX), "onnx", True
    backend = settings.backend
    if backend == "auto":
        cpu = resolve_device(settings.device) == "cpu"
        onnx = cpu and importlib.util.find_spec("onnxruntime") is not None and _is_model_folder(model)
        backend = "onnx" if onnx else "torch"
    return model, backend, backend == "onnx" and settings.int8


def _is_model_folder(model: str | None) -> bool:
    """Whether the local model is a sentence-transformers folder on disk (what ONNX exports from);
    anything else goes to torch, whose loader explains what is wrong with it."""
    try:
        return (Path(model_location(model)) / "modules.json").is_file()
    except InputError:  # the default model's package is missing: torch's loader says so
        return False


def make_provider(settings: EmbedSettings) -> EmbeddingProvider:
    """Build the provider the settings name (loads the local model, opens the API client)."""
    if settings.provider == "openai":
        # why here: the OpenAI SDK loads only for --provider openai
        from newsrec_cli.embed.providers.openai_api import OpenAIProvider

        return OpenAIProvider(
            settings.model,
            dimensions=settings.dimensions,
            base_url=settings.base_url,
            max_batch_tokens=settings.max_batch_tokens,
            max_batch_texts=settings.max_batch_texts,
            max_retries=settings.max_retries,
            timeout=settings.timeout,
        )
    if settings.provider == "hashing":
        return HashingProvider(
            _hashing_dim(settings), batch_size=settings.batch_size, delay=settings.hashing_delay
        )
    describe(settings)  # the same checks of the settings
    model, backend, int8 = local_runtime(settings)
    if backend == "onnx":
        # why here: the ONNX path (its export, filelock, then onnxruntime) loads only for that backend
        from newsrec_cli.embed.providers.onnx_local import OnnxProvider

        # ONNX Runtime runs here on CPU whatever --device says (CUDA would need onnxruntime-gpu)
        return OnnxProvider(model, batch_size=settings.batch_size, int8=int8, threads=settings.threads)
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    return LocalProvider(model, device=settings.device, batch_size=settings.batch_size)


def _hashing_dim(settings: EmbedSettings) -> int:
    return settings.dimensions or settings.hashing_dim
