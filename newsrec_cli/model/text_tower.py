"""The last K layers of the local sentence encoder (all-MiniLM-L6-v2), fine-tuned end to end.

`newsrec train --finetune-text K` replaces each news item's frozen store vector by what this
tower computes from the same text. The first 6-K layers stay frozen, so their output is computed
once per run and kept per news (packed, without padding); a training step runs only the last K
layers, over the news of its batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from newsrec_cli.embed.providers.base import quiet_transformers
from newsrec_cli.errors import InputError, SettingsError

ENCODE_CHUNK = 128  # news per forward when encoding without gradients (bounded attention memory)


class TextTower(nn.Module):
    r"""Sentence vectors of news texts whose last ``trainable`` transformer layers are learned.

    .. math::
        h = \mathrm{Frozen}_{1..L-K}(\mathrm{tokens}), \qquad
        x = \frac{\mathrm{mean}_{t\,:\,m_t}\,\mathrm{Layer}_{L-K+1..L}(h)_t}{\lVert \cdot \rVert}

    Mean pooling over the real tokens and L2 normalisation are what the sentence-transformers
    model does, so before any step :math:`x` is the vector `newsrec embed --backend torch` stored
    (to float rounding). Only the last K layers are parameters (saved in the model's state dict);
    the embeddings and first L-K layers are kept outside it, frozen.

    :meth:`cache` tokenises the news texts and runs the frozen layers once; :meth:`forward` then
    runs the learned layers for a set of news indices. :meth:`encode_texts` runs the whole model
    on raw texts (inference on news not cached).

    Args:
        location: a sentence-transformers folder (its transformer files at the top).
        trainable: K, the number of last layers to learn (1 .. the model's layer count).
        max_length: tokens kept per text (the model's own max_seq_length by default).

    Shapes:
        - forward: news (U,) int64 indices of cached news -> (U, T) unit vectors
        - encode_texts: N texts -> (N, T)
    """

    def __init__(self, location: str, trainable: int, max_length: int | None = None) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer  # optional extra: only with --finetune-text

        quiet_transformers()  # the pooler's "unused weights" chatter, transformers' own bars
        try:
            bert = AutoModel.from_pretrained(location)
            tokenizer = AutoTokenizer.from_pretrained(location)
        except Exception as exc:  # OSError, ValueError...: all mean "cannot load"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot load the local text model offline ({reason})", path=location) from None
        layers = getattr(getattr(bert, "encoder", None), "layer", None)
        if layers is None or not hasattr(bert, "embeddings"):
            raise InputError(
                "--finetune-text needs a BERT-style encoder (embeddings + layers)", path=location
            )
        total = len(layers)
        if not 1 <= trainable <= total:
            raise SettingsError(
                f"train.finetune_text = {trainable}: the text model has {total} layers; choose 1 to {total} "
                "(0 keeps the store's frozen vectors)"
            )
        self.trainable = trainable
        self.total_layers = total
        self.dim = int(bert.config.hidden_size)
        self.max_length = max_length or _max_seq_length(location, tokenizer)
        self.layers = nn.ModuleList(layers[total - trainable :])
        # The frozen part is kept out of the state dict and the optimizer: a plain attribute.
        frozen = nn.ModuleList([bert.embeddings, *layers[: total - trainable]]).eval()
        frozen.requires_grad_(False)
        self._frozen = [frozen]
        self._tokenizer = tokenizer
        # Packed cache: hidden states of cached news after the frozen layers, row ranges per news.
        for name in ("hidden", "start", "length", "slot"):
            self.register_buffer(name, None, persistent=False)

    # ------------------------------------------------------------------ frozen part, cache

    @property
    def frozen(self) -> nn.ModuleList:
        return self._frozen[0]

    def _device(self) -> torch.device:
        return next(self.layers.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids (N, L) and attention mask (N, L), as sentence-transformers tokenises them."""
        encoded = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return encoded["input_ids"], encoded["attention_mask"]

    @torch.no_grad()
    def _run_frozen(self, ids: Tensor, mask: Tensor) -> Tensor:
        """(N, L) tokens -> (N, L, T) hidden states after the frozen layers."""
        frozen = self.frozen.to(self._device())
        hidden = frozen[0](input_ids=ids, token_type_ids=torch.zeros_like(ids))
        additive = _additive_mask(mask, hidden.dtype)
        for layer in frozen[1:]:
            hidden = _layer(layer, hidden, additive)
        return hidden

    @torch.no_grad()
    def cache(self, news: Sequence[int], texts: Sequence[str], num_news: int) -> None:
        """Tokenise `texts` (of news indices `news`) and keep their frozen-layer hidden states.

        News indices not cached keep slot -1 (:meth:`forward` does not serve them).
        """
        device = self._device()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths per chunk
        parts: list[Tensor] = []
        lengths = torch.zeros(len(texts), dtype=torch.long)
        for begin in range(0, len(order), ENCODE_CHUNK):
            rows = order[begin : begin + ENCODE_CHUNK]
            ids, mask = self.tokenize([texts[i] for i in rows])
            hidden = self._run_frozen(ids.to(device), mask.to(device))
            for j, row in enumerate(rows):
                n = int(mask[j].sum())
                lengths[row] = n
                parts.append(hidden[j, :n])
        # parts are in `order`: news order[k] starts after the tokens of order[:k]
        ordered = torch.tensor(order, dtype=torch.long)
        ordered_lengths = lengths[ordered]
        start = torch.empty(len(texts), dtype=torch.long)
        start[ordered] = torch.cumsum(ordered_lengths, 0) - ordered_lengths
        self.hidden = torch.cat(parts) if parts else torch.zeros(0, self.dim, device=device)
        self.start = start.to(device)
        self.length = lengths.to(device)
        slot = torch.full((num_news,), -1, dtype=torch.long)
        slot[torch.as_tensor(list(news), dtype=torch.long)] = torch.arange(len(texts))
        self.slot = slot.to(device)

    def clear(self) -> None:
        self.hidden = self.start = self.length = self.slot = None

    @property
    def cached_news(self) -> Tensor:
        """News indices the cache holds (int64, ascending)."""
        if self.slot is None:
            return torch.zeros(0, dtype=torch.long)
        return torch.nonzero(self.slot >= 0).flatten()

    def cached_tokens(self) -> int:
        return 0 if self.hidden is None else int(self.hidden.shape[0])

    # ------------------------------------------------------------------ learned part

    def _pool(self, hidden: Tensor, mask: Tensor) -> Tensor:
        additive = _additive_mask(mask, hidden.dtype)
        for layer in self.layers:
            hidden = _layer(layer, hidden, additive)
        weights = mask[..., None].to(hidden.dtype)  # (N, L, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled.float(), dim=-1)

    def forward(self, news: Tensor) -> Tensor:
        """(U,) indices of cached news -> (U, T) unit vectors through the learned layers."""
        if self.slot is None:
            raise RuntimeError("TextTower: nothing cached (call cache first)")
        slots = self.slot[news]
        if bool((slots < 0).any()):
            raise RuntimeError("TextTower: news outside the cache")
        length = self.length[slots]  # (U,)
        L = int(length.max()) if len(length) else 0
        offsets = torch.arange(L, device=slots.device)  # (L,)
        mask = offsets[None, :] < length[:, None]  # (U, L)
        rows = (self.start[slots][:, None] + offsets[None, :]).clamp(max=max(self.hidden.shape[0] - 1, 0))
        hidden = self.hidden[rows] * mask[..., None]  # (U, L, T); padding rows zeroed
        return self._pool(hidden, mask.long())

    @torch.no_grad()
    def encode_cached(self, news: Tensor) -> Tensor:
        """Vectors of cached news without gradients, in chunks, (U,) -> (U, T)."""
        was_training = self.training
        self.eval()
        try:
            out = [self(news[i : i + ENCODE_CHUNK]) for i in range(0, len(news), ENCODE_CHUNK)]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.dim, device=self._device())

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """The whole model (frozen and learned layers) on raw texts, without gradients: (N, T)."""
        was_training = self.training
        self.eval()
        device = self._device()
        vectors = torch.zeros(len(texts), self.dim, device=device)
        try:
            order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
            for begin in range(0, len(order), ENCODE_CHUNK):
                rows = order[begin : begin + ENCODE_CHUNK]
                ids, mask = self.tokenize([texts[i] for i in rows])
                ids, mask = ids.to(device), mask.to(device)
                hidden = self._run_frozen(ids, mask)
                vectors[torch.tensor(rows, device=device)] = self._pool(hidden, mask)
        finally:
            self.train(was_training)
        return vectors

    def extra_repr(self) -> str:
        return f"trainable={self.trainable} of {self.total_layers} layers, max_length={self.max_length}"


def _additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(N, L) 1/0 mask -> (N, 1, 1, L) additive mask, what BERT's attention adds to its scores."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _layer(layer: nn.Module, hidden: Tensor, additive: Tensor) -> Tensor:
    out: Any = layer(hidden, attention_mask=additive)
    return out[0] if isinstance(out, tuple) else out  # transformers < 5 returns a tuple


def _max_seq_length(location: str, tokenizer: Any) -> int:
    """sentence_bert_config.json's max_seq_length (256 for all-MiniLM-L6-v2), else the tokenizer's."""
    config = Path(location) / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return int(min(getattr(tokenizer, "model_max_length", 512), 512))
