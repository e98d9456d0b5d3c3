"""The news-entity graph: building it from a MIND dataset, its file format, stats, GNN encoders."""

from newsrec_cli.graph.build import BuildReport, build_graph
from newsrec_cli.graph.encoders import GraphEncoder, build_graph_encoder, resolve_mode
from newsrec_cli.graph.graph import ENTITY, NEWS, NewsGraph
from newsrec_cli.graph.io import load_graph, save_graph
from newsrec_cli.graph.stats import graph_stats

__all__ = [
    "ENTITY",
    "NEWS",
    "BuildReport",
    "GraphEncoder",
    "NewsGraph",
    "build_graph",
    "build_graph_encoder",
    "graph_stats",
    "load_graph",
    "resolve_mode",
    "save_graph",
]
