"""TNL2K (Wang et al., CVPR 2021): `<root>/<seq>/imgs/*` + `groundtruth.txt` (`x,y,w,h`) + `language.txt`.

Frame file names and extensions vary between sequences, so the `imgs/` folder is listed (natural order)
and must hold exactly as many frames as there are boxes.
"""

from __future__ import annotations

import os

from cia_jax.data.datasets import parsing as ann
from cia_jax.data.datasets.base import Sequence


def load_sequence(path: str) -> Sequence:
  """Reads one TNL2K sequence folder."""
  path = os.path.abspath(path)
  name = os.path.basename(path)
  anno = os.path.join(path, "groundtruth.txt")
  boxes = ann.read_boxes(anno)
  frame_dir = os.path.join(path, "imgs")
  frames = ann.list_frames(frame_dir)
  ann.check_count(anno, len(boxes), frames, frame_dir)
  attributes = {}
  lang = os.path.join(path, "language.txt")
  if os.path.isfile(lang):
    with open(lang, encoding="utf-8", errors="replace") as f:
      attributes["language"] = f.read().strip()
  return ann.make_sequence(name, frames, boxes, "tnl2k", None, attributes=attributes)


def load_dataset(root: str, split: str | None = None, sequences: list[str] | None = None) -> list[Sequence]:
  """Reads every TNL2K sequence folder under `root`."""
  if split not in (None, "test", "train", "all"):
    raise ValueError(f"TNL2K split must be None, 'train', 'test' or 'all', got {split!r}")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"TNL2K root not found: {root}")
  names = sorted((n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "groundtruth.txt"))),
                 key=str.lower)
  if sequences is not None:
    names = [n for n in names if n in sequences]
  return [load_sequence(os.path.join(root, n)) for n in names]
