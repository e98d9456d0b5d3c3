"""Text vectors for news and entities: providers behind one protocol, and the store keyed by ID."""

from newsrec_cli.embed.store import EmbeddingStore

__all__ = ["EmbeddingStore"]
