"""Embedding providers behind one protocol: local (default), openai, hashing."""

from __future__ import annotations

from newsrec_cli.embed.providers.base import EmbeddingProvider, ProviderError, ProviderSpec
from newsrec_cli.errors import SettingsError
from newsrec_cli.settings import EmbedSettings

__all__ = ["EmbeddingProvider", "ProviderError", "ProviderSpec", "describe", "make_provider"]


def describe(settings: EmbedSettings) -> ProviderSpec:
    """What `make_provider(settings)` will record, without loading a model or opening a client."""
    if settings.provider == "openai":
        from newsrec_cli.embed.providers.openai_api import describe as describe_openai

        return describe_openai(settings.model, settings.dimensions)
    if settings.provider == "hashing":
        from newsrec_cli.embed.providers.hashing import MODEL

        return ProviderSpec(name="hashing", model=MODEL, dimension=_hashing_dim(settings), semantic=False)
    from newsrec_cli.embed.providers.local import model_name

    if settings.dimensions is not None:
        raise SettingsError(
            "embed.dimensions: a local model has a fixed size; --dimensions is for openai and hashing"
        )
    int8 = local_backend(settings) == "onnx" and settings.int8
    label = model_name(settings.model) + (" (onnx int8)" if int8 else "")
    return ProviderSpec(name="local", model=label, dimension=None, semantic=True)


def local_backend(settings: EmbedSettings) -> str:
    """torch or onnx: what `auto` means here (onnx on CPU with onnxruntime installed, else torch)."""
    if settings.backend != "auto":
        return settings.backend
    import importlib.util

    from newsrec_cli.embed.providers.local import resolve_device

    if resolve_device(settings.device) != "cpu" or importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    return "onnx"


def make_provider(settings: EmbedSettings) -> EmbeddingProvider:
    """Build the provider the settings name (loads the local model, opens the API client)."""
    if settings.provider == "openai":
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
        from newsrec_cli.embed.providers.hashing import HashingProvider

        return HashingProvider(
            _hashing_dim(settings), batch_size=settings.batch_size, delay=settings.hashing_delay
        )
    describe(settings)  # the same checks of the settings
    if local_backend(settings) == "onnx":
        from newsrec_cli.embed.providers.local import resolve_device
        from newsrec_cli.embed.providers.onnx_local import OnnxProvider

        if resolve_device(settings.device) != "cpu":
            raise SettingsError(f"embed.backend = onnx runs on CPU; device {settings.device!r} needs torch")
        return OnnxProvider(
            settings.model, batch_size=settings.batch_size, int8=settings.int8, threads=settings.threads
        )
    from newsrec_cli.embed.providers.local import LocalProvider

    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    return LocalProvider(settings.model, device=settings.device, batch_size=settings.batch_size)


def _hashing_dim(settings: EmbedSettings) -> int:
    return settings.dimensions or settings.hashing_dim
