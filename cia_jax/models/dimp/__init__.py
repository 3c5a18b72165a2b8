"""cia_jax.models.dimp: the DiMP target classifier (design.md §2), shared by DiMP18/SuperDiMP and CIA18/CIA50.

features.py (classification feature block), filter.py (per-sequence correlation), initializer.py (box-pooled
initial filter), optimizer.py (steepest-descent filter optimizer), hinge_optimizer.py (SuperDiMP-simple's
Gauss-Newton optimiser on tracker labels, the KeepTrack base), classifier.py (`LinearFilter`, the
`classifier` module of the networks).
"""

from cia_jax.models.dimp.classifier import LinearFilter
from cia_jax.models.dimp.features import (ClassificationFeatures, InstanceL2Norm, feat_norm_scale,
                                         instance_l2_norm)
from cia_jax.models.dimp.filter import apply_filter, score_size
from cia_jax.models.dimp.hinge_optimizer import HingeSteepestDescentGN
from cia_jax.models.dimp.initializer import FilterInitializerLinear
from cia_jax.models.dimp.optimizer import DiMPSteepestDescentGN

__all__ = [
    "ClassificationFeatures", "DiMPSteepestDescentGN", "FilterInitializerLinear", "HingeSteepestDescentGN",
    "InstanceL2Norm",
    "LinearFilter", "apply_filter", "feat_norm_scale", "instance_l2_norm", "score_size",
]
