"""LaSOT (Fan et al., CVPR 2019): `<root>/<class>/<class>-<n>/` sequences.

A sequence folder holds `img/%08d.jpg` (from 1), `groundtruth.txt` (`x,y,w,h` per line, commas),
`full_occlusion.txt` and `out_of_view.txt` (one line of comma-separated 0/1 flags) and `nlp.txt`.
The class is the parent folder's name (also the `<class>` part of `<class>-<n>`). The official split
is `testing_set.txt` (280 names, one per line); `training_set.txt` if present, else the complement, is
the training split. A flat layout (`<root>/<class>-<n>/`) is read too.

visible = finite box with w, h > 0, not fully occluded and not out of view.
"""

from __future__ import annotations

import os
import re

import numpy as np

from cia_jax.data.categories import LASOT_CLASSES
from cia_jax.data.datasets import parsing as ann
from cia_jax.data.datasets.base import Sequence

_NAME = re.compile(r"([A-Za-z][A-Za-z_]*?)-(\d+)$")


def _category(path: str) -> str | None:
  name = os.path.basename(path)
  parent = os.path.basename(os.path.dirname(path))
  m = _NAME.search(name)
  if m is None:
    return None
  cls = m.group(1).split("_")[-1]  # "LaSOT_airplane-1" -> "airplane"
  if cls == parent or cls in LASOT_CLASSES:
    return cls
  return None


def load_sequence(path: str) -> Sequence:
  """Reads one LaSOT sequence folder (`.../<class>/<class>-<n>`)."""
  path = os.path.abspath(path)
  name = os.path.basename(path)
  anno = os.path.join(path, "groundtruth.txt")
  boxes = ann.read_boxes(anno)
  img_dir = os.path.join(path, "img")
  frames = ann.numbered_frames(img_dir, 1, len(boxes), 8, ".jpg", anno)
  flags = np.ones(len(boxes), bool)
  attributes = {}
  for key in ("full_occlusion", "out_of_view"):
    p = os.path.join(path, f"{key}.txt")
    if os.path.isfile(p):
      f = ann.read_flags(p, len(boxes)).astype(bool)
      flags &= ~f
      attributes[key] = f
  nlp = os.path.join(path, "nlp.txt")
  if os.path.isfile(nlp):
    with open(nlp, encoding="utf-8", errors="replace") as f:
      attributes["nlp"] = f.read().strip()
  return ann.make_sequence(name, frames, boxes, "lasot", _category(path), flags, attributes)


def _all_sequences(root: str) -> list[str]:
  """Paths of all sequence folders, class-folder or flat layout, in natural name order."""
  out = []
  for entry in sorted(os.listdir(root), key=ann.natural_key):
    p = os.path.join(root, entry)
    if not os.path.isdir(p):
      continue
    if os.path.isfile(os.path.join(p, "groundtruth.txt")):
      out.append(p)  # flat layout
      continue
    for sub in sorted(os.listdir(p), key=ann.natural_key):
      q = os.path.join(p, sub)
      if os.path.isfile(os.path.join(q, "groundtruth.txt")):
        out.append(q)
  return out


def load_dataset(root: str, split: str | None = None, split_file: str | None = None,
                 classes: list[str] | None = None) -> list[Sequence]:
  """Reads LaSOT.

  Args:
    root: folder of class folders (or of sequence folders).
    split: None / "all" (every sequence found), "test" (`testing_set.txt` in root, or `split_file`),
      "train" (`training_set.txt` or `split_file` if given, else everything not in `testing_set.txt`).
    split_file: file of sequence names (`airplane-1`), one per line.
    classes: keep only these classes.
  """
  if split not in (None, "all", "train", "test"):
    raise ValueError(f"LaSOT split must be None, 'all', 'train' or 'test', got {split!r}")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"LaSOT root not found: {root}")
  paths = _all_sequences(root)
  names = [os.path.basename(p) for p in paths]
  if split in ("train", "test"):
    if split_file is not None:
      keep = set(ann.read_split_file(split_file, names))
    else:
      test_path = os.path.join(root, "testing_set.txt")
      train_path = os.path.join(root, "training_set.txt")
      if split == "train" and os.path.isfile(train_path):
        keep = set(ann.read_split_file(train_path, names))
      elif os.path.isfile(test_path):
        test = set(ann.read_list(test_path))
        keep = test if split == "test" else set(names) - test
      else:
        raise FileNotFoundError(f"LaSOT split {split!r} needs {test_path} or split_file=")
    paths = [p for p, n in zip(paths, names) if n in keep]
  elif split_file is not None:
    keep = set(ann.read_split_file(split_file, names))
    paths = [p for p, n in zip(paths, names) if n in keep]
  seqs = [load_sequence(p) for p in paths]
  if classes is not None:
    seqs = [s for s in seqs if s.category in set(classes)]
  return seqs
