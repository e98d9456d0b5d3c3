"""GNN encoders of the graph: SAGE and GAT, full-graph and sampled, on CPU (and CUDA when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from graph_helpers import real_lines, relation_rows, write_mind, write_vec

from newsrec_cli.errors import SettingsError
from newsrec_cli.graph import build_graph, build_graph_encoder, load_graph, save_graph
from newsrec_cli.graph.graph import (
    VEC,
    Cooccurrence,
    EntityFeatures,
    GraphArrays,
    Mentions,
    assemble,
)
from newsrec_cli.graph.sampling import NeighbourSampler
from newsrec_cli.settings import GraphSettings

ENCODERS = ["sage", "gat"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny graphs: with 2 cores shared by busy neighbours, torch's thread pool only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MODES = ["full", "sampled"]


def small(**changes) -> GraphSettings:
    return GraphSettings(hidden=16, heads=4, **changes)


@pytest.fixture(scope="module")
def real_graph(tmp_path_factory: pytest.TempPathFactory):
    """The 500 real news, co-occurrence edges, and .vec features for a third of the entities."""
    lines = real_lines()
    folder = write_mind(tmp_path_factory.mktemp("mind"), lines)
    graph, _ = build_graph(folder, GraphSettings(cooccurrence_min=1), entity_vec=[])
    ids = graph.entity_ids[::3][:200]
    write_vec(folder / "entity_embedding.vec", ids, relation_rows(len(ids)))
    return build_graph(folder, GraphSettings(cooccurrence_min=1))[0]


def toy_graph() -> object:
    """5 news, 3 entities: news 0 and 1 share entity 0; news 3 and 4 have none; entity 2 has a vector."""
    mentions = {
        "title": Mentions(
            news=np.array([0, 1, 2], dtype=np.int64),
            entity=np.array([0, 0, 1], dtype=np.int64),
            confidence=np.array([1.0, 0.9, 0.8], dtype=np.float32),
            occurrences=np.array([1, 2, 1], dtype=np.int32),
        ),
        "abstract": Mentions(
            news=np.array([2], dtype=np.int64),
            entity=np.array([2], dtype=np.int64),
            confidence=np.array([1.0], dtype=np.float32),
            occurrences=np.array([1], dtype=np.int32),
        ),
    }
    arrays = GraphArrays(
        news_ids=["N0", "N1", "N2", "N3", "N4"],
        entity_ids=["Q0", "Q1", "Q2"],
        mentions=mentions,
        cooccurrence=Cooccurrence(
            a=np.array([1], dtype=np.int64),
            b=np.array([2], dtype=np.int64),
            count=np.array([1], dtype=np.int32),
        ),
        entity_source=np.array([0, 0, VEC], dtype=np.int8),
        features={"vec": EntityFeatures(rows=np.array([2]), matrix=np.ones((1, 5), dtype=np.float32))},
    )
    return assemble(arrays)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ENCODERS)
def test_forward_and_backward(real_graph, kind: str, mode: str) -> None:
    torch.manual_seed(0)
    encoder = build_graph_encoder(small(encoder=kind, mode=mode), real_graph, out_dim=12)
    assert encoder.mode == mode
    nodes = torch.tensor([[0, 5, 5], [499, 17, 2]])
    out = encoder(nodes)
    assert out.shape == (2, 3, 12) and torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 1], out[0, 2])  # the same news twice: the same vector
    out.pow(2).sum().backward()
    grads = {name: p.grad for name, p in encoder.named_parameters()}
    assert grads["entity_input.proj.vec.weight"].abs().sum() > 0  # frozen .vec features, learned projection
    assert grads["entity_input.learned.weight"].abs().sum() > 0
    assert grads["out.weight"].abs().sum() > 0
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("gnn.convs.1"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ENCODERS)
def test_deterministic_under_a_seed(real_graph, kind: str, mode: str) -> None:
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(7)
        encoder = build_graph_encoder(small(encoder=kind, mode=mode, dropout=0.3), real_graph, out_dim=8)
        out = encoder(torch.arange(0, 500, 7))
        out.sum().backward()
        return out.detach(), encoder.out.weight.grad.clone()

    (a, ga), (b, gb) = run(), run()
    assert torch.equal(a, b) and torch.equal(ga, gb)


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("kind", ENCODERS)
def test_sampling_every_neighbour_equals_the_full_graph(real_graph, kind: str, layers: int) -> None:
    torch.manual_seed(0)
    full = build_graph_encoder(small(encoder=kind, mode="full", layers=layers), real_graph, 8).eval()
    sampled = build_graph_encoder(
        small(encoder=kind, mode="sampled", layers=layers, num_neighbors=[-1]), real_graph, 8
    )
    sampled.load_state_dict(full.state_dict())
    sampled.eval()
    nodes = torch.tensor([3, 0, 250, 499, 3])
    with torch.no_grad():
        torch.testing.assert_close(sampled(nodes), full(nodes))
        torch.testing.assert_close(sampled.all_news(batch_size=128), full.all_news())


def test_sampling_few_neighbours_changes_vectors_and_eval_is_repeatable(real_graph) -> None:
    torch.manual_seed(0)
    full = build_graph_encoder(small(mode="full", layers=2), real_graph, 8).eval()
    sampled = build_graph_encoder(small(mode="sampled", layers=2, num_neighbors=[1]), real_graph, 8)
    sampled.load_state_dict(full.state_dict())
    sampled.eval()
    with torch.no_grad():
        first, again = sampled.all_news(), sampled.all_news()
        assert not torch.allclose(first, full.all_news())
    assert torch.equal(first, again)  # eval draws come from a fixed-seed generator


def test_auto_mode_samples_beyond_the_threshold(real_graph) -> None:
    nodes = real_graph.num_news + real_graph.num_entities
    big = build_graph_encoder(small(mode="auto", full_graph_max_nodes=nodes - 1), real_graph, 8)
    fits = build_graph_encoder(small(mode="auto", full_graph_max_nodes=nodes), real_graph, 8)
    assert (big.mode, fits.mode) == ("sampled", "full")
    request = torch.tensor([1, 2, 3, 400])
    assert big(request).shape == fits(request).shape == (4, 8)
    assert big.all_news(batch_size=100).shape == fits.all_news().shape == (500, 8)


def test_sampler_draws_at_most_k_real_edges_per_node() -> None:
    # One entity with 50 news; each news links it and 3 of 10 other entities.
    rng = np.random.default_rng(0)
    news, entity = [], []
    for n in range(50):
        for e in [0, *rng.choice(np.arange(1, 11), size=3, replace=False)]:
            news.append(n)
            entity.append(int(e))
    edge = torch.tensor([news, entity])
    edges = {("news", "title", "entity"): edge, ("entity", "rev_title", "news"): edge.flip(0)}
    weights = {t: torch.ones(edge.shape[1]) for t in edges}
    sampler = NeighbourSampler({"news": 50, "entity": 11}, edges, weights, num_neighbors=[-1, 5])
    torch.manual_seed(0)
    sub = sampler(torch.tensor([4, 4, 9]))
    assert sub.nodes["news"][:2].tolist() == [4, 9] and sub.seed_index.tolist() == [0, 0, 1]
    real = {(int(a), int(b)) for a, b in edge.t().tolist()}
    for edge_type, local in sub.edge_index.items():
        src_type, _, dst_type = edge_type
        src, dst = sub.nodes[src_type][local[0]], sub.nodes[dst_type][local[1]]
        pairs = list(zip(src.tolist(), dst.tolist(), strict=True))
        assert len(set(pairs)) == len(pairs)  # no edge twice
        for s, d in pairs:
            assert ((s, d) if src_type == "news" else (d, s)) in real
        per_dst = torch.bincount(local[1])
        assert per_dst.max() <= 5
    hop1 = sub.edge_index[("entity", "rev_title", "news")]
    assert torch.bincount(hop1[1], minlength=2)[:2].tolist() == [4, 4]  # -1: every link of the seeds
    hop2 = sub.edge_index[("news", "title", "entity")]
    drawn = torch.bincount(sub.nodes["entity"][hop2[1]], minlength=11)
    degree = torch.bincount(edge[1], minlength=11)
    for e in sub.nodes["entity"].tolist():
        if e != 0:  # 5 < degree <= 40: exactly 5 without replacement
            assert drawn[e] == min(5, int(degree[e]))
    assert 1 <= drawn[0] <= 5  # degree 50 > 8 x 5: 5 draws with replacement, duplicates dropped
    one_hop = NeighbourSampler({"news": 50, "entity": 11}, edges, weights, num_neighbors=[2])(
        torch.tensor([4, 9])
    )
    links = one_hop.edge_index[("entity", "rev_title", "news")]
    assert torch.bincount(links[1]).tolist() == [2, 2]  # 4 links each, exactly 2 drawn
    assert one_hop.edge_index[("news", "title", "entity")].shape[1] == 0  # one hop: nothing into entities


def test_news_without_entities_share_one_vector_and_others_differ() -> None:
    graph = toy_graph()
    torch.manual_seed(0)
    encoder = build_graph_encoder(small(layers=2), graph, 6).eval()
    with torch.no_grad():
        out = encoder.all_news()
    assert out.shape == (5, 6)
    torch.testing.assert_close(out[3], out[4])  # no entities: the shared base vector's path only
    assert not torch.allclose(out[0], out[3])
    assert not torch.allclose(out[0], out[2])
    # News 0 and 1 link only entity 0: same neighbourhood, same vector whatever the weights.
    torch.testing.assert_close(out[0], out[1])


def test_graph_tensors_are_buffers_outside_the_state_dict(real_graph, tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = build_graph_encoder(small(mode="full"), real_graph, 8)
    buffers = dict(encoder.named_buffers())
    assert "entity_input.features_vec" in buffers
    assert any(name.startswith("edge_index__") for name in buffers)
    state = encoder.state_dict()
    assert not any("features_" in k or "edge_index" in k or "edge_weight" in k for k in state)
    assert all(not k.endswith(("source", "position")) for k in state)
    # A fresh encoder on the reloaded graph takes the learned weights and gives the same vectors.
    save_graph(real_graph, tmp_path / "g")
    again = build_graph_encoder(small(mode="full"), load_graph(tmp_path / "g"), 8)
    again.load_state_dict(state)
    encoder.eval()
    again.eval()
    with torch.no_grad():
        assert torch.equal(encoder.all_news(), again.all_news())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"encoder": "gat", "hidden": 18, "heads": 4}, "divisible by graph.heads"),
        ({"num_neighbors": [5, 0]}, "num_neighbors"),
    ],
)
def test_bad_settings_are_settings_errors(changes: dict, message: str) -> None:
    settings = GraphSettings(**{"hidden": 16, **changes})
    with pytest.raises(SettingsError, match=message):
        build_graph_encoder(settings, toy_graph(), 4)


def test_entity_input_projects_frozen_features() -> None:
    graph = toy_graph()
    encoder = build_graph_encoder(small(), graph, 4)
    x = encoder.entity_input()
    proj = encoder.entity_input.proj["vec"]
    torch.testing.assert_close(x[2], proj(torch.ones(5)))
    torch.testing.assert_close(x[:2], encoder.entity_input.learned.weight)
    torch.testing.assert_close(encoder.entity_input(torch.tensor([2, 0])), x[[2, 0]])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ENCODERS)
def test_bfloat16_autocast(real_graph, kind: str, mode: str) -> None:
    # The trainer runs bf16 autocast on CUDA; CPU autocast exercises the same dtype mixing here.
    torch.manual_seed(0)
    encoder = build_graph_encoder(small(encoder=kind, mode=mode), real_graph, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder(torch.arange(20))
    assert out.shape == (20, 8) and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert encoder.out.weight.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ENCODERS)
def test_cuda_matches_cpu(real_graph, kind: str, mode: str) -> None:
    torch.manual_seed(0)
    settings = small(encoder=kind, mode=mode, num_neighbors=[-1])
    cpu = build_graph_encoder(settings, real_graph, 8).eval()
    gpu = build_graph_encoder(settings, real_graph, 8)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.to("cuda").eval()
    nodes = torch.tensor([0, 1, 2, 400])
    out = gpu(nodes.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), cpu(nodes), rtol=1e-4, atol=1e-5)
    gpu.train()
    gpu(nodes.cuda()).sum().backward()
    assert gpu.out.weight.grad.device.type == "cuda"
