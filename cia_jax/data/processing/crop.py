"""Geometry of a training crop: box jitter, the crop rectangle, the crop itself and box mapping (design.md §4.9).

Boxes are `[x, y, w, h]` in 0-based pixels with continuous corners (x2 = x + w, centre x + w / 2), as in
`cia_jax.ops.boxes`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence as SequenceT

import cv2
import numpy as np

from cia_jax.data.processing.config import CROP_TYPES


def validated_box(box_xywh: Any, name: str = "box_xywh") -> np.ndarray:
  """`[4]` float64 copy of a box (x, y, w, h); ValueError naming `name` unless it is 4 finite numbers."""
  box = np.asarray(box_xywh, dtype=np.float64)
  if box.shape != (4,) or not np.all(np.isfinite(box)):
    raise ValueError(f"{name} must be 4 finite numbers [x, y, w, h], got {box_xywh!r}")
  return box


def jitter_box(box_xywh: Any, center_jitter: float, scale_jitter: float,
               rng: np.random.Generator) -> np.ndarray:
  """Randomly moved and resized box around which the crop is taken (design.md §4.9).

  size = wh * exp(N(0, 1) * scale_jitter) per axis; centre = (x + w/2, y + h/2) + sqrt(prod(size)) *
  center_jitter * (U(0, 1) - 0.5) per axis.

  Args:
    box_xywh: `[4]` ground-truth box in image pixels.
    center_jitter, scale_jitter: jitter factors.
    rng: NumPy generator (draws 2 normals, then 2 uniforms).

  Returns:
    `[4]` float64 jittered box (x, y, w, h) in image pixels.
  """
  box = validated_box(box_xywh)
  size = box[2:] * np.exp(rng.standard_normal(2) * scale_jitter)
  max_offset = np.sqrt(np.prod(size)) * center_jitter
  center = box[:2] + 0.5 * box[2:] + max_offset * (rng.random(2) - 0.5)
  return np.concatenate([center - 0.5 * size, size])


def crop_box_xywh(box_xywh: Any, image_hw: SequenceT[int], search_area_factor: float,
                  crop_type: str = "replicate", max_scale_change: float | None = None) -> np.ndarray:
  """Integer crop rectangle of `sample_target_adaptive` around a (jittered) box (design.md §4.9).

  Side = ceil(sqrt(w h) * search_area_factor); for 'inside' / 'inside_major' the side is divided by
  clamp(max / min over axes of side / image_size, 1, max_scale_change) and floored. The crop is centred on the
  box centre (x + w/2, rounded half to even), shifted to lie inside the image (all crop types), and centred
  on the image in an axis where it is still larger than the image.

  Args:
    box_xywh: `[4]` box in image pixels.
    image_hw: (H, W) of the image.
    search_area_factor: crop side / sqrt(box area).
    crop_type: 'replicate', 'inside' or 'inside_major'.
    max_scale_change: largest shrink factor of the inside modes (None = unbounded).

  Returns:
    `[4]` int64 crop (x1, y1, w, h) in image pixels; it may extend outside the image (replicate padding).
  """
  box = validated_box(box_xywh)
  if crop_type not in CROP_TYPES:
    raise ValueError(f"crop_type must be one of {CROP_TYPES}, got {crop_type!r}")
  im_h, im_w = int(image_hw[0]), int(image_hw[1])
  if im_h < 1 or im_w < 1:
    raise ValueError(f"image_hw must be positive, got {tuple(image_hw)}")
  if box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"box_xywh must have positive width and height, got {box.tolist()}")
  side = math.ceil(math.sqrt(box[2] * box[3]) * search_area_factor)
  sz_x = sz_y = side
  if crop_type != "replicate":
    ratios = (side / im_w, side / im_h)
    shrink = max(ratios) if crop_type == "inside" else min(ratios)
    shrink = min(max(1.0, shrink), math.inf if max_scale_change is None else max_scale_change)
    sz_x, sz_y = math.floor(side / shrink), math.floor(side / shrink)
  sz_x, sz_y = max(sz_x, 1), max(sz_y, 1)

  def place(c: float, sz: int, limit: int) -> int:
    x1 = int(round(float(c) - 0.5 * sz))
    x1 += max(0, -x1) + min(0, limit - (x1 + sz))  # shift inside the image
    overflow = (sz - limit) // 2  # still larger than the image: equal overflow on both sides
    return -overflow if overflow > 0 else x1

  x1 = place(box[0] + 0.5 * box[2], sz_x, im_w)
  y1 = place(box[1] + 0.5 * box[3], sz_y, im_h)
  return np.array([x1, y1, sz_x, sz_y], dtype=np.int64)


def crop_and_resize(image: np.ndarray, crop_xywh: Any, output_sz: int) -> np.ndarray:
  """Cut `crop_xywh` out of `image` with replicate padding and resize it to `output_sz` (cv2 bilinear).

  Args:
    image: `[H, W, C]` image (uint8 or float32).
    crop_xywh: `[4]` integer crop rectangle (x1, y1, w, h) in image pixels (from `crop_box_xywh`).
    output_sz: output side in pixels.

  Returns:
    `[output_sz, output_sz, C]` crop, same dtype as `image`.

  Note: the reference pads one pixel too many on the right/bottom whenever the crop reaches the image's last
  column/row (it drops that column and replicates the one before); this op pads exactly the out-of-image part.
  """
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
  x1, y1, cw, ch = (int(v) for v in np.asarray(crop_xywh).tolist())
  if cw < 1 or ch < 1:
    raise ValueError(f"crop_xywh must have a positive size, got {(x1, y1, cw, ch)}")
  im_h, im_w = image.shape[:2]
  x2, y2 = x1 + cw, y1 + ch
  ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, im_w), min(y2, im_h)
  if ix1 < ix2 and iy1 < iy2:
    patch = image[iy1:iy2, ix1:ix2]
    pads = (iy1 - y1, y2 - iy2, ix1 - x1, x2 - ix2)
    if any(pads):
      patch = cv2.copyMakeBorder(patch, *pads, cv2.BORDER_REPLICATE)
  else:  # no overlap with the image: every pixel replicates an edge pixel
    patch = image[np.ix_(np.clip(np.arange(y1, y2), 0, im_h - 1), np.clip(np.arange(x1, x2), 0, im_w - 1))]
  size = (int(output_sz), int(output_sz))
  out = cv2.resize(np.ascontiguousarray(patch), size, interpolation=cv2.INTER_LINEAR)
  return out.reshape(int(output_sz), int(output_sz), image.shape[2])


def box_to_crop(box_xywh: Any, crop_xywh: Any, output_sz: int) -> np.ndarray:
  """Map `[..., 4]` image-pixel boxes into the coordinates of a crop resized to `output_sz` (float64)."""
  box = np.asarray(box_xywh, np.float64)
  crop = np.asarray(crop_xywh, np.float64)
  scale = output_sz / crop[2:]
  return np.concatenate([(box[..., :2] - crop[:2]) * scale, box[..., 2:] * scale], axis=-1)


def box_from_crop(box_xywh: Any, crop_xywh: Any, output_sz: int) -> np.ndarray:
  """Inverse of `box_to_crop`: `[..., 4]` crop-coordinate boxes back to image pixels (float64)."""
  box = np.asarray(box_xywh, np.float64)
  crop = np.asarray(crop_xywh, np.float64)
  scale = crop[2:] / output_sz
  return np.concatenate([box[..., :2] * scale + crop[:2], box[..., 2:] * scale], axis=-1)


def crop_with_jitter(image: np.ndarray, box_xywh: Any, rng: np.random.Generator, *, search_area_factor: float,
                     output_sz: int, center_jitter: float, scale_jitter: float, crop_type: str = "replicate",
                     max_scale_change: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Jitter the box, crop around the jittered box and map the ground truth into the crop.

  Args:
    image: `[H, W, 3]` uint8 RGB frame.
    box_xywh: `[4]` ground-truth box in image pixels.
    rng: NumPy generator (used by `jitter_box`).
    search_area_factor, output_sz, center_jitter, scale_jitter, crop_type, max_scale_change: see
      `ProcessingConfig`.

  Returns:
    (crop `[S, S, 3]` uint8, box `[4]` float64 in crop pixels, crop rectangle `[4]` int64 in image pixels).
  """
  jittered = jitter_box(box_xywh, center_jitter, scale_jitter, rng)
  crop_rect = crop_box_xywh(jittered, np.shape(image)[:2], search_area_factor, crop_type, max_scale_change)
  crop = crop_and_resize(image, crop_rect, output_sz)
  return crop, box_to_crop(validated_box(box_xywh), crop_rect, output_sz), crop_rect
