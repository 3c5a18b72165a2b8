"""OpenCV's classical trackers as reference points for result tables (MIL; KCF / CSRT with opencv-contrib).

`available_trackers()` lists what the installed OpenCV provides (opencv-python(-headless) has only MIL; the
contrib build adds KCF and CSRT); `track_opencv(name, frames, box_xywh)` runs one over a sequence and returns
boxes in the same `[x, y, w, h]` 0-based pixel convention as our trackers, so the same evaluation applies.
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

# name -> the factory attribute names to try, in order (OpenCV 4.5+ main module, then the legacy module).
_FACTORIES = {
    "MIL": ("TrackerMIL_create",),
    "KCF": ("TrackerKCF_create",),
    "CSRT": ("TrackerCSRT_create",),
}


def _factory(name: str):
  for attr in _FACTORIES[name]:
    fn = getattr(cv2, attr, None) or getattr(getattr(cv2, "legacy", None), attr, None)
    if fn is not None:
      return fn
  return None


def available_trackers() -> list[str]:
  """Names of the classical OpenCV trackers this OpenCV build provides."""
  return [name for name in _FACTORIES if _factory(name) is not None]


def track_opencv(name: str, frames: Iterable[np.ndarray], box_xywh) -> np.ndarray:
  """Tracks with OpenCV tracker `name` over RGB `[H, W, 3]` uint8 frames from the frame-0 box.

  Returns `[T, 4]` float64 boxes (frame 0 = the init box). When OpenCV loses the target (update returns
  False) the previous box is kept, as benchmark protocols expect a box every frame.
  """
  if name not in _FACTORIES:
    raise ValueError(f"unknown OpenCV tracker {name!r}; known: {sorted(_FACTORIES)}")
  factory = _factory(name)
  if factory is None:
    raise ValueError(f"OpenCV tracker {name} is not in this OpenCV build (available: {available_trackers()}); "
                     "KCF and CSRT need opencv-contrib-python(-headless)")
  box = np.asarray(box_xywh, np.float64)
  out = []
  tracker = None
  for i, frame in enumerate(frames):
    bgr = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR)
    if i == 0:
      tracker = factory()
      # OpenCV trackers take an integer rect; keep the exact float box as frame 0's output.
      tracker.init(bgr, tuple(int(round(v)) for v in box))
      out.append(box.copy())
      continue
    ok, rect = tracker.update(bgr)
    if ok and rect[2] > 0 and rect[3] > 0:
      box = np.asarray(rect, np.float64)
    out.append(box.copy())
  return np.stack(out) if out else np.zeros((0, 4))
