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

    return ProviderSpec(name="local", model=model_name(settings.model), dimension=None, semantic=True)


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
    from newsrec_cli.embed.providers.local import LocalProvider

    return LocalProvider(settings.model, device=settings.device, batch_size=settings.batch_size)


def _hashing_dim(settings: EmbedSettings) -> int:
    return settings.dimensions or settings.hashing_dim
