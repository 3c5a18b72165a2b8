"""VOT regions and raw trajectories: the text format, the reset-protocol constants and the toolkit's overlap.

Shared by the reset-based experiment (`cia_jax.track.vot_protocol`), the TraX server (`cia_jax.track.vot_server`)
and the analysis (`cia_jax.evaluation.vot`); NumPy only. Everything follows the VOT toolkit (PyPI `vot-toolkit`
0.9.0: `vot/region/io.py`, `vot/region/raster.py`, `vot/tracker/results.py`, `vot/experiment/multirun.py`).

A region (`Region`): an int special code, a rectangle `[4]` (x, y, w, h) or a polygon `[N, 2]`, float32 pixels.
Raw results, one line per frame (the toolkit's text trajectory format):
  `1`          an initialisation frame (the tracker was (re)initialised on the ground truth; no output),
  `2`          a failure frame (the tracker's region did not overlap the ground truth: overlap <= 0),
  `0`          a frame not tracked (the `SKIP_INITIALIZE - 1` frames after a failure),
  `x,y,w,h`    the tracker's rectangle, pixels; `x1,y1,x2,y2,...` a polygon.
Layout: `DIR/<seq>/<seq>_001.txt` (`_002.txt`, ... are repetitions) and `<seq>_001_time.value` (seconds per
frame), the layout the toolkit writes under `<workspace>/results/<tracker>/<experiment>/` (with
`VOT_RESULTS_BINARY=0`; its default is a binary format).

Overlap (`overlap`): the toolkit's rasterised IoU. Both regions are rounded (half to even), rasterised to pixel
masks (a rectangle covers the pixels x..x+w-1; a polygon by the toolkit's scan-line fill, so the polygon ground
truth of VOT is compared as a polygon, not as its bounding box), clipped to the image (`size`), and
IoU = |A and B| / |A or B|. A special line (`0` / `1` / `2`) is an empty region: overlap 0 with a non-empty one.
Checked against the toolkit's `calculate_overlap` on random rectangles and rotated polygons (tests).
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Sequence as SequenceABC
from typing import Union

import numpy as np

# Special trajectory codes (`vot.tracker.results.Trajectory`).
UNKNOWN, INITIALIZATION, FAILURE = 0, 1, 2
# VOT short-term rules (toolkit `SupervisedExperiment` defaults and the VOT2016-2018 stacks).
SKIP_INITIALIZE = 5  # frames from a failure to the re-initialisation (stack `skip_initialize: 5`)
FAILURE_OVERLAP = 0.0  # overlap at or below which a frame is a failure (`failure_overlap` default)

# A region: an int special code, a rectangle `[4]` (x, y, w, h) or a polygon `[N, 2]` (x, y), float32 pixels.
Region = Union[int, np.ndarray]
Bounds = tuple[int, int, int, int]  # left, top, right, bottom (inclusive pixel indices)


_TRAJECTORY_FILE = re.compile(r"_(\d{3})\.txt$")


# ------------------------------------------------------------------------------------------------
# Regions and files.

def parse_region(line: str) -> Region:
  """One text line -> a `Region` (one value: special code; 4: rectangle; 6+ even: polygon; NaN: `UNKNOWN`)."""
  line = line.strip()
  if line.startswith("m"):
    raise ValueError(f"mask regions are not supported by the reset-based protocol: {line[:40]!r}")
  values = [float(v) for v in re.split(r"[,\t ]+", line) if v]
  if len(values) == 1:
    return int(values[0]) if math.isfinite(values[0]) else UNKNOWN
  if any(not math.isfinite(v) for v in values):
    return UNKNOWN
  if len(values) == 4:
    return np.asarray(values, np.float32)
  if len(values) >= 6 and len(values) % 2 == 0:
    return np.asarray(values, np.float32).reshape(-1, 2)
  raise ValueError(f"not a VOT region: {line!r}")


def format_region(region: Region) -> str:
  """A `Region` as one text line (special code, `x,y,w,h` or `x1,y1,...`)."""
  if isinstance(region, (int, np.integer)):
    return str(int(region))
  return ",".join(f"{v:.4f}" for v in np.asarray(region, np.float64).ravel())


def read_regions(path: str) -> list[Region]:
  """Every non-empty line of a trajectory or ground-truth file as a `Region`."""
  with open(path, encoding="utf-8") as f:
    return [parse_region(line) for line in f if line.strip()]


def write_trajectory(path: str, regions: SequenceABC[Region], times: SequenceABC[float] | None = None) -> None:
  """Writes a trajectory `<path>` (one line per frame) and, with `times`, `<stem>_time.value` (seconds)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  if times is not None:
    with open(path[:-len(".txt")] + "_time.value", "w", encoding="utf-8") as f:
      f.writelines(f"{t:.6f}\n" for t in times)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(format_region(r) + "\n" for r in regions)
  os.replace(tmp, path)  # the trajectory appears complete or not at all


def trajectory_path(results_dir: str, seq_name: str, repetition: int = 1) -> str:
  """`<results_dir>/<seq>/<seq>_<repetition:03d>.txt`."""
  return os.path.join(results_dir, seq_name, f"{seq_name}_{repetition:03d}.txt")


def read_trajectories(results_dir: str, seq_name: str) -> list[list[Region]]:
  """Every repetition `<seq>_NNN.txt` of a sequence; FileNotFoundError naming the folder when there is none."""
  paths = sorted(p for p in glob.glob(os.path.join(glob.escape(results_dir), seq_name, f"{glob.escape(seq_name)}_*"))
                 if _TRAJECTORY_FILE.search(p))
  if not paths:
    raise FileNotFoundError(f"no VOT trajectory {seq_name}_NNN.txt in {os.path.join(results_dir, seq_name)}")
  return [read_regions(p) for p in paths]


def is_special(region: Region, code: int | None = None) -> bool:
  """True for a special code (any, or the given one)."""
  return isinstance(region, (int, np.integer)) and (code is None or int(region) == code)


def region_to_box(region: Region) -> np.ndarray:
  """The axis-aligned `[4]` (x, y, w, h) around a region (min / max of a polygon's corners); NaN when empty."""
  if is_special(region):
    return np.full(4, np.nan)
  r = np.asarray(region, np.float64)
  if r.ndim == 1:
    return r.copy()
  lo, hi = r.min(axis=0), r.max(axis=0)
  return np.concatenate([lo, hi - lo])


def groundtruth_regions(seq) -> list[Region]:
  """The ground-truth regions of a sequence: its VOT `groundtruth.txt` (polygons kept) when the frames lie in
  `<seq>/` or `<seq>/color/`, else its axis-aligned boxes (NaN: `UNKNOWN`)."""
  folder = os.path.dirname(seq.frame_paths[0])
  for d in (folder, os.path.dirname(folder)):
    path = os.path.join(d, "groundtruth.txt")
    if os.path.isfile(path):
      regions = read_regions(path)
      if len(regions) == len(seq.frame_paths):
        return regions
  return [UNKNOWN if not np.all(np.isfinite(b)) else np.asarray(b, np.float32) for b in seq.boxes]


# ------------------------------------------------------------------------------------------------
# The toolkit's rasterised overlap.

def _rounded(region: Region) -> np.ndarray:
  return np.round(np.asarray(region, np.float32).astype(np.float64))


def _region_bounds(region: Region) -> Bounds:
  if is_special(region):
    return (0, 0, 0, 0)
  r = _rounded(region)
  if r.ndim == 1:
    return (int(round(r[0])), int(round(r[1])), int(round(r[0] + r[2] - 1)), int(round(r[1] + r[3] - 1)))
  return (int(round(r[:, 0].min())), int(round(r[:, 1].min())), int(round(r[:, 0].max())), int(round(r[:, 1].max())))


def _raster_rectangle(r: np.ndarray, b: Bounds) -> np.ndarray:
  mask = np.zeros((b[3] - b[1] + 1, b[2] - b[0] + 1), bool)
  x, y, w, h = (int(v) for v in r)
  if x > b[2] or x + w - 1 < b[0] or y > b[3] or y + h - 1 < b[1]:
    return mask
  left, top = max(0, x - b[0]), max(0, y - b[1])
  right, bottom = min(b[2], x + w - 1 - b[0]), min(b[3], y + h - 1 - b[1])
  mask[top:bottom + 1, left:right + 1] = True
  return mask


def _row_nodes(poly: np.ndarray, row: int) -> list[int]:
  """x of the polygon's edges on scan line `row` (the toolkit's inclusive edge rule, truncated toward 0), sorted."""
  nodes = []
  j = len(poly) - 1
  for i in range(len(poly)):
    yi, yj = poly[i, 1], poly[j, 1]
    if ((yi <= row < yj) or (yj <= row < yi) or (yi < row <= yj) or (yj < row <= yi) or (yi == yj == row)):
      r, k = yj - yi, poly[j, 0] - poly[i, 0]
      nodes.append(int(poly[i, 0] + (row - yi) / r * k) if r != 0 else int(poly[i, 0]))
    j = i
  return sorted(nodes)


def _raster_polygon(r: np.ndarray, b: Bounds) -> np.ndarray:
  """The toolkit's scan-line fill (`rasterize_polygon`), relative to the raster bounds `b`."""
  width, height = b[2] - b[0] + 1, b[3] - b[1] + 1
  mask = np.zeros((height, width), bool)
  poly = np.round(r) - np.array([[b[0], b[1]]])
  for row in range(height):
    nodes = _row_nodes(poly, row)
    i = 0
    while i < len(nodes) - 1:
      if nodes[i] >= width:
        break
      if nodes[i] == nodes[i + 1] and i < len(nodes) - 2:  # a vertex on the line: ignore the first of the pair
        i += 1
        continue
      if nodes[i + 1] >= 0:
        mask[row, max(nodes[i], 0):min(nodes[i + 1], width - 1) + 1] = True
      i += 2
  return mask


def _raster(region: Region, b: Bounds) -> np.ndarray:
  if is_special(region):
    return np.zeros((b[3] - b[1] + 1, b[2] - b[0] + 1), bool)
  r = _rounded(region)
  return _raster_rectangle(r, b) if r.ndim == 1 else _raster_polygon(r, b)


def overlap(a: Region, b: Region, size: tuple[int, int] | None = None) -> float:
  """The toolkit's overlap (`vot.region.raster.calculate_overlap`) of two regions in an image of
  `size` (width, height) pixels (None: unbounded). Two empty regions overlap 1 by definition."""
  ba, bb = _region_bounds(a), _region_bounds(b)
  union = (min(ba[0], bb[0]), min(ba[1], bb[1]), max(ba[2], bb[2]), max(ba[3], bb[3]))
  if union[0] >= union[2] or union[1] >= union[3]:
    return 1.0
  if size is not None:
    union = (max(0, union[0]), max(0, union[1]), min(int(size[0]) - 1, union[2]), min(int(size[1]) - 1, union[3]))
    if union[0] >= union[2] or union[1] >= union[3]:
      return 0.0
  ma, mb = _raster(a, union), _raster(b, union)
  n_union = int(np.sum(ma | mb))
  return float(np.sum(ma & mb)) / n_union if n_union else 0.0


def overlaps(trajectory: SequenceABC[Region], groundtruth: SequenceABC[Region],
             size: tuple[int, int] | None = None) -> np.ndarray:
  """`[T]` float64 `overlap` per frame; ValueError when the lengths differ."""
  if len(trajectory) != len(groundtruth):
    raise ValueError(f"trajectory has {len(trajectory)} frames, the ground truth {len(groundtruth)}")
  return np.asarray([overlap(p, g, size) for p, g in zip(trajectory, groundtruth)], np.float64)
