"""Need for Speed (Kiani Galoogahi et al., ICCV 2017), 30 fps version.

Layout: `<root>/<seq>/30/<seq>/%05d.jpg` and `<root>/<seq>/30/<seq>.txt`. The annotation files carry
the 240 fps annotations, one row per 240 fps frame:
`track_id xmin ymin xmax ymax frame lost occluded generated "label"`; for the 30 fps frames every 8th row
(rows 0, 8, 16, ...) is used. Files that already have one row per frame are used as they are. The
benchmark has sequences whose annotation count differs from the frame count by one; both are then cut
to the shorter length (a larger difference is an error).

Boxes are `[xmin, ymin, xmax - xmin, ymax - ymin]`; visible = valid box and `lost` == 0; the category
is the row's label ("person", "ball", ...).
"""

from __future__ import annotations

import os

import numpy as np

from cia_jax.data.datasets import parsing as ann
from cia_jax.data.datasets.base import Sequence


def read_nfs_annotations(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str | None]:
  """NFS rows -> (boxes `[N, 4]` xywh, lost `[N]` bool, occluded `[N]` bool, label of the first row)."""
  rows = ann.read_list(path)
  boxes = np.empty((len(rows), 4))
  lost = np.zeros(len(rows), bool)
  occ = np.zeros(len(rows), bool)
  label = None
  for i, line in enumerate(rows):
    parts = line.split('"')[0].split()
    if len(parts) < 5:
      raise ValueError(f"{path}:{i + 1}: expected 'id xmin ymin xmax ymax frame lost occluded generated "
                       f"\"label\"', got {line!r}")
    try:
      vals = [float(v) for v in parts[:9]]
    except ValueError:
      raise ValueError(f"{path}:{i + 1}: unreadable number in {line!r}") from None
    x1, y1, x2, y2 = vals[1:5]
    boxes[i] = (x1, y1, x2 - x1, y2 - y1)
    if len(vals) >= 8:
      lost[i], occ[i] = vals[6] != 0, vals[7] != 0
    if label is None and line.count('"') >= 2:
      label = line.split('"')[1]
  return boxes, lost, occ, label


def load_sequence(path: str) -> Sequence:
  """Reads one NFS sequence given `<root>/<seq>` (or `<root>/<seq>/30`)."""
  path = os.path.abspath(path)
  if os.path.basename(path) == "30":
    path = os.path.dirname(path)
  name = os.path.basename(path)
  anno = os.path.join(path, "30", f"{name}.txt")
  frame_dir = os.path.join(path, "30", name)
  boxes, lost, occ, label = read_nfs_annotations(anno)
  frames = ann.list_frames(frame_dir)
  n = len(frames)
  rows = len(boxes)
  if rows > n + 1 and abs(-(-rows // 8) - n) <= 1:  # 240 fps rows for 30 fps frames
    boxes, lost, occ = boxes[::8], lost[::8], occ[::8]
  if abs(len(boxes) - n) > 1:
    raise ValueError(f"{anno}: {rows} annotation rows ({-(-rows // 8)} at 30 fps if they are 240 fps rows) "
                     f"but {n} frames in {frame_dir}")
  t = min(len(boxes), n)
  return ann.make_sequence(name, frames[:t], boxes[:t], "nfs", label, ~lost[:t],
                           attributes={"occluded": occ[:t]})


def load_dataset(root: str, split: str | None = None, sequences: list[str] | None = None) -> list[Sequence]:
  """Reads every NFS sequence folder under `root` that has a 30 fps annotation file."""
  if split not in (None, "test", "all"):
    raise ValueError(f"NFS has no split {split!r}")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"NFS root not found: {root}")
  seqs = []
  for name in sorted(os.listdir(root), key=str.lower):
    if sequences is not None and name not in sequences:
      continue
    if os.path.isfile(os.path.join(root, name, "30", f"{name}.txt")):
      seqs.append(load_sequence(os.path.join(root, name)))
  return seqs
