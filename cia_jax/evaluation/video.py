"""Animated GIFs of tracking results: frames with the ground-truth and predicted boxes drawn."""

from __future__ import annotations

import os
from typing import Iterable, Mapping

import cv2
import numpy as np
from PIL import Image

# Box colours (RGB): ground truth green, trackers from a fixed palette.
GT_COLOR = (40, 220, 40)
PALETTE = ((230, 40, 40), (40, 120, 255), (255, 170, 0), (200, 60, 220), (0, 200, 200))


def draw_boxes(frame: np.ndarray, boxes: Mapping[str, np.ndarray], colors: Mapping[str, tuple[int, int, int]],
               thickness: int = 2, label: str | None = None) -> np.ndarray:
  """Copy of RGB `frame` `[H, W, 3]` uint8 with each `[x, y, w, h]` box of `boxes` drawn (NaN boxes skipped)."""
  out = np.ascontiguousarray(frame.copy())
  for name, box in boxes.items():
    box = np.asarray(box, np.float64)
    if not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
      continue
    x, y, w, h = box
    # Inclusive pixel convention: the box covers x .. x + w - 1.
    cv2.rectangle(out, (int(round(x)), int(round(y))), (int(round(x + w - 1)), int(round(y + h - 1))),
                  colors[name], thickness)
  if label:
    cv2.putText(out, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
  return out


def write_tracking_gif(path: str, frames: Iterable[np.ndarray], gt_xywh: np.ndarray,
                       predictions: Mapping[str, np.ndarray], fps: float = 10.0, max_side: int = 320,
                       every: int = 1) -> str:
  """Writes an animated GIF of `frames` with the ground truth (green) and each tracker's boxes.

  Args:
    path: output `.gif` file.
    frames: RGB `[H, W, 3]` uint8 frames, in order.
    gt_xywh: `[T, 4]` ground truth.
    predictions: tracker name -> `[T, 4]` predicted boxes.
    fps: playback rate.
    max_side: frames are downscaled so the longer side is at most this (GIFs get large fast).
    every: keep every n-th frame.

  Returns:
    The path written. A legend (colour per tracker) is drawn on the first frame's top line.
  """
  colors = {"ground truth": GT_COLOR}
  for i, name in enumerate(predictions):
    colors[name] = PALETTE[i % len(PALETTE)]
  legend = "  ".join(["GT=green"] + [f"{n}={c}" for n, c in zip(predictions, ("red", "blue", "orange", "purple",
                                                                               "cyan"))])
  images = []
  for t, frame in enumerate(frames):
    if t % every:
      continue
    boxes = {"ground truth": gt_xywh[t], **{n: p[t] for n, p in predictions.items() if t < len(p)}}
    drawn = draw_boxes(frame, boxes, colors, label=f"#{t} {legend}")
    scale = min(1.0, max_side / max(drawn.shape[:2]))
    if scale < 1.0:
      drawn = cv2.resize(drawn, (int(drawn.shape[1] * scale), int(drawn.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
    images.append(Image.fromarray(drawn))
  if not images:
    raise ValueError(f"write_tracking_gif({path}): no frames")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0,
                 optimize=False)
  return path
