"""`--finetune-text K`: the text tower of a run, built from the store it replaces.

The tower must read exactly the text the store's vectors were made from: the store's template
over the dataset's news, checked against the store's text fingerprints (a store without them, or
made by another provider than the local sentence-transformers model, is refused). The vectors
the tower computes then replace the store's everywhere in the model: the text projection, the
content prior, and the centre both subtract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from newsrec_cli.embed.providers import INT8_SUFFIX
from newsrec_cli.embed.providers.local import model_location
from newsrec_cli.embed.text import template_fields, texts_of
from newsrec_cli.errors import SettingsError
from newsrec_cli.mind import NewsTable
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.model.text_tower import TextTower


def tower_location(meta: dict[str, Any]) -> str:
    """The sentence-transformers folder of the model a store was made with (SettingsError if none)."""
    provider, model = meta.get("provider"), meta.get("model")
    if provider != "local" or not isinstance(model, str):
        raise SettingsError(
            f"train.finetune_text: the store was made by the {provider!r} provider; fine-tuning needs a "
            "store of the local model (newsrec embed DATA --backend torch)"
        )
    return model_location(model.removesuffix(INT8_SUFFIX))


def store_template(meta: dict[str, Any]) -> str:
    template = meta.get("template")
    if not isinstance(template, str):
        raise SettingsError("train.finetune_text: the store records no text template; embed it again")
    template_fields(template)
    return template


def build_tower(trainable: int, meta: dict[str, Any]) -> TextTower:
    if trainable < 0:
        raise SettingsError(f"train.finetune_text = {trainable}: must be 0 (frozen) or more")
    return TextTower(tower_location(meta), trainable)


def news_texts(news: NewsTable, template: str, news_ids: Sequence[str]) -> list[str]:
    """The texts the store embedded for these news (embed/text.py's rendering, fallbacks included)."""
    return texts_of(news, template, news_ids)


def cache_texts(
    model: NewsRecommender, news: NewsTable, news_ids: Sequence[str], needed: np.ndarray, template: str
) -> int:
    """Tokenise and run the frozen layers once for the `needed` news indices that have a text
    vector (news_ids: the attached vocabulary). Returns the number of cached tokens."""
    encoder = model.news_encoder
    tower = encoder.tower
    if tower is None:
        return 0
    present = encoder.text_present.cpu().numpy() if encoder.text_present is not None else None
    rows = [int(i) for i in needed if i > 0 and (present is None or present[i]) and news_ids[i] in news.index]
    tower.cache(rows, news_texts(news, template, [news_ids[i] for i in rows]), len(news_ids))
    return tower.cached_tokens()


@torch.no_grad()
def refresh(model: NewsRecommender) -> None:
    """Put the tower's current vectors of the cached news into the model's text buffer and centre
    the text projection and the content prior on the new mean (news not cached, which no
    impression of the run uses, keep their store vector in that mean)."""
    encoder = model.news_encoder
    if encoder.tower is None or encoder.tower.slot is None:
        return
    encoder.refresh_text()
    set_centres(model)


@torch.no_grad()
def set_centres(model: NewsRecommender) -> None:
    """Centre the text projection and the content prior on the mean text vector of the news of
    the training impressions (`NewsFeatures.known`): news known at training time, never the
    reported split's. Features without `known` (scoring other data) keep the saved centre."""
    encoder = model.news_encoder
    if encoder.text is None or encoder.text_vectors is None or encoder.text_known is None:
        return
    use = encoder.text_known.clone()
    if encoder.text_present is not None:
        use &= encoder.text_present
    rows = encoder.text_vectors[use]
    if len(rows):
        encoder.text.set_center(rows)
        if model.prior is not None:
            model.prior.set_center(rows)


@torch.no_grad()
def encode_dataset_news(
    model: NewsRecommender, news: NewsTable, news_ids: Sequence[str], rows: np.ndarray, template: str
) -> None:
    """Overwrite the text buffer rows `rows` (news indices of the attached vocabulary) with the
    fine-tuned vectors of their texts in `news` (inference: the whole model, in chunks)."""
    encoder = model.news_encoder
    if encoder.tower is None or encoder.text_vectors is None:
        return
    present = encoder.text_present.cpu().numpy() if encoder.text_present is not None else None
    keep = [int(i) for i in rows if i > 0 and (present is None or present[i]) and news_ids[i] in news.index]
    if not keep:
        return
    vectors = encoder.tower.encode_texts(news_texts(news, template, [news_ids[i] for i in keep]))
    index = torch.tensor(keep, dtype=torch.long, device=encoder.text_vectors.device)
    encoder.text_vectors[index] = vectors.to(encoder.text_vectors.dtype)
