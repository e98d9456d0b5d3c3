"""`newsrec ablate`: which modality, user encoder or loss helps, with seeds and confidence intervals."""

from newsrec_cli.ablate.run import AblationResult, run_ablation
from newsrec_cli.ablate.variants import Variant, ablation_variants

__all__ = ["AblationResult", "Variant", "ablation_variants", "run_ablation"]
