"""The recommender: news encoder + user encoder + scoring head, producing logits."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from newsrec_cli.model.features import NewsFeatures
from newsrec_cli.model.news_encoder import NewsEncoder
from newsrec_cli.model.scorer import ScoringHead
from newsrec_cli.model.user_encoder import UserEncoder


class NewsRecommender(nn.Module):
    r"""Scores candidate news for a user given the user's clicked history.

    .. math::
        n_k = \mathrm{NewsEncoder}(c_k), \qquad
        u = \mathrm{UserEncoder}(\mathrm{NewsEncoder}(h_1), \dots, \mathrm{NewsEncoder}(h_H)),
        \qquad s_k = \mathrm{Score}(u, n_k)

    Outputs are logits; training losses take them as they are, ``predict_proba`` applies the
    sigmoid. News indices refer to the news vocabulary of the attached :class:`NewsFeatures`.

    Shapes:
        - history: (B, H) int64, history_mask: (B, H) bool, candidates: (B, K) int64,
          users: (B,) int64 or None (rows of the user-ID table, 0 = unknown)
        - output: (B, K) logits
    """

    def __init__(self, news_encoder: NewsEncoder, user_encoder: UserEncoder, scorer: ScoringHead) -> None:
        super().__init__()
        self.news_encoder = news_encoder
        self.user_encoder = user_encoder
        self.scorer = scorer

    @property
    def dim(self) -> int:
        return self.news_encoder.dim

    def attach(self, features: NewsFeatures) -> None:
        """Per-news inputs for a news vocabulary (see NewsFeatures); indices refer to it."""
        self.news_encoder.attach(features)

    def encode_news(self, news: Tensor) -> Tensor:
        """(...) news indices -> (..., D) news vectors."""
        return self.news_encoder(news)

    def encode_user(self, history: Tensor, mask: Tensor, users: Tensor | None = None) -> Tensor:
        """(B, H) clicked news + mask -> (B, D) user vectors."""
        return self.user_encoder(self.news_encoder(history), mask, users)

    def encode_user_vectors(self, clicked: Tensor, mask: Tensor, users: Tensor | None = None) -> Tensor:
        """(B, H, D) clicked news vectors already encoded + mask -> (B, D) user vectors."""
        return self.user_encoder(clicked, mask, users)

    def score(self, user: Tensor, news: Tensor) -> Tensor:
        """(B, D) users and (B, K, D) candidate vectors -> (B, K) logits."""
        return self.scorer(user, news)

    def forward(
        self, history: Tensor, history_mask: Tensor, candidates: Tensor, users: Tensor | None = None
    ) -> Tensor:
        B, H = history.shape  # batch, history length
        K = candidates.shape[1]  # candidates per row
        # Encode every distinct news of the batch once, history and candidates together.
        vectors = self.news_encoder(
            torch.cat([history.reshape(-1), candidates.reshape(-1)])
        )  # (B*H + B*K, D)
        clicked = vectors[: B * H].view(B, H, -1)  # (B, H, D)
        candidate = vectors[B * H :].view(B, K, -1)  # (B, K, D)
        user = self.user_encoder(clicked, history_mask, users)  # (B, D)
        return self.scorer(user, candidate)

    @torch.no_grad()
    def predict_proba(
        self, history: Tensor, history_mask: Tensor, candidates: Tensor, users: Tensor | None = None
    ) -> Tensor:
        """Click probabilities sigmoid(logit), (B, K)."""
        return torch.sigmoid(self.forward(history, history_mask, candidates, users).float())

    def fusion_weights(self) -> dict[str, float] | None:
        """Mean fusion weight per modality over the last forward (None for concat or before any)."""
        return self.news_encoder.fusion.weights()
