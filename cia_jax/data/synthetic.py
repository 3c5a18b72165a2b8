"""Synthetic tracking sequences written in the benchmarks' exact on-disk layouts.

Each sequence shows one *target* (a textured object whose look is fixed by its
LaSOT category, so category labels are learnable) moving over a textured,
slowly panning background with scale change, in-plane rotation, distractor
objects of other categories (some passing in front of the target), an optional
occluder crossing the target and an optional out-of-view excursion.

Ground truth follows the pixel convention of `cia_jax.ops.boxes`: the box
`[x, y, w, h]` covers the pixels x..x+w-1 and y..y+h-1 where the target's mask
is >= 0.5 *inside the image* (occluded parts included, as annotators draw
boxes through occluders). Frames 0 and 1 are never occluded or out of view.

Everything is deterministic given `seed`: sequence i uses the generator
`np.random.default_rng([seed, i])`, so adding sequences never changes earlier
ones. A category's look (shape, texture, colours, aspect) does not depend on the
seed at all.

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

import colorsys
import dataclasses
import functools
import json
import os
from typing import Sequence as SequenceT

import cv2
import numpy as np

from cia_jax.data.categories import LASOT_CLASSES, category_id

FORMATS = ("got10k", "lasot", "otb", "trackingnet", "uav", "nfs", "vot", "tnl2k", "dtb70", "coco", "folder")

_SHAPES = ("ellipse", "rectangle", "diamond", "triangle", "rounded")
_TEXTURES = ("stripes", "checker", "dots", "rings", "waves")
_SPRITE = 48  # Sprite texture resolution (pixels on the long side) before warping.


@dataclasses.dataclass(frozen=True)
class SyntheticSequence:
  """One rendered sequence held in memory.

  Attributes:
    frames: `[T, H, W, 3]` uint8 RGB frames.
    boxes_xywh: `[T, 4]` float64 in-image target box in 0-based pixels (`[0, 0, 0, 0]`
      when out of view).
    amodal_xywh: `[T, 4]` float64 box of the whole target, possibly extending outside the image.
    visible_ratio: `[T]` float fraction of the target's area that is in the image and unoccluded.
    out_of_view: `[T]` bool, target (almost) entirely outside the image (< 5% of its area inside).
    full_occlusion: `[T]` bool, in view but < 10% of its in-image area unoccluded.
    category: the LaSOT class name the target's look is drawn from.
  """

  frames: np.ndarray
  boxes_xywh: np.ndarray
  amodal_xywh: np.ndarray
  visible_ratio: np.ndarray
  out_of_view: np.ndarray
  full_occlusion: np.ndarray
  category: str

  @property
  def visible(self) -> np.ndarray:
    """`[T]` bool: in view and not fully occluded."""
    return ~self.out_of_view & ~self.full_occlusion

  @property
  def cut_by_image(self) -> np.ndarray:
    """`[T]` bool: the whole target box extends past the image border."""
    h, w = self.frames.shape[1:3]
    a = self.amodal_xywh
    return (a[:, 0] < 0) | (a[:, 1] < 0) | (a[:, 0] + a[:, 2] > w) | (a[:, 1] + a[:, 3] > h)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
  return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


@functools.lru_cache(maxsize=None)
def _category_style(cat: int) -> dict:
  """Seed-independent look of a category: shape, texture, two colours, frequency, aspect."""
  rng = np.random.default_rng(7919 + cat)
  hue = (cat * 0.61803398875) % 1.0
  return dict(
      shape=_SHAPES[cat % len(_SHAPES)],
      texture=_TEXTURES[(cat // len(_SHAPES)) % len(_TEXTURES)],
      hue1=hue,
      hue2=(hue + 0.3 + 0.4 * rng.random()) % 1.0,
      freq=float(rng.uniform(2.0, 4.5)),
      angle=float(rng.uniform(0.0, np.pi)),
      aspect=float(np.exp(rng.uniform(-0.45, 0.45))),  # width / height
  )


def _sprite(cat: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Texture `[h, w, 3]` float32 RGB and mask `[h, w]` float32 of one instance of category `cat`."""
  st = _category_style(cat)
  aspect = st["aspect"] * float(np.exp(rng.normal(0.0, 0.08)))
  if aspect >= 1:
    w, h = _SPRITE, max(8, int(round(_SPRITE / aspect)))
  else:
    w, h = max(8, int(round(_SPRITE * aspect))), _SPRITE
  v, u = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32),
                     indexing="ij")
  f, a = st["freq"], st["angle"] + rng.normal(0.0, 0.1)
  phase = rng.uniform(0, 2 * np.pi)
  along = u * np.cos(a) + v * np.sin(a)
  tex = st["texture"]
  if tex == "stripes":
    p = 0.5 + 0.5 * np.sin(np.pi * f * along + phase)
  elif tex == "checker":
    p = ((np.sin(np.pi * f * u + phase) > 0) ^ (np.sin(np.pi * f * v) > 0)).astype(np.float32)
  elif tex == "dots":
    p = ((np.sin(np.pi * f * u + phase) * np.sin(np.pi * f * v)) > 0.35).astype(np.float32)
  elif tex == "rings":
    p = 0.5 + 0.5 * np.sin(np.pi * f * 1.5 * np.sqrt(u * u + v * v) + phase)
  else:  # waves
    p = 0.5 + 0.5 * np.sin(np.pi * f * (u + 0.3 * np.sin(np.pi * 2 * v)) + phase)
  jitter = rng.normal(0.0, 0.02)
  c1 = _hsv(st["hue1"] + jitter, 0.85, 0.95)
  c2 = _hsv(st["hue2"] + jitter, 0.9, 0.45)
  img = c1 * p[..., None] + c2 * (1 - p[..., None])
  img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
  shape = st["shape"]
  if shape == "ellipse":
    mask = u * u + v * v <= 1.0
  elif shape == "rectangle":
    mask = np.ones_like(u, dtype=bool)
  elif shape == "diamond":
    mask = np.abs(u) + np.abs(v) <= 1.0
  elif shape == "triangle":
    mask = (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
  else:  # rounded rectangle
    mask = np.maximum(np.abs(u), 0.6) ** 2 + np.maximum(np.abs(v), 0.6) ** 2 <= 0.6 ** 2 + 0.4 ** 2 + 0.6
  # A dark rim makes the silhouette part of the category's look.
  rim = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
  img[rim] *= 0.35
  return np.clip(img, 0, 255), mask.astype(np.float32)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
  """Muted cluttered texture `[h, w, 3]` float32: smooth colour noise, fine grain and random blobs."""
  lo = rng.uniform(60, 190, (max(2, h // 24), max(2, w // 24), 3)).astype(np.float32)
  img = cv2.resize(lo, (w, h), interpolation=cv2.INTER_CUBIC)
  mid = rng.normal(0, 18, (max(2, h // 6), max(2, w // 6), 3)).astype(np.float32)
  img += cv2.resize(mid, (w, h), interpolation=cv2.INTER_LINEAR)
  img += rng.normal(0, 6, (h, w, 3)).astype(np.float32)
  for _ in range(int(rng.integers(4, 10))):
    color = _hsv(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.8))
    center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
    axes = (int(rng.integers(3, max(4, w // 6))), int(rng.integers(3, max(4, h // 6))))
    cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, color.tolist(), -1)
  # Keep the background desaturated so that the objects stand out as objects.
  gray = img.mean(axis=-1, keepdims=True)
  return np.clip(gray + 0.5 * (img - gray), 0, 255)


def _trajectory(rng: np.random.Generator, t: int, w: int, h: int, margin: float) -> np.ndarray:
  """`[T, 2]` centre positions: damped random-walk velocity, reflected at the image margins."""
  lo = np.array([margin, margin])
  hi = np.array([max(w - margin, margin + 1), max(h - margin, margin + 1)])
  pos = rng.uniform(lo, hi)
  speed = 0.015 * min(w, h)
  vel = rng.normal(0, speed, 2)
  out = np.empty((t, 2))
  for i in range(t):
    out[i] = pos
    vel = 0.85 * vel + rng.normal(0, 0.6 * speed, 2)
    pos = pos + vel
    for k in range(2):  # bounce off the margins
      if pos[k] < lo[k] or pos[k] > hi[k]:
        pos[k] = min(max(pos[k], lo[k]), hi[k])
        vel[k] = -vel[k]
  return out


@dataclasses.dataclass
class _Obj:
  texture: np.ndarray
  mask: np.ndarray
  centers: np.ndarray  # [T, 2]
  sizes: np.ndarray  # [T] length in pixels of the sprite's long side
  angles: np.ndarray  # [T] degrees


def _place(obj: _Obj, i: int) -> tuple[np.ndarray, np.ndarray, int, int]:
  """Warp object `obj` at frame i into a local canvas; returns (rgb, alpha, x0, y0) of the canvas."""
  sh, sw = obj.mask.shape
  k = obj.sizes[i] / _SPRITE
  half = int(np.ceil(0.5 * k * np.hypot(sw, sh))) + 2
  cx, cy = obj.centers[i]
  x0, y0 = int(np.floor(cx)) - half, int(np.floor(cy)) - half
  m = cv2.getRotationMatrix2D(((sw - 1) / 2.0, (sh - 1) / 2.0), float(obj.angles[i]), float(k))
  m[0, 2] += cx - x0 - (sw - 1) / 2.0
  m[1, 2] += cy - y0 - (sh - 1) / 2.0
  size = (2 * half + 1, 2 * half + 1)
  rgb = cv2.warpAffine(obj.texture, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
  alpha = cv2.warpAffine(obj.mask, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
  return rgb, alpha, x0, y0


def _clip(canvas_shape, alpha, x0, y0):
  """Image slices and matching local-canvas slices of a canvas placed at (x0, y0), or None if outside."""
  h, w = canvas_shape
  ch, cw = alpha.shape
  xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + cw, w), min(y0 + ch, h)
  if xa >= xb or ya >= yb:
    return None
  return (slice(ya, yb), slice(xa, xb)), (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))


def _tight_box(mask: np.ndarray) -> np.ndarray | None:
  """`[x, y, w, h]` of the pixels where `mask` >= 0.5 (0-based, inclusive extent), None if empty."""
  cols = np.flatnonzero((mask >= 0.5).any(axis=0))
  rows = np.flatnonzero((mask >= 0.5).any(axis=1))
  if cols.size == 0:
    return None
  return np.array([cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1], np.float64)


def render_sequence(seed: int | SequenceT[int], num_frames: int, image_size: tuple[int, int] = (160, 120),
                    category: str | None = None, num_distractors: int | None = None,
                    occlusion: bool | None = None, out_of_view: bool | None = None) -> SyntheticSequence:
  """Renders one synthetic sequence in memory.

  Args:
    seed: seed (or seed sequence) of `np.random.default_rng`.
    num_frames: T >= 1.
    image_size: (W, H) in pixels, each >= 32.
    category: LaSOT class name of the target; random when None.
    num_distractors: number of distractor objects; random in 1..3 when None.
    occlusion: whether an occluder crosses the target; random (p=0.5) when None. Needs T >= 6.
    out_of_view: whether the target leaves the image for a few frames; random (p=0.3) when None.
      Needs T >= 10.

  Returns:
    A `SyntheticSequence` with `[T, H, W, 3]` uint8 frames and per-frame ground truth.
  """
  w, h = (int(v) for v in image_size)
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  if w < 32 or h < 32:
    raise ValueError(f"image_size (W, H) must be at least (32, 32), got {image_size}")
  if category is not None and category_id(category) < 0:
    raise ValueError(f"category {category!r} is not one of the 70 LaSOT classes")
  rng = np.random.default_rng(seed)
  t = int(num_frames)
  # Draw every choice even when it is overridden, so overrides leave the rest of the sequence unchanged.
  drawn_cat, drawn_dis = int(rng.integers(len(LASOT_CLASSES))), int(rng.integers(1, 4))
  drawn_occ, drawn_oov = bool(rng.random() < 0.5), bool(rng.random() < 0.3)
  cat = drawn_cat if category is None else category_id(category)
  n_dis = drawn_dis if num_distractors is None else int(num_distractors)
  occlusion = (drawn_occ if occlusion is None else occlusion) and t >= 6
  out_of_view = (drawn_oov if out_of_view is None else out_of_view) and t >= 10

  # A background larger than the image, seen through a slowly panning camera.
  pan = int(0.1 * min(w, h)) + 1
  bg = _background(rng, w + 2 * pan, h + 2 * pan)
  cam = np.cumsum(rng.normal(0, 0.4, (t, 2)), axis=0)
  cam = np.clip(np.round(cam + pan), 0, 2 * pan).astype(int)

  base = min(w, h)

  def make_obj(cat_id: int, size: float) -> _Obj:
    tex, mask = _sprite(cat_id, rng)
    tt = np.arange(t)
    sizes = size * np.exp(0.25 * np.sin(2 * np.pi * tt / rng.uniform(25, 60) + rng.uniform(0, 2 * np.pi)))
    angles = rng.uniform(-20, 20) + 25 * np.sin(2 * np.pi * tt / rng.uniform(30, 80) + rng.uniform(0, 6.3))
    centers = _trajectory(rng, t, w, h, margin=0.6 * size)
    return _Obj(tex, mask, centers, sizes, angles)

  target_size = rng.uniform(0.22, 0.36) * base
  target = make_obj(cat, target_size)
  if out_of_view:
    length = max(4, t // 5)
    t0 = int(rng.integers(2, t - length))
    mid = target.centers[t0 + length // 2]
    # Push towards the nearest border, far enough that the target is fully outside at the peak.
    dists = np.array([mid[0], w - mid[0], mid[1], h - mid[1]])
    side = int(np.argmin(dists))
    push = dists[side] + 2.0 * target_size
    direction = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]][side], np.float64)
    bump = np.clip(1.8 * np.sin(np.pi * (np.arange(length) + 0.5) / length), 0, 1)  # flat-topped
    target.centers[t0:t0 + length] += bump[:, None] * push * direction

  others = [c for c in range(len(LASOT_CLASSES)) if c != cat]
  layers = []  # (depth, obj); the target has depth 0, larger depth is drawn later (in front)
  for _ in range(n_dis):
    d = make_obj(int(rng.choice(others)), target_size * rng.uniform(0.7, 1.3))
    layers.append((float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5)), d))
  if occlusion:
    t_occ = int(rng.integers(max(3, t // 3), t - 1))
    occ_size = 2.0 * target.sizes[t_occ]  # large enough to hide the target completely
    tex = _background(rng, _SPRITE, _SPRITE)
    tex = np.clip(tex * 0.8 + 20, 0, 255)
    mask = np.ones((_SPRITE, _SPRITE), np.float32)
    heading = rng.uniform(0, 2 * np.pi)
    crossing = 0.5 * occ_size * np.array([np.cos(heading), np.sin(heading)])  # pixels per frame
    centers = target.centers[t_occ] + crossing * (np.arange(t) - t_occ)[:, None]
    occ = _Obj(tex, mask, centers, np.full(t, occ_size), np.zeros(t))
    layers.append((10.0, occ))
  layers.append((0.0, target))
  layers.sort(key=lambda dl: dl[0])
  # In frames 0 and 1 (where trackers initialise) the target is drawn on top of everything.
  clean_order = [o for _, o in layers if o is not target] + [target]

  frames = np.empty((t, h, w, 3), np.uint8)
  boxes = np.zeros((t, 4))
  amodal = np.zeros((t, 4))
  ratio = np.zeros(t)
  oov = np.zeros(t, bool)
  occluded = np.zeros(t, bool)
  for i in range(t):
    img = bg[cam[i, 1]:cam[i, 1] + h, cam[i, 0]:cam[i, 0] + w].copy()
    target_alpha = None
    for obj in (clean_order if i < 2 else [o for _, o in layers]):
      rgb, alpha, x0, y0 = _place(obj, i)
      sl = _clip((h, w), alpha, x0, y0)
      if obj is target:
        total = max(float((alpha >= 0.5).sum()), 1.0)
        amodal[i] = _tight_box(alpha) + [x0, y0, 0, 0]
        target_alpha = np.zeros((h, w), np.float32)
        if sl is not None:
          target_alpha[sl[0]] = alpha[sl[1]]
        inside = float((target_alpha >= 0.5).sum())
        box = _tight_box(target_alpha)
      if sl is None:
        continue
      a = alpha[sl[1]][..., None]
      img[sl[0]] = img[sl[0]] * (1.0 - a) + rgb[sl[1]] * a
      if obj is not target and target_alpha is not None:
        target_alpha[sl[0]] *= 1.0 - alpha[sl[1]]
    if box is None or inside < 0.05 * total:
      oov[i] = True
    else:
      boxes[i] = box
    unoccluded = float((target_alpha >= 0.5).sum())
    ratio[i] = unoccluded / total
    occluded[i] = not oov[i] and unoccluded < 0.1 * inside
    frames[i] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
  return SyntheticSequence(frames=frames, boxes_xywh=boxes, amodal_xywh=amodal, visible_ratio=ratio,
                           out_of_view=oov, full_occlusion=occluded, category=LASOT_CLASSES[cat])


# ----------------------------------------------------------------------------------------------------------
# Writers: one per on-disk layout.


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


def _write_got10k(root, name, seq, split, quality, w, h):
  folder = os.path.join(root, name)
  _write_frames(folder, seq.frames, "%08d.jpg", quality)
  boxes = seq.boxes_xywh if split != "test" else seq.boxes_xywh[:1]
  _write_lines(os.path.join(folder, "groundtruth.txt"), _rows(boxes, "%.4f"))
  if split != "test":
    cover = np.where(seq.visible, np.clip(np.ceil(seq.visible_ratio * 8), 1, 8), 0).astype(int)
    _write_lines(os.path.join(folder, "absence.label"), [str(int(v)) for v in seq.out_of_view])
    _write_lines(os.path.join(folder, "cover.label"), [str(v) for v in cover])
    _write_lines(os.path.join(folder, "cut_by_image.label"), [str(int(v)) for v in seq.cut_by_image])
  _write_lines(os.path.join(folder, "meta_info.ini"), [
      "[METAINFO]", "url: synthetic", "begin: 00:00:00", f"end: 00:00:{len(seq.frames) // 10:02d}",
      "anno_fps: 10Hz", f"object_class: {seq.category}", "motion_class: moving",
      f"major_class: {seq.category}", "root_class: object", "motion_adverb: smoothly",
      f"resolution: ({w}, {h})"])


def _write_lasot(root, name, seq, quality):
  cls = seq.category
  folder = os.path.join(root, cls, name)
  _write_frames(os.path.join(folder, "img"), seq.frames, "%08d.jpg", quality)
  _write_lines(os.path.join(folder, "groundtruth.txt"), _rows(seq.boxes_xywh, "%d"))
  with open(os.path.join(folder, "full_occlusion.txt"), "w") as f:
    f.write(",".join(str(int(v)) for v in seq.full_occlusion))
  with open(os.path.join(folder, "out_of_view.txt"), "w") as f:
    f.write(",".join(str(int(v)) for v in seq.out_of_view))
  with open(os.path.join(folder, "nlp.txt"), "w") as f:
    f.write(f"the textured {cls} moving among other objects")


def _write_nfs(root, name, seq, quality):
  base = os.path.join(root, name, "30")
  _write_frames(os.path.join(base, name), seq.frames, "%05d.jpg", quality)
  # NFS ships 240 fps annotations (8 rows per 30 fps frame): interpolate between 30 fps boxes.
  rows = []
  t = len(seq.frames)
  for i in range(t):
    for j in range(8):
      a = seq.boxes_xywh[i]
      b = seq.boxes_xywh[min(i + 1, t - 1)]
      lost = seq.out_of_view[i]
      box = a if lost or seq.out_of_view[min(i + 1, t - 1)] else a + (b - a) * (j / 8.0)
      x1, y1, x2, y2 = box[0], box[1], box[0] + box[2], box[1] + box[3]
      rows.append(f"1 {x1:.0f} {y1:.0f} {x2:.0f} {y2:.0f} {8 * i + j + 1} {int(lost)} "
                  f"{int(seq.full_occlusion[i])} {int(j != 0)} \"{seq.category}\"")
  _write_lines(os.path.join(base, f"{name}.txt"), rows)


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
  names: list[str] = []
  rendered: list[tuple[str, SyntheticSequence]] = []
  lasot_counts: dict[str, int] = {}
  for i in range(num_sequences):
    cat = None if not categories else categories[i % len(categories)]
    seq = render_sequence([seed, i], 1 if format == "coco" else num_frames, (w, h), category=cat,
                          num_distractors=num_distractors, occlusion=occlusion, out_of_view=out_of_view)
    if format == "got10k":
      name = f"GOT-10k_{split.capitalize()}_{i + 1:06d}"
      _write_got10k(os.path.join(out_dir, split), name, seq, split, jpeg_quality, w, h)
    elif format == "lasot":
      lasot_counts[seq.category] = lasot_counts.get(seq.category, 0) + 1
      name = f"{seq.category}-{lasot_counts[seq.category]}"
      _write_lasot(out_dir, name, seq, jpeg_quality)
    elif format in ("otb", "dtb70"):
      name = f"Synth{i + 1:03d}"
      nz = 4 if format == "otb" else 5
      _write_frames(os.path.join(out_dir, name, "img"), seq.frames, f"%0{nz}d.jpg", jpeg_quality)
      sep = "\t" if format == "otb" and i % 2 else ","
      _write_lines(os.path.join(out_dir, name, "groundtruth_rect.txt"), _rows(seq.boxes_xywh, "%d", sep))
    elif format == "trackingnet":
      name = f"synth_{i:05d}"
      chunk = "TRAIN_0" if split == "train" else "TEST"
      _write_frames(os.path.join(out_dir, chunk, "frames", name), seq.frames, "%d.jpg", jpeg_quality, start=0)
      os.makedirs(os.path.join(out_dir, chunk, "anno"), exist_ok=True)
      boxes = seq.boxes_xywh if split == "train" else seq.boxes_xywh[:1]
      _write_lines(os.path.join(out_dir, chunk, "anno", f"{name}.txt"), _rows(boxes, "%.4f"))
    elif format == "uav":
      name = f"synth{i + 1}"
      _write_frames(os.path.join(out_dir, "data_seq", "UAV123", name), seq.frames, "%06d.jpg", jpeg_quality)
      os.makedirs(os.path.join(out_dir, "anno", "UAV123"), exist_ok=True)
      _write_lines(os.path.join(out_dir, "anno", "UAV123", f"{name}.txt"),
                   _rows(seq.boxes_xywh, "%d", nan_rows=seq.out_of_view))
    elif format == "nfs":
      name = f"synth_{i + 1}"
      _write_nfs(out_dir, name, seq, jpeg_quality)
    elif format == "vot":
      name = f"synth{i + 1}"
      _write_frames(os.path.join(out_dir, name, "color"), seq.frames, "%08d.jpg", jpeg_quality)
      rows = _polygon_rows(seq) if i % 2 == 0 else _rows(seq.boxes_xywh, "%.2f")
      _write_lines(os.path.join(out_dir, name, "groundtruth.txt"), rows)
    elif format == "tnl2k":
      name = f"Synth_video_{i + 1}"
      _write_frames(os.path.join(out_dir, name, "imgs"), seq.frames, "%05d.jpg", jpeg_quality)
      _write_lines(os.path.join(out_dir, name, "groundtruth.txt"), _rows(seq.boxes_xywh, "%d"))
      _write_lines(os.path.join(out_dir, name, "language.txt"), [f"the {seq.category} in the middle"])
    elif format == "folder":
      name = f"seq{i + 1:03d}"
      _write_frames(os.path.join(out_dir, name), seq.frames, "%06d.jpg", jpeg_quality)
      _write_lines(os.path.join(out_dir, name, "groundtruth.txt"), _rows(seq.boxes_xywh, "%.1f"))
    else:  # coco
      name = f"{i + 1:012d}"
    names.append(name)
    rendered.append((name, seq))
  if format == "got10k":
    split_dir = os.path.join(out_dir, split)
    listed = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
    _write_lines(os.path.join(split_dir, "list.txt"), listed)
  elif format == "vot":
    listed = sorted(d for d in os.listdir(out_dir) if os.path.isdir(os.path.join(out_dir, d)))
    _write_lines(os.path.join(out_dir, "list.txt"), listed)
  elif format == "trackingnet":
    with open(os.path.join(out_dir, "trackingnet_classmap.txt"), "a") as f:
      f.writelines(f"{n}\t{s.category}\n" for n, s in rendered)
  elif format == "coco":
    _write_coco(out_dir, rendered, jpeg_quality)
  return names


# ----------------------------------------------------------------------------------------------------------
# `cia-jax synth`


def add_arguments(parser) -> None:
  """Flags of `cia-jax synth`."""
  parser.add_argument("--format", choices=FORMATS, default="got10k", help="on-disk layout to write")
  parser.add_argument("--out", required=True, help="dataset root to write into")
  parser.add_argument("--num-sequences", type=int, default=4)
  parser.add_argument("--num-frames", type=int, default=30)
  parser.add_argument("--width", type=int, default=160)
  parser.add_argument("--height", type=int, default=120)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--split", default="train", help="got10k: train/val/test; trackingnet: train/test")


def run(args) -> int:
  """Runs `cia-jax synth`: writes the sequences and prints their names."""
  names = generate(args.out, args.format, args.num_sequences, args.num_frames, (args.width, args.height),
                   args.seed, split=args.split)
  print(f"wrote {len(names)} {args.format} sequences to {args.out}: {', '.join(names)}")
  return 0
