"""Summary numbers of a graph: nodes and edges per type, degrees, entity coverage, feature sources.

Everything is computed from the graph itself (not from meta.json), so `info` on a loaded graph
and the table at the end of a build agree by construction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from newsrec_cli.graph.graph import COOCCURS, ENTITY, NEWS, SOURCE_CODES, NewsGraph

PERCENTILES = (50, 90, 99)


def degree_summary(degrees: np.ndarray) -> dict[str, float]:
    """Mean, p50/p90/p99 and max of a degree array (zeros included)."""
    if degrees.size == 0:
        return {"mean": 0.0, **{f"p{q}": 0.0 for q in PERCENTILES}, "max": 0}
    values = np.percentile(degrees, PERCENTILES)
    return {
        "mean": round(float(degrees.mean()), 3),
        **{f"p{q}": float(v) for q, v in zip(PERCENTILES, values, strict=True)},
        "max": int(degrees.max()),
    }


def graph_stats(graph: NewsGraph) -> dict[str, Any]:
    """A JSON-ready dict; see `newsrec build-graph --info` for how it reads."""
    num_news, num_entities = graph.num_news, graph.num_entities
    # Distinct (news, entity) pairs over title and abstract: an entity in both counts once.
    news_rows = np.concatenate([m.news for m in graph.arrays.mentions.values()])
    entity_rows = np.concatenate([m.entity for m in graph.arrays.mentions.values()])
    pairs = np.unique(news_rows * max(num_entities, 1) + entity_rows)
    news_degree = np.bincount(pairs // max(num_entities, 1), minlength=num_news)
    entity_degree = np.bincount(pairs % max(num_entities, 1), minlength=num_entities)

    degree = {
        "news -> entities": degree_summary(news_degree),
        "entity -> news": degree_summary(entity_degree),
    }
    cooc_degree = np.zeros(num_entities, dtype=np.int64)
    if COOCCURS in graph.data.edge_types:
        dst = graph.data[COOCCURS].edge_index[1].numpy()
        cooc_degree = np.bincount(dst, minlength=num_entities)
        degree["entity -> co-occurring entities"] = degree_summary(cooc_degree)

    edges = {"__".join(t): int(graph.data[t].edge_index.shape[1]) for t in graph.data.edge_types}
    with_entities = int((news_degree > 0).sum())
    source = graph.entity_source.numpy()
    coverage = {}
    for name in ("vec", "label_text", "learned"):  # in order of preference
        count = int((source == SOURCE_CODES[name]).sum())
        coverage[name] = {"count": count, "share": _share(count, num_entities)}
        if name in graph.features:
            coverage[name]["dim"] = graph.features[name].dim
    return {
        "nodes": {NEWS: num_news, ENTITY: num_entities, "total": num_news + num_entities},
        "edges": {**edges, "total": sum(edges.values())},
        "degree": degree,
        "news_with_entities": {"count": with_entities, "share": _share(with_entities, num_news)},
        "news_without_entities": num_news - with_entities,
        "entity_features": coverage,
        "isolated": {
            NEWS: int((news_degree == 0).sum()),
            ENTITY: int(((entity_degree == 0) & (cooc_degree == 0)).sum()),
        },
    }


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
