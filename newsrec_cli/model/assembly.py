"""Assembling a fresh recommender from its settings and the data context (`build_model`), and the
device it runs on. Training builds its model here; loading a run builds the same one for its weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from newsrec_cli.errors import SettingsError
from newsrec_cli.model.candidate_user_encoder import CandidateUserEncoder
from newsrec_cli.model.category_embedding import CategoryEmbedding
from newsrec_cli.model.content_prior import ContentPrior
from newsrec_cli.model.finetune import build_tower, set_centres
from newsrec_cli.model.fusion import build_fusion
from newsrec_cli.model.graph_modality import GraphModality
from newsrec_cli.model.id_embedding import NewsIdEmbedding
from newsrec_cli.model.news_encoder import NewsEncoder
from newsrec_cli.model.popularity import PopularityHead
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.model.scorer import ScoringHead
from newsrec_cli.model.text_projection import TextProjection
from newsrec_cli.model.user_encoder import UserEncoder
from newsrec_cli.settings import GraphSettings, TrainSettings

if TYPE_CHECKING:
    from newsrec_cli.runs.context import DataContext


def resolve_device(device: str) -> torch.device:
    """auto: CUDA when present, else CPU; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise SettingsError(
            f"train.device = {device!r}: not a device (auto, cpu, cuda, cuda:1, ...)"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"train.device = {device!r}: CUDA is not available on this machine")
    return resolved


def modalities(settings: TrainSettings, *, has_graph: bool) -> list[str]:
    """The modalities a model really gets (graph only when a graph was given)."""
    wanted = {
        "id": settings.use_id,
        "text": settings.use_text,
        "graph": settings.use_graph and has_graph,
        "category": settings.use_category,
    }
    return [name for name, on in wanted.items() if on]


def build_model(
    settings: TrainSettings, graph_settings: GraphSettings, context: DataContext
) -> NewsRecommender:
    """A freshly initialised recommender with `context.features` attached."""
    check_modalities(
        settings.use_id,
        settings.use_text,
        settings.use_graph and context.graph is not None,
        settings.use_category,
    )
    if settings.dim % settings.heads:
        raise SettingsError(f"train.dim = {settings.dim} must be divisible by train.heads = {settings.heads}")
    if settings.use_text and context.text_dim is None:
        raise SettingsError("train.use_text is on but no embedding store was given (--embeddings STORE)")
    names = modalities(settings, has_graph=context.graph is not None)
    dim = settings.dim
    tower = None
    if settings.finetune_text and "text" in names:
        tower = build_tower(settings.finetune_text, context.text_meta or {})
        if tower.dim != context.text_dim:
            raise SettingsError(
                f"train.finetune_text: the text model gives {tower.dim}-d vectors, the store holds "
                f"{context.text_dim}-d ones"
            )
    elif settings.finetune_text:
        raise SettingsError("train.finetune_text needs the text modality (--use-text and --embeddings)")
    graph = None
    if "graph" in names:
        from newsrec_cli.graph import build_graph_encoder  # torch_geometric loads only when a graph is used

        graph = GraphModality(build_graph_encoder(graph_settings, context.graph, dim), dim)
    news_encoder = NewsEncoder(
        dim,
        build_fusion(settings.fusion, names, dim, settings.dropout),
        id_embedding=NewsIdEmbedding(len(context.vocabs.ids), dim, settings.id_dropout)
        if "id" in names
        else None,
        text=TextProjection(
            context.text_dim, dim, settings.text_projection, settings.dropout, settings.text_dropout
        )
        if "text" in names and context.text_dim
        else None,
        graph=graph,
        category=CategoryEmbedding(len(context.vocabs.categories), len(context.vocabs.subcategories), dim)
        if "category" in names
        else None,
        tower=tower,
    )
    users = context.vocabs.users
    encoder = CandidateUserEncoder if settings.user_encoder == "candidate" else UserEncoder
    user_encoder = encoder(
        dim,
        settings.heads,
        settings.dropout,
        num_users=len(users) if settings.use_user_id and users else None,
    )
    prior = (
        ContentPrior(settings.prior_weight, context.text_dim if settings.prior_adapter else None)
        if settings.content_prior and news_encoder.text
        else None
    )
    model = NewsRecommender(
        news_encoder,
        user_encoder,
        ScoringHead(settings.scoring, dim, settings.score_scale),
        prior=prior,
        aux_categories=len(context.vocabs.categories) if settings.aux_category > 0 else 0,
    )
    if settings.use_popularity:
        model.popularity = PopularityHead(settings.popularity_head)
    model.attach(context.features)
    set_centres(model)
    return model


def check_modalities(use_id: bool, use_text: bool, use_graph: bool, use_category: bool) -> None:
    if not (use_id or use_text or use_graph or use_category):
        raise SettingsError(
            "train: every modality is off (use_id, use_text, use_graph, use_category); turn at least one on"
        )
