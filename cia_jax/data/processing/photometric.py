"""Per-crop photometric and flip ops: grayscale, horizontal flip of images and boxes, brightness + normalisation.

A horizontal flip of an image of width W maps u -> W - 1 - u, so a box's x becomes W - 1 - x - w (design.md §4.9).
"""

from __future__ import annotations

from typing import Any, Sequence as SequenceT

import cv2
import numpy as np

from cia_jax.ops.image import IMAGENET_MEAN, IMAGENET_STD


def grayscale(image: np.ndarray) -> np.ndarray:
  """`[H, W, 3]` uint8 RGB -> the same shape, cv2 RGB2GRAY replicated to 3 channels."""
  gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
  return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def hflip_image(image: np.ndarray) -> np.ndarray:
  """Mirror `[H, W, C]` left-right (pixel column u -> W - 1 - u)."""
  return np.ascontiguousarray(np.asarray(image)[:, ::-1])


def hflip_box_xywh(box_xywh: Any, width: int) -> np.ndarray:
  """Box `[..., 4]` of an image of `width` pixels after `hflip_image`: x -> width - 1 - x - w (design.md §4.9)."""
  box = np.array(box_xywh, np.float64)
  box[..., 0] = width - 1 - box[..., 0] - box[..., 2]
  return box


def normalize(image: np.ndarray, brightness: float = 1.0, mean: SequenceT[float] = IMAGENET_MEAN,
              std: SequenceT[float] = IMAGENET_STD, out: np.ndarray | None = None) -> np.ndarray:
  """uint8 RGB `[H, W, 3]` -> float32 `(min(x * brightness / 255, 1) - mean) / std` per channel.

  Computed through a 256-entry float32 lookup table per channel (cv2.LUT): the same float32 arithmetic as
  the elementwise formula, ~10x faster. `out`: optional C-contiguous float32 `[H, W, 3]` array written in
  place.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"normalize: image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
  if not brightness >= 0:
    raise ValueError(f"normalize: brightness must be >= 0, got {brightness}")
  v = np.arange(256, dtype=np.float32)[:, None]
  x = np.minimum(v * np.float32(brightness / 255.0), np.float32(1.0))
  table = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)  # [256, 3]
  image = np.ascontiguousarray(image)
  if out is None:
    return cv2.LUT(image, table.reshape(1, 256, 3))
  if out.shape != image.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
    raise ValueError(
        f"normalize: out must be C-contiguous float32 {image.shape}, got {out.shape} {out.dtype}")
  res = cv2.LUT(image, table.reshape(1, 256, 3), dst=out)
  if not np.shares_memory(res, out):  # cv2 reallocated; keep the contract
    out[...] = res
  return out
