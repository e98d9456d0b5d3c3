"""Neighbour sampling around requested news nodes, with plain torch ops (no compiled extras).

torch_geometric's `NeighborLoader` needs pyg-lib or torch-sparse, which are not installed here;
this module does the same node-wise k-hop sampling (GraphSAGE style) on a CSR of each edge type,
on whatever device its buffers live.

Hop by hop, every node reached at the previous hop (the seeds at hop 1) draws up to `k` incoming
edges per edge type: all of them when it has at most `k`; else `k` uniformly without replacement;
for nodes with more than 8k edges (an entity in thousands of news), `k` draws with replacement,
duplicates removed, which costs k instead of the degree and rarely collides. The GNN then runs
on the union of the sampled nodes and edges; the seeds come first in the node order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

EdgeType = tuple[str, str, str]

# Nodes with up to EXACT_FACTOR * k edges draw exactly k without replacement (cost: their degree);
# busier nodes (an entity in thousands of news) draw k with replacement (cost: k).
EXACT_FACTOR = 8


def _spans(start: Tensor, length: Tensor) -> Tensor:
    """Concatenated ranges start[i] .. start[i] + length[i] - 1."""
    first = torch.repeat_interleave(torch.cumsum(length, 0) - length, length)
    return torch.repeat_interleave(start, length) + torch.arange(first.numel(), device=start.device) - first


@dataclass
class SampledGraph:
    """A sampled subgraph: global rows of its nodes per type and its edges in local rows."""

    nodes: dict[str, Tensor]  # node type -> global rows, seeds first for the seed type
    edge_index: dict[EdgeType, Tensor]  # local [2, E_t]
    edge_weight: dict[EdgeType, Tensor]  # raw weights [E_t]
    seed_index: Tensor  # for each requested seed, its local row (requests may repeat)


class NeighbourSampler(nn.Module):
    """Sample k-hop subgraphs of a heterogeneous graph; the CSRs are non-persistent buffers.

    Args:
        num_nodes: Nodes per type.
        edge_index: Edges per type, [2, E] global rows, source -> destination.
        edge_weight: Weight per edge [E].
        num_neighbors: Edges drawn per node and edge type at each hop (-1: all).

    Shapes:
        - **input:** seeds :math:`(S,)` rows of the seed node type
        - **output:** a `SampledGraph` whose ``seed_index`` has shape :math:`(S,)`
    """

    def __init__(
        self,
        num_nodes: dict[str, int],
        edge_index: dict[EdgeType, Tensor],
        edge_weight: dict[EdgeType, Tensor],
        num_neighbors: list[int],
    ) -> None:
        super().__init__()
        self.num_nodes = dict(num_nodes)
        self.edge_types = list(edge_index)
        self.num_neighbors = list(num_neighbors)
        for i, edge_type in enumerate(self.edge_types):
            src, dst = edge_index[edge_type]
            order = torch.argsort(dst, stable=True)  # incoming edges of a node are contiguous
            counts = torch.bincount(dst, minlength=self.num_nodes[edge_type[2]])
            rowptr = torch.zeros(counts.numel() + 1, dtype=torch.long)
            rowptr[1:] = torch.cumsum(counts, 0)
            self.register_buffer(f"rowptr_{i}", rowptr, persistent=False)
            self.register_buffer(f"src_{i}", src[order].contiguous(), persistent=False)
            self.register_buffer(f"dst_{i}", dst[order].contiguous(), persistent=False)
            self.register_buffer(f"weight_{i}", edge_weight[edge_type][order].contiguous(), persistent=False)

    def _csr(self, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (
            getattr(self, f"rowptr_{i}"),
            getattr(self, f"src_{i}"),
            getattr(self, f"dst_{i}"),
            getattr(self, f"weight_{i}"),
        )

    @staticmethod
    def _draw(rowptr: Tensor, frontier: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        """CSR positions of the incoming edges drawn for each frontier node (no position twice)."""
        start = rowptr[frontier]
        degree = rowptr[frontier + 1] - start
        if k < 0:
            return _spans(start, degree)
        few = degree <= k
        some = ~few & (degree <= EXACT_FACTOR * k)
        many = degree > EXACT_FACTOR * k
        parts = [_spans(start[few], degree[few])]
        if some.any():
            # Exactly k without replacement: a random key per edge, the k smallest per node.
            s_some, d_some = start[some], degree[some]
            positions = _spans(s_some, d_some)
            node = torch.repeat_interleave(torch.arange(d_some.numel(), device=rowptr.device), d_some)
            keys = node.double() + torch.rand(
                positions.numel(), generator=generator, device=rowptr.device, dtype=torch.float64
            )
            order = torch.argsort(keys)  # by node, then at random within the node
            first = torch.cumsum(d_some, 0) - d_some
            rank = torch.arange(order.numel(), device=rowptr.device) - first[node[order]]
            parts.append(positions[order[rank < k]])
        if many.any():
            # k draws with replacement, duplicates dropped: for a degree > EXACT_FACTOR * k few collide.
            s_many, d_many = start[many], degree[many]
            u = torch.rand((s_many.numel(), k), generator=generator, device=rowptr.device)
            offset = torch.minimum((u * d_many.unsqueeze(1)).long(), (d_many - 1).unsqueeze(1))
            parts.append(torch.unique(s_many.unsqueeze(1) + offset))
        return torch.cat(parts)

    def forward(
        self, seeds: Tensor, seed_type: str = "news", generator: torch.Generator | None = None
    ) -> SampledGraph:
        device = seeds.device
        unique_seeds, seed_index = torch.unique(seeds.reshape(-1), return_inverse=True)
        local = {t: torch.full((n,), -1, dtype=torch.long, device=device) for t, n in self.num_nodes.items()}
        nodes: dict[str, list[Tensor]] = {t: [] for t in self.num_nodes}
        count = dict.fromkeys(self.num_nodes, 0)
        empty = torch.zeros(0, dtype=torch.long, device=device)
        frontier: dict[str, Tensor] = dict.fromkeys(self.num_nodes, empty)

        def add(node_type: str, rows: Tensor) -> Tensor:
            fresh = rows[local[node_type][rows] < 0]
            local[node_type][fresh] = torch.arange(
                count[node_type], count[node_type] + fresh.numel(), device=device
            )
            count[node_type] += fresh.numel()
            nodes[node_type].append(fresh)
            return fresh

        frontier[seed_type] = add(seed_type, unique_seeds)
        positions: dict[int, list[Tensor]] = {i: [] for i in range(len(self.edge_types))}
        for k in self.num_neighbors:
            reached: dict[str, list[Tensor]] = {t: [] for t in self.num_nodes}
            for i, (src_type, _, dst_type) in enumerate(self.edge_types):
                if frontier[dst_type].numel() == 0:
                    continue
                rowptr, src, _, _ = self._csr(i)
                pos = self._draw(rowptr, frontier[dst_type], k, generator)
                positions[i].append(pos)
                reached[src_type].append(src[pos])
            frontier = {
                t: add(t, torch.unique(torch.cat(found))) if found else empty for t, found in reached.items()
            }

        edge_index: dict[EdgeType, Tensor] = {}
        edge_weight: dict[EdgeType, Tensor] = {}
        for i, edge_type in enumerate(self.edge_types):
            _, src, dst, weight = self._csr(i)
            pos = torch.cat(positions[i]) if positions[i] else empty
            edge_index[edge_type] = torch.stack(
                [local[edge_type[0]][src[pos]], local[edge_type[2]][dst[pos]]]
            )
            edge_weight[edge_type] = weight[pos]
        return SampledGraph(
            nodes={t: torch.cat(parts) if parts else empty for t, parts in nodes.items()},
            edge_index=edge_index,
            edge_weight=edge_weight,
            seed_index=seed_index.reshape(-1),
        )
