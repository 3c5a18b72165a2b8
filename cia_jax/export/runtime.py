"""Runs a tracker exported by `cia-jax export` with nothing but jax and numpy installed.

This file imports only the standard library, numpy and jax: no flax, optax, orbax, TensorFlow, nor anything else
of cia_jax. `cia-jax export` copies it into the export folder as `cia_tracker_runtime.py`, so the folder is
self-contained:

    from cia_tracker_runtime import ExportedTracker       # with DIR on sys.path, or `import` it from cia_jax
    tracker = ExportedTracker("DIR")
    boxes = tracker.track(frames, first_box)               # frames: [H, W, 3] uint8 RGB, at the exported size
    # or: tracker.init(frame0, box); box = tracker.update(frame) per frame

    python DIR/cia_tracker_runtime.py DIR --frames frames.npy --box X,Y,W,H   # frames.npy: [T, H, W, 3] uint8

An export holds (see `cia_jax/export/exporter.py`): `init.jaxexport` and `step.jaxexport` (the tracker's jitted
`init` / `step` as serialized `jax.export` StableHLO, lowered for several platforms), `weights.npz` (the
network's variables, passed to both as a tuple of arrays in the manifest's order) and `manifest.json`.
The programs are lowered for one frame size (the tracker state has static shapes): frames of another size are
refused. Keys are those of `cia_jax.track.tracker.Tracker` (`fold_in(PRNGKey(seed), frame index)`), so the boxes
are the in-process tracker's.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any, Iterable

import jax
import numpy as np
from jax import export as jax_export

FORMAT = "cia_jax.exported_tracker"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
INIT_FILE = "init.jaxexport"
STEP_FILE = "step.jaxexport"
WEIGHTS_FILE = "weights.npz"
RUNTIME_FILE = "cia_tracker_runtime.py"


def read_manifest(directory: str) -> dict:
  """The manifest of an export folder; ValueError when it is not one this runtime reads."""
  path = os.path.join(directory, MANIFEST_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{directory}: no {MANIFEST_FILE} (not a `cia-jax export` folder)")
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}; "
                     f"this runtime reads {FORMAT!r} version {FORMAT_VERSION}")
  return manifest


def load_weights(directory: str, manifest: dict) -> tuple[np.ndarray, ...]:
  """The weights as a tuple in the manifest's order; ValueError naming an array that is missing or misshapen."""
  out = []
  with np.load(os.path.join(directory, manifest["weights"]["file"])) as npz:
    for entry in manifest["weights"]["arrays"]:
      if entry["key"] not in npz.files:
        raise ValueError(f"{directory}: weights file has no array {entry['key']} ({entry['name']})")
      a = npz[entry["key"]]
      if list(a.shape) != entry["shape"] or str(a.dtype) != entry["dtype"]:
        raise ValueError(f"{directory}: weight {entry['name']} is {a.dtype}{list(a.shape)}, the manifest says "
                         f"{entry['dtype']}{entry['shape']}")
      out.append(a)
  return tuple(out)


@functools.lru_cache(maxsize=8)
def load_program(path: str) -> Any:
  """The jitted call of a serialized `jax.export` program (cached per path: a tracker per sequence compiles once)."""
  with open(path, "rb") as f:
    return jax.jit(jax_export.deserialize(bytearray(f.read())).call)


class ExportedTracker:
  """An exported tracker: `init(image, box)`, then `update(image) -> box` per frame (got10k-toolkit style).

  Args:
    directory: an export folder written by `cia-jax export`.
    seed: seed of the random augmentation shifts and IoU-Net boxes (as `Tracker(seed=...)` in cia_jax).

  Attributes:
    manifest: the export's manifest (dict).
    image_size: (height, width) the programs were exported for.
    last_output: the `step` outputs of the last frame (box_xywh, max_score, flag), as NumPy arrays.
  """

  def __init__(self, directory: str, seed: int = 0):
    self.directory = directory
    self.manifest = read_manifest(directory)
    self.image_size = tuple(self.manifest["image_size"])
    platform = jax_export.default_export_platform()  # "cuda" / "rocm" where jax.default_backend() says "gpu"
    if platform not in self.manifest["platforms"]:
      raise ValueError(f"{directory}: exported for {self.manifest['platforms']}, this jax runs on {platform} "
                       "(export again with --platforms)")
    self.weights = tuple(jax.device_put(w) for w in load_weights(directory, self.manifest))
    self._init = load_program(os.path.abspath(os.path.join(directory, self.manifest["init"]["file"])))
    self._step = load_program(os.path.abspath(os.path.join(directory, self.manifest["step"]["file"])))
    self._key = jax.random.PRNGKey(seed)
    self.state = None
    self.last_output: dict | None = None
    self._frame = 0

  def _check_image(self, image) -> np.ndarray:
    a = np.asarray(image)
    if a.shape != (*self.image_size, 3):
      raise ValueError(f"exported tracker: frames must be [{self.image_size[0]}, {self.image_size[1]}, 3] (the "
                       f"size it was exported for), got {list(a.shape)}; export again with --image-size")
    if a.dtype != np.uint8:
      raise ValueError(f"exported tracker: frames must be uint8 RGB, got {a.dtype}")
    return a

  def init(self, image, box) -> None:
    """Initialises on the first frame; box `[4]` (x, y, w, h), 0-based pixels."""
    box = np.asarray(box, np.float32).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
      raise ValueError(f"exported tracker: box must be 4 finite numbers (x, y, w, h) with w, h > 0, got {box}")
    self._frame = 0
    self.state = self._init(self.weights, self._check_image(image), box, jax.random.fold_in(self._key, 0))

  def update(self, image) -> np.ndarray:
    """Tracks one frame -> box `[4]` (x, y, w, h) as NumPy float64."""
    if self.state is None:
      raise ValueError("exported tracker: update called before init")
    self._frame += 1
    out = self._step(self.weights, self.state, self._check_image(image), jax.random.fold_in(self._key, self._frame))
    self.state = out["state"]
    self.last_output = {k: np.asarray(v) for k, v in out.items() if k != "state"}
    return np.asarray(out["box_xywh"], np.float64)

  def track(self, frames: Iterable, box) -> np.ndarray:
    """Tracks frames from `box` on the first one -> boxes `[T, 4]` (x, y, w, h); row 0 is `box`."""
    frames = iter(frames)
    self.init(next(frames), box)
    out = [np.asarray(box, np.float64).reshape(4)]
    out += [self.update(f) for f in frames]
    return np.stack(out)


def main(argv: list[str] | None = None) -> int:
  """Command line: track a `[T, H, W, 3]` uint8 .npy stack of frames and print (or write) one box per line."""
  p = argparse.ArgumentParser(description="Run a tracker exported by `cia-jax export` (jax and numpy only).")
  p.add_argument("directory", help="the export folder")
  p.add_argument("--frames", required=True, help=".npy file of frames [T, H, W, 3] uint8 RGB")
  p.add_argument("--box", required=True, help="first-frame box X,Y,W,H (0-based pixels)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=None, help="write the boxes here (x,y,w,h per line) instead of printing them")
  args = p.parse_args(argv)
  try:
    box = [float(v) for v in args.box.split(",")]
    boxes = ExportedTracker(args.directory, args.seed).track(np.load(args.frames, mmap_mode="r"), box)
  except (ValueError, FileNotFoundError) as e:
    print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
    return 2
  text = "\n".join(",".join(f"{v:.4f}" for v in b) for b in boxes) + "\n"
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(text)
  else:
    sys.stdout.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
