"""`cia-jax track`: run a tracker over a benchmark (or folders of sequences) and write result files.

    cia-jax track --tracker cia18 --checkpoint runs/cia18 --dataset otb --root /data/OTB100 --results res/cia18
    cia-jax track --tracker dimp18 --random-weights --dataset folder --root ../shared/data/real --results /tmp/r \\
        --set target_not_found_threshold=0 --batch-sequences 4

Result layouts (`--format`):
  raw          `<results>/<seq>.txt`, one `x,y,w,h` line per frame, and `<seq>_time.txt` (seconds per frame);
               what `cia-jax evaluate` and pytracking's analysis read.
  got10k       the GOT-10k toolkit / server layout: `<results>/<seq>/<seq>_001.txt` and `<seq>/<seq>_time.txt`.
  trackingnet  the TrackingNet server layout: `<results>/<seq>.txt` (comma-separated `x,y,w,h`); zip the folder's
               .txt files to submit.
Files are written atomically (temporary name, then rename) once a sequence is complete, so a run that is
killed never leaves a partial result; a finished sequence (result file with one line per frame) is skipped,
which makes runs resumable.

Batched offline tracking (`--batch-sequences K`): sequences with the same frame size are tracked K at a time
in lockstep with `jax.vmap` over the tracker state; a sequence that ends early keeps being fed its last frame
(its extra outputs are dropped). The random stream of a sequence depends only on `--seed` and the sequence
name, so K > 1 gives the same boxes as K = 1.

Frames are decoded (OpenCV) in a background thread ahead of the tracker.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
import zlib
from typing import Any, Callable, Iterable, Iterator, Sequence as SequenceT

import numpy as np

RESULT_FORMATS = ("raw", "got10k", "trackingnet")
TRACKERS = ("dimp18", "superdimp", "cia18", "cia50")


# ------------------------------------------------------------------------------------------------
# Frames and result files.

def read_frame(path: str) -> np.ndarray:
  """Decodes one frame to `[H, W, 3]` uint8 RGB; FileNotFoundError / ValueError naming the file otherwise.

  The training pipeline's decoder (`cia_jax.data.pipeline.load_image`: OpenCV, as the reference; also reads
  TFDS frame URIs), but failing loudly: a benchmark frame that cannot be read must not be skipped silently.
  """
  from cia_jax.data.pipeline import load_image  # pylint: disable=g-import-not-at-top

  if not path.startswith("tfds:") and not os.path.isfile(path):
    raise FileNotFoundError(f"frame not found: {path}")
  image = load_image(path)
  if image is None:
    raise ValueError(f"frame could not be decoded as an image: {path}")
  return image


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


def result_paths(results_dir: str, seq_name: str, fmt: str = "raw") -> tuple[str, str]:
  """(box file, time file) of one sequence in layout `fmt` (see the module docstring)."""
  if fmt not in RESULT_FORMATS:
    raise ValueError(f"unknown result format {fmt!r}; expected one of {RESULT_FORMATS}")
  if fmt == "got10k":
    d = os.path.join(results_dir, seq_name)
    return os.path.join(d, f"{seq_name}_001.txt"), os.path.join(d, f"{seq_name}_time.txt")
  return os.path.join(results_dir, f"{seq_name}.txt"), os.path.join(results_dir, f"{seq_name}_time.txt")


def is_finished(results_dir: str, seq_name: str, num_frames: int, fmt: str = "raw") -> bool:
  """True when the sequence's box file exists with exactly `num_frames` non-empty lines."""
  box_path, _ = result_paths(results_dir, seq_name, fmt)
  if not os.path.isfile(box_path):
    return False
  with open(box_path, encoding="utf-8") as f:
    return sum(1 for line in f if line.strip()) == num_frames


def _atomic_write(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def write_results(results_dir: str, seq_name: str, boxes_xywh: np.ndarray, times: np.ndarray,
                  fmt: str = "raw") -> tuple[str, str]:
  """Writes `[T, 4]` boxes and `[T]` per-frame seconds of one sequence; returns the two paths.

  The time file is written first and the box file last, so a box file (what `is_finished` checks) only exists
  for complete sequences.
  """
  boxes_xywh = np.asarray(boxes_xywh, np.float64)
  if boxes_xywh.ndim != 2 or boxes_xywh.shape[1] != 4:
    raise ValueError(f"write_results({seq_name!r}): boxes must be [T, 4], got {boxes_xywh.shape}")
  box_path, time_path = result_paths(results_dir, seq_name, fmt)
  _atomic_write(time_path, "".join(f"{t:.6f}\n" for t in np.asarray(times, np.float64)))
  _atomic_write(box_path, "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in boxes_xywh))
  return box_path, time_path


def sequence_key(seed: int, name: str):
  """The PRNG key of one sequence: a function of the run seed and the sequence name only."""
  import jax  # pylint: disable=g-import-not-at-top

  return jax.random.fold_in(jax.random.key(int(seed)), zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF)


def first_box(seq) -> np.ndarray:
  """The initialisation box `[4]` (frame 0's ground truth); ValueError naming the sequence if it is unusable."""
  box = np.asarray(seq.boxes[0], np.float64)
  if not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"sequence {seq.name!r}: the first frame has no valid box ({box.tolist()}); "
                     "cannot initialise the tracker")
  return box


# ------------------------------------------------------------------------------------------------
# Tracking.

def _tracker_fns(model, settings):
  """Single-sequence and batched (`vmap`, jitted) `init` / `step`, each called with the model first.

  The model is an argument, not a closure constant, so its weights are not baked into the compiled code.
  """
  import jax  # pylint: disable=g-import-not-at-top

  from cia_jax.track import tracker as trk  # pylint: disable=g-import-not-at-top

  def init(m, image, box, key):
    return trk.init(m, settings, image, box, key)

  def step(m, state, image, key):
    return trk.step(m, settings, state, image, key)

  return {"init": init, "step": step, "vinit": jax.jit(jax.vmap(init, in_axes=(None, 0, 0, 0))),
          "vstep": jax.jit(jax.vmap(step, in_axes=(None, 0, 0, 0)))}


def _frame_key(seq_key, frame: int):
  import jax  # pylint: disable=g-import-not-at-top

  return jax.random.fold_in(seq_key, frame)


def track_sequence(model, settings, seq, seed: int = 0, max_frames: int | None = None,
                   fns: dict | None = None, frames: Iterable[np.ndarray] | None = None,
                   on_frame: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Tracks one sequence from its first ground-truth box -> (boxes `[T, 4]` xywh, seconds per frame `[T]`).

  Frame 0's box is the initialisation box (as every benchmark protocol expects); its time is the init time.
  """
  import jax  # pylint: disable=g-import-not-at-top

  fns = fns or _tracker_fns(model, settings)
  n = len(seq) if max_frames is None else min(len(seq), int(max_frames))
  frames = iter(frames) if frames is not None else prefetch_frames(seq.frame_paths[:n])
  key = sequence_key(seed, seq.name)
  box0 = first_box(seq)
  boxes = np.zeros((n, 4))
  times = np.zeros(n)
  state = None
  for i in range(n):
    image = next(frames)
    t0 = time.perf_counter()
    if i == 0:
      state = fns["init"](model, image, box0.astype(np.float32), _frame_key(key, 0))
      jax.block_until_ready(state)
      boxes[0] = box0
    else:
      state, out = fns["step"](model, state, image, _frame_key(key, i))
      boxes[i] = np.asarray(out["box_xywh"])
    times[i] = time.perf_counter() - t0
    if on_frame is not None:
      on_frame(1)
  return boxes, times


def track_batch(model, settings, seqs: SequenceT, seed: int = 0, max_frames: int | None = None,
                fns: dict | None = None,
                on_frame: Callable[[int], None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
  """Tracks K sequences of equal frame size in lockstep (`vmap`); same boxes as `track_sequence` on each.

  Returns one (boxes `[T_k, 4]`, seconds per frame `[T_k]`) per sequence; the time of a lockstep frame is
  split evenly over the sequences still running.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  fns = fns or _tracker_fns(model, settings)
  lengths = [len(s) if max_frames is None else min(len(s), int(max_frames)) for s in seqs]
  streams = [prefetch_frames(s.frame_paths[:n]) for s, n in zip(seqs, lengths)]
  keys = [sequence_key(seed, s.name) for s in seqs]
  boxes = [np.zeros((n, 4)) for n in lengths]
  times = [np.zeros(n) for n in lengths]
  last: list[Any] = [None] * len(seqs)
  state = None
  for i in range(max(lengths)):
    images = []
    for k, stream in enumerate(streams):
      if i < lengths[k]:
        last[k] = next(stream)
      images.append(last[k])
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
      raise ValueError(f"track_batch: sequences {[s.name for s in seqs]} have different frame sizes {shapes}; "
                       "batch only sequences of one frame size")
    images = jnp.asarray(np.stack(images))
    frame_keys = jnp.stack([_frame_key(k, min(i, n - 1)) for k, n in zip(keys, lengths)])
    t0 = time.perf_counter()
    if i == 0:
      box0 = jnp.asarray(np.stack([first_box(s) for s in seqs]).astype(np.float32))
      state = fns["vinit"](model, images, box0, frame_keys)
      jax.block_until_ready(state)
      out_boxes = np.asarray(box0)
    else:
      # A finished sequence is fed its last frame again; its state and outputs are simply not used.
      state, out = fns["vstep"](model, state, images, frame_keys)
      out_boxes = np.asarray(out["box_xywh"])
    dt = time.perf_counter() - t0
    running = [k for k, n in enumerate(lengths) if i < n]
    for k in running:
      boxes[k][i] = out_boxes[k]
      times[k][i] = dt / len(running)
    if on_frame is not None:
      on_frame(len(running))
  return list(zip(boxes, times))


def frame_size(seq) -> tuple[int, int]:
  """(height, width) of a sequence's first frame, from the image header (no full decode)."""
  from cia_jax.evaluation.report import _image_size  # pylint: disable=g-import-not-at-top

  size = _image_size(seq)
  if size is None:
    h, w = read_frame(seq.frame_paths[0]).shape[:2]
    return int(h), int(w)
  return int(size[1]), int(size[0])


def batch_groups(seqs: SequenceT, k: int) -> list[list]:
  """Sequences grouped by frame size, in chunks of at most `k` (order kept within a size)."""
  by_size: dict[tuple[int, int], list] = {}
  for s in seqs:
    by_size.setdefault(frame_size(s), []).append(s)
  return [group[i:i + k] for group in by_size.values() for i in range(0, len(group), k)]


def run_benchmark(model, settings, seqs: SequenceT, results_dir: str, fmt: str = "raw", seed: int = 0,
                  batch_sequences: int = 1, max_frames: int | None = None, progress: bool = True) -> dict:
  """Tracks every unfinished sequence of `seqs` and writes its results; returns a small summary dict.

  Keys: `tracked` / `skipped` (sequence names), `frames`, `seconds` (tracking time of the tracked frames,
  init included), `fps`.
  """
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top

  if batch_sequences < 1:
    raise ValueError(f"batch_sequences must be >= 1, got {batch_sequences}")
  lengths = {s.name: len(s) if max_frames is None else min(len(s), int(max_frames)) for s in seqs}
  todo = [s for s in seqs if not is_finished(results_dir, s.name, lengths[s.name], fmt)]
  skipped = [s.name for s in seqs if s not in todo]
  for s in todo:
    first_box(s)  # fail before any tracking, naming the sequence
  fns = _tracker_fns(model, settings)
  bar = tqdm(total=sum(lengths[s.name] for s in todo), unit="frame", disable=not progress, desc="track")
  seconds, frames = 0.0, 0

  def done(seq, boxes, times):
    nonlocal seconds, frames
    write_results(results_dir, seq.name, boxes, times, fmt)
    seconds += float(np.sum(times))
    frames += len(times)
    bar.set_postfix(seq=seq.name, fps=f"{frames / max(seconds, 1e-9):.1f}")

  groups = batch_groups(todo, batch_sequences) if batch_sequences > 1 else [[s] for s in todo]
  for group in groups:
    if len(group) == 1:
      boxes, times = track_sequence(model, settings, group[0], seed, max_frames, fns=fns, on_frame=bar.update)
      done(group[0], boxes, times)
    else:
      for s, (boxes, times) in zip(group, track_batch(model, settings, group, seed, max_frames, fns=fns,
                                                      on_frame=bar.update)):
        done(s, boxes, times)
  bar.close()
  return {"tracked": [s.name for s in todo], "skipped": skipped, "frames": frames, "seconds": seconds,
          "fps": frames / seconds if seconds else float("nan")}


# ------------------------------------------------------------------------------------------------
# Models and sequences for the CLI.

def load_model(tracker_name: str, checkpoint: str | None, random_weights: bool, seed: int = 0):
  """A `TrackingModel` from a checkpoint (training workdir or converted), or random weights when asked."""
  if not checkpoint and not random_weights:
    raise ValueError("no --checkpoint given: refusing to track with random weights "
                     "(pass --random-weights for tests and benchmarks)")
  import jax  # pylint: disable=g-import-not-at-top

  from cia_jax.models.cia import build_model  # pylint: disable=g-import-not-at-top
  from cia_jax.models.presets import init_variables, model_kwargs  # pylint: disable=g-import-not-at-top
  from cia_jax.track.tracker import TrackingModel  # pylint: disable=g-import-not-at-top

  if checkpoint:
    from cia_jax.checkpoints import load_for_tracking  # pylint: disable=g-import-not-at-top

    net, variables, _ = load_for_tracking(checkpoint)
    return TrackingModel(net=net, variables=variables)
  net = build_model(model_kwargs(tracker_name))
  return TrackingModel(net=net, variables=init_variables(net, jax.random.key(seed)))


def select_sequences(seqs: SequenceT, names: str | None) -> list:
  """The sequences named in the comma-separated `names` (all when None); ValueError listing unknown names."""
  if not names:
    return list(seqs)
  wanted = [n.strip() for n in names.split(",") if n.strip()]
  by_name = {s.name: s for s in seqs}
  unknown = [n for n in wanted if n not in by_name]
  if unknown:
    raise ValueError(f"unknown sequence(s) {unknown}; available: {sorted(by_name)[:20]}"
                     f"{' ...' if len(by_name) > 20 else ''}")
  return [by_name[n] for n in wanted]


def folder_sequences(root: str) -> list:
  """Every subfolder of `root` that `load_sequence` recognises, named after the subfolder."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  from cia_jax.data.datasets import load_sequence  # pylint: disable=g-import-not-at-top

  out = []
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if not os.path.isdir(path):
      continue
    try:
      seq = load_sequence(path)
    except (ValueError, FileNotFoundError):
      continue
    if len(seq):
      out.append(dataclasses.replace(seq, name=name))
  if not out:
    raise ValueError(f"--dataset folder: no sequence folder found under {root}")
  return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax track`."""
  parser.add_argument("--tracker", required=True, choices=TRACKERS, help="tracker parameter preset")
  parser.add_argument("--checkpoint", default=None,
                      help="training workdir or converted checkpoint (cia-jax convert) holding the network")
  parser.add_argument("--random-weights", action="store_true",
                      help="track with a randomly initialised network (tests and benchmarks only)")
  parser.add_argument("--dataset", required=True,
                      help="otb, lasot, got10k, trackingnet, uav, nfs, vot, tnl2k, dtb70 or folder")
  parser.add_argument("--root", required=True, help="dataset root (for folder: a folder of sequence folders)")
  parser.add_argument("--split", default=None, help="dataset split (e.g. val / test for GOT-10k)")
  parser.add_argument("--sequences", default=None, help="comma-separated sequence names (default: all)")
  parser.add_argument("--results", required=True, help="output directory for the result files")
  parser.add_argument("--format", default="raw", choices=RESULT_FORMATS, help="result file layout")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a tracker setting (repeatable), e.g. --set target_not_found_threshold=0")
  parser.add_argument("--batch-sequences", type=int, default=1, metavar="K",
                      help="track K sequences of equal frame size in lockstep (vmap)")
  parser.add_argument("--max-frames", type=int, default=None, help="track only the first N frames")
  parser.add_argument("--seed", type=int, default=0, help="seed of the augmentation / IoU-Net randomness")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
  """`cia-jax track`."""
  try:
    from cia_jax.track.params import apply_overrides, get_settings  # pylint: disable=g-import-not-at-top

    settings = apply_overrides(get_settings(args.tracker), args.set)
    if args.dataset == "folder":
      seqs = folder_sequences(args.root)
    else:
      from cia_jax.data.datasets import load_dataset  # pylint: disable=g-import-not-at-top

      seqs = load_dataset(args.dataset, args.root, args.split)
    seqs = select_sequences(seqs, args.sequences)
    model = load_model(args.tracker, args.checkpoint, args.random_weights, args.seed)
    summary = run_benchmark(model, settings, seqs, args.results, fmt=args.format, seed=args.seed,
                            batch_sequences=args.batch_sequences, max_frames=args.max_frames,
                            progress=not args.no_progress)
  except (ValueError, FileNotFoundError) as e:
    print(f"cia-jax track: error: {e}", file=sys.stderr)
    return 2
  print(f"tracked {len(summary['tracked'])} sequence(s), skipped {len(summary['skipped'])} finished; "
        f"{summary['frames']} frames at {summary['fps']:.1f} fps -> {args.results}")
  return 0
