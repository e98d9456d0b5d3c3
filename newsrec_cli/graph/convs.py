"""The two message-passing operators of the graph encoders, per edge type.

`WeightedSAGEConv` is torch_geometric's `SAGEConv` with the neighbour mean weighted by the edge
weight (confidence x occurrences for mentions, shared news for co-occurrence); `gat_conv` makes a
`GATConv` that reads the edge weight as a one-dimensional edge feature.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn import GATConv, SAGEConv
from torch_geometric.utils import scatter


class WeightedSAGEConv(SAGEConv):
    r"""GraphSAGE with a weighted mean over neighbours (Hamilton et al., 2017).

    .. math::
        \mathbf{x}'_i = \mathbf{W}_1 \mathbf{x}_i + \mathbf{W}_2 \sum_{j \in \mathcal{N}(i)}
        \tilde{w}_{ji} \mathbf{x}_j, \qquad \tilde{w}_{ji} = \frac{w_{ji}}{\sum_{k \in \mathcal{N}(i)} w_{ki}}

    With equal weights this is SAGEConv's mean aggregation. A node without neighbours keeps only
    its root term :math:`\mathbf{W}_1 \mathbf{x}_i`.

    Args:
        in_channels: Size of source and destination features (a pair for bipartite edges).
        out_channels: Output size.

    Shapes:
        - **input:** x :math:`(|\mathcal{V}_s|, F_s)` or a pair with :math:`(|\mathcal{V}_t|, F_t)`,
          edge_index :math:`(2, |\mathcal{E}|)`, edge_weight :math:`(|\mathcal{E}|)` already
          normalised per destination (`normalize_weights`)
        - **output:** :math:`(|\mathcal{V}_t|, F_{out})`
    """

    def __init__(self, in_channels: int | tuple[int, int], out_channels: int) -> None:
        super().__init__(in_channels, out_channels, aggr="sum", root_weight=True)

    def forward(  # type: ignore[override]
        self, x: Tensor | tuple[Tensor, Tensor], edge_index: Tensor, edge_weight: Tensor
    ) -> Tensor:
        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        pair = (x_src, x_dst)
        size = (x_src.size(0), x_dst.size(0))
        # propagate_type: (x: Tuple[Tensor, Tensor], edge_weight: Tensor)
        out = self.propagate(edge_index, x=pair, edge_weight=edge_weight, size=size)
        return self.lin_l(out) + self.lin_r(x_dst)

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:  # type: ignore[override]
        return x_j * edge_weight.unsqueeze(-1)


def normalize_weights(edge_index: Tensor, edge_weight: Tensor, num_dst: int) -> Tensor:
    """Divide each edge weight by the sum over its destination's incoming edges (weighted mean)."""
    dst = edge_index[1]
    total = scatter(edge_weight, dst, dim=0, dim_size=num_dst, reduce="sum")
    return edge_weight / total.clamp_min(1e-12)[dst]


def attention_edge_attr(edge_weight: Tensor) -> Tensor:
    """GAT edge feature [E, 1]: log(1 + weight), so a heavy co-occurrence does not swamp attention."""
    return torch.log1p(edge_weight).unsqueeze(-1)


def gat_conv(hidden: int, heads: int, dropout: float) -> GATConv:
    r"""Multi-head GAT (Velickovic et al., 2018) for one edge type, heads concatenated to `hidden`.

    .. math::
        \mathbf{x}'_i = \mathbf{W}_r \mathbf{x}_i + \Big\Vert_{h=1}^{H} \sum_{j \in \mathcal{N}(i)}
        \alpha^h_{ji} \mathbf{W}^h \mathbf{x}_j, \qquad
        \alpha^h_{ji} = \operatorname{softmax}_j\big(\mathrm{LeakyReLU}(\mathbf{a}^{h\top}
        [\mathbf{W}^h \mathbf{x}_i \Vert \mathbf{W}^h \mathbf{x}_j \Vert \mathbf{W}^h_e e_{ji}])\big)

    Self-loops are off (the edges are bipartite); the learned root term :math:`\mathbf{W}_r
    \mathbf{x}_i` (GATConv's `residual=True`) keeps a node's own state, the way SAGE's root weight
    does, so news without entities still have a representation.
    """
    return GATConv(
        (hidden, hidden),
        hidden // heads,
        heads=heads,
        concat=True,
        dropout=dropout,
        add_self_loops=False,
        edge_dim=1,
        residual=True,
    )
