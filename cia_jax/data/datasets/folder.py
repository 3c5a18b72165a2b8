"""A generic sequence folder: frames + one ground-truth file.

Frames are the image files in `img/`, `imgs/`, `color/` or the folder itself (natural order). The
ground truth is `groundtruth.txt`, `groundtruth_rect.txt`, `<folder name>.txt` or the only `.txt` file
(`SOURCE.txt`, `nlp.txt`, `language.txt`, `list.txt` ignored); each line holds 4 values (x, y, w, h) or a
polygon (axis-aligned box around it), so VOT files work too. Frame count must equal the line count.
"""

from __future__ import annotations

import os

from cia_jax.data.datasets import parsing as ann
from cia_jax.data.datasets.base import Sequence

_NOT_GT = {"source.txt", "nlp.txt", "language.txt", "list.txt", "readme.txt"}


def find_annotation(path: str) -> str:
  """The ground-truth file of a generic folder (see the module docstring)."""
  name = os.path.basename(path)
  for cand in ("groundtruth.txt", "groundtruth_rect.txt", f"{name}.txt"):
    if os.path.isfile(os.path.join(path, cand)):
      return os.path.join(path, cand)
  txts = [n for n in os.listdir(path) if n.lower().endswith(".txt") and n.lower() not in _NOT_GT]
  if len(txts) != 1:
    raise FileNotFoundError(f"cannot tell the ground-truth file of {path}: found {sorted(txts)}")
  return os.path.join(path, txts[0])


def find_frame_dir(path: str) -> str:
  for sub in ("img", "imgs", "color"):
    if os.path.isdir(os.path.join(path, sub)):
      return os.path.join(path, sub)
  return path


def load_sequence(path: str) -> Sequence:
  """Reads one generic sequence folder."""
  path = os.path.abspath(path)
  anno = find_annotation(path)
  boxes = ann.read_regions(anno)
  frame_dir = find_frame_dir(path)
  frames = ann.list_frames(frame_dir)
  ann.check_count(anno, len(boxes), frames, frame_dir)
  return ann.make_sequence(os.path.basename(path), frames, boxes, "folder", None)


def load_dataset(root: str, split: str | None = None, sequences: list[str] | None = None) -> list[Sequence]:
  """Reads every sub-folder of `root` that holds frames and a ground-truth file."""
  if split not in (None, "test", "all"):
    raise ValueError(f"folder datasets have no split {split!r}")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"dataset root not found: {root}")
  seqs = []
  for n in sorted(os.listdir(root), key=ann.natural_key):
    p = os.path.join(root, n)
    if not os.path.isdir(p) or (sequences is not None and n not in sequences):
      continue
    seqs.append(load_sequence(p))
  return seqs
