"""Re-rankers that trade a ranking's accuracy for diversity or calibration, the same in
`evaluate` and `serve`.

- `RerankSpec`: a method and its weight λ, parsed from `mmr:0.3`, `calibration:0.5` or `none`.
- `rerank()`: a batch of candidate lists in, each list's order out (the top k chosen greedily,
  the rest by score).
- `category_distribution()`, `rank_weights()` and `js_divergence()`: the pieces of topic
  calibration, shared with the Calibration@k metric so both measure the same thing.
"""

from newsrec_cli.rerank.calibration import category_distribution, js_divergence, rank_weights
from newsrec_cli.rerank.greedy import pool_size, rerank
from newsrec_cli.rerank.spec import METHODS, RerankSpec

__all__ = [
    "METHODS",
    "RerankSpec",
    "category_distribution",
    "js_divergence",
    "pool_size",
    "rank_weights",
    "rerank",
]
