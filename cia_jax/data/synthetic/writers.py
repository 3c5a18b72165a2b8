"""`generate`: synthetic sequences (`render.render_sequence`) written in the benchmarks' exact on-disk layouts.

Sequence i of a call renders from `np.random.default_rng([seed, i])`, so adding sequences never changes
earlier ones.

Layouts written by `generate` (`root` = `out_dir`):

* got10k:  `root/<split>/GOT-10k_<Split>_%06d/%08d.jpg`, `groundtruth.txt`
  (`x,y,w,h`, 4 decimals), `absence.label`, `cover.label`, `cut_by_image.label`,
  `meta_info.ini` (`object_class: <category>`), and `root/<split>/list.txt`.
  split "test" writes only the first box and no labels, as the benchmark does.
* lasot:   `root/<class>/<class>-<n>/img/%08d.jpg`, `groundtruth.txt` (`x,y,w,h`
  ints), `full_occlusion.txt`, `out_of_view.txt` (one comma-separated line of
  0/1), `nlp.txt`.
* otb:     `root/<Name>/img/%04d.jpg`, `groundtruth_rect.txt`; odd sequences use
  tabs, even ones commas, like the real benchmark's mix.
* trackingnet: `root/TRAIN_<k>/frames/<seq>/<i>.jpg` (0-based, no padding) and
  `root/TRAIN_<k>/anno/<seq>.txt` (`x,y,w,h` floats); split "test" writes
  `TEST/...` with only the first box.
* uav:     `root/data_seq/UAV123/<seq>/%06d.jpg`, `root/anno/UAV123/<seq>.txt`;
  absent rows are `NaN,NaN,NaN,NaN`.
* nfs:     `root/<seq>/30/<seq>/%05d.jpg`, `root/<seq>/30/<seq>.txt` (NFS's
  annotation rows `track_id xmin ymin xmax ymax frame lost occluded generated
  "label"`, at 240 fps: eight rows per 30 fps frame).
* vot:     `root/<seq>/color/%08d.jpg`, `root/<seq>/groundtruth.txt` with 8-value
  polygons (odd sequences: 4-value boxes), `root/list.txt`.
* tnl2k:   `root/<seq>/imgs/%05d.jpg`, `root/<seq>/groundtruth.txt`, `language.txt`.
* dtb70:   `root/<Seq>/img/%05d.jpg`, `root/<Seq>/groundtruth_rect.txt`.
* coco:    `root/train2017/%012d.jpg` (first frame of each sequence, plus the
  distractors as extra annotations) and `root/annotations/instances_train2017.json`.
* folder:  `root/<seq>/%06d.jpg` + `root/<seq>/groundtruth.txt` (a generic layout).

Absent targets (out of view) are written as `0,0,0,0` rows except where the
benchmark uses NaN (UAV123) or its own flags (NFS `lost`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Sequence as SequenceT

import cv2
import numpy as np

from cia_jax.data.categories import LASOT_CLASSES, category_id
from cia_jax.data.synthetic.render import SyntheticSequence, render_sequence

FORMATS = ("got10k", "lasot", "otb", "trackingnet", "uav", "nfs", "vot", "tnl2k", "dtb70", "coco", "folder")


@dataclasses.dataclass
class _Destination:
  """Where and how one `generate` call writes.

  Attributes:
    root: the dataset root (`out_dir`).
    split: the benchmark split (GOT-10k, TrackingNet).
    quality: JPEG quality.
    lasot_counts: category -> sequences written so far (LaSOT names sequences `<class>-<n>`).
  """

  root: str
  split: str
  quality: int
  lasot_counts: dict[str, int] = dataclasses.field(default_factory=dict)


def _imwrite(path: str, rgb: np.ndarray, quality: int) -> None:
  if not cv2.imwrite(path, rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
    raise OSError(f"could not write image {path}")


def _write_frames(folder: str, frames: np.ndarray, pattern: str, quality: int, start: int = 1) -> None:
  os.makedirs(folder, exist_ok=True)
  for i, frame in enumerate(frames):
    _imwrite(os.path.join(folder, pattern % (i + start)), frame, quality)


def _write_lines(path: str, lines: list[str]) -> None:
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def _rows(boxes: np.ndarray, fmt: str, sep: str = ",", nan_rows: np.ndarray | None = None) -> list[str]:
  out = []
  for i, b in enumerate(boxes):
    if nan_rows is not None and nan_rows[i]:
      out.append(sep.join(["NaN"] * 4))
    else:
      out.append(sep.join(fmt % v for v in b))
  return out


def _polygon_rows(seq: SyntheticSequence) -> list[str]:
  """VOT-style 8-value rows: the corners of the amodal box rotated with the object, clipped to the frame."""
  rows = []
  for b, absent in zip(seq.boxes_xywh, seq.out_of_view):
    if absent:
      rows.append("0,0,0,0,0,0,0,0")
      continue
    x, y, w, h = b
    # Corners start at a different vertex per frame and wind clockwise, as VOT files do.
    pts = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    k = len(rows) % 4
    pts = pts[k:] + pts[:k]
    rows.append(",".join(f"{v:.2f}" for p in pts for v in p))
  return rows


def _write_got10k(dest: _Destination, i: int, seq: SyntheticSequence) -> str:
  name = f"GOT-10k_{dest.split.capitalize()}_{i + 1:06d}"
  folder = os.path.join(dest.root, dest.split, name)
  _write_frames(folder, seq.frames, "%08d.jpg", dest.quality)
  boxes = seq.boxes_xywh if dest.split != "test" else seq.boxes_xywh[:1]
  _write_lines(os.path.join(folder, "groundtruth.txt"), _rows(boxes, "%.4f"))
  if dest.split != "test":
    cover = np.where(seq.visible, np.clip(np.ceil(seq.visible_ratio * 8), 1, 8), 0).astype(int)
    _write_lines(os.path.join(folder, "absence.label"), [str(int(v)) for v in seq.out_of_view])
    _write_lines(os.path.join(folder, "cover.label"), [str(v) for v in cover])
    _write_lines(os.path.join(folder, "cut_by_image.label"), [str(int(v)) for v in seq.cut_by_image])
  h, w = seq.frames.shape[1:3]
  _write_lines(os.path.join(folder, "meta_info.ini"), [
      "[METAINFO]", "url: synthetic", "begin: 00:00:00", f"end: 00:00:{len(seq.frames) // 10:02d}",
      "anno_fps: 10Hz", f"object_class: {seq.category}", "motion_class: moving",
      f"major_class: {seq.category}", "root_class: object", "motion_adverb: smoothly",
      f"resolution: ({w}, {h})"])
  return name


def _write_lasot(dest: _Destination, i: int, seq: SyntheticSequence) -> str:
  del i  # LaSOT numbers the sequences of each class
  cls = seq.category
  dest.lasot_counts[cls] = dest.lasot_counts.get(cls, 0) + 1
  name = f"{cls}-{dest.lasot_counts[cls]}"
  folder = os.path.join(dest.root, cls, name)
  _write_frames(os.path.join(folder, "img"), seq.frames, "%08d.jpg", dest.quality)
  _write_lines(os.path.join(folder, "groundtruth.txt"), _rows(seq.boxes_xywh, "%d"))
  with open(os.path.join(folder, "full_occlusion.txt"), "w") as f:
    f.write(",".join(str(int(v)) for v in seq.full_occlusion))
  with open(os.path.join(folder, "out_of_view.txt"), "w") as f:
    f.write(",".join(str(int(v)) for v in seq.out_of_view))
  with open(os.path.join(folder, "nlp.txt"), "w") as f:
    f.write(f"the textured {cls} moving among other objects")
  return name


def _write_otb_like(dest: _Destination, i: int, seq: SyntheticSequence, digits: int, tabs: bool) -> str:
  name = f"Synth{i + 1:03d}"
  _write_frames(os.path.join(dest.root, name, "img"), seq.frames, f"%0{digits}d.jpg", dest.quality)
  sep = "\t" if tabs and i % 2 else ","
  _write_lines(os.path.join(dest.root, name, "groundtruth_rect.txt"), _rows(seq.boxes_xywh, "%d", sep))
  return name


def _write_otb(dest: _Destination, i: int, seq: SyntheticSequence) -> str:
  return _write_otb_like(dest, i, seq, digits=4, tabs=True)


def _write_dtb70(dest: _Destination, i: int, seq: SyntheticSequence) -> str:
  return _write_otb_like(dest, i, seq, digits=5, tabs=False)


def _write_trackingnet(dest: _Destination, i: int, seq: SyntheticSequence) -> str:
  name = f"synth_{i:05d}"
  chunk = "TRAIN_0" if dest.split == "train" else "TEST"
  _write_frames(os.path.join(dest.root, chunk, "frames", name), seq.frames, "%d.jpg", dest.quality, start=0)
  os.makedirs(os.path.join(dest.root, chunk, "anno"), exist_ok=True)
  boxes = seq.boxes_xywh if dest.split == "train" else seq.boxes_xywh[:1]
  _write_lines(os.path.join(dest.root, chunk, "anno", f"{name}.txt"), _rows(boxes, "%.4f"))
  return name


def _write_uav(dest: _Destination, i: int, seq: SyntheticSequence) -> str:
  name = f"synth{i + 1}"
  _write_frames(os.path.join(dest.root, "data_seq", "UAV123", name), seq.frames, "%06d.jpg", dest.quality)
  os.makedirs(os.path.join(dest.root, "anno", "UAV123"), exist_ok=True)
  _write_lines(os.path.join(dest.root, "anno", "UAV123", f"{name}.txt"),
               _rows(seq.boxes_xywh, "%d", nan_rows=seq.out_of_view))
  return name


def _write_nfs(dest: _Destination, i: int, seq: SyntheticSequence) -> str:
  name = f"synth_{i + 1}"
  base = os.path.join(dest.root, name, "30")
  _write_frames(os.path.join(base, name), seq.frames, "%05d.jpg", dest.quality)
  # NFS ships 240 fps annotations (8 rows per 30 fps frame): interpolate between 30 fps boxes.
  rows = []
  t = len(seq.frames)
  for k in range(t):
    for j in range(8):
      a = seq.boxes_xywh[k]
      b = seq.boxes_xywh[min(k + 1, t - 1)]
      lost = seq.out_of_view[k]
      box = a if lost or seq.out_of_view[min(k + 1, t - 1)] else a + (b - a) * (j / 8.0)
      x1, y1, x2, y2 = box[0], box[1], box[0] + box[2], box[1] + box[3]
      rows.append(f"1 {x1:.0f} {y1:.0f} {x2:.0f} {y2:.0f} {8 * k + j + 1} {int(lost)} "
                  f"{int(seq.full_occlusion[k])} {int(j != 0)} \"{seq.category}\"")
  _write_lines(os.path.join(base, f"{name}.txt"), rows)
  return name


def _write_vot(dest: _Destination, i: int, seq: SyntheticSequence) -> str:
  name = f"synth{i + 1}"
  _write_frames(os.path.join(dest.root, name, "color"), seq.frames, "%08d.jpg", dest.quality)
  rows = _polygon_rows(seq) if i % 2 == 0 else _rows(seq.boxes_xywh, "%.2f")
  _write_lines(os.path.join(dest.root, name, "groundtruth.txt"), rows)
  return name


def _write_tnl2k(dest: _Destination, i: int, seq: SyntheticSequence) -> str:
  name = f"Synth_video_{i + 1}"
  _write_frames(os.path.join(dest.root, name, "imgs"), seq.frames, "%05d.jpg", dest.quality)
  _write_lines(os.path.join(dest.root, name, "groundtruth.txt"), _rows(seq.boxes_xywh, "%d"))
  _write_lines(os.path.join(dest.root, name, "language.txt"), [f"the {seq.category} in the middle"])
  return name


def _write_folder(dest: _Destination, i: int, seq: SyntheticSequence) -> str:
  name = f"seq{i + 1:03d}"
  _write_frames(os.path.join(dest.root, name), seq.frames, "%06d.jpg", dest.quality)
  _write_lines(os.path.join(dest.root, name, "groundtruth.txt"), _rows(seq.boxes_xywh, "%.1f"))
  return name


def _name_coco(dest: _Destination, i: int, seq: SyntheticSequence) -> str:
  del dest, seq  # the images and the annotation file are written together by `_write_coco`
  return f"{i + 1:012d}"


def _write_coco(root, seqs: list[tuple[str, SyntheticSequence]], quality):
  img_dir = os.path.join(root, "train2017")
  os.makedirs(img_dir, exist_ok=True)
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  images, annotations = [], []
  categories = [{"id": i + 1, "name": c, "supercategory": "object"} for i, c in enumerate(LASOT_CLASSES)]
  for k, (_, seq) in enumerate(seqs):
    image_id = k + 1
    h, w = seq.frames.shape[1:3]
    fname = f"{image_id:012d}.jpg"
    _imwrite(os.path.join(img_dir, fname), seq.frames[0], quality)
    images.append({"id": image_id, "file_name": fname, "width": w, "height": h})
    x, y, bw, bh = (float(v) for v in seq.boxes_xywh[0])
    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "bbox": [x, y, bw, bh],
                        "area": bw * bh, "iscrowd": 0, "category_id": category_id(seq.category) + 1,
                        "segmentation": []})
    # A crowd region and a tiny box per image: the reader must drop both.
    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "bbox": [0.0, 0.0, 20.0, 20.0],
                        "area": 400.0, "iscrowd": 1, "category_id": 1, "segmentation": {}})
    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "bbox": [1.0, 1.0, 1.5, 2.0],
                        "area": 3.0, "iscrowd": 0, "category_id": 1, "segmentation": []})
  with open(os.path.join(root, "annotations", "instances_train2017.json"), "w") as f:
    json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


# format -> writer of one sequence (returns its name).
_WRITERS: dict[str, Callable[[_Destination, int, SyntheticSequence], str]] = {
    "got10k": _write_got10k, "lasot": _write_lasot, "otb": _write_otb, "trackingnet": _write_trackingnet,
    "uav": _write_uav, "nfs": _write_nfs, "vot": _write_vot, "tnl2k": _write_tnl2k, "dtb70": _write_dtb70,
    "coco": _name_coco, "folder": _write_folder,
}


def _list_folders(folder: str) -> None:
  """`folder/list.txt`: the sorted names of the sequence folders in `folder`."""
  listed = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
  _write_lines(os.path.join(folder, "list.txt"), listed)


def _write_indexes(format: str, dest: _Destination,  # pylint: disable=redefined-builtin
                   rendered: list[tuple[str, SyntheticSequence]]) -> None:
  """The files that describe a whole split, written after its sequences."""
  if format == "got10k":
    _list_folders(os.path.join(dest.root, dest.split))
  elif format == "vot":
    _list_folders(dest.root)
  elif format == "trackingnet":
    with open(os.path.join(dest.root, "trackingnet_classmap.txt"), "a") as f:
      f.writelines(f"{n}\t{s.category}\n" for n, s in rendered)
  elif format == "coco":
    _write_coco(dest.root, rendered, dest.quality)


def generate(out_dir: str, format: str = "got10k",  # pylint: disable=redefined-builtin
             num_sequences: int = 4, num_frames: int = 30, image_size: tuple[int, int] = (160, 120),
             seed: int = 0, *, split: str = "train",
             categories: SequenceT[str] | None = None, num_distractors: int | None = None,
             occlusion: bool | None = None, out_of_view: bool | None = None,
             jpeg_quality: int = 90) -> list[str]:
  """Writes synthetic sequences to `out_dir` in one benchmark's exact layout (see the module docstring).

  Args:
    out_dir: dataset root to write into (created; existing files of the same names are overwritten).
    format: one of `FORMATS` ("got10k", "lasot", "otb", "trackingnet", "uav", "nfs", "vot", "tnl2k",
      "dtb70", "coco", "folder").
    num_sequences: number of sequences (COCO: images).
    num_frames: frames per sequence (COCO: only the first frame is written).
    image_size: (W, H) in pixels.
    seed: base seed; sequence i renders from `np.random.default_rng([seed, i])`.
    split: GOT-10k "train"/"val"/"test" sub-folder; TrackingNet "train" (chunk TRAIN_0) or "test";
      "test" writes only the first box where the benchmark does.
    categories: LaSOT class names to draw targets from (cycled in order); random classes when None.
    num_distractors, occlusion, out_of_view: forwarded to `render_sequence` (random when None).
    jpeg_quality: JPEG quality 1..100.

  Returns:
    The sequence names, in generation order (what the matching reader reports as `Sequence.name`).
  """
  if format not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
  if num_sequences < 1:
    raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")
  if format == "got10k" and split not in ("train", "val", "test"):
    raise ValueError(f"got10k split must be train, val or test, got {split!r}")
  if format == "trackingnet" and split not in ("train", "test"):
    raise ValueError(f"trackingnet split must be train or test, got {split!r}")
  w, h = (int(v) for v in image_size)
  os.makedirs(out_dir, exist_ok=True)
  dest = _Destination(out_dir, split, jpeg_quality)
  rendered: list[tuple[str, SyntheticSequence]] = []
  for i in range(num_sequences):
    cat = None if not categories else categories[i % len(categories)]
    seq = render_sequence([seed, i], 1 if format == "coco" else num_frames, (w, h), category=cat,
                          num_distractors=num_distractors, occlusion=occlusion, out_of_view=out_of_view)
    rendered.append((_WRITERS[format](dest, i, seq), seq))
  _write_indexes(format, dest, rendered)
  return [name for name, _ in rendered]
