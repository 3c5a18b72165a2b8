"""COCO (Lin et al., ECCV 2014) as a tracking training set: each object annotation is a one-frame sequence.

Layout: `<root>/annotations/instances_<split><version>.json` and `<root>/<split><version>/<file_name>`.
Annotations with `iscrowd` = 1 and boxes smaller than `min_size` pixels in width or height are dropped.
`bbox` is COCO's `[x, y, w, h]` (0-based, continuous). The category is COCO's class name ("person",
"airplane", "cup", ...), so classes that LaSOT shares get their LaSOT id.
"""

from __future__ import annotations

import json
import os

import numpy as np

from cia_jax.data.datasets import parsing as ann
from cia_jax.data.datasets.base import Sequence


def load_dataset(root: str, split: str | None = None, version: str = "2017", min_size: float = 2.0,
                 annotation_file: str | None = None, image_dir: str | None = None) -> list[Sequence]:
  """Reads COCO object annotations as one-frame sequences named by annotation id.

  Args:
    root: COCO root.
    split: "train" (default) or "val".
    version: "2017" or "2014".
    min_size: minimum box width and height in pixels (tiny boxes give no usable crops).
    annotation_file, image_dir: explicit paths overriding the standard layout.
  """
  split = split or "train"
  if split not in ("train", "val"):
    raise ValueError(f"COCO split must be 'train' or 'val', got {split!r}")
  annotation_file = annotation_file or os.path.join(root, "annotations", f"instances_{split}{version}.json")
  image_dir = os.path.abspath(image_dir or os.path.join(root, f"{split}{version}"))
  if not os.path.isfile(annotation_file):
    raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
  if not os.path.isdir(image_dir):
    raise FileNotFoundError(f"COCO image folder not found: {image_dir}")
  with open(annotation_file) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{annotation_file}:{e.lineno}: invalid JSON ({e.msg})") from None
  for key in ("images", "annotations", "categories"):
    if key not in data:
      raise ValueError(f"{annotation_file}: missing top-level key {key!r}")
  files = {im["id"]: im["file_name"] for im in data["images"]}
  names = {c["id"]: c["name"] for c in data["categories"]}
  seqs = []
  for a in data["annotations"]:
    if a.get("iscrowd", 0):
      continue
    bbox = a.get("bbox")
    if bbox is None or len(bbox) != 4:
      raise ValueError(f"{annotation_file}: annotation id {a.get('id')} has bbox {bbox!r}, expected 4 values")
    box = np.asarray(bbox, np.float64)[None]
    if not (box[0, 2] >= min_size and box[0, 3] >= min_size):
      continue
    if a["image_id"] not in files:
      raise ValueError(f"{annotation_file}: annotation id {a.get('id')} refers to unknown image_id "
                       f"{a['image_id']}")
    seqs.append(ann.make_sequence(str(a["id"]), [os.path.join(image_dir, files[a["image_id"]])], box, "coco",
                                  names.get(a["category_id"]), attributes={"image_id": a["image_id"]}))
  return seqs
