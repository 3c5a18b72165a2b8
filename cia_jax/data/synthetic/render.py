"""Rendering of one synthetic tracking sequence in memory (`render_sequence`).

Each sequence shows one *target* (a textured object whose look is fixed by its
LaSOT category, so category labels are learnable) moving over a textured,
slowly panning background with scale change, in-plane rotation, distractor
objects of other categories (some passing in front of the target), an optional
occluder crossing the target and an optional out-of-view excursion.

Ground truth follows the pixel convention of `cia_jax.ops.boxes`: the box
`[x, y, w, h]` covers the pixels x..x+w-1 and y..y+h-1 where the target's mask
is >= 0.5 *inside the image* (occluded parts included, as annotators draw
boxes through occluders). Frames 0 and 1 are never occluded or out of view.

Everything is deterministic given `seed`. A category's look (shape, texture,
colours, aspect) does not depend on the seed at all.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
from typing import Sequence as SequenceT

import cv2
import numpy as np

from cia_jax.data.categories import LASOT_CLASSES, category_id

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


def _make_obj(rng: np.random.Generator, cat_id: int, size: float, t: int, w: int, h: int) -> _Obj:
  """An instance of category `cat_id` with a long side of ~`size` px: sprite, pulsing size, rotation, path."""
  tex, mask = _sprite(cat_id, rng)
  tt = np.arange(t)
  sizes = size * np.exp(0.25 * np.sin(2 * np.pi * tt / rng.uniform(25, 60) + rng.uniform(0, 2 * np.pi)))
  angles = rng.uniform(-20, 20) + 25 * np.sin(2 * np.pi * tt / rng.uniform(30, 80) + rng.uniform(0, 6.3))
  centers = _trajectory(rng, t, w, h, margin=0.6 * size)
  return _Obj(tex, mask, centers, sizes, angles)


def _leave_view(rng: np.random.Generator, target: _Obj, target_size: float, t: int, w: int, h: int) -> None:
  """Bends the target's path (in place) out of the image and back over ~T/5 frames."""
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


def _occluder(rng: np.random.Generator, target: _Obj, t: int) -> _Obj:
  """A textured square twice the target's size that crosses the target's position at a random frame."""
  t_occ = int(rng.integers(max(3, t // 3), t - 1))
  occ_size = 2.0 * target.sizes[t_occ]  # large enough to hide the target completely
  tex = _background(rng, _SPRITE, _SPRITE)
  tex = np.clip(tex * 0.8 + 20, 0, 255)
  mask = np.ones((_SPRITE, _SPRITE), np.float32)
  heading = rng.uniform(0, 2 * np.pi)
  crossing = 0.5 * occ_size * np.array([np.cos(heading), np.sin(heading)])  # pixels per frame
  centers = target.centers[t_occ] + crossing * (np.arange(t) - t_occ)[:, None]
  return _Obj(tex, mask, centers, np.full(t, occ_size), np.zeros(t))


def _layers(rng: np.random.Generator, cat: int, target: _Obj, target_size: float, num_distractors: int,
            occlusion: bool, t: int, w: int, h: int) -> list[_Obj]:
  """The target, the distractors and the occluder, back to front (the target at depth 0)."""
  others = [c for c in range(len(LASOT_CLASSES)) if c != cat]
  layers = []  # (depth, obj); larger depth is drawn later (in front)
  for _ in range(num_distractors):
    d = _make_obj(rng, int(rng.choice(others)), target_size * rng.uniform(0.7, 1.3), t, w, h)
    layers.append((float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5)), d))
  if occlusion:
    layers.append((10.0, _occluder(rng, target, t)))
  layers.append((0.0, target))
  layers.sort(key=lambda dl: dl[0])
  return [o for _, o in layers]


def _composite(bg: np.ndarray, cam: np.ndarray, layers: list[_Obj], target: _Obj, category: str,
               w: int, h: int) -> SyntheticSequence:
  """Draws every frame (camera window of `bg`, then `layers` back to front) and measures the ground truth."""
  t = len(cam)
  # In frames 0 and 1 (where trackers initialise) the target is drawn on top of everything.
  clean_order = [o for o in layers if o is not target] + [target]
  frames = np.empty((t, h, w, 3), np.uint8)
  boxes = np.zeros((t, 4))
  amodal = np.zeros((t, 4))
  ratio = np.zeros(t)
  oov = np.zeros(t, bool)
  occluded = np.zeros(t, bool)
  for i in range(t):
    img = bg[cam[i, 1]:cam[i, 1] + h, cam[i, 0]:cam[i, 0] + w].copy()
    target_alpha = None
    for obj in (clean_order if i < 2 else layers):
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
                           out_of_view=oov, full_occlusion=occluded, category=category)


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

  target_size = rng.uniform(0.22, 0.36) * min(w, h)
  target = _make_obj(rng, cat, target_size, t, w, h)
  if out_of_view:
    _leave_view(rng, target, target_size, t, w, h)
  layers = _layers(rng, cat, target, target_size, n_dis, occlusion, t, w, h)
  return _composite(bg, cam, layers, target, LASOT_CLASSES[cat], w, h)
