"""DTB70 (Li & Yeung, AAAI 2017): `<root>/<Seq>/img/%05d.jpg` + `groundtruth_rect.txt` (`x,y,w,h`, commas).

The layout is OTB's, so the OTB reader does the work; only the dataset name differs.
"""

from __future__ import annotations

from cia_jax.data.datasets import otb
from cia_jax.data.datasets.base import Sequence


def load_sequence(path: str) -> Sequence:
  """Reads one DTB70 sequence folder."""
  return otb.load_sequence(path, dataset="dtb70")


def load_dataset(root: str, split: str | None = None, sequences: list[str] | None = None) -> list[Sequence]:
  """Reads every DTB70 sequence under `root` (`split` must be None, "test" or "all")."""
  return otb.load_dataset(root, split, sequences, dataset="dtb70")
