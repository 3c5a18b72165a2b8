"""Tracking any video (`cia-jax track --video`): a video file, an image folder without ground truth, or a camera.

    cia-jax track --tracker dimp18 --checkpoint ckpt/dimp18 --video clip.mp4 --init-box 120,80,40,60 \\
        --results res/clips --out clip_overlay.mp4
    cia-jax track --tracker cia18 --checkpoint ckpt/cia18 --video frames/ --init-box 10,20,30,40 --results res
    cia-jax track --tracker dimp18 --checkpoint ckpt/dimp18 --video 0 --init-box 300,200,80,80 --results res \\
        --max-frames 600                                         # camera 0; Ctrl-C also stops and writes

The source is a camera when it is a whole number, an image folder (frames in natural name order) when it is a
directory, and otherwise a video file OpenCV decodes. The tracker starts from `--init-box` (x, y, w, h in pixels
of the first frame) and writes, like a benchmark run, `<results>/<name>.txt` (one box per frame, frame 0 = the
initial box) and `<name>_time.txt` (seconds per frame), `<name>` being the file or folder name without
extension (`camera<k>` for a camera). `--out` adds an overlay video (MPEG-4, or MJPG for `.avi`): the box, the
maximum classification score and the tracker's flag (normal / uncertain / hard_negative / not_found) per frame.
No window is opened.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Iterator

import cv2
import jax
import numpy as np

from cia_jax import results
from cia_jax.data.datasets.parsing import list_frames
from cia_jax.track import tracker as trk
from cia_jax.track.runner import prefetch_frames, sequence_key, tracker_fns

_FLAG_COLORS = ((40, 220, 40), (255, 170, 0), (255, 120, 0), (230, 40, 40))  # RGB per FLAG_* value


@dataclasses.dataclass
class VideoResult:
  """What `track_video` wrote and saw.

  Attributes:
    name: the result name (`<results>/<name>.txt`).
    box_path, time_path: the written result files.
    overlay: the overlay video, or None.
    boxes: `[T, 4]` x, y, w, h per frame (frame 0: the initial box).
    scores: `[T]` maximum classification score (NaN on frame 0).
    flags: `[T]` int FLAG_* values (-1 on frame 0).
    interrupted: True when Ctrl-C ended a camera / video early (what was tracked is written).
  """

  name: str
  box_path: str
  time_path: str
  overlay: str | None
  boxes: np.ndarray
  scores: np.ndarray
  flags: np.ndarray
  interrupted: bool = False


def parse_box(text: str) -> np.ndarray:
  """`"x,y,w,h"` -> `[4]` float64; ValueError unless four finite numbers with w, h > 0."""
  try:
    box = np.asarray([float(v) for v in text.replace(" ", "").split(",")], np.float64)
  except ValueError:
    box = np.zeros(0)
  if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"--init-box: expected x,y,w,h with w, h > 0 (pixels), got {text!r}")
  return box


def _capture(cap) -> Iterator[np.ndarray]:
  """RGB frames of an opened `cv2.VideoCapture`, released at the end."""
  try:
    while True:
      ok, frame = cap.read()
      if not ok:
        return
      yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
  finally:
    cap.release()


def open_source(source: str) -> tuple[str, Iterator[np.ndarray], float]:
  """(result name, RGB `[H, W, 3]` uint8 frames, frames per second for the overlay) of a camera index, an image
  folder or a video file; FileNotFoundError / ValueError naming the source when it cannot be read."""
  if source.isdigit():
    cap = cv2.VideoCapture(int(source))
    if not cap.isOpened():
      raise ValueError(f"--video {source}: camera {source} cannot be opened")
    return f"camera{source}", _capture(cap), float(cap.get(cv2.CAP_PROP_FPS) or 30.0)
  if os.path.isdir(source):
    return os.path.basename(os.path.abspath(source)), prefetch_frames(list_frames(source)), 30.0
  if not os.path.isfile(source):
    raise FileNotFoundError(f"--video: no such file, folder or camera index: {source}")
  cap = cv2.VideoCapture(source)
  if not cap.isOpened():
    raise ValueError(f"--video {source}: OpenCV cannot decode this file")
  fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
  name = os.path.splitext(os.path.basename(source))[0]
  return name, _capture(cap), fps if 0.0 < fps < 1000.0 else 30.0


def draw_overlay(frame: np.ndarray, box: np.ndarray, score: float, flag: int) -> np.ndarray:
  """BGR copy of RGB `frame` with the box (colour by flag) and a `#t score flag` caption, for cv2.VideoWriter."""
  out = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
  color = _FLAG_COLORS[flag][::-1] if 0 <= flag < len(_FLAG_COLORS) else (255, 255, 255)
  if np.isfinite(box).all() and box[2] > 0 and box[3] > 0:
    x, y, w, h = box
    # Inclusive pixel convention: the box covers x .. x + w - 1.
    cv2.rectangle(out, (int(round(x)), int(round(y))), (int(round(x + w - 1)), int(round(y + h - 1))), color, 2)
  caption = "init" if flag < 0 else f"score {score:.2f} {trk.FLAG_NAMES[flag]}"
  scale = min(1.0, max(0.3, out.shape[1] / 1200.0))  # readable on 1280 px, not covering a 100 px frame
  cv2.putText(out, caption, (6, int(8 + 24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
              cv2.LINE_AA)
  return out


def _overlay_writer(path: str, fps: float, shape: tuple[int, ...]):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.lower().endswith(".avi") else "mp4v"))
  writer = cv2.VideoWriter(path, fourcc, fps, (shape[1], shape[0]))
  if not writer.isOpened():
    raise ValueError(f"--out {path}: OpenCV cannot write this video (use .mp4 or .avi)")
  return writer


def _check_init_box(box: np.ndarray, shape: tuple[int, ...]) -> None:
  height, width = shape[:2]
  if box[0] >= width or box[1] >= height or box[0] + box[2] <= 0 or box[1] + box[3] <= 0:
    raise ValueError(f"--init-box {box.tolist()} lies outside the first frame ({width}x{height})")


def track_video(model, settings, source: str, init_box: np.ndarray, results_dir: str, *, out: str | None = None,
                seed: int = 0, max_frames: int | None = None, fns: dict | None = None,
                on_frame: Callable[[int], None] | None = None) -> VideoResult:
  """Tracks `source` (see `open_source`) from `init_box` `[4]` and writes the results (module docstring).

  Args:
    model, settings: the `TrackingModel` and `TrackerSettings`.
    source: camera index, image folder or video file.
    init_box: `[4]` x, y, w, h of the target in the first frame, pixels.
    results_dir: where `<name>.txt` and `<name>_time.txt` go (`cia_jax.results`, raw layout).
    out: optional overlay video path.
    seed: seed of the tracker's randomness (keys depend on it and the name only).
    max_frames: stop after this many frames.
    fns: `runner.tracker_fns(settings)`-like {"init", "step"} (tests pass stand-ins).
    on_frame: called with 1 after every frame (progress).
  """
  fns = fns or tracker_fns(settings)
  name, frames, fps = open_source(source)
  key = sequence_key(seed, name)
  boxes, scores, flags, times = [], [], [], []
  state, shape, writer, interrupted = None, None, None, False
  try:
    for i, image in enumerate(frames):
      if max_frames is not None and i >= max_frames:
        break
      t0 = time.perf_counter()
      if i == 0:
        shape = image.shape
        _check_init_box(init_box, shape)
        state = fns["init"](model, image, init_box.astype(np.float32), jax.random.fold_in(key, 0))
        jax.block_until_ready(state)
        box, score, flag = np.asarray(init_box, np.float64), np.nan, -1
      else:
        if image.shape != shape:
          raise ValueError(f"{source}: frame {i} is {image.shape[1]}x{image.shape[0]}, the first frame "
                           f"{shape[1]}x{shape[0]}")
        state, step_out = fns["step"](model, state, image, jax.random.fold_in(key, i))
        box = np.asarray(step_out["box_xywh"], np.float64)
        score, flag = float(step_out["max_score"]), int(step_out["flag"])
      times.append(time.perf_counter() - t0)
      boxes.append(box)
      scores.append(score)
      flags.append(flag)
      if out is not None:
        writer = writer or _overlay_writer(out, fps, shape)
        writer.write(draw_overlay(image, box, score, flag))
      if on_frame is not None:
        on_frame(1)
  except KeyboardInterrupt:  # a camera runs until stopped: keep what was tracked
    interrupted = True
  finally:
    if writer is not None:
      writer.release()
  if not boxes:
    raise ValueError(f"--video {source}: no frames")
  box_path, time_path = results.write_results(results_dir, name, np.asarray(boxes), np.asarray(times))
  return VideoResult(name, box_path, time_path, out, np.asarray(boxes), np.asarray(scores), np.asarray(flags),
                     interrupted)
