"""Box formats and the pixel convention used everywhere in cia_jax.

Convention (pytracking's): 0-based pixel coordinates; the pixel with index i
covers [i, i + 1) and its value sits at coordinate i. A box is
`box_xywh = [x, y, w, h]` with top-left (x, y).

* The tracker's target centre is `x + (w - 1) / 2` (pixel-centre convention):
  a box covering pixels 0..w-1 has centre (w - 1) / 2. See `center_xywh`.
* Precise RoI Pooling, crop maps and the training labels use the continuous
  corner convention `x2 = x + w` (`xywh_to_xyxy`), with centre `x + w / 2`.

Functions work on NumPy and JAX arrays alike (last axis = 4 coordinates).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any


def array_namespace(a: Array):
  """NumPy for NumPy / Python inputs, else the array's own namespace (jax.numpy for JAX arrays and tracers).

  Asking the array (`__array_namespace__`) rather than importing jax keeps NumPy-only users (the evaluation
  metrics) free of the jax import.
  """
  if isinstance(a, (np.ndarray, np.generic, float, int, list, tuple)):
    return np
  return a.__array_namespace__()


def xywh_to_xyxy(box_xywh: Array) -> Array:
  """`[..., 4]` (x, y, w, h) -> (x1, y1, x2, y2) with x2 = x + w (continuous corners)."""
  xp = array_namespace(box_xywh)
  box_xywh = xp.asarray(box_xywh)
  return xp.concatenate([box_xywh[..., :2], box_xywh[..., :2] + box_xywh[..., 2:]], axis=-1)


def xyxy_to_xywh(box_xyxy: Array) -> Array:
  """`[..., 4]` (x1, y1, x2, y2) -> (x, y, w, h) with w = x2 - x1."""
  xp = array_namespace(box_xyxy)
  box_xyxy = xp.asarray(box_xyxy)
  return xp.concatenate([box_xyxy[..., :2], box_xyxy[..., 2:] - box_xyxy[..., :2]], axis=-1)


def xywh_to_cxcywh(box_xywh: Array) -> Array:
  """`[..., 4]` (x, y, w, h) -> (cx, cy, w, h), continuous centre cx = x + w / 2."""
  xp = array_namespace(box_xywh)
  box_xywh = xp.asarray(box_xywh)
  return xp.concatenate([box_xywh[..., :2] + 0.5 * box_xywh[..., 2:], box_xywh[..., 2:]], axis=-1)


def cxcywh_to_xywh(box_cxcywh: Array) -> Array:
  """`[..., 4]` (cx, cy, w, h) -> (x, y, w, h), inverse of `xywh_to_cxcywh`."""
  xp = array_namespace(box_cxcywh)
  box_cxcywh = xp.asarray(box_cxcywh)
  return xp.concatenate([box_cxcywh[..., :2] - 0.5 * box_cxcywh[..., 2:], box_cxcywh[..., 2:]], axis=-1)


def center_xywh(box_xywh: Array) -> Array:
  """Tracker centre `[..., 2]` (x, y) = (x + (w - 1) / 2, y + (h - 1) / 2) (pixel-centre convention)."""
  xp = array_namespace(box_xywh)
  box_xywh = xp.asarray(box_xywh)
  return box_xywh[..., :2] + 0.5 * (box_xywh[..., 2:] - 1.0)


def xywh_from_center(center_xy: Array, size_wh: Array) -> Array:
  """Inverse of `center_xywh`: (x, y) = centre - (size - 1) / 2; returns `[..., 4]` (x, y, w, h)."""
  xp = array_namespace(center_xy)
  center_xy, size_wh = xp.asarray(center_xy), xp.asarray(size_wh)
  return xp.concatenate([center_xy - 0.5 * (size_wh - 1.0), size_wh], axis=-1)


def iou_xywh(a_xywh: Array, b_xywh: Array) -> Array:
  """Continuous-coordinate IoU of broadcastable `[..., 4]` boxes (x2 = x + w); 0 when the union is empty."""
  xp = array_namespace(a_xywh)
  a, b = xp.asarray(a_xywh), xp.asarray(b_xywh)
  tl = xp.maximum(a[..., :2], b[..., :2])
  br = xp.minimum(a[..., :2] + a[..., 2:], b[..., :2] + b[..., 2:])
  inter = xp.prod(xp.clip(br - tl, 0.0, None), axis=-1)
  union = xp.prod(a[..., 2:], axis=-1) + xp.prod(b[..., 2:], axis=-1) - inter
  return xp.where(union > 0, inter / xp.where(union > 0, union, 1.0), 0.0)
