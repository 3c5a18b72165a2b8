"""OTB-2013 / OTB-100 (Wu et al., CVPR 2013 / TPAMI 2015): `<root>/<Name>/img/%04d.jpg` +
`groundtruth_rect.txt`.

Boxes are `x,y,w,h`, separated by commas, tabs or spaces (all three occur, sometimes within a file).
Multi-target folders have `groundtruth_rect.<k>.txt` and give sequences `<Name>_<k>` (Jogging_1,
Jogging_2, Skating2_1, Skating2_2, Human4_2; Human4's empty `groundtruth_rect1.txt` is not an annotation).

Irregular sequences (facts of the benchmark's own sequence configuration):

| sequence | first annotated frame | note |
|---|---|---|
| David | 300 | frames 0001-0299 exist but are not annotated |
| BlurCar1 | 247 | no frames before 0247 |
| BlurCar3 | 3 | |
| BlurCar4 | 18 | |
| Tiger1 | 6 | the first 5 boxes and frames are skipped (OTB's `initOmit`) |
| Board | 1 | 5-digit file names |
| Diving, Football1, Freeman3, Freeman4 | 1 | more frames on disk than boxes: only the annotated prefix |

Any other folder: frames numbered from 1 (or from the first frame found when 1 is absent), 4 or 5
digits, `.jpg` or `.png` (KiteSurf), exactly as many frames as boxes.
"""

from __future__ import annotations

import os
import re

from cia_jax.data.datasets import parsing as ann
from cia_jax.data.datasets.base import Sequence

# name -> (first frame number, boxes/frames skipped at the start, folder may hold extra frames)
IRREGULAR: dict[str, tuple[int, int, bool]] = {
    "David": (300, 0, True),
    "BlurCar1": (247, 0, False),
    "BlurCar3": (3, 0, False),
    "BlurCar4": (18, 0, False),
    "Tiger1": (1, 5, False),
    "Diving": (1, 0, True),
    "Football1": (1, 0, True),
    "Freeman3": (1, 0, True),
    "Freeman4": (1, 0, True),
}
_ANNO = re.compile(r"groundtruth_rect(?:\.(\d+))?\.txt$")


def annotation_files(folder: str) -> dict[str, str]:
  """{sequence name: annotation path} for an OTB folder (one entry, or one per target)."""
  base = os.path.basename(os.path.abspath(folder))
  out = {}
  for n in sorted(os.listdir(folder)):
    m = _ANNO.fullmatch(n)
    if m:
      out[base if m.group(1) is None else f"{base}_{m.group(1)}"] = os.path.join(folder, n)
  return out


def _first_frame(img_dir: str) -> int:
  frames = ann.list_frames(img_dir)
  digits = re.findall(r"\d+", os.path.basename(frames[0]))
  if not digits:
    raise ValueError(f"cannot read a frame number from {frames[0]}")
  return int(digits[-1])


def load_sequence(path: str, dataset: str = "otb", name: str | None = None) -> Sequence:
  """Reads one OTB-style sequence: a folder (single target) or a `groundtruth_rect[.k].txt` file.

  Args:
    path: sequence folder, or one of its annotation files (to pick a target of a multi-target folder).
    dataset: value of `Sequence.dataset` ("otb"; the DTB70 reader reuses this one).
    name: sequence name override (the benchmark's name when the folder is named differently).
  """
  path = os.path.abspath(path)
  if os.path.isfile(path):
    folder = os.path.dirname(path)
    m = _ANNO.search(os.path.basename(path))
    base = os.path.basename(folder)
    seq_name = base if m is None or m.group(1) is None else f"{base}_{m.group(1)}"
    anno = path
  else:
    folder = path
    files = annotation_files(folder)
    if not files:
      raise FileNotFoundError(f"no groundtruth_rect.txt (or groundtruth_rect.<k>.txt) in {folder}")
    if len(files) > 1:
      raise ValueError(f"{folder} has {len(files)} targets ({', '.join(sorted(files))}): pass one of "
                       f"{', '.join(os.path.basename(p) for p in files.values())} as the path")
    seq_name, anno = next(iter(files.items()))
  seq_name = name or seq_name
  boxes = ann.read_boxes(anno)
  img_dir = os.path.join(folder, "img") if os.path.isdir(os.path.join(folder, "img")) else folder
  base = os.path.basename(folder)
  start, omit, extra = IRREGULAR.get(base, (None, 0, False))
  if start is None:
    try:
      ann.probe_pattern(img_dir, 1, (4, 5, 6, 8), (".jpg", ".png"))
      start = 1
    except FileNotFoundError:
      start = _first_frame(img_dir)
  boxes = boxes[omit:]
  nz, ext = ann.probe_pattern(img_dir, start + omit, (4, 5, 6, 8), (".jpg", ".png"))
  frames = ann.numbered_frames(img_dir, start + omit, len(boxes), nz, ext, anno, exact=not extra)
  return ann.make_sequence(seq_name, frames, boxes, dataset, None)


def load_dataset(root: str, split: str | None = None, sequences: list[str] | None = None,
                 dataset: str = "otb") -> list[Sequence]:
  """Reads every OTB sequence folder under `root` (multi-target folders give one sequence per target).

  Args:
    root: folder of sequence folders.
    split: unused (OTB has one split); must be None, "test" or "all".
    sequences: keep only these sequence names (e.g. an OTB-2013 subset).
  """
  if split not in (None, "test", "all"):
    raise ValueError(f"{dataset} has no split {split!r}")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{dataset} root not found: {root}")
  seqs = []
  for entry in sorted(os.listdir(root), key=str.lower):
    folder = os.path.join(root, entry)
    if not os.path.isdir(folder):
      continue
    for name, anno in annotation_files(folder).items():
      if sequences is not None and name not in sequences:
        continue
      seqs.append(load_sequence(anno, dataset=dataset))
  return seqs
