"""UAV123 / UAV123@10fps / UAV20L (Mueller et al., ECCV 2016).

Layout: `<root>/anno/<set>/<seq>.txt` (`x,y,w,h`, commas; `NaN,NaN,NaN,NaN` rows where the target is
absent) and frames `<root>/data_seq/<frames set>/<folder>/%06d.jpg` with `<set>` in {UAV123, UAV123_10fps,
UAV20L} (UAV20L reads the UAV123 frames). Several UAV123 sequences are pieces `<folder>_<k>` of one
frame folder; their first frames are the benchmark's configuration (the 10 fps numbers are
(n - 1) / 3 + 1 of the 30 fps ones). A piece runs for as many frames as its file has rows.

The category is the sequence name without its numbers ("bird1_2" -> "bird", "car1_s" -> "car").
visible = finite box with w, h > 0.

Attributes: `anno/<set>/att/<seq>.txt` (UAV123_10fps falls back to `anno/UAV123/att/`; a self-contained folder
may hold `att/<seq>.txt`) is one line of 12 comma-separated 0/1 flags in the order of `ATTRIBUTES` (the column
order of the dataset's DatasetAnnotation.pdf, not alphabetical); read into `Sequence.attributes["attributes"]`
as {attribute name: bool}.
"""

from __future__ import annotations

import os
import re

from cia_jax.data.datasets import parsing as ann
from cia_jax.data.datasets.base import Sequence

# First frame (30 fps numbering) of each piece of the UAV123 sequences split into several pieces.
PIECE_STARTS: dict[str, tuple[int, ...]] = {
    "bird1": (1, 775, 1573),
    "car1": (1, 751, 1627),
    "car6": (1, 487, 1807, 2953, 3925),
    "car8": (1, 1357),
    "car16": (1, 415),
    "group1": (1, 1333, 2515, 3925),
    "group2": (1, 907, 1771),
    "group3": (1, 1567, 2827, 4369),
    "person2": (1, 1189),
    "person4": (1, 1501),
    "person5": (1, 877),
    "person7": (1, 1249),
    "person8": (1, 1075),
    "person12": (1, 601),
    "person14": (1, 847, 1813),
    "person17": (1, 1501),
    "person19": (1, 1243, 2791),
    "truck4": (1, 577),
    "uav1": (1, 1555, 2473),
}
# Column order of the attribute files (abbreviations of the UAV123 paper: SV ARC LR FM FOC POC OV BC IV VC CM SOB).
ATTRIBUTES = ("scale variation", "aspect ratio change", "low resolution", "fast motion", "full occlusion",
              "partial occlusion", "out of view", "background clutter", "illumination variation",
              "viewpoint change", "camera motion", "similar object")
SETS = {"uav123": ("UAV123", "UAV123"), "uav123_10fps": ("UAV123_10fps", "UAV123_10fps"),
        "uav20l": ("UAV20L", "UAV123")}


def category_of(name: str) -> str:
  """UAV123 class from a sequence name: its leading letters ("person19_2" -> "person")."""
  m = re.match(r"[A-Za-z]+", name)
  return m.group(0).lower() if m else name


def _piece(frames_root: str, name: str, ten_fps: bool, frame_ranges: dict | None) -> tuple[str, int]:
  """(frame folder, first frame number) of sequence `name`."""
  if frame_ranges and name in frame_ranges:
    folder, start = frame_ranges[name]
    return os.path.join(frames_root, folder), int(start)
  if os.path.isdir(os.path.join(frames_root, name)):
    return os.path.join(frames_root, name), 1
  m = re.fullmatch(r"(.+)_(\d+)", name)
  if m and m.group(1) in PIECE_STARTS and 1 <= int(m.group(2)) <= len(PIECE_STARTS[m.group(1)]):
    start = PIECE_STARTS[m.group(1)][int(m.group(2)) - 1]
    return os.path.join(frames_root, m.group(1)), (start - 1) // 3 + 1 if ten_fps else start
  raise FileNotFoundError(f"no frame folder {os.path.join(frames_root, name)} and no known frame range for "
                          f"{name!r} (pass frame_ranges={{{name!r}: (folder, first_frame)}})")


def load_sequence(path: str, frame_ranges: dict | None = None) -> Sequence:
  """Reads one UAV sequence.

  `path` is either `<root>/data_seq/<set>/<seq>` (annotations found in `<root>/anno/<set>/<seq>.txt`),
  an annotation file `<root>/anno/<set>/<seq>.txt`, or a self-contained folder with frames in `img/`
  (or in the folder) and one `<seq>.txt` annotation file.
  """
  path = os.path.abspath(path)
  if path.endswith(".txt"):
    name = os.path.basename(path)[:-4]
    set_dir = os.path.dirname(path)
    root = os.path.dirname(os.path.dirname(set_dir))
    key = os.path.basename(set_dir).lower()
    ten = key == "uav123_10fps"
    frames_set = SETS.get(key, (None, os.path.basename(set_dir)))[1]
    folder, start = _piece(os.path.join(root, "data_seq", frames_set), name, ten, frame_ranges)
    return _build(name, path, folder, start, exact=False)
  name = os.path.basename(path)
  set_dir = os.path.dirname(path)
  root = os.path.dirname(os.path.dirname(set_dir))
  anno = os.path.join(root, "anno", os.path.basename(set_dir), f"{name}.txt")
  if os.path.isfile(anno):
    return _build(name, anno, path, 1, exact=False)
  # Self-contained folder: `img/` + one annotation file (named like the folder's last `_` part or alone).
  txts = [n for n in os.listdir(path) if n.endswith(".txt") and n != "SOURCE.txt"]
  chosen = [n for n in txts if name.endswith(n[:-4])] or txts
  if len(chosen) != 1:
    raise FileNotFoundError(f"cannot find the UAV annotation of {path}: expected {anno} or one .txt in the "
                            f"folder, found {sorted(txts)}")
  img_dir = os.path.join(path, "img") if os.path.isdir(os.path.join(path, "img")) else path
  return _build(chosen[0][:-4], os.path.join(path, chosen[0]), img_dir, 1, exact=True)


def read_attributes(path: str) -> dict[str, bool]:
  """An attribute file (12 0/1 flags, `ATTRIBUTES` order) -> {attribute name: bool}; ValueError naming it."""
  flags = ann.read_flags(path)
  if len(flags) != len(ATTRIBUTES):
    raise ValueError(f"{path}: {len(flags)} attribute flags, expected {len(ATTRIBUTES)} ({', '.join(ATTRIBUTES)})")
  return {name: bool(flag) for name, flag in zip(ATTRIBUTES, flags)}


def _attribute_file(anno: str, name: str) -> str | None:
  set_dir = os.path.dirname(anno)
  candidates = [os.path.join(set_dir, "att", f"{name}.txt")]
  if os.path.basename(set_dir).lower() == "uav123_10fps":  # same sequences as UAV123, same flags
    candidates.append(os.path.join(os.path.dirname(set_dir), "UAV123", "att", f"{name}.txt"))
  return next((p for p in candidates if os.path.isfile(p)), None)


def _build(name: str, anno: str, folder: str, start: int, exact: bool) -> Sequence:
  boxes = ann.read_boxes(anno)
  nz, ext = ann.probe_pattern(folder, start, (6, 5, 4, 8), (".jpg", ".png"))
  frames = ann.numbered_frames(folder, start, len(boxes), nz, ext, anno, exact=exact)
  att = _attribute_file(anno, name)
  attributes = {"attributes": read_attributes(att)} if att else None
  return ann.make_sequence(name, frames, boxes, "uav", category_of(name), attributes=attributes)


def load_dataset(root: str, split: str | None = None, sequences: list[str] | None = None,
                 frame_ranges: dict | None = None) -> list[Sequence]:
  """Reads one UAV set.

  Args:
    root: UAV123 root (holding `anno/` and `data_seq/`).
    split: "UAV123" (default), "UAV123_10fps" or "UAV20L" (case-insensitive).
    sequences: keep only these names.
    frame_ranges: {name: (frame folder name, first frame)} for pieces not in the built-in table.
  """
  key = (split or "UAV123").lower()
  if key not in SETS:
    raise ValueError(f"UAV split must be one of UAV123, UAV123_10fps, UAV20L, got {split!r}")
  anno_set, frames_set = SETS[key]
  anno_dir = os.path.join(root, "anno", anno_set)
  if not os.path.isdir(anno_dir):
    raise FileNotFoundError(f"UAV annotation folder not found: {anno_dir}")
  names = sorted((n[:-4] for n in os.listdir(anno_dir) if n.endswith(".txt")), key=ann.natural_key)
  frames_root = os.path.join(root, "data_seq", frames_set)
  seqs = []
  for name in names:
    if sequences is not None and name not in sequences:
      continue
    folder, start = _piece(frames_root, name, key == "uav123_10fps", frame_ranges)
    seqs.append(_build(name, os.path.join(anno_dir, f"{name}.txt"), folder, start, exact=False))
  return seqs
