"""The model's modules on hand-made tensors: shapes, masks, the unseen-ID bucket, fusion weights,
missing text and graph vectors, and initial logits on real vectors (no saturation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from train_helpers import need_shared

from newsrec_cli.mind import Vocab
from newsrec_cli.model.assembly import build_model
from newsrec_cli.model.attention import AdditiveAttention
from newsrec_cli.model.candidate_user_encoder import CandidateUserEncoder
from newsrec_cli.model.features import NewsFeatures
from newsrec_cli.model.fusion import build_fusion
from newsrec_cli.model.graph_modality import GraphModality
from newsrec_cli.model.id_embedding import NewsIdEmbedding
from newsrec_cli.model.recommender import UserState
from newsrec_cli.model.scorer import MAX_SCALE, ScoringHead, raw_for
from newsrec_cli.model.self_attention import MultiHeadSelfAttention
from newsrec_cli.model.user_encoder import UserEncoder
from newsrec_cli.runs.context import DataContext, Vocabularies
from newsrec_cli.settings import GraphSettings, TrainSettings

NAMES = ["id", "text", "category"]


def tiny_context(
    n_news: int = 20, text_dim: int = 12, seed: int = 0, text: np.ndarray | None = None
) -> DataContext:
    rng = np.random.default_rng(seed)
    ids = [f"N{i}" for i in range(n_news)]
    vectors = rng.normal(size=(n_news, text_dim)).astype(np.float32) if text is None else text
    matrix = torch.from_numpy(np.concatenate([np.zeros((1, vectors.shape[1]), np.float32), vectors]))
    vocabs = Vocabularies(
        news=Vocab(ids),
        ids=Vocab(ids[: n_news // 2]),
        categories=Vocab(["a", "b"]),
        subcategories=Vocab(["x", "y", "z"]),
    )
    features = NewsFeatures(
        id_index=torch.tensor([0] + [i + 1 if i < n_news // 2 else 0 for i in range(n_news)]),
        category=torch.tensor([0] + [1 + i % 2 for i in range(n_news)]),
        subcategory=torch.tensor([0] + [1 + i % 3 for i in range(n_news)]),
        text=matrix,
        text_present=torch.ones(n_news + 1, dtype=torch.bool),
        known=torch.arange(n_news + 1) > 0,  # every news is a training news: the centre is theirs
    )
    return DataContext(vocabs=vocabs, features=features, text_dim=matrix.shape[1])


def batch(n_news: int, b: int = 4, h: int = 6, k: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(1, n_news + 1, (b, h), generator=g)
    mask = torch.ones(b, h, dtype=torch.bool)
    mask[0, 3:] = False
    mask[1] = False  # an empty history
    history[~mask] = 0
    return history, mask, torch.randint(1, n_news + 1, (b, k), generator=g)


@pytest.mark.parametrize("fusion", ["concat", "attention", "gate"])
@pytest.mark.parametrize("scoring", ["dot", "cosine"])
def test_forward_shapes_and_the_user_state_parts(fusion: str, scoring: str) -> None:
    torch.manual_seed(0)
    model = build_model(
        TrainSettings(dim=16, heads=2, fusion=fusion, scoring=scoring), GraphSettings(), tiny_context()
    )
    model.eval()
    history, mask, candidates = batch(20)
    logits = model(history, mask, candidates)
    assert logits.shape == (4, 5) and torch.isfinite(logits).all()
    # the learned 16-d vector, then the 12-d unit text vector of the content prior
    assert model.dim == 16 + 12
    assert model.encode_news(candidates).shape == (4, 5, 28)
    state = model.encode_user_state(model.encode_news(history), mask)
    assert state.shape == (4, 28)
    parts = UserState.unpack(state, model.prior_dim)  # the user encoder's state, then the text part
    assert parts.encoder.shape == (4, 16) and parts.text.shape == (4, 12)
    torch.testing.assert_close(parts.pack(), state)
    torch.testing.assert_close(model.score(state, model.encode_news(candidates)), logits)
    weights = model.fusion_weights()
    if fusion == "concat":
        assert weights is None
    else:
        assert list(weights) == NAMES and sum(weights.values()) == pytest.approx(1.0, abs=1e-5)


def test_each_distinct_news_is_encoded_once() -> None:
    torch.manual_seed(0)
    model = build_model(TrainSettings(dim=16, heads=2), GraphSettings(), tiny_context())
    seen: list[int] = []
    original = model.news_encoder.encode_unique
    model.news_encoder.encode_unique = lambda news, *text: (seen.append(len(news)), original(news, *text))[1]  # type: ignore[method-assign]
    history, mask, candidates = batch(20)
    model(history, mask, candidates)
    assert seen == [len(torch.unique(torch.cat([history.reshape(-1), candidates.reshape(-1)])))]


def test_padding_is_ignored_and_empty_history_gets_the_learned_vector() -> None:
    torch.manual_seed(0)
    encoder = UserEncoder(8, 2, dropout=0.0).eval()
    clicked = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    user = encoder(clicked, mask)
    changed = clicked.clone()
    changed[0, 2:] = 100.0  # padded positions
    changed[1] = -7.0  # the empty row's padding
    again = encoder(changed, mask)
    torch.testing.assert_close(user, again)
    torch.testing.assert_close(user[1], encoder.empty.detach())
    assert torch.isfinite(user).all()


def test_additive_attention_weights_sum_to_one_over_valid_positions() -> None:
    attention = AdditiveAttention(4, hidden=3)
    x = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    pooled, weights = attention(x, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    assert weights[0, 2] == 0 and weights[1, 1:].abs().sum() == 0
    torch.testing.assert_close(pooled[1], x[1, 0])


def test_self_attention_rejects_heads_that_do_not_divide_dim() -> None:
    with pytest.raises(ValueError, match="MultiHeadSelfAttention: dim 10 is not divisible by heads 3"):
        MultiHeadSelfAttention(10, 3)


def test_unseen_bucket_and_id_dropout() -> None:
    torch.manual_seed(0)
    emb = NewsIdEmbedding(5, 4, id_dropout=1.0)
    ids = torch.tensor([1, 2, 3, 4])
    emb.train()
    torch.testing.assert_close(emb(ids), emb.embedding.weight[0].expand(4, 4))  # all dropped to the bucket
    emb.eval()
    torch.testing.assert_close(emb(ids), emb.embedding.weight[1:5])  # never in evaluation
    half = NewsIdEmbedding(1001, 2, id_dropout=0.5).train()
    rows = torch.arange(1, 1001)
    share = (half(rows) == half.embedding.weight[0]).all(dim=1).float().mean()
    assert 0.4 < float(share) < 0.6


def test_fresh_news_share_one_id_vector_in_the_model() -> None:
    """News outside the training vocabulary (rows 11..20 here) get the same ID vector, not random ones."""
    torch.manual_seed(0)
    model = build_model(
        TrainSettings(dim=16, heads=2, use_text=False, use_category=False), GraphSettings(), tiny_context()
    ).eval()
    fresh = model.encode_news(torch.tensor([11, 15, 20]))
    known = model.encode_news(torch.tensor([1, 2]))
    torch.testing.assert_close(fresh[0], fresh[1])
    torch.testing.assert_close(fresh[0], fresh[2])
    assert not torch.allclose(known[0], known[1])


def test_missing_text_uses_the_learned_vector() -> None:
    torch.manual_seed(0)
    context = tiny_context()
    context.features.text_present[3] = False
    context.features.text[3] = 0.0
    model = build_model(
        TrainSettings(dim=16, heads=2, use_id=False, use_category=False), GraphSettings(), context
    )
    model.eval()
    vectors = model.encode_news(torch.tensor([3, 4]))
    expected = model.news_encoder.fusion(model.news_encoder.text_missing[None, None, :])[0]
    torch.testing.assert_close(vectors[0, :16], expected)
    assert vectors[0, 16:].abs().sum() == 0  # the content prior adds nothing for a missing vector
    assert float(vectors[1, 16:].norm()) == pytest.approx(1.0)


class _FakeGraphEncoder(nn.Module):
    """A graph encoder of 6 news nodes: node i's vector is row i of a learned table."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(6, dim))

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.table[nodes]

    def all_news(self) -> torch.Tensor:
        return self.table


def test_graph_modality_maps_nodes_and_gives_news_off_the_graph_a_learned_vector() -> None:
    torch.manual_seed(0)
    graph = GraphModality(_FakeGraphEncoder(4), 4)
    nodes = torch.tensor([2, -1, 5, -1])
    out = graph(nodes)
    torch.testing.assert_close(out[0], graph.norm(graph.encoder.table[2]))
    torch.testing.assert_close(out[1], out[3])
    torch.testing.assert_close(out[1], graph.norm(graph.missing))
    graph.cache()
    torch.testing.assert_close(graph(nodes), out)
    graph.clear_cache()
    out.sum().backward()
    assert graph.missing.grad is not None and graph.encoder.table.grad[2].abs().sum() > 0


def test_scoring_head_rejects_unknown_kind_and_bounds_the_scale() -> None:
    with pytest.raises(ValueError, match="ScoringHead: kind must be dot or cosine"):
        ScoringHead("euclid", 4)  # type: ignore[arg-type]
    head = ScoringHead("cosine", 4)
    with torch.no_grad():
        head.raw_scale.fill_(50.0)  # far past the bound: the scale saturates at MAX_SCALE, no further
    assert float(head.scale.detach()) == pytest.approx(MAX_SCALE)
    logits = head(torch.ones(1, 4), torch.ones(1, 2, 4))
    torch.testing.assert_close(logits, torch.full((1, 2), MAX_SCALE))
    # unlike a clamp, the bound leaves a gradient: the scale can come back down
    head.raw_scale.data.fill_(3.0)
    head(torch.ones(1, 4), torch.ones(1, 2, 4)).sum().backward()
    assert head.raw_scale.grad is not None and float(head.raw_scale.grad) > 0


@pytest.mark.parametrize("kind", ["dot", "cosine"])
def test_scoring_head_logits_stay_within_the_scale_whatever_the_vectors(kind: str) -> None:
    """The dot head standardises its inputs: vectors with norms in the thousands (as an unbounded
    fusion can put out after training) still give |logit| <= scale."""
    torch.manual_seed(0)
    head = ScoringHead(kind, 32, init_scale=7.0)
    user = torch.randn(8, 32) * 1000 + 50
    news = torch.randn(8, 6, 32) * 3000
    logits = head(user, news)
    assert logits.abs().max() <= 7.0 + 1e-4
    assert logits.std() > 0.5  # still discriminates


def test_scores_are_float32_under_bf16_autocast() -> None:
    """1,000 distinct logits between 2 and 3 survive bf16 autocast: the head computes in float32."""
    head = ScoringHead("cosine", 2, init_scale=1.0)
    angles = torch.linspace(0.0, 0.8, 1000)
    news = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)[None]  # (1, 1000, 2)
    user = torch.tensor([[1.0, 0.0]])
    with torch.no_grad():
        head.raw_scale.fill_(raw_for(3.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(user, news)
        naive = torch.einsum("bd,bkd->bk", user, news) * 3.0  # what a bf16 head would give
    assert logits.dtype == torch.float32
    assert len(torch.unique(logits)) == 1000
    assert len(torch.unique(naive)) < 200  # the collapse this guards against


def test_fusion_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown fusion 'sum'"):
        build_fusion("sum", ["id"], 4)  # type: ignore[arg-type]


@pytest.mark.parametrize("scoring", ["dot", "cosine"])
@pytest.mark.parametrize("fusion", ["concat", "attention", "gate"])
def test_initial_logits_are_well_inside_minus_five_five_on_real_vectors(scoring: str, fusion: str) -> None:
    """Real OpenAI text-embedding-3-small vectors (1536-d) of 500 real MIND news, histories of 50."""
    folder = need_shared("mind_tiny")
    vectors = np.load(folder / "llm_embeddings.npy").astype(np.float32)
    torch.manual_seed(0)
    context = tiny_context(n_news=len(vectors), text=vectors)
    model = build_model(TrainSettings(fusion=fusion, scoring=scoring), GraphSettings(), context).eval()
    g = torch.Generator().manual_seed(1)
    history = torch.randint(1, len(vectors) + 1, (64, 50), generator=g)
    mask = torch.ones(64, 50, dtype=torch.bool)
    candidates = torch.randint(1, len(vectors) + 1, (64, 5), generator=g)
    logits = model(history, mask, candidates)
    # 4.6 is where the sigmoid reaches 0.99 (diagnose saturation's threshold); the content prior
    # (weight 5 x a centred cosine) and the learned head (scale 2 x a correlation) stay below it.
    assert logits.abs().max() < 4.6, float(logits.abs().max())
    assert logits.std() > 1e-3  # not collapsed to one value either


def test_candidate_attention_starts_uniform_ignores_padding_and_matches_the_packed_state() -> None:
    torch.manual_seed(0)
    encoder = CandidateUserEncoder(8, 2, dropout=0.0).eval()
    clicked = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    state = encoder(clicked, mask)
    news = torch.randn(2, 3, 8)
    users, weights = encoder.for_candidates(state, news)
    assert users.shape == (2, 3, 8) and weights.shape == (2, 3, 4)
    torch.testing.assert_close(weights[0, :, :3], torch.full((3, 3), 1 / 3))  # W_q = 0: uniform
    assert weights[0, :, 3].abs().sum() == 0  # padding gets nothing
    torch.testing.assert_close(users[1], encoder.empty.detach().expand(3, 8))  # empty history
    parts = encoder.unpack(state)
    history, unpacked_mask = parts.history, parts.mask
    assert history.shape == (2, 4, 8) and unpacked_mask[0].tolist() == [True, True, True, False]
    with torch.no_grad():
        encoder.query.weight.copy_(torch.eye(8) * 5)
        encoder.key.weight.copy_(torch.eye(8))
    _, peaked = encoder.for_candidates(state, news)
    assert float(peaked[0].max(dim=-1).values.mean()) > 1 / 3 + 0.05  # learned: no longer uniform


@pytest.mark.parametrize("encoder", ["nrms", "candidate"])
@pytest.mark.parametrize("scoring", ["dot", "cosine"])
def test_in_batch_logits_equal_scoring_each_pair(encoder: str, scoring: str) -> None:
    """InfoNCE's (B, B*K) logits come from one matrix product; they equal `score` of every pair."""
    torch.manual_seed(0)
    settings = TrainSettings(dim=16, heads=2, user_encoder=encoder, scoring=scoring)
    model = build_model(settings, GraphSettings(), tiny_context()).eval()
    history, mask, candidates = batch(20)
    logits, user = model.forward_with_user(history, mask, candidates, in_batch=True)
    B, K = candidates.shape
    vectors = model.encode_news(candidates.reshape(-1))  # (B*K, dim)
    expected = model.score(user, vectors.unsqueeze(0).expand(B, B * K, vectors.shape[-1]))
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        logits.view(B, B, K)[torch.arange(B), torch.arange(B)], model(history, mask, candidates)
    )
