"""Dataset readers: one module per benchmark, all returning `Sequence` objects (see `base.py`).

Entry points:
  `load_sequence(path, format=None)`: one sequence folder of any supported layout (format guessed).
  `load_dataset(name, root, split=None, **kw)`: a whole benchmark.
"""

from __future__ import annotations

import os
import types

from cia_jax.data.datasets import coco, dtb70, folder, got10k, lasot, nfs, otb, tnl2k, trackingnet, uav, vot
from cia_jax.data.datasets.base import Sequence

# name -> module implementing `load_dataset(root, split=None, **kw)` (and `load_sequence(path)` for videos).
READERS: dict[str, types.ModuleType] = {
    "got10k": got10k,
    "lasot": lasot,
    "trackingnet": trackingnet,
    "coco": coco,
    "otb": otb,
    "uav": uav,
    "nfs": nfs,
    "vot": vot,
    "tnl2k": tnl2k,
    "dtb70": dtb70,
    "folder": folder,
}
FORMATS = tuple(READERS)

__all__ = ["FORMATS", "Sequence", "guess_format", "load_dataset", "load_sequence"]


def _reader(name: str) -> types.ModuleType:
  if name not in READERS:
    raise ValueError(f"unknown dataset format {name!r}; expected one of {', '.join(FORMATS)}")
  return READERS[name]


def guess_format(path: str) -> str:
  """Guesses the layout of one sequence folder (or annotation file) from the files it holds.

  Rules, first match wins: `meta_info.ini` / `absence.label` -> got10k; `full_occlusion.txt` /
  `out_of_view.txt` -> lasot; `30/<name>.txt` -> nfs; `imgs/` + `groundtruth.txt` -> tnl2k;
  `groundtruth_rect*.txt` -> otb (dtb70 when the first frame is `img/00001.jpg`); a folder inside
  `<chunk>/frames/` with `<chunk>/anno/<name>.txt` -> trackingnet; `data_seq/<set>/<name>` with
  `anno/<set>/<name>.txt` -> uav; `groundtruth.txt` with frames `00000001.jpg` in `color/` or the
  folder -> vot; `img/` + `<name>.txt` -> uav; anything else -> folder.
  """
  path = os.path.abspath(path)
  if os.path.isfile(path):
    base = os.path.basename(path)
    parent = os.path.dirname(path)
    if base.startswith("groundtruth_rect"):
      return "otb"
    if os.path.basename(parent) == "anno" and os.path.isdir(os.path.join(os.path.dirname(parent), "frames")):
      return "trackingnet"
    if os.path.basename(os.path.dirname(parent)) == "anno":
      return "uav"
    return guess_format(parent)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"sequence path not found: {path}")
  has = lambda *p: os.path.exists(os.path.join(path, *p))  # noqa: E731
  name = os.path.basename(path)
  names = os.listdir(path)
  if has("meta_info.ini") or has("absence.label"):
    return "got10k"
  if has("full_occlusion.txt") or has("out_of_view.txt"):
    return "lasot"
  if has("30", f"{name}.txt") or (name == "30" and has(f"{os.path.basename(os.path.dirname(path))}.txt")):
    return "nfs"
  if has("imgs") and has("groundtruth.txt"):
    return "tnl2k"
  if any(n.startswith("groundtruth_rect") and n.endswith(".txt") for n in names):
    return "dtb70" if has("img", "00001.jpg") and not has("img", "0001.jpg") else "otb"
  parent, grand = os.path.dirname(path), os.path.dirname(os.path.dirname(path))
  if os.path.basename(parent) == "frames" and os.path.isfile(os.path.join(grand, "anno", f"{name}.txt")):
    return "trackingnet"
  if os.path.isfile(os.path.join(os.path.dirname(grand), "anno", os.path.basename(parent), f"{name}.txt")):
    return "uav"
  if has("groundtruth.txt") and (has("color", "00000001.jpg") or has("00000001.jpg")):
    return "vot"
  if has("img") and any(n.endswith(".txt") and name.endswith(n[:-4]) for n in names):
    return "uav"
  return "folder"


def load_sequence(path: str, format: str | None = None) -> Sequence:  # pylint: disable=redefined-builtin
  """Reads one sequence folder of any supported layout.

  Args:
    path: the sequence folder (for OTB multi-target folders, TrackingNet or UAV also an annotation file).
    format: one of `FORMATS` except "coco" (an image dataset); guessed with `guess_format` when None.

  Returns:
    A `Sequence` with `name`, `frame_paths`, `boxes` `[T, 4]` (x, y, w, h in pixels, NaN where no box),
    `visible` `[T]` and `category`.
  """
  fmt = format or guess_format(path)
  if fmt == "coco":
    raise ValueError("COCO is an image dataset without sequence folders: use load_dataset('coco', root)")
  if not os.path.exists(path):
    raise FileNotFoundError(f"sequence path not found: {path}")
  return _reader(fmt).load_sequence(path)


def load_dataset(name: str, root: str, split: str | None = None, **kw) -> list[Sequence]:
  """Reads a whole benchmark.

  Args:
    name: one of `FORMATS` (got10k, lasot, trackingnet, coco, otb, uav, nfs, vot, tnl2k, dtb70, folder).
    root: the benchmark's root folder (see each reader's docstring for its layout).
    split: benchmark split (got10k: train/val/test/vottrain/votval; lasot: train/test/all;
      trackingnet: train/test; coco: train/val; uav: UAV123/UAV123_10fps/UAV20L; others: None).
    **kw: reader options, e.g. `chunks=[0, 1, 2, 3]` (TrackingNet), `split_file=...` (GOT-10k, LaSOT),
      `sequences=[...]` (evaluation sets), `min_size=` (COCO).

  Returns:
    The sequences in the benchmark's order.
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{name} root not found: {root}")
  return _reader(name).load_dataset(root, split, **kw)
