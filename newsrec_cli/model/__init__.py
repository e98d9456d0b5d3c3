"""The recommender: news encoder (ID, text, graph, category + fusion), user encoder, scoring head.

`inference.score_impressions` scores a dataset with a trained run (loaded by `newsrec_cli.runs.loading.load_run`); `assembly.build_model` builds a fresh one.

Initialisation, one convention: a module that chooses initial values (its own parameters, or a
layer it initialises otherwise than PyTorch does) sets them in `reset_parameters()`, which ends
`__init__`. A module that only composes layers (MultiHeadSelfAttention, TextProjection,
CategoryEmbedding, ConcatFusion) has none: its layers keep PyTorch's initialisation and their own
`reset_parameters()`. Each parameter is drawn once at construction, so a seed gives one model.
"""

from newsrec_cli.model.features import NewsFeatures
from newsrec_cli.model.recommender import NewsRecommender

__all__ = ["NewsFeatures", "NewsRecommender"]
