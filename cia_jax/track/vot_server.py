"""TraX server of the tracker, for the VOT toolkit (`cia-jax vot`; needs the `vot` extra: `pip install .[vot]`).

    cia-jax vot --tracker cia18 --checkpoint runs/cia18 --warmup-size 640x480

The toolkit starts this process and talks TraX over its stdin / stdout (the `trax` runtime of `trackers.ini`, see
the README). Regions: the client's rectangle or polygon (the tracker starts from the axis-aligned box around a
polygon, `cia_jax.vot_regions.region_to_box`); replies are rectangles `x, y, w, h`. Images: file paths, read
with `cia_jax.data.frames.read_frame` (RGB) in `cia-jax vot`. Every (re)initialisation the toolkit asks for is a
fresh `init`; the random keys fold the request count since the start into the seed.

Start-up: the toolkit's watchdog (`timeout`, 30 s by default) runs from the launch to the handshake and on each
request. The first request of a frame size compiles the tracker (tens of seconds on a CPU); JAX's persistent
compilation cache (`JAX_COMPILATION_CACHE_DIR`, or the CLI's default) makes later processes load it, and
`warm_up` compiles for the expected frame size before the handshake. Give the entry a `timeout` that covers
building the network and the warm-up (the README's entry uses 300 s).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np
import trax

from cia_jax.vot_regions import region_to_box

# The tracker as `cia_jax.track.vot_protocol.model_tracker` gives it (this module stays free of JAX and
# TensorFlow, so a stand-in tracker starts in a second):
InitFn = Callable[[np.ndarray, np.ndarray, int], Any]  # (image [H, W, 3] uint8, box [4] xywh, request) -> state
StepFn = Callable[[Any, np.ndarray, int], tuple[Any, np.ndarray]]  # (state, image, request) -> (state, box [4])

# Seconds: what the README's `trackers.ini` entry gives the toolkit's watchdog.
SUGGESTED_TIMEOUT = 300


def trax_region_box(region) -> np.ndarray:
  """A TraX rectangle or polygon -> `[4]` float32 (x, y, w, h), the box around a polygon; ValueError otherwise."""
  if region.type == trax.Region.RECTANGLE:
    return np.asarray(region.bounds(), np.float32)
  if region.type == trax.Region.POLYGON:
    points = np.asarray([region.get(i) for i in range(region.size())], np.float64)
    return region_to_box(points).astype(np.float32)
  raise ValueError(f"unsupported TraX region type {region.type!r} (rectangle and polygon are)")


def warm_up(init: InitFn, step: StepFn, size: tuple[int, int]) -> None:
  """One `init` and one `step` on a blank `size` (width, height) frame: compiles both before the handshake."""
  width, height = size
  image = np.zeros((height, width, 3), np.uint8)
  box = np.array([width / 4, height / 4, width / 2, height / 2], np.float32)
  state = init(image, box, 0)
  step(state, image, 1)


def serve(init: InitFn, step: StepFn, reader: Callable[[str], np.ndarray]) -> int:
  """Answers TraX requests on stdin / stdout until the client quits; returns the number of frames served.

  `reader`: image path -> `[H, W, 3]` uint8 RGB (`cia_jax.data.frames.read_frame`).
  """
  served = 0
  state = None
  with trax.Server([trax.Region.RECTANGLE, trax.Region.POLYGON], [trax.Image.PATH],
                   tracker_name="cia-jax", tracker_family="cia_jax") as server:
    while True:
      request = server.wait()
      if request.type in (trax.TraxStatus.QUIT, trax.TraxStatus.ERROR):
        break
      image = reader(request.image[trax.ImageChannel.COLOR].path())
      if request.type == trax.TraxStatus.INITIALIZE:
        box = trax_region_box(request.objects[0][0])
        state = init(image, box, served)
      else:
        state, box = step(state, image, served)
      served += 1
      x, y, w, h = (float(v) for v in np.asarray(box).ravel())
      server.status([(trax.Rectangle.create(x, y, w, h), {})])
  return served


def parse_size(text: str) -> tuple[int, int]:
  """`"WxH"` -> (width, height) pixels; ValueError otherwise."""
  parts = text.lower().split("x")
  if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"--warmup-size: expected WIDTHxHEIGHT in pixels, got {text!r}")
  return int(parts[0]), int(parts[1])


def run_server(init: InitFn, step: StepFn, reader: Callable[[str], np.ndarray],
               warmup_sizes: tuple[tuple[int, int], ...] = ()) -> int:
  """`cia-jax vot`: warms the tracker up for each (width, height), then serves; returns the exit code (0)."""
  for size in warmup_sizes:
    warm_up(init, step, size)
  served = serve(init, step, reader)
  print(f"cia-jax vot: served {served} frames", file=sys.stderr, flush=True)  # stdout carries TraX
  return 0
