"""TrackingNet (Muller et al., ECCV 2018): chunks `TRAIN_0` .. `TRAIN_11` and `TEST`.

A chunk holds `anno/<seq>.txt` (`x,y,w,h` per frame, commas; TEST: only the first box) and
`frames/<seq>/<i>.jpg` with i = 0, 1, 2, ... (no zero padding). TrackingNet itself ships no class
labels; a class map file (`<seq><TAB><class>` per line, e.g. pytracking's `trackingnet_classmap.txt`)
gives them. By default `<root>/trackingnet_classmap.txt` is used when present.
"""

from __future__ import annotations

import os
import re

import numpy as np

from cia_jax.data.datasets import parsing as ann
from cia_jax.data.datasets.base import Sequence


def read_class_map(path: str) -> dict[str, str]:
  """`<seq>\\t<class>` (or comma / space separated) lines -> {seq: class}; a `TRAIN_k/` prefix is dropped."""
  out = {}
  for i, line in enumerate(ann.read_list(path)):
    parts = [p for p in re.split(r"[\t,]+|\s+", line) if p]
    if len(parts) < 2:
      raise ValueError(f"{path}:{i + 1}: expected '<sequence> <class>', got {line!r}")
    out[parts[0].split("/")[-1]] = parts[1]
  return out


def load_sequence(path: str, category: str | None = None) -> Sequence:
  """Reads one sequence given `<chunk>/frames/<seq>` (or `<chunk>/anno/<seq>.txt`)."""
  path = os.path.abspath(path)
  if path.endswith(".txt"):
    name = os.path.basename(path)[:-4]
    chunk = os.path.dirname(os.path.dirname(path))
  else:
    name = os.path.basename(path)
    chunk = os.path.dirname(os.path.dirname(path))
  anno = os.path.join(chunk, "anno", f"{name}.txt")
  frame_dir = os.path.join(chunk, "frames", name)
  boxes = ann.read_boxes(anno)
  if len(boxes) == 0:
    raise ValueError(f"{anno}: no boxes")
  if category is None:
    cmap = os.path.join(os.path.dirname(chunk), "trackingnet_classmap.txt")
    if os.path.isfile(cmap):
      category = read_class_map(cmap).get(name)
  if len(boxes) == 1 and os.path.isfile(os.path.join(frame_dir, "1.jpg")):
    # TEST chunk: only the first box is public.
    frames = ann.list_frames(frame_dir)
    full = np.full((len(frames), 4), np.nan)
    full[0] = boxes[0]
    return ann.make_sequence(name, frames, full, "trackingnet", category)
  frames = ann.numbered_frames(frame_dir, 0, len(boxes), 1, ".jpg", anno)
  return ann.make_sequence(name, frames, boxes, "trackingnet", category)


def load_dataset(root: str, split: str | None = None, chunks: list[int] | None = None,
                 class_map: str | None = None, split_file: str | None = None) -> list[Sequence]:
  """Reads TrackingNet.

  Args:
    root: folder holding `TRAIN_<k>/` and/or `TEST/`.
    split: "train" (default) or "test".
    chunks: TRAIN chunk numbers to read (e.g. [0, 1, 2, 3] as in DiMP/CIA training); default all found.
    class_map: class map file; default `<root>/trackingnet_classmap.txt` when it exists.
    split_file: optional file of sequence names to keep.
  """
  split = split or "train"
  if split not in ("train", "test"):
    raise ValueError(f"TrackingNet split must be 'train' or 'test', got {split!r}")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"TrackingNet root not found: {root}")
  if split == "test":
    chunk_dirs = [os.path.join(root, "TEST")]
  elif chunks is None:
    found = sorted((int(m.group(1)), n) for n in os.listdir(root) if (m := re.fullmatch(r"TRAIN_(\d+)", n)))
    chunk_dirs = [os.path.join(root, n) for _, n in found]
    if not chunk_dirs:
      raise FileNotFoundError(f"no TRAIN_<k> chunk folders in {root}")
  else:
    chunk_dirs = [os.path.join(root, f"TRAIN_{int(k)}") for k in chunks]
  cmap_path = class_map or os.path.join(root, "trackingnet_classmap.txt")
  cmap = read_class_map(cmap_path) if os.path.isfile(cmap_path) else {}
  if class_map is not None and not os.path.isfile(class_map):
    raise FileNotFoundError(f"TrackingNet class map not found: {class_map}")
  keep = set(ann.read_list(split_file)) if split_file is not None else None
  seqs = []
  for chunk in chunk_dirs:
    anno_dir = os.path.join(chunk, "anno")
    if not os.path.isdir(anno_dir):
      raise FileNotFoundError(f"TrackingNet annotation folder not found: {anno_dir}")
    names = sorted((n[:-4] for n in os.listdir(anno_dir) if n.endswith(".txt")), key=ann.natural_key)
    for name in names:
      if keep is not None and name not in keep:
        continue
      seqs.append(load_sequence(os.path.join(chunk, "frames", name), category=cmap.get(name)))
  return seqs
