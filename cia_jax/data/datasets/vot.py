"""VOT short-term challenges: `<root>/<seq>/color/%08d.jpg` (VOT2019+) or `<root>/<seq>/%08d.jpg`
(older editions), `<root>/<seq>/groundtruth.txt` and `<root>/list.txt`.

Regions per line: 4 values (x, y, w, h), a rotated rectangle / polygon `x1,y1,...,x4,y4` (the corner
order and winding vary between files and frames), or an RLE mask `m<x0>,<y0>,<w>,<h>,<runs>` (VOT2020+).
All become the axis-aligned `[x, y, w, h]` around the region (min/max of the corners, tight box of the
mask). A single value (`0`, `NaN`) means no region: NaN box, not visible.

Per-frame tags: every `<tag>.tag` (and `<tag>.label`) file in the sequence folder (`occlusion.tag`,
`camera_motion.tag`, `illum_change.tag`, `motion_change.tag`, `size_change.tag`), one 0/1 per line, becomes
`Sequence.attributes["frame_tags"][<tag>]`, a `[T]` bool array; a shorter file is padded with 0 (as the VOT
toolkit does), a longer one is an error.
"""

from __future__ import annotations

import os

import numpy as np

from cia_jax.data.datasets import parsing as ann
from cia_jax.data.datasets.base import Sequence


def load_sequence(path: str) -> Sequence:
  """Reads one VOT sequence folder."""
  path = os.path.abspath(path)
  name = os.path.basename(path)
  anno = os.path.join(path, "groundtruth.txt")
  boxes = ann.read_regions(anno)
  frame_dir = os.path.join(path, "color") if os.path.isdir(os.path.join(path, "color")) else path
  nz, ext = ann.probe_pattern(frame_dir, 1, (8, 5, 4, 6), (".jpg", ".png"))
  frames = ann.numbered_frames(frame_dir, 1, len(boxes), nz, ext, anno)
  tags = read_tags(path, len(boxes))
  return ann.make_sequence(name, frames, boxes, "vot", None, attributes={"frame_tags": tags} if tags else None)


def read_tags(folder: str, num_frames: int) -> dict[str, np.ndarray]:
  """{tag: `[num_frames]` bool} of the `.tag` / `.label` files in a sequence folder (see the module docstring)."""
  tags = {}
  for entry in sorted(os.listdir(folder)):
    stem, ext = os.path.splitext(entry)
    if ext not in (".tag", ".label") or not os.path.isfile(os.path.join(folder, entry)):
      continue
    path = os.path.join(folder, entry)
    flags = ann.read_flags(path).astype(bool)
    if len(flags) > num_frames:
      raise ValueError(f"{path}: {len(flags)} tag values but the ground truth has {num_frames} frames")
    tags[stem] = np.concatenate([flags, np.zeros(num_frames - len(flags), bool)])
  return tags


def load_dataset(root: str, split: str | None = None, sequences: list[str] | None = None) -> list[Sequence]:
  """Reads the sequences named in `<root>/list.txt` (else every folder with a `groundtruth.txt`)."""
  if split not in (None, "test", "all"):
    raise ValueError(f"VOT has no split {split!r}")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"VOT root not found: {root}")
  list_path = os.path.join(root, "list.txt")
  if os.path.isfile(list_path):
    names = ann.read_list(list_path)
  else:
    names = sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "groundtruth.txt")))
  if sequences is not None:
    names = [n for n in names if n in sequences]
  return [load_sequence(os.path.join(root, n)) for n in names]
