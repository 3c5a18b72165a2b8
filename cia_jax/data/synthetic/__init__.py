"""Synthetic tracking sequences written in the benchmarks' exact on-disk layouts.

* `render.py`: `render_sequence` draws one sequence in memory (`SyntheticSequence`: frames and ground truth):
  a textured target whose look is fixed by its LaSOT category, distractors, an occluder, out-of-view
  excursions, over a panning background.
* `writers.py`: `generate` writes sequences in one benchmark's layout (`FORMATS`: GOT-10k, LaSOT, OTB,
  TrackingNet, UAV123, NFS, VOT, TNL2K, DTB70, COCO, a generic folder layout).

Everything is deterministic given the seed: sequence i of `generate` renders from
`np.random.default_rng([seed, i])`, so adding sequences never changes earlier ones.
"""

from cia_jax.data.synthetic.render import SyntheticSequence, render_sequence
from cia_jax.data.synthetic.writers import FORMATS, generate

__all__ = ["FORMATS", "SyntheticSequence", "generate", "render_sequence"]
