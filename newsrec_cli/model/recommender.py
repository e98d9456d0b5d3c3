"""The recommender: news encoder + user encoder + scoring head (+ content prior), producing logits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from newsrec_cli.model.candidate_user_encoder import CandidateUserEncoder
from newsrec_cli.model.content_prior import ContentPrior
from newsrec_cli.model.features import NewsFeatures
from newsrec_cli.model.news_encoder import NewsEncoder
from newsrec_cli.model.scorer import ScoringHead
from newsrec_cli.model.user_encoder import UserEncoder


@dataclass(frozen=True)
class UserState:
    """A user state, in its parts. It travels packed as one (B, S) tensor, ``[encoder | text]``:
    one array for the user-state cache, and one input of the exported scorer.

    - ``encoder``: what the user encoder made of the clicked news' learned vectors, (B, S_enc)
      (the user vector itself, or a candidate-aware encoder's packed history);
    - ``text``: the content prior's unit history text vector, (B, T); None without a prior.
    """

    encoder: Tensor
    text: Tensor | None = None

    def pack(self) -> Tensor:
        """(B, S_enc + T) packed state."""
        return self.encoder if self.text is None else torch.cat([self.encoder.float(), self.text], dim=-1)

    @classmethod
    def unpack(cls, state: Tensor, text_dim: int) -> UserState:
        """The parts of a packed (B, S) state whose last `text_dim` columns are the text part."""
        if not text_dim:
            return cls(state)
        return cls(state[:, : state.shape[1] - text_dim], state[:, state.shape[1] - text_dim :])


class NewsRecommender(nn.Module):
    r"""Scores candidate news for a user given the user's clicked history.

    .. math::
        n_k = \mathrm{NewsEncoder}(c_k), \qquad
        u = \mathrm{UserEncoder}(\mathrm{NewsEncoder}(h_1), \dots, \mathrm{NewsEncoder}(h_H)),
        \qquad s_k = \mathrm{Score}(u, n_k) \;[+\, w \cos(\bar x_h, x_{c_k})]

    With a :class:`ContentPrior`, the zero-shot similarity of the raw text vectors is a path of
    the score from the first step: training starts at the content baseline and the learned part
    adds to it. Outputs are logits; training losses take them as they are (probabilities are
    their sigmoid). News indices refer to the news vocabulary of the attached
    :class:`NewsFeatures`.

    Evaluation goes through three calls, and ``forward`` is exactly their composition:
    ``encode_news`` (one vector per news, cacheable by ID), ``encode_user_state`` (a user state
    from the clicked news' vectors, cacheable per history; ``encode_user_rows`` is the same from
    rows of a news table) and ``score``. Serving retrieves with the inner-product form of the same
    score: ``score_queries(state) . score_keys(vectors)`` (``inner_product_score``). A news vector
    is the learned vector (``news_dim``) followed by the unit text vector when there is a prior;
    a user state is a packed :class:`UserState`.

    Shapes:
        - history: (B, H) int64, history_mask: (B, H) bool, candidates: (B, K) int64,
          users: (B,) int64 or None (rows of the user-ID table, 0 = unknown)
        - output: (B, K) float32 logits
    """

    def __init__(
        self,
        news_encoder: NewsEncoder,
        user_encoder: UserEncoder | CandidateUserEncoder,
        scorer: ScoringHead,
        prior: ContentPrior | None = None,
        aux_categories: int = 0,
    ) -> None:
        super().__init__()
        self.news_encoder = news_encoder
        self.user_encoder = user_encoder
        self.scorer = scorer
        self.prior = prior
        if prior is not None and news_encoder.text is None:
            raise ValueError(f"{self.__class__.__name__}: the content prior needs the text modality")
        # Multi-task: predict the clicked news' category from the user (a regulariser for small data).
        self.category_head = nn.Linear(news_encoder.dim, aux_categories) if aux_categories else None
        # Popularity (model/popularity.py): a per-candidate term added to the logit outside the
        # user state; build_model sets it with --use-popularity.
        self.popularity: nn.Module | None = None

    @property
    def news_dim(self) -> int:
        """Size of the learned news vector."""
        return self.news_encoder.dim

    @property
    def prior_dim(self) -> int:
        return self.news_encoder.text.in_dim if self.prior is not None else 0

    @property
    def dim(self) -> int:
        """Size of the vectors `encode_news` returns."""
        return self.news_dim + self.prior_dim

    def attach(self, features: NewsFeatures) -> None:
        """Use these per-news inputs (see NewsFeatures); indices refer to their vocabulary."""
        self.news_encoder.attach(features)

    def _split_news(self, news: Tensor) -> tuple[Tensor, Tensor | None]:
        """(..., dim) news vectors -> the learned part (..., news_dim) and the text part (..., T)."""
        D = self.news_dim
        return news[..., :D], (news[..., D:] if self.prior is not None else None)

    def _split_user(self, state: Tensor) -> UserState:
        return UserState.unpack(state, self.prior_dim)

    def _encode_unique(self, news: Tensor) -> Tensor:
        """Vectors of distinct news indices, (U,) -> (U, dim)."""
        raw = self.news_encoder.raw_text(news)  # (U, T) once: a fine-tuned tower runs here
        learned = self.news_encoder.encode_unique(news, raw)
        if self.prior is None:
            return learned
        text = self.prior.news(raw)  # (U, T)
        return torch.cat([learned.float(), text], dim=-1)

    def encode_news(self, news: Tensor) -> Tensor:
        """(...) news indices -> (..., dim) news vectors; each distinct news is encoded once."""
        unique, inverse = torch.unique(news.reshape(-1), return_inverse=True)
        vectors = self._encode_unique(unique)  # (U, dim)
        return vectors[inverse].reshape(*news.shape, vectors.shape[-1])

    def encode_user_state(self, clicked: Tensor, mask: Tensor, users: Tensor | None = None) -> Tensor:
        """(B, H, dim) clicked news vectors + (B, H) mask -> (B, S) packed user states."""
        learned, text = self._split_news(clicked)
        state = self.user_encoder(learned, mask, users)
        return UserState(state, None if text is None else self.prior.user(text, mask)).pack()

    def encode_user_rows(
        self, learned: Tensor, text: Tensor | None, rows: Tensor, mask: Tensor, users: Tensor | None = None
    ) -> Tensor:
        """`encode_user_state` of the clicked news `rows` (B, H) of a news table split in its
        learned part (N, news_dim) and its text part (N, prior_dim; None without a prior): only
        the learned part is gathered per click, the prior sums the text part in place."""
        state = self.user_encoder(learned[rows], mask, users)
        if self.prior is None:
            return UserState(state).pack()
        assert text is not None, "a model with a prior needs the text part of the table"
        return UserState(state, self.prior.user_rows(text, rows, mask)).pack()

    def history_attention(self, state: Tensor, news: Tensor) -> Tensor | None:
        """The attention of each candidate over the clicked news, (B, K, H), for a candidate-aware
        user encoder; None for one whose user vector does not depend on the candidate."""
        learned, _ = self._split_news(news)
        return self.user_encoder.for_candidates(self._split_user(state).encoder, learned)[1]

    def score(self, user: Tensor, news: Tensor) -> Tensor:
        """(B, S) user states and (B, K, dim) candidate vectors -> (B, K) float32 logits."""
        parts = self._split_user(user)
        learned, text = self._split_news(news)
        learned_user, _ = self.user_encoder.for_candidates(parts.encoder, learned)
        logits = self.scorer(learned_user, learned)
        if self.prior is not None:
            logits = logits + self.prior(parts.text, text)
        return logits

    def forward(
        self, history: Tensor, history_mask: Tensor, candidates: Tensor, users: Tensor | None = None
    ) -> Tensor:
        return self.forward_with_user(history, history_mask, candidates, users)[0]

    def forward_with_user(
        self,
        history: Tensor,
        history_mask: Tensor,
        candidates: Tensor,
        users: Tensor | None = None,
        *,
        in_batch: bool = False,
        gather: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Logits and the user states (B, S), for losses that also use the user.

        The logits are (B, K), or with ``in_batch`` (B, B*K): every user against every candidate
        of the batch, row b's own candidates at columns b*K ... b*K+K-1. In distributed training
        ``gather`` maps this process's candidate vectors (B, K, dim) to the whole batch's
        (B_all, K, dim), with gradient, and the logits are (B, B_all*K).
        """
        B, H = history.shape  # batch, history length
        K = candidates.shape[1]  # candidates per row
        # Encode every distinct news of the batch once, history and candidates together.
        vectors = self.encode_news(
            torch.cat([history.reshape(-1), candidates.reshape(-1)])
        )  # (B*H + B*K, dim)
        clicked = vectors[: B * H].view(B, H, -1)  # (B, H, dim)
        candidate = vectors[B * H :].view(B, K, -1)  # (B, K, dim)
        user = self.encode_user_state(clicked, history_mask, users)  # (B, S)
        if in_batch:
            if gather is not None:
                candidate = gather(candidate)  # (B_all, K, dim): every process's candidates
            return self._score_pairwise(user, candidate.reshape(-1, candidate.shape[-1])), user  # (B, B*K)
        return self.score(user, candidate), user

    def _score_pairwise(self, user: Tensor, news: Tensor) -> Tensor:
        """Every user against every news: (B, S) user states, (N, dim) news vectors -> (B, N) logits,
        equal to `score` of each pair. A user encoder without candidate attention gives one user
        vector for all candidates, so this is a matrix product, not B copies of the news."""
        if not self.inner_product_score:
            B, N = user.shape[0], news.shape[0]
            return self.score(user, news.unsqueeze(0).expand(B, N, news.shape[-1]))
        parts = self._split_user(user)
        learned, text = self._split_news(news)
        logits = self.scorer.pairwise(parts.encoder, learned)
        if self.prior is not None:
            logits = logits + self.prior.pairwise(parts.text, text)
        return logits

    @property
    def inner_product_score(self) -> bool:
        """Whether `score` is `score_queries(user) . score_keys(news)`: one user vector for every
        candidate (no candidate attention in the user encoder)."""
        return not isinstance(self.user_encoder, CandidateUserEncoder)

    def score_keys(self, news: Tensor) -> Tensor:
        """(N, dim) news vectors -> (N, dim) float32 keys (see `score_queries`)."""
        learned, text = self._split_news(news)
        keys = self.scorer.keys(learned)
        return keys if text is None else torch.cat([keys, text.float()], dim=-1)

    def score_queries(self, user: Tensor) -> Tensor:
        """(B, S) user states -> (B, dim) float32 queries: with `inner_product_score`,
        `score_queries(u) @ score_keys(n).T` is the logit of each pair (to float rounding), so a
        candidate's logit is one dot product of precomputed vectors."""
        if not self.inner_product_score:
            raise RuntimeError("a candidate-aware user encoder has no per-user query")
        parts = self._split_user(user)
        queries = self.scorer.queries(parts.encoder)
        if self.prior is None:
            return queries
        return torch.cat([queries, self.prior.queries(parts.text)], dim=-1)

    def user_summary(self, user: Tensor) -> Tensor:
        """(B, S) user states -> (B, D) learned user vectors that do not depend on a candidate."""
        return self.user_encoder.summary(self._split_user(user).encoder)

    def category_logits(self, user: Tensor) -> Tensor:
        """(B, S) user states -> (B, categories) logits of the next click's category."""
        if self.category_head is None:
            raise RuntimeError("the model has no category head (train with --aux-category W)")
        return self.category_head(self.user_summary(user).float())

    def fusion_weights(self) -> dict[str, float] | None:
        """Mean fusion weight per modality over the last forward (None for concat or before any)."""
        return self.news_encoder.fusion.weights()
