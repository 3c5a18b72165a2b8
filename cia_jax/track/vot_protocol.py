"""VOT short-term reset-based experiment (`cia-jax track --protocol vot`): re-initialise after each failure.

    cia-jax track --protocol vot --tracker cia18 --checkpoint runs/cia18 --dataset vot --root /data/vot2018 \\
        --results res/cia18_vot

The VOT toolkit's `SupervisedExperiment` (vot-toolkit 0.9.0, `vot/experiment/multirun.py`), one repetition:
the tracker is initialised on frame 0's ground truth (frame written `1`); on each next frame its box is compared
with the ground truth (`cia_jax.vot_regions.overlap`: the toolkit's rasterised overlap, against the polygon
when the ground truth is one, clipped to the image); an overlap <= `FAILURE_OVERLAP` (0) is a failure (`2`); the
tracker then skips to `SKIP_INITIALIZE` (5) frames after the failure (the frames in between are written `0`) and
is re-initialised there on the ground truth (`1`). Other frames get the tracker's box `x,y,w,h`. The burn-in
(10 frames from each initialisation) is an evaluation rule, applied by `cia-jax evaluate --protocol vot`.

The tracker is given the axis-aligned box around a polygon ground truth (min / max of its corners), as the
toolkit gives a rectangle-only tracker. One deviation: where the ground truth of a (re)initialisation frame is
empty (no region, or a degenerate all-zero polygon as in synthetic occlusions) the toolkit initialises on it; here
that frame is left `0` and the next one is tried (a tracker cannot start from nothing). VOT short-term datasets
annotate every frame, so this never happens there.

Results: `<results>/<seq>/<seq>_001.txt` and `<seq>_001_time.value`, the toolkit's text layout
(`cia_jax.vot_regions`), so one evaluator reads ours and the toolkit's.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Sequence as SequenceT

import jax
import numpy as np

from cia_jax.data.frames import read_frame, sequence_image_size
from cia_jax import vot_regions as vot
from cia_jax.track import runner, tracker as trk
from cia_jax.track.params import apply_overrides, get_settings

InitFn = Callable[[np.ndarray, np.ndarray, int], Any]  # (image [H, W, 3] uint8, box [4] xywh, frame) -> state
StepFn = Callable[[Any, np.ndarray, int], tuple[Any, np.ndarray]]  # (state, image, frame) -> (state, box [4])


def run_supervised(init: InitFn, step: StepFn, frame: Callable[[int], np.ndarray],
                   groundtruth: SequenceT[vot.Region], size: tuple[int, int] | None,
                   skip: int = vot.SKIP_INITIALIZE, failure_overlap: float = vot.FAILURE_OVERLAP
                   ) -> tuple[list[vot.Region], np.ndarray]:
  """One reset-based run over a sequence.

  Args:
    init, step: the tracker (`InitFn` / `StepFn`); `frame` is the frame index, for the random keys.
    frame: frame index -> image `[H, W, 3]` (skipped frames are never read).
    groundtruth: `[T]` regions (`cia_jax.vot_regions.Region`).
    size: (width, height) of the frames, the overlap's bounds (None: unbounded).
    skip, failure_overlap: VOT rules (module docstring).

  Returns:
    (`[T]` regions: `1` / `2` / `0` or the tracker's `[4]` box, `[T]` seconds per frame (0 for skipped)).
  """
  n = len(groundtruth)
  regions: list[vot.Region] = [vot.UNKNOWN] * n
  times = np.zeros(n)
  i = 0
  while i < n:
    box = vot.region_to_box(groundtruth[i])
    if not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
      i += 1  # no region to initialise on: left `0`, the next frame is tried
      continue
    t0 = time.perf_counter()
    state = init(frame(i), box.astype(np.float32), i)
    times[i] = time.perf_counter() - t0
    regions[i] = vot.INITIALIZATION
    i += 1
    while i < n:
      t0 = time.perf_counter()
      state, out = step(state, frame(i), i)
      times[i] = time.perf_counter() - t0
      out = np.asarray(out, np.float32)
      if vot.overlap(out, groundtruth[i], size) <= failure_overlap:
        regions[i] = vot.FAILURE
        i += skip
        break
      regions[i] = out
      i += 1
  return regions, times


def model_tracker(model, settings, seed: int, name: str) -> tuple[InitFn, StepFn]:
  """`InitFn` / `StepFn` of the jitted tracker (`runner.tracker_fns`); keys as `cia-jax track` (per frame)."""
  fns = runner.tracker_fns(settings)  # `tracker.init` / `step` underneath are jitted once per image size
  key = runner.sequence_key(seed, name)

  def init(image, box, i):
    state = fns["init"](model, image, box, trk.frame_key(key, i))
    return jax.block_until_ready(state)

  def step(state, image, i):
    state, out = fns["step"](model, state, image, trk.frame_key(key, i))
    return state, np.asarray(out["box_xywh"])

  return init, step


def track_sequence_vot(model, settings, seq, seed: int = 0) -> tuple[list[vot.Region], np.ndarray]:
  """`run_supervised` of the model on one `Sequence` (VOT polygons read from its `groundtruth.txt`)."""
  init, step = model_tracker(model, settings, seed, seq.name)
  size = sequence_image_size(seq)
  return run_supervised(init, step, lambda i: read_frame(seq.frame_paths[i]), vot.groundtruth_regions(seq),
                        None if size is None else (int(size[0]), int(size[1])))


def track_vot_benchmark(*, tracker: str, dataset: str, root: str, results_dir: str, checkpoint: str | None = None,
                        random_weights: bool = False, split: str | None = None, sequences: str | None = None,
                        overrides: SequenceT[str] = (), seed: int = 0, tcm_checkpoint: str | None = None) -> int:
  """`cia-jax track --protocol vot`: one reset-based run per sequence; returns the exit code (1: some failed).

  A finished sequence (its trajectory file exists) is skipped; a sequence whose frames cannot be read is reported
  and the run goes on.
  """
  settings = apply_overrides(get_settings(tracker), overrides)
  seqs, broken = runner.load_benchmark(dataset, root, split, sequences)
  failed = dict(broken)
  todo = [s for s in seqs if not os.path.isfile(vot.trajectory_path(results_dir, s.name))]
  model = runner.load_model(tracker, checkpoint, random_weights, seed, tcm_checkpoint=tcm_checkpoint) if todo else None
  tracked = 0
  for seq in todo:
    try:
      regions, times = track_sequence_vot(model, settings, seq, seed)
    except runner.DATA_ERRORS as e:
      failed[seq.name] = str(e)
      print(f"{seq.name}: FAILED: {e}", flush=True)
      continue
    vot.write_trajectory(vot.trajectory_path(results_dir, seq.name), regions, times)
    tracked += 1
    resets = sum(vot.is_special(r, vot.FAILURE) for r in regions)
    print(f"{seq.name}: {len(regions)} frames, {resets} failure(s)", flush=True)
  print(f"tracked {tracked} sequence(s), skipped {len(seqs) - len(todo)} finished, "
        f"{len(failed)} failed -> {results_dir}", flush=True)
  if failed:
    print(runner.format_failures(failed), file=sys.stderr, flush=True)
    return 1
  return 0
