"""`cia-jax tcm-dump`: the candidate-matching dataset of KeepTrack's training (keeptrack.md §5.1).

The base tracker (any preset: superdimp as in the reference's dimp_simple / super_dimp_simple dump, cia50, ...)
runs over training sequences; after each tracked frame the raw score map's local maxima (5 x 5, strictly above
0.05, all of them: no capacity) become the frame's candidates. The output is pytracking's JSON layout, one
object keyed by sequence name, each with parallel lists over the *stored* frames:

  index                    frame index (0 = the init frame, never stored)
  search_area_box          [x, y, w, h] of this frame's crop, full-frame pixels, w = x2 - x1 - 1 (keeptrack.md §1
                           step 3)
  target_anno_coord        [row, col] score-map cell of the ground-truth centre: the argmax of the DiMP label
                           centred on it (per axis the grid point -(F - 1)/2 + i nearest to F d / (scale crop) + 1/2,
                           first on ties, clamped to the map)
  target_candidate_scores  [K] candidate scores, decreasing
  target_candidate_coords  [K, 2] (row, col) cells, same order (integers)
  frame_states             {G|H|J|K: [indices]}, subseq_states {HH|HK|HG: [index of the pair's first frame]}

A frame is stored only when it gets a state (keeptrack.md §5.1 table: K >= 2 candidates, visible target; distances in
cells from the GT cell; nearest <= 2 and second > 4 for G / H / K; nearest > 4 for J; threshold 0.25 on the
best score). The training side (`cia_jax.data.candidate_matching`) reads frames from the same benchmark by
sequence name and recomputes the crop from `search_area_box`.

Robustness: the file is rewritten atomically after every sequence (an interrupted run loses at most the sequence
in progress) and sequences already in it are skipped, so a rerun resumes. A sequence that fails (unreadable
frame, size change, ...) is recorded in the returned failures and the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping, Sequence as SequenceT

import numpy as np

from cia_jax.ops.candidates import find_local_maxima
from cia_jax.ops.crop import crop_window, sample_pos_scale
from cia_jax.track import runner, tracker as trk
from cia_jax.track.keeptrack import search_area_box
from cia_jax.track.params import TrackerSettings

CANDIDATE_THRESHOLD = 0.05  # the dump's fixed find_local_maxima threshold
STATE_SCORE = 0.25  # G below, H / J / K at or above
NEAR_CELLS, FAR_CELLS = 2.0, 4.0
FRAME_STATES = ("G", "H", "J", "K")
PAIR_STATES = ("HH", "HK", "HG")
FRAME_KEYS = ("index", "search_area_box", "target_anno_coord", "target_candidate_scores", "target_candidate_coords")


def anno_cell(center_yx: np.ndarray, sample_pos_yx: np.ndarray, sample_scale: float, crop_px: int,
              score_size: int) -> np.ndarray:
  """`[2]` int (row, col): the argmax cell of the DiMP label centred on the ground truth (module docstring).

  Args:
    center_yx: GT centre, full-frame pixels; sample_pos_yx, sample_scale: the crop's (`sample_pos_scale`).
    crop_px: crop side in patch pixels (image_sample_size); score_size: S = F + 1.
  """
  f = score_size - 1
  centre = f * (np.asarray(center_yx, np.float64) - np.asarray(sample_pos_yx, np.float64)) / (
      float(sample_scale) * crop_px) + 0.5
  grid = -(f - 1) / 2.0 + np.arange(score_size)
  return np.argmin(np.abs(grid[None, :] - centre[:, None]), axis=1).astype(np.int64)


def frame_state(scores: np.ndarray, coords: np.ndarray, target_cell: np.ndarray, visible: bool) -> str | None:
  """The frame's state, G / H / J / K or None (keeptrack.md §5.1); candidates sorted by decreasing score."""
  if len(scores) < 2 or not visible:
    return None
  dist = np.sqrt(np.sum((np.asarray(coords, np.float64) - np.asarray(target_cell, np.float64)) ** 2, axis=1))
  order = np.argsort(dist, kind="stable")
  nearest, second, best = dist[order[0]], dist[order[1]], float(np.max(scores))
  isolated = nearest <= NEAR_CELLS and second > FAR_CELLS
  if isolated and order[0] == 0:
    return "G" if best < STATE_SCORE else "H"
  if nearest > FAR_CELLS and best >= STATE_SCORE:
    return "J"
  if isolated and order[0] > 0 and best >= STATE_SCORE:
    return "K"
  return None


def _crop_geometry(settings: TrackerSettings, image_hw, state) -> tuple[np.ndarray, np.ndarray, float]:
  """(search-area box `[4]`, sample_pos `[2]`, sample_scale) of the crop `step` is about to cut from `state`."""
  s = settings.image_sample_size
  coord = crop_window(tuple(image_hw), state.pos_yx, state.target_scale * s, (s, s), settings.border_mode,
                      settings.patch_max_scale_change, rule=settings.crop_rule)["patch_coord"]
  pos, scale = sample_pos_scale(coord, s)
  return np.asarray(search_area_box(coord), np.float64), np.asarray(pos, np.float64), float(scale)


def dump_sequence(model, settings: TrackerSettings, seq, seed: int = 0, max_frames: int | None = None,
                  frames: Iterable[np.ndarray] | None = None) -> dict[str, Any]:
  """Tracks `seq` with the base tracker and returns its dump entry (module docstring; empty lists if no frame
  got a state). `settings` may have `return_score_map` off: it is switched on here."""
  settings = dataclasses.replace(settings, return_score_map=True)
  fns = runner.tracker_fns(settings)
  n = runner.num_frames(seq, max_frames)
  frames = iter(frames) if frames is not None else runner.prefetch_frames(seq.frame_paths[:n])
  key = runner.sequence_key(seed, seq.name)
  entry: dict[str, Any] = {k: [] for k in FRAME_KEYS}
  entry["frame_states"], entry["subseq_states"] = defaultdict(list), defaultdict(list)
  state, shape, previous = None, None, None
  for i in range(n):
    image = next(frames)
    if i == 0:
      shape = image.shape
      state = fns["init"](model, image, runner.first_box(seq).astype(np.float32), trk.frame_key(key, 0))
      continue
    if image.shape != shape:
      raise ValueError(f"{seq.frame_paths[i]}: frame size {image.shape[:2]} differs from the first frame's "
                       f"{shape[:2]}")
    box, sample_pos, sample_scale = _crop_geometry(settings, shape[:2], state)
    state, out = fns["step"](model, state, image, trk.frame_key(key, i))
    scores = np.asarray(out["score_map"], np.float32)
    maxima = find_local_maxima(scores, CANDIDATE_THRESHOLD, scores.size)
    valid = np.asarray(maxima.valid)
    cand_scores, cand_coords = np.asarray(maxima.scores)[valid], np.asarray(maxima.coords)[valid]
    gt = np.asarray(seq.boxes[i], np.float64)
    center = np.array([gt[1] + (gt[3] - 1) / 2, gt[0] + (gt[2] - 1) / 2])
    cell = anno_cell(center, sample_pos, sample_scale, settings.image_sample_size, scores.shape[0])
    fs = frame_state(cand_scores, cand_coords, cell, bool(seq.visible[i]) and np.all(np.isfinite(gt)))
    if fs is not None:
      for k, v in (("index", i), ("search_area_box", box.tolist()), ("target_anno_coord", cell.tolist()),
                   ("target_candidate_scores", cand_scores.astype(float).tolist()),
                   ("target_candidate_coords", cand_coords.astype(int).tolist())):
        entry[k].append(v)
      entry["frame_states"][fs].append(i)
      if previous is not None and previous + fs in PAIR_STATES:
        entry["subseq_states"][previous + fs].append(i - 1)
    previous = fs
  entry["frame_states"], entry["subseq_states"] = dict(entry["frame_states"]), dict(entry["subseq_states"])
  return entry


def read_dump(path: str) -> dict[str, dict]:
  """The dump at `path` ({} when absent); ValueError naming the file when it is not a dump."""
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable candidate dump ({e})") from None
  if not isinstance(data, dict) or any(not isinstance(v, dict) or "index" not in v for v in data.values()):
    raise ValueError(f"{path}: not a candidate dump (expected {{sequence: {{'index': ..., ...}}}})")
  return data


def _write_atomic(path: str, data: Mapping[str, Any]) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(data, f)
  os.replace(tmp, path)


def dump_benchmark(model, settings: TrackerSettings, seqs: SequenceT, out_path: str, seed: int = 0,
                   max_frames: int | None = None, fail_fast: bool = False,
                   on_sequence: Callable[[str, str], None] | None = None) -> dict[str, Any]:
  """Dumps every sequence of `seqs` not yet in `out_path` (module docstring).

  Returns:
    {'dumped': [names], 'skipped': [names already in the file], 'failed': {name: reason}}.
  """
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  data = read_dump(out_path)
  summary: dict[str, Any] = {"dumped": [], "skipped": [], "failed": {}}
  for seq in seqs:
    if seq.name in data:
      summary["skipped"].append(seq.name)
      continue
    try:
      data[seq.name] = dump_sequence(model, settings, seq, seed, max_frames)
    except Exception as e:  # pylint: disable=broad-except  (one bad sequence must not cost the others)
      if fail_fast:
        raise
      summary["failed"][seq.name] = f"{type(e).__name__}: {e}"
      if on_sequence:
        on_sequence(seq.name, f"failed: {summary['failed'][seq.name]}")
      continue
    _write_atomic(out_path, data)
    summary["dumped"].append(seq.name)
    if on_sequence:
      entry = data[seq.name]
      on_sequence(seq.name, f"{len(entry['index'])} frames stored, "
                  + " ".join(f"{k}:{len(v)}" for k, v in sorted({**entry['frame_states'],
                                                                   **entry['subseq_states']}.items())))
  return summary
