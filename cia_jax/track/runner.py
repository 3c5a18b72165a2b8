"""Benchmark runs of the tracker (`cia-jax track`): check every sequence, track the good ones, record failures.

    cia-jax track --tracker cia18 --checkpoint runs/cia18 --dataset otb --root /data/OTB100 --results res/cia18
    cia-jax track --tracker dimp18 --random-weights --dataset folder --root ../shared/data/real --results /tmp/r \\
        --set target_not_found_threshold=0 --batch-sequences 4 --chunk-frames 8

A run has three phases, so that one bad sequence never costs the good ones:
1. Check (`prepare_run`), cheap and before the network is built: a sequence's frame files exist, it has one
   box per frame, its first box is finite, has a positive size and is not entirely outside the image (the size
   from frame 0's header). A sequence folder the reader rejects (`--dataset folder`) fails here, with the
   reader's error. Finished sequences (`cia_jax.results.is_finished`) are skipped, which makes runs resumable.
2. Track (`execute_plan`) every sequence that passed, on the lanes of `cia_jax.track.batching` (K sequences per
   local device, any frame sizes padded to one bucket, C frames per device call; design.md §5.9). A sequence
   that fails while tracking (a frame that cannot be decoded, a frame whose size differs from the first
   frame's) is recorded with its reason, nothing of it is written, and the run goes on (its lane is masked, so
   the others' boxes are those of a clean run); `fail_fast` stops after the first failure instead.
3. Record: boxes and times in a layout of `cia_jax.results` as each sequence ends, the failures in
   `<results>/failures.json`, `<results>/run_summary.json`, a table of failed sequences on the console and exit
   code 1 when any failed (`finish_run`, `track_benchmark`).

Several processes (`jax.distributed`): each tracks its share (`cia_jax.track.distributed`). The random stream
of a sequence depends only on `--seed` and the sequence name, so results do not depend on devices, hosts, K or
C (up to float32 reassociation).

`track_sequence` (one sequence, unpadded, one frame per call) is the reference the lanes are tested against;
`track_batch` (K sequences of one size in lockstep, frame by frame) serves the tracking check while training.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence as SequenceT

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from cia_jax import results
from cia_jax.checkpoints import load_for_tracking
from cia_jax.data import datasets
from cia_jax.data.datasets.base import Sequence
from cia_jax.data.frames import image_size, missing_frames, read_frame
from cia_jax.models.cia import build_model, init_variables
from cia_jax.models.presets import model_kwargs
from cia_jax.models.tcm import TargetCandidateMatchingNet
from cia_jax.tcm.weights import attach_tcm
from cia_jax.track import batching, distributed, keeptrack, tracker as trk
from cia_jax.track.batching import DATA_ERRORS, first_box, sequence_key, size_error  # noqa: F401  (the runner's API)
from cia_jax.track.params import TrackerSettings, apply_overrides, get_settings



# ------------------------------------------------------------------------------------------------
# Frames, keys and first boxes.

def prefetch_frames(paths: SequenceT[str], depth: int = 8,
                    reader: Callable[[str], np.ndarray] = read_frame) -> Iterator[np.ndarray]:
  """Yields decoded frames in order while a background thread decodes up to `depth` frames ahead.

  A decoding error is raised in the consumer at the frame where it happened (not swallowed).
  """
  q: queue.Queue = queue.Queue(maxsize=max(1, depth))
  stop = threading.Event()
  done = object()

  def work():
    try:
      for p in paths:
        if stop.is_set():
          return
        q.put(("ok", reader(p)))
      q.put(("ok", done))
    except BaseException as e:  # pylint: disable=broad-except  # re-raised in the consumer
      q.put(("err", e))

  thread = threading.Thread(target=work, daemon=True, name="frame-prefetch")
  thread.start()
  try:
    while True:
      kind, item = q.get()
      if kind == "err":
        raise item
      if item is done:
        return
      yield item
  finally:
    stop.set()
    while thread.is_alive():  # unblock a producer waiting on a full queue
      try:
        q.get_nowait()
      except queue.Empty:
        thread.join(timeout=0.05)


_KEY_BLOCK = 64


@functools.partial(jax.jit, static_argnums=2)
def _key_block(seq_keys, start, size: int):
  """`trk.frame_key(key, start + j)` for j < size of each key of `seq_keys` -> `[size, *seq_keys.shape]`."""
  flat = seq_keys.reshape(-1)
  keys = jax.vmap(lambda i: jax.vmap(lambda k: trk.frame_key(k, i))(flat))(start + jnp.arange(size))
  return keys.reshape(size, *seq_keys.shape)


def frame_keys(seq_keys, n: int) -> list:
  """The keys of frames 0..n-1, `trk.frame_key(key, frame)` of each sequence key (`[]` or `[K]`): a list of n arrays
  shaped like `seq_keys`. Made before the frame loop, in blocks (one compilation per shape), because a PRNG
  dispatch right after a step costs 0.3-0.7 ms on a 2-core CPU (BENCHMARKS.md "Capacity buckets")."""
  return [k for start in range(0, n, _KEY_BLOCK) for k in _key_block(seq_keys, start, _KEY_BLOCK)][:n]


def num_frames(seq, max_frames: int | None) -> int:
  """Frames of `seq` a run tracks: all, or the first `max_frames`."""
  return len(seq) if max_frames is None else min(len(seq), int(max_frames))


# ------------------------------------------------------------------------------------------------
# Tracking.

class Tracked(NamedTuple):
  """One sequence's outcome in a batch: boxes `[T, 4]` xywh, seconds per frame `[T]`, and the error that
  stopped it (None when it finished; otherwise boxes and times are incomplete and must not be written)."""

  boxes: np.ndarray
  times: np.ndarray
  error: Exception | None = None


@functools.lru_cache(maxsize=16)
def tracker_fns(settings: TrackerSettings) -> dict[str, Callable]:
  """Single-sequence and batched (`vmap`, jitted) `init` / `step`, each called with the model first.

  The model is an argument, not a closure constant, so its weights are not baked into the compiled code.
  Cached per settings, so every run of a process reuses the batched functions' compilations.
  """

  def init(model, image, box, key):
    return trk.init(model, settings, image, box, key)

  def step(model, state, image, key):
    return trk.step(model, settings, state, image, key)

  def step_donating(model, state, image, key):
    return trk.step_donating(model, settings, state, image, key)

  return {"init": init, "step": step_donating, "vinit": jax.jit(jax.vmap(init, in_axes=(None, 0, 0, 0))),
          "vstep": jax.jit(jax.vmap(step, in_axes=(None, 0, 0, 0)))}


def track_sequence(model, settings, seq, seed: int = 0, max_frames: int | None = None,
                   fns: dict | None = None, frames: Iterable[np.ndarray] | None = None,
                   on_frame: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Tracks one sequence from its first ground-truth box -> (boxes `[T, 4]` xywh, seconds per frame `[T]`).

  Frame 0's box is the initialisation box (as every benchmark protocol expects); its time is the init time.
  Raises the reader's error for a frame that cannot be read, and ValueError naming the frame file when a
  frame's size differs from frame 0's.
  """
  fns = fns or tracker_fns(settings)
  n = num_frames(seq, max_frames)
  frames = iter(frames) if frames is not None else prefetch_frames(seq.frame_paths[:n])
  key = sequence_key(seed, seq.name)
  box0 = first_box(seq)
  boxes = np.zeros((n, 4))
  times = np.zeros(n)
  keys = frame_keys(key, n)
  state, shape = None, None
  for i in range(n):
    image = next(frames)
    if shape is not None and image.shape != shape:
      raise size_error(seq.frame_paths[i], image.shape, shape, f"the first frame {seq.frame_paths[0]}")
    t0 = time.perf_counter()
    if i == 0:
      shape = image.shape
      state = fns["init"](model, image, box0.astype(np.float32), keys[0])
      jax.block_until_ready(state)
      boxes[0] = box0
    else:
      state, out = fns["step"](model, state, image, keys[i])
      boxes[i] = np.asarray(out["box_xywh"])
    times[i] = time.perf_counter() - t0
    if on_frame is not None:
      on_frame(1)
  return boxes, times


def _lockstep_frames(seqs: SequenceT, streams: list, running: list[int], i: int, shape, errors: list) -> dict:
  """Frame `i` of each running sequence -> {index: image}; a sequence whose frame cannot be read or has another
  size than `shape` (the batch's frame size, None until frame 0 sets it) gets its error in `errors` instead."""
  images = {}
  for k in running:
    try:
      image = next(streams[k])
      expected = shape or next(iter(images.values()), image).shape
      if image.shape != expected:
        raise size_error(seqs[k].frame_paths[i], image.shape, expected,
                          "the other sequences of its batch" if i == 0 else "the sequence's first frame")
      images[k] = image
    except DATA_ERRORS as e:
      errors[k] = e
  return images


def track_batch(model, settings, seqs: SequenceT, seed: int = 0, max_frames: int | None = None,
                fns: dict | None = None, on_frame: Callable[[int], None] | None = None) -> list[Tracked]:
  """Tracks K sequences of equal frame size in lockstep (`vmap`); same boxes as `track_sequence` on each.

  Returns one `Tracked` per sequence; the time of a lockstep frame is split evenly over the sequences still
  running. A sequence whose frame cannot be read (or changes size) stops there with its `error` set, and is
  fed its last frame from then on, as a sequence that ended: the others' boxes are those of a clean run.
  """
  fns = fns or tracker_fns(settings)
  lengths = [num_frames(s, max_frames) for s in seqs]
  streams = [prefetch_frames(s.frame_paths[:n]) for s, n in zip(seqs, lengths)]
  # Frame i of every lane; a lane that has ended is fed its last frame and its outputs are unused.
  batch_keys = frame_keys(jnp.stack([sequence_key(seed, s.name) for s in seqs]), max(lengths)) if seqs else []
  boxes = [np.zeros((n, 4)) for n in lengths]
  times = [np.zeros(n) for n in lengths]
  errors: list[Exception | None] = [None] * len(seqs)
  box0 = np.zeros((len(seqs), 4), np.float32)
  for k, s in enumerate(seqs):
    try:
      box0[k] = first_box(s)
    except DATA_ERRORS as e:
      errors[k] = e
      box0[k] = (0.0, 0.0, 1.0, 1.0)  # any valid box: the lane only keeps the batch's shape, its outputs are unused
  last: list[Any] = [None] * len(seqs)
  state, shape = None, None
  try:
    for i in range(max(lengths, default=0)):
      running = [k for k, n in enumerate(lengths) if i < n and errors[k] is None]
      images = _lockstep_frames(seqs, streams, running, i, shape, errors)
      if not images:
        break  # every sequence has ended or failed
      shape = shape or next(iter(images.values())).shape
      last = [images.get(k, last[k] if last[k] is not None else np.zeros(shape, np.uint8))
              for k in range(len(seqs))]
      t0 = time.perf_counter()
      if state is None:
        state = fns["vinit"](model, jnp.asarray(np.stack(last)), jnp.asarray(box0), batch_keys[i])
        jax.block_until_ready(state)
        out_boxes = box0
      else:
        # A finished or failed sequence is fed its last frame again; its state and outputs are simply not used.
        state, out = fns["vstep"](model, state, jnp.asarray(np.stack(last)), batch_keys[i])
        out_boxes = np.asarray(out["box_xywh"])
      dt = time.perf_counter() - t0
      for k in images:
        boxes[k][i] = out_boxes[k]
        times[k][i] = dt / len(images)
      if on_frame is not None:
        on_frame(len(images))
  finally:
    for stream in streams:
      stream.close()
  return [Tracked(b, t, e) for b, t, e in zip(boxes, times, errors)]


# ------------------------------------------------------------------------------------------------
# Checking and planning a run (no network needed).

def frame_size(seq) -> tuple[int, int]:
  """(height, width) of a sequence's first frame, from the image header (no full decode)."""
  width, height = image_size(seq.frame_paths[0])
  return height, width


def check_sequence(seq, max_frames: int | None = None) -> tuple[int, int]:
  """The cheap checks of a sequence before any tracking -> its frame size (height, width).

  Raises FileNotFoundError / ValueError naming the sequence and the file: no frames, missing frame files,
  fewer or more boxes than frames, a first box that is not finite, has no positive size, or lies entirely
  outside the first frame.
  """
  if not len(seq):
    raise ValueError(f"sequence {seq.name!r}: no frames")
  if len(seq.boxes) != len(seq):
    raise ValueError(f"sequence {seq.name!r}: {len(seq.boxes)} ground-truth boxes but {len(seq)} frames "
                     f"(first frame {seq.frame_paths[0]})")
  n = num_frames(seq, max_frames)
  missing = missing_frames(seq.frame_paths[:n])
  if missing:
    raise FileNotFoundError(f"sequence {seq.name!r}: {len(missing)} of {n} frames not found, the first: {missing[0]}")
  box = first_box(seq)
  x, y, w, h = box
  height, width = frame_size(seq)
  if x + w <= 0 or y + h <= 0 or x >= width or y >= height:
    raise ValueError(f"sequence {seq.name!r}: the first box {box.tolist()} lies entirely outside the "
                     f"{width}x{height} first frame {seq.frame_paths[0]}")
  return height, width


def batch_groups(seqs: SequenceT, k: int, sizes: Mapping[str, tuple[int, int]] | None = None) -> list[list]:
  """Sequences grouped by frame size, in chunks of at most `k` (order kept within a size).

  `sizes` (name -> (height, width)) saves reading the frame headers again (`frame_size` otherwise).
  """
  by_size: dict[tuple[int, int], list] = {}
  for s in seqs:
    by_size.setdefault(sizes[s.name] if sizes else frame_size(s), []).append(s)
  return [group[i:i + k] for group in by_size.values() for i in range(0, len(group), k)]


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """What a run (this process's share of it) will do, decided before any tracking (`prepare_run`).

  Attributes:
    sequences: the sequences to track, longest first.
    skipped: names of the sequences already finished in the results directory.
    failed: name -> reason, for sequences that failed the checks (or folders the reader rejected).
    sizes: name -> frame size (height, width) of each sequence to track.
    max_frames: frames tracked per sequence (None: all).
  """

  sequences: list[Sequence]
  skipped: list[str]
  failed: dict[str, str]
  sizes: dict[str, tuple[int, int]]
  max_frames: int | None = None

  def total_frames(self) -> int:
    """Frames the run will track in total."""
    return sum(num_frames(s, self.max_frames) for s in self.sequences)


def prepare_run(seqs: SequenceT, results_dir: str, fmt: str = "raw", max_frames: int | None = None,
                failed: Mapping[str, str] | None = None, process_index: int = 0, num_processes: int = 1) -> RunPlan:
  """Checks the options and every unfinished sequence of this process's share (`check_sequence`).

  Args:
    seqs: the benchmark's sequences.
    results_dir: where results go; created here (ValueError naming it if it is an existing file).
    fmt: result layout (`cia_jax.results.RESULT_FORMATS`).
    max_frames: track only the first N frames (None: all); N >= 1.
    failed: name -> reason of sequences that already failed (e.g. folders the reader rejected); process 0
      reports them.
    process_index, num_processes: this process's share is `distributed.assign_processes` of all of `seqs`
      (finished or not, so that a rerun shares them the same way).

  Returns:
    A `RunPlan`. Only ValueError for bad options; a bad sequence is a `failed` entry, printed right away
    (`NAME: FAILED: reason`), before any network is built.
  """
  if max_frames is not None and int(max_frames) < 1:
    raise ValueError(f"max_frames must be at least 1 (or None for every frame), got {max_frames}")
  if fmt not in results.RESULT_FORMATS:
    raise ValueError(f"unknown result format {fmt!r}; expected one of {results.RESULT_FORMATS}")
  results.check_results_dir(results_dir)
  failed = dict(failed or {}) if process_index == 0 else {}
  share = distributed.assign_processes([num_frames(s, max_frames) for s in seqs], num_processes)[process_index]
  todo, skipped, sizes = [], [], {}
  for s in (seqs[i] for i in share):
    if results.is_finished(results_dir, s.name, num_frames(s, max_frames), fmt):
      skipped.append(s.name)
      continue
    try:
      sizes[s.name] = check_sequence(s, max_frames)
    except DATA_ERRORS as e:
      failed[s.name] = str(e)
      continue
    todo.append(s)
  for name, reason in failed.items():
    print(_failed_line(name, reason), flush=True)
  return RunPlan(sequences=todo, skipped=skipped, failed=failed, sizes=sizes, max_frames=max_frames)


# ------------------------------------------------------------------------------------------------
# Running a plan.

def _failed_line(name: str, reason: str) -> str:
  return f"{name}: FAILED: {reason}"


class _Console:
  """A run's console output: one frame bar over the whole run (frames/s and ETA; when `bar`), one line per
  finished or failed sequence, and a "compiling ..." line until the first chunk's outputs arrive."""

  def __init__(self, total_frames: int, bar: bool, desc: str = "track"):
    self.bar = tqdm(total=total_frames, unit="frame", disable=not bar, desc=desc, smoothing=0.05)
    self._compiling: tuple[str, float] | None = None

  def say(self, text: str) -> None:
    tqdm.write(text, file=sys.stdout)  # above the bar when there is one
    sys.stdout.flush()

  def compiling(self, what: str) -> None:
    self._compiling = (what, time.perf_counter())
    self.say(f"compiling the tracker for {what} ...")

  def compiled(self) -> None:
    if self._compiling is not None:
      what, start = self._compiling
      self.say(f"compiled the tracker for {what} in {time.perf_counter() - start:.1f} s (with the first frames)")
      self._compiling = None

  def finished(self, name: str, frames: int, seconds: float) -> None:
    self.say(f"{name}: {frames} frames, {frames / max(seconds, 1e-9):.1f} fps")

  def failed(self, name: str, reason: str) -> None:
    self.say(_failed_line(name, reason))

  def close(self) -> None:
    self.bar.close()


def execute_plan(model, settings, plan: RunPlan, results_dir: str, fmt: str = "raw", seed: int = 0,
                 progress: bool = True, fail_fast: bool = False, batch_sequences: int = 1, chunk_frames: int = 1,
                 devices: SequenceT | None = None) -> dict:
  """Tracks the plan's sequences on the lanes (`batching.track_lanes`), writes each finished sequence's results.

  Args:
    model: the `TrackingModel`; None only when there is nothing to track.
    settings: `TrackerSettings`.
    plan: from `prepare_run` (with the same `results_dir` and `fmt`).
    results_dir, fmt: where and in which layout results go (`cia_jax.results`).
    seed: run seed (`sequence_key`).
    progress: show a frame bar (the per-sequence lines are printed either way).
    fail_fast: stop after the first failure (sequences ending in the same chunk are still written); by
      default every sequence is tried.
    batch_sequences: K >= 1 lanes per device; chunk_frames: C >= 1 frames per device call.
    devices: the local devices to spread the lanes over (default: all).

  Returns:
    This process's summary dict: `tracked` / `skipped` (sequence names), `failed` (name -> reason, this
    run's), `frames`, `seconds` (wall time of the tracking, compilation included), `fps` (frames / seconds).
    The failure list (`failures.json`) is written by `finish_run`.
  """
  if batch_sequences < 1 or chunk_frames < 1:
    raise ValueError(f"batch_sequences and chunk_frames must be at least 1, got {batch_sequences}, {chunk_frames}")
  desc = "track" if jax.process_count() == 1 else f"track [process {jax.process_index()}/{jax.process_count()}]"
  console = _Console(plan.total_frames(), progress, desc)
  failed, tracked = dict(plan.failed), []
  seqs = plan.sequences
  frames = 0
  start = time.perf_counter()

  def done(i: int, run: batching.LaneResult) -> bool:
    nonlocal frames
    seq = seqs[i]
    if run.error is not None:
      failed[seq.name] = str(run.error)
      console.failed(seq.name, failed[seq.name])
      return fail_fast
    results.write_results(results_dir, seq.name, run.boxes, run.times, fmt)
    tracked.append(seq.name)
    frames += len(run.times)
    console.finished(seq.name, len(run.times), float(np.sum(run.times)))
    return False

  try:
    if seqs and not (fail_fast and failed):
      mesh = batching.lane_mesh(devices)
      sizes = [plan.sizes[s.name] for s in seqs]
      height, width = batching.bucket_shape(sizes)
      console.compiling(f"{batch_sequences * mesh.size} lane(s) ({mesh.size} device(s) x {batch_sequences}) of "
                        f"{width}x{height} frames, {chunk_frames} frame(s) per call")
      batching.track_lanes(model, settings, seqs, [num_frames(s, plan.max_frames) for s in seqs], sizes, seed=seed,
                           lanes_per_device=batch_sequences, chunk=chunk_frames, mesh=mesh,
                           on_frame=console.bar.update, on_done=done, on_compiled=console.compiled)
  finally:
    console.close()
    seconds = time.perf_counter() - start
    if jax.process_count() == 1:  # also on an interruption: what this run settled is recorded
      results.update_failures(results_dir, plan.skipped + tracked, failed)
  return {"tracked": tracked, "skipped": list(plan.skipped), "failed": failed, "frames": frames,
          "seconds": seconds, "fps": frames / seconds if frames else float("nan")}


def finish_run(results_dir: str, summary: dict) -> dict:
  """Combines the summaries of every process (`distributed.gather`); process 0 writes `failures.json` (with
  several processes) and `<results_dir>/run_summary.json`. Returns the combined summary (same on every process):
  `tracked` / `skipped` / `failed` over all processes, `frames`, `seconds` (the slowest process's), `fps`,
  `processes`; the file also holds `per_process` and `xla_flags` (process 0's XLA_FLAGS)."""
  parts = distributed.gather(summary)
  total = {"tracked": [n for p in parts for n in p["tracked"]], "skipped": [n for p in parts for n in p["skipped"]],
           "failed": {k: v for p in parts for k, v in p["failed"].items()},
           "frames": sum(p["frames"] for p in parts), "seconds": max(p["seconds"] for p in parts),
           "processes": len(parts)}
  total["fps"] = total["frames"] / total["seconds"] if total["frames"] else float("nan")
  if jax.process_index() == 0:
    if len(parts) > 1:
      results.update_failures(results_dir, total["skipped"] + total["tracked"], total["failed"])
    per_process = [{k: p[k] for k in ("frames", "seconds")} | {"sequences": len(p["tracked"])} for p in parts]
    # XLA_FLAGS as this process ran (cia_jax.xla_flags adds its CPU defaults): part of how the run was made.
    text = json.dumps({**total, "per_process": per_process, "xla_flags": os.environ.get("XLA_FLAGS", "")},
                      indent=1, default=float)
    with open(os.path.join(results_dir, distributed.SUMMARY_FILE), "w", encoding="utf-8") as f:
      f.write(text + "\n")
  return total


def run_benchmark(model, settings, seqs: SequenceT, results_dir: str, fmt: str = "raw", seed: int = 0,
                  batch_sequences: int = 1, max_frames: int | None = None, progress: bool = True,
                  fail_fast: bool = False, chunk_frames: int = 1, devices: SequenceT | None = None) -> dict:
  """`prepare_run` + `execute_plan` + `finish_run`: tracks every unfinished sequence of `seqs` (this process's
  share); returns the combined summary dict."""
  plan = prepare_run(seqs, results_dir, fmt, max_frames, None, jax.process_index(), jax.process_count())
  summary = execute_plan(model, settings, plan, results_dir, fmt, seed, progress, fail_fast, batch_sequences,
                         chunk_frames, devices)
  return finish_run(results_dir, summary)


# ------------------------------------------------------------------------------------------------
# Models and sequences for the CLI.

# The network preset of each KeepTrack tracker (the base tracker's network; the association net comes on top).
TCM_BASE_NETWORKS = {"keeptrack": "superdimp", "keeptrack_fast": "superdimp", "cia50_tcm": "cia50"}


def _check_weights(checkpoint: str | None, random_weights: bool, tcm: bool = False,
                   tcm_checkpoint: str | None = None) -> None:
  if not checkpoint and not random_weights:
    raise ValueError("no --checkpoint given: refusing to track with random weights "
                     "(pass --random-weights for tests and benchmarks)")
  if tcm_checkpoint and not tcm:
    raise ValueError("--tcm-checkpoint is only for the target-candidate-matching trackers (keeptrack, "
                     "keeptrack_fast, cia50_tcm)")
  if checkpoint and tcm and not tcm_checkpoint:
    raise ValueError("keeptrack / cia50_tcm with --checkpoint also need --tcm-checkpoint: the association network "
                     "(`cia-jax convert --arch keeptrack` or `cia-jax train --config configs/keeptrack.py`)")
  if tcm_checkpoint and not checkpoint:
    raise ValueError("--tcm-checkpoint needs --checkpoint (the base network the association net was trained on)")


def load_model(tracker_name: str, checkpoint: str | None, random_weights: bool, seed: int = 0,
               tcm: bool | None = None, tcm_checkpoint: str | None = None) -> trk.TrackingModel:
  """A `TrackingModel` from a checkpoint (training workdir or converted), or random weights when asked.

  `tcm` (default: whether the preset `tracker_name` uses target candidate matching) adds the association network
  (`TargetCandidateMatchingNet`, reading the base network's layer3) as `tcm_net` / `tcm_variables`: from
  `tcm_checkpoint` (`cia_jax.tcm.weights`) next to a base `checkpoint`, randomly initialised with random weights.
  The base network of keeptrack / cia50_tcm is the superdimp / cia50 preset.
  """
  tcm = get_settings(tracker_name).use_tcm if tcm is None else tcm
  _check_weights(checkpoint, random_weights, tcm, tcm_checkpoint)
  if checkpoint:
    net, variables, _ = load_for_tracking(checkpoint)
    model = trk.prepare(trk.TrackingModel(net=net, variables=variables))
    if not tcm:
      return model
    return attach_tcm(model, tcm_checkpoint)
  key = jax.random.key(seed)
  net = build_model(model_kwargs(TCM_BASE_NETWORKS.get(tracker_name, tracker_name)))
  model = trk.prepare(trk.TrackingModel(net=net, variables=init_variables(net, key)))
  if not tcm:
    return model
  tcm_net = TargetCandidateMatchingNet()
  tcm_variables = keeptrack.init_tcm_variables(tcm_net, trk.layer3_channels(model), jax.random.fold_in(key, 1))
  return model.replace(tcm_net=tcm_net, tcm_variables=tcm_variables)


def _split_names(names: str | None) -> list[str]:
  return [n.strip() for n in (names or "").split(",") if n.strip()]


def select_sequences(seqs: SequenceT, names: str | None, broken: Mapping[str, str] | None = None) -> list:
  """The sequences named in the comma-separated `names` (all when None); ValueError listing unknown names.

  Names in `broken` (sequences that could not be read, name -> reason) are known, not unknown; they are not
  returned (the caller reports them).
  """
  if not names:
    return list(seqs)
  wanted = _split_names(names)
  by_name = {s.name: s for s in seqs}
  known = set(by_name) | set(broken or {})
  unknown = [n for n in wanted if n not in known]
  if unknown:
    raise ValueError(f"unknown sequence(s) {unknown}; available: {sorted(known)[:20]}"
                     f"{' ...' if len(known) > 20 else ''}")
  return [by_name[n] for n in wanted if n in by_name]


def scan_folders(root: str) -> tuple[list, dict[str, str]]:
  """Every subfolder of `root` (hidden ones aside) read with `load_sequence` and named after the subfolder.

  Returns:
    (the sequences read, {folder name: the reader's error} for folders it rejected). ValueError when `root`
    has no subfolder at all.
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f"sequence folder root not found: {root}")
  seqs, broken = [], {}
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if name.startswith(".") or not os.path.isdir(path):
      continue
    try:
      seqs.append(dataclasses.replace(datasets.load_sequence(path), name=name))
    except DATA_ERRORS as e:
      broken[name] = str(e)
  if not seqs and not broken:
    raise ValueError(f"no sequence folder found under {root}")
  return seqs, broken


def format_failures(failed: Mapping[str, str]) -> str:
  """A two-column text table (sequence, reason) of failed sequences."""
  width = max([len("sequence")] + [len(n) for n in failed])
  lines = [f"  {'sequence'.ljust(width)}  reason"]
  lines += [f"  {name.ljust(width)}  {reason}" for name, reason in failed.items()]
  return "\n".join(lines)


def folder_sequences(root: str) -> list:
  """Every subfolder of `root` as a sequence (`scan_folders`); ValueError naming each folder that cannot be read."""
  seqs, broken = scan_folders(root)
  if broken:
    raise ValueError(f"{len(broken)} sequence folder(s) under {root} cannot be read:\n{format_failures(broken)}")
  return seqs


def load_benchmark(dataset: str, root: str, split: str | None = None, names: str | None = None,
                   strict: bool = False) -> tuple[list, dict[str, str]]:
  """The sequences of a benchmark (`load_dataset`) or of a folder of sequence folders (`dataset="folder"`).

  Args:
    dataset: a `cia_jax.data.datasets.FORMATS` name; "folder" reads every subfolder of `root` on its own.
    root, split: the benchmark's root and split.
    names: comma-separated sequence names to keep (None: all).
    strict: raise ValueError naming every folder the reader rejected, instead of returning them.

  Returns:
    (the selected sequences, {name: the reader's error} of the selected folders that could not be read).
  """
  if dataset == "folder":
    seqs, broken = scan_folders(root)
  else:
    seqs, broken = datasets.load_dataset(dataset, root, split), {}
  selected = select_sequences(seqs, names, broken)
  wanted = set(_split_names(names)) or set(broken)
  broken = {n: r for n, r in broken.items() if n in wanted}
  if strict and broken:
    raise ValueError(f"{len(broken)} sequence(s) under {root} cannot be read:\n{format_failures(broken)}")
  return selected, broken


def local_devices(count: int | None = None) -> list:
  """The first `count` local devices (None: all); ValueError naming `--devices` when there are fewer."""
  devices = jax.local_devices()
  if count is None:
    return devices
  if not 1 <= count <= len(devices):
    raise ValueError(f"--devices {count}: this process has {len(devices)} local device(s) "
                     f"({devices[0].platform}); give 1..{len(devices)} or all")
  return devices[:count]


def track_benchmark(*, tracker: str, dataset: str, root: str, results_dir: str, checkpoint: str | None = None,
                    random_weights: bool = False, split: str | None = None, sequences: str | None = None,
                    fmt: str = "raw", overrides: SequenceT[str] = (), batch_sequences: int = 1,
                    max_frames: int | None = None, seed: int = 0, progress: bool = True,
                    fail_fast: bool = False, chunk_frames: int = 1, devices: int | None = None,
                    tcm_checkpoint: str | None = None) -> int:
  """`cia-jax track`: checks, tracks and records a benchmark (see the module docstring); returns the exit code.

  `devices`: how many local devices to use (None: all). With several processes (`jax.distributed` initialised
  by the caller) each tracks its share; the exit code is the same on every process.
  ValueError / FileNotFoundError for bad options, before any work. Otherwise 0 when every selected sequence
  is finished, 1 when some failed (listed in a table and in `<results_dir>/failures.json`).
  """
  settings = apply_overrides(get_settings(tracker), overrides)
  _check_weights(checkpoint, random_weights, settings.use_tcm, tcm_checkpoint)
  if batch_sequences < 1 or chunk_frames < 1:
    raise ValueError(f"--batch-sequences and --chunk-frames must be at least 1, got {batch_sequences}, "
                     f"{chunk_frames}")
  mesh_devices = local_devices(devices)
  seqs, broken = load_benchmark(dataset, root, split, sequences)
  plan = prepare_run(seqs, results_dir, fmt, max_frames, broken, jax.process_index(), jax.process_count())
  # The network is built (30-50 s for a checkpoint) only when the checks leave something to track.
  model = None
  if plan.sequences and not (fail_fast and plan.failed):
    model = load_model(tracker, checkpoint, random_weights, seed, tcm=settings.use_tcm, tcm_checkpoint=tcm_checkpoint)
  summary = finish_run(results_dir, execute_plan(model, settings, plan, results_dir, fmt, seed, progress, fail_fast,
                                                 batch_sequences, chunk_frames, mesh_devices))
  speed = (f"; {summary['frames']} frames in {summary['seconds']:.1f} s, {summary['fps']:.1f} frames/s"
           if summary["frames"] else "")
  hosts = f" on {summary['processes']} processes" if summary["processes"] > 1 else ""
  print(f"tracked {len(summary['tracked'])} sequence(s), skipped {len(summary['skipped'])} finished, "
        f"{len(summary['failed'])} failed{speed}{hosts} -> {results_dir}", flush=True)
  if summary["failed"]:
    print(f"{len(summary['failed'])} sequence(s) failed (listed in {results.failures_path(results_dir)}; "
          f"a rerun retries them):\n{format_failures(summary['failed'])}", file=sys.stderr, flush=True)
    return 1
  return 0
