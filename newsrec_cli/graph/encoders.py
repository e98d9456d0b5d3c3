"""GNN encoders of the news-entity graph: one vector per news node, trained with the recommender.

    encoder = build_graph_encoder(GraphSettings(encoder="gat"), load_graph("graph/"), out_dim=128)
    vectors = encoder(news_nodes)          # [len(news_nodes), 128], news_nodes = graph rows
    everything = encoder.all_news()        # [num_news, 128], for inference

Three modules: `EntityInput` (frozen entity features projected, or learned), `HeteroGNN` (layers
of HeteroConv over SAGE or GAT, one operator per edge type) and `GraphEncoder` (full graph or
sampled neighbourhoods, then a projection to `out_dim`).

The graph's edges and frozen features are *non-persistent buffers*: `.to(device)` moves them,
but they are not in `state_dict()`, so a checkpoint holds only learned weights. Rebuild the
encoder from the same graph folder, then `load_state_dict`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import HeteroConv

from newsrec_cli.errors import SettingsError
from newsrec_cli.graph.convs import WeightedSAGEConv, attention_edge_attr, gat_conv, normalize_weights
from newsrec_cli.graph.graph import ENTITY, NEWS, SOURCE_CODES, EdgeType, NewsGraph
from newsrec_cli.graph.sampling import NeighbourSampler, SampledGraph
from newsrec_cli.settings import GraphSettings

EVAL_SAMPLING_SEED = 0  # sampled inference draws the same neighbours on every run


def _key(edge_type: EdgeType) -> str:
    return "__".join(edge_type)


class EntityInput(nn.Module):
    r"""Input vectors of entity nodes, from the source each entity row was given at build time.

    .. math::
        \mathbf{x}_e = \begin{cases} \mathbf{W}_s \mathbf{f}_e + \mathbf{b}_s & e \text{ has frozen
        features } \mathbf{f}_e \text{ of source } s \text{ (vec, label\_text)} \\
        \mathbf{E}[e] & \text{otherwise (learned)} \end{cases}

    Shapes:
        - **input:** entity rows :math:`(n,)` (None: all entities)
        - **output:** :math:`(n, H)`
    """

    def __init__(self, graph: NewsGraph, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.num_entities = graph.num_entities
        source = graph.entity_source.long()
        position = torch.zeros(self.num_entities, dtype=torch.long)
        self.codes: list[int] = []
        self.proj = nn.ModuleDict()
        for name, feats in graph.features.items():
            rows = torch.from_numpy(feats.rows)
            position[rows] = torch.arange(rows.numel())
            self.register_buffer(f"features_{name}", torch.from_numpy(feats.matrix).clone(), persistent=False)
            self.proj[name] = nn.Linear(feats.dim, hidden)
            self.codes.append(SOURCE_CODES[name])
        learned = torch.nonzero(source == SOURCE_CODES["learned"]).squeeze(1)
        position[learned] = torch.arange(learned.numel())
        self.learned = nn.Embedding(learned.numel(), hidden) if learned.numel() else None
        if self.learned is not None:
            nn.init.normal_(self.learned.weight, std=0.1)
            self.codes.append(SOURCE_CODES["learned"])
        self.register_buffer("source", source, persistent=False)
        self.register_buffer("position", position, persistent=False)
        self.names = {code: name for name, code in SOURCE_CODES.items()}

    def forward(self, rows: Tensor | None = None) -> Tensor:
        if rows is None:
            rows = torch.arange(self.num_entities, device=self.source.device)
        out = torch.zeros(rows.numel(), self.hidden, device=self.source.device)
        source, position = self.source[rows], self.position[rows]
        for code in self.codes:
            where = torch.nonzero(source == code).squeeze(1)
            if where.numel() == 0:
                continue
            name = self.names[code]
            if name == "learned":
                values = self.learned(position[where])  # type: ignore[misc]
            else:
                values = self.proj[name](getattr(self, f"features_{name}")[position[where]])
            out = out.index_copy(0, where, values.to(out.dtype))
        return out


class HeteroGNN(nn.Module):
    r"""Layers of heterogeneous message passing; relations into one node type are summed.

    .. math::
        \mathbf{h}^{(l+1)}_v = \mathbf{h}^{(l)}_v + \mathrm{Dropout}\Big(\sigma\Big(\sum_{r \in
        \mathcal{R}(v)} \mathrm{Conv}^{(l)}_r\big(\mathbf{h}^{(l)}, v\big)\Big)\Big)

    (the first term only with ``residual``; :math:`\sigma` = ReLU, none after the last layer).
    Conv is `WeightedSAGEConv` (weighted mean) or a multi-head `GATConv`, one per edge type.

    Shapes:
        - **input:** x_dict {type: :math:`(|\mathcal{V}_t|, H)`}, edge_index_dict {edge type:
          :math:`(2, |\mathcal{E}_r|)`}, edge_weight_dict {edge type: :math:`(|\mathcal{E}_r|)`}
        - **output:** {type: :math:`(|\mathcal{V}_t|, H)`}
    """

    def __init__(
        self,
        edge_types: list[EdgeType],
        *,
        kind: str,
        hidden: int,
        layers: int,
        heads: int,
        dropout: float,
        residual: bool,
    ) -> None:
        super().__init__()
        if kind not in ("sage", "gat"):
            raise ValueError(f"HeteroGNN: kind must be 'sage' or 'gat', got {kind!r}")
        self.kind, self.hidden, self.heads = kind, hidden, heads
        self.dropout, self.residual = dropout, residual

        def conv() -> nn.Module:
            if kind == "sage":
                return WeightedSAGEConv((hidden, hidden), hidden)
            return gat_conv(hidden, heads, dropout)

        self.convs = nn.ModuleList(
            HeteroConv({edge_type: conv() for edge_type in edge_types}, aggr="sum") for _ in range(layers)
        )

    def forward(
        self,
        x_dict: dict[str, Tensor],
        edge_index_dict: dict[EdgeType, Tensor],
        edge_weight_dict: dict[EdgeType, Tensor],
        output_type: str | None = None,
    ) -> dict[str, Tensor]:
        """Node states after the last layer; with `output_type`, only that type's (the last layer
        then skips the relations into other types, whose result nobody reads)."""
        if self.kind == "sage":
            weights = edge_weight_dict
        else:
            weights = {t: attention_edge_attr(w) for t, w in edge_weight_dict.items()}
        last = len(self.convs) - 1
        for layer, conv in enumerate(self.convs):
            edges, types = edge_index_dict, list(x_dict)
            if layer == last and output_type is not None:
                edges = {t: e for t, e in edge_index_dict.items() if t[2] == output_type}
                types = [output_type]
            extra = {t: weights[t] for t in edges}
            if self.kind == "sage":
                out = conv(x_dict, edges, edge_weight_dict=extra)
            else:
                out = conv(x_dict, edges, edge_attr_dict=extra)
            new = {}
            for node_type in types:
                x = x_dict[node_type]
                h = out.get(node_type, torch.zeros_like(x))
                if layer < last:
                    h = F.dropout(F.relu(h), p=self.dropout, training=self.training)
                new[node_type] = x + h if self.residual else h
            x_dict = new
        return x_dict

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(kind={self.kind}, layers={len(self.convs)}, hidden={self.hidden}, "
            f"heads={self.heads}, dropout={self.dropout}, residual={self.residual})"
        )


class GraphEncoder(nn.Module):
    r"""One vector per requested news node of a `NewsGraph`.

    .. math::
        \mathbf{h}^{(0)}_{news} = \mathbf{b}, \quad \mathbf{h}^{(0)}_{e} = \mathrm{EntityInput}(e),
        \quad \mathbf{z}_n = \mathbf{W}_o \, \mathrm{HeteroGNN}(\mathbf{h}^{(0)})_n + \mathbf{b}_o

    Every news node starts from one shared learned vector :math:`\mathbf{b}` (zero-initialised):
    what tells news apart is the entities they link to. A news item without entities therefore
    gets the same vector as every other such news item (the GNN's root path of
    :math:`\mathbf{b}`): the graph knows nothing about it, and the recommender's other modalities
    (ID, text, category) must carry it.

    ``mode`` is "full" (message passing over the whole graph at each call, then indexing) or
    "sampled" (`NeighbourSampler` around the requested nodes, then the same layers on the
    subgraph). Both give :math:`(N, D_{out})`.

    Shapes:
        - **input:** news_nodes :math:`(*)` graph news rows (any shape)
        - **output:** :math:`(*, D_{out})`
    """

    def __init__(self, graph: NewsGraph, settings: GraphSettings, out_dim: int, mode: str) -> None:
        super().__init__()
        if mode not in ("full", "sampled"):
            raise ValueError(f"GraphEncoder: mode must be 'full' or 'sampled', got {mode!r}")
        self.mode = mode
        self.out_dim = out_dim
        self.num_news = graph.num_news
        self.num_entities = graph.num_entities
        self.inference_batch = settings.inference_batch
        self.edge_types = list(graph.edge_types)
        self.news_base = nn.Parameter(torch.zeros(settings.hidden))
        self.entity_input = EntityInput(graph, settings.hidden)
        self.gnn = HeteroGNN(
            self.edge_types,
            kind=settings.encoder,
            hidden=settings.hidden,
            layers=settings.layers,
            heads=settings.heads,
            dropout=settings.dropout,
            residual=settings.residual,
        )
        self.out = nn.Linear(settings.hidden, out_dim)
        num_nodes = {NEWS: graph.num_news, ENTITY: graph.num_entities}
        edge_index = {t: graph.data[t].edge_index for t in self.edge_types}
        edge_weight = {t: graph.data[t].edge_weight.float() for t in self.edge_types}
        if mode == "full":
            for t in self.edge_types:
                self.register_buffer(f"edge_index__{_key(t)}", edge_index[t].clone(), persistent=False)
                weight = self._prepare_weights(edge_index[t], edge_weight[t], num_nodes[t[2]])
                self.register_buffer(f"edge_weight__{_key(t)}", weight, persistent=False)
            self.sampler = None
        else:
            hops = list(settings.num_neighbors[: settings.layers])
            hops += [hops[-1]] * (settings.layers - len(hops))  # one entry per layer
            self.sampler = NeighbourSampler(num_nodes, edge_index, edge_weight, hops)
        self._eval_generator: torch.Generator | None = None
        self._generator_device = torch.device("cpu")

    def _prepare_weights(self, edge_index: Tensor, weight: Tensor, num_dst: int) -> Tensor:
        # SAGE wants a weighted mean (weights summing to 1 per destination); GAT takes raw weights.
        if self.gnn.kind == "sage":
            return normalize_weights(edge_index, weight, num_dst)
        return weight

    @property
    def device(self) -> torch.device:
        return self.news_base.device

    def forward(self, news_nodes: Tensor) -> Tensor:
        shape = news_nodes.shape
        flat = news_nodes.reshape(-1).to(self.device)
        out = self.out(self._full()[flat]) if self.mode == "full" else self._sampled(flat)
        return out.reshape(*shape, self.out_dim)

    def all_news(self, batch_size: int | None = None) -> Tensor:
        """Vectors of every news node [num_news, out_dim] (sampled mode: in chunks of `batch_size`)."""
        if self.mode == "full":
            return self.out(self._full())
        size = batch_size or self.inference_batch
        if not self.training:
            self._reset_eval_generator()
        rows = torch.arange(self.num_news, device=self.device)
        return torch.cat([self._sampled(chunk) for chunk in rows.split(size)])

    def _full(self) -> Tensor:
        """GNN states of every news node [num_news, hidden] (before the output projection)."""
        x_dict = {NEWS: self.news_base.expand(self.num_news, -1), ENTITY: self.entity_input()}
        edge_index = {t: getattr(self, f"edge_index__{_key(t)}") for t in self.edge_types}
        edge_weight = {t: getattr(self, f"edge_weight__{_key(t)}") for t in self.edge_types}
        return self.gnn(x_dict, edge_index, edge_weight, output_type=NEWS)[NEWS]

    def _sampled(self, news_rows: Tensor) -> Tensor:
        assert self.sampler is not None
        generator = None if self.training else self._generator()
        sub: SampledGraph = self.sampler(news_rows, NEWS, generator)
        sizes = {NEWS: sub.nodes[NEWS].numel(), ENTITY: sub.nodes[ENTITY].numel()}
        x_dict = {NEWS: self.news_base.expand(sizes[NEWS], -1), ENTITY: self.entity_input(sub.nodes[ENTITY])}
        weights = {
            t: self._prepare_weights(sub.edge_index[t], sub.edge_weight[t], sizes[t[2]])
            for t in self.edge_types
        }
        news = self.gnn(x_dict, sub.edge_index, weights, output_type=NEWS)[NEWS]
        return self.out(news[sub.seed_index])

    def _generator(self) -> torch.Generator:
        if self._eval_generator is None or self._generator_device != self.device:
            self._reset_eval_generator()
        assert self._eval_generator is not None
        return self._eval_generator

    def _reset_eval_generator(self) -> None:
        # In eval mode the draws come from a fixed-seed generator: same model, same vectors.
        self._generator_device = self.device
        self._eval_generator = torch.Generator(device=self.device)
        self._eval_generator.manual_seed(EVAL_SAMPLING_SEED)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, news={self.num_news}, entities={self.num_entities}, out_dim={self.out_dim}"


def resolve_mode(settings: GraphSettings, graph: NewsGraph) -> str:
    """full or sampled: settings.mode, or by node count against full_graph_max_nodes in auto mode."""
    if settings.mode != "auto":
        return settings.mode
    return "sampled" if graph.num_news + graph.num_entities > settings.full_graph_max_nodes else "full"


def build_graph_encoder(settings: GraphSettings, graph: NewsGraph, out_dim: int) -> GraphEncoder:
    """The encoder the recommender trains: settings.encoder over `graph`, vectors of size `out_dim`."""
    if settings.encoder == "gat" and settings.hidden % settings.heads:
        raise SettingsError(
            f"graph.hidden = {settings.hidden} must be divisible by graph.heads = {settings.heads} "
            "(GAT concatenates the heads)"
        )
    if any(k == 0 or k < -1 for k in settings.num_neighbors):
        raise SettingsError(
            f"graph.num_neighbors = {settings.num_neighbors}: "
            "each value must be >= 1, or -1 for all neighbours"
        )
    if out_dim < 1:
        raise SettingsError(f"graph encoder out_dim must be >= 1, got {out_dim}")
    return GraphEncoder(graph, settings, out_dim, resolve_mode(settings, graph))
