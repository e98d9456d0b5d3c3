"""The recommender: news encoder (ID, text, graph, category + fusion), user encoder, scoring head.

`inference.score_impressions` scores a dataset with a trained run (see `newsrec_cli.train.run`).
"""

from newsrec_cli.model.features import NewsFeatures
from newsrec_cli.model.recommender import NewsRecommender

__all__ = ["NewsFeatures", "NewsRecommender"]
