"""GOT-10k (Huang et al., TPAMI 2019): `train/`, `val/`, `test/` folders of `GOT-10k_<Split>_%06d` sequences.

A sequence folder holds frames `%08d.jpg` (from 1), `groundtruth.txt` (`x,y,w,h`; the test split has only
the first box), `absence.label` (1 = target absent), `cover.label` (0..8 visible-ratio level, 0 = fully
occluded), `cut_by_image.label` and `meta_info.ini` (`object_class: <name>` after a `[METAINFO]` header).
A split folder lists its sequences in `list.txt`.

visible = finite box with w, h > 0, and not absent, and cover > 0 (where those labels exist). Test
sequences get NaN boxes after frame 0.
"""

from __future__ import annotations

import os

import numpy as np

from cia_jax.data.datasets import parsing as ann
from cia_jax.data.datasets.base import Sequence

SPLITS = ("train", "val", "test", "vottrain", "votval")


def read_meta(path: str) -> dict[str, str]:
  """`meta_info.ini` -> {key: value}; lines `key: value` (or `key = value`), section headers skipped."""
  meta = {}
  if not os.path.isfile(path):
    return meta
  with open(path, encoding="utf-8-sig", errors="replace") as f:
    for line in f:
      line = line.strip()
      if not line or line.startswith("["):
        continue
      sep = min((i for i in (line.find(":"), line.find("=")) if i > 0), default=-1)
      if sep > 0:
        meta[line[:sep].strip()] = line[sep + 1:].strip()
  return meta


def load_sequence(path: str) -> Sequence:
  """Reads one GOT-10k sequence folder (any split)."""
  path = os.path.abspath(path)
  name = os.path.basename(path)
  anno = os.path.join(path, "groundtruth.txt")
  boxes = ann.read_boxes(anno)
  meta = read_meta(os.path.join(path, "meta_info.ini"))
  category = meta.get("object_class") or None
  if len(boxes) == 0:
    raise ValueError(f"{anno}: no boxes")
  if len(boxes) == 1 and os.path.isfile(os.path.join(path, "00000002.jpg")):
    # Test split: only the initial box is public; the frame count comes from the folder.
    frames = ann.list_frames(path)
    full = np.full((len(frames), 4), np.nan)
    full[0] = boxes[0]
    return ann.make_sequence(name, frames, full, "got10k", category, attributes={"meta": meta})
  frames = ann.numbered_frames(path, 1, len(boxes), 8, ".jpg", anno)
  flags = np.ones(len(boxes), bool)
  attributes: dict = {"meta": meta}
  absence_path = os.path.join(path, "absence.label")
  if os.path.isfile(absence_path):
    absent = ann.read_flags(absence_path, len(boxes)).astype(bool)
    flags &= ~absent
  cover_path = os.path.join(path, "cover.label")
  if os.path.isfile(cover_path):
    cover = ann.read_flags(cover_path, len(boxes))
    flags &= cover > 0
    attributes["cover"] = cover
  cut_path = os.path.join(path, "cut_by_image.label")
  if os.path.isfile(cut_path):
    attributes["cut_by_image"] = ann.read_flags(cut_path, len(boxes)).astype(bool)
  return ann.make_sequence(name, frames, boxes, "got10k", category, flags, attributes)


def _split_dir(root: str, split: str | None) -> str:
  if os.path.isfile(os.path.join(root, "list.txt")) or any(
      n.startswith("GOT-10k_") for n in os.listdir(root)):
    return root
  sub = {"vottrain": "train", "votval": "train"}.get(split or "train", split or "train")
  d = os.path.join(root, sub)
  if not os.path.isdir(d):
    raise FileNotFoundError(f"GOT-10k split folder not found: {d} (root {root}, split {split!r})")
  return d


def load_dataset(root: str, split: str | None = None, split_file: str | None = None,
                 sequences: list[str] | None = None) -> list[Sequence]:
  """Reads a GOT-10k split.

  Args:
    root: the GOT-10k root (holding `train/`, `val/`, `test/`) or one split folder itself.
    split: "train" (default), "val", "test", or "vottrain"/"votval" (the train folder restricted by
      `split_file`, e.g. pytracking's `got10k_vot_train_split.txt`).
    split_file: file of sequence names or 0-based indices into the split's `list.txt` order.
    sequences: explicit sequence names (applied after `split_file`).
  """
  if split is not None and split not in SPLITS:
    raise ValueError(f"GOT-10k split must be one of {SPLITS}, got {split!r}")
  if split in ("vottrain", "votval") and split_file is None:
    raise ValueError(f"GOT-10k split {split!r} needs split_file= (a list of train-sequence ids)")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"GOT-10k root not found: {root}")
  d = _split_dir(root, split)
  list_path = os.path.join(d, "list.txt")
  if os.path.isfile(list_path):
    names = ann.read_list(list_path)
  else:
    names = sorted(n for n in os.listdir(d) if os.path.isdir(os.path.join(d, n)))
  if split_file is not None:
    names = ann.read_split_file(split_file, names)
  if sequences is not None:
    names = [n for n in names if n in set(sequences)]
  return [load_sequence(os.path.join(d, n)) for n in names]
