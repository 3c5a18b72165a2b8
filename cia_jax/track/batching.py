"""Offline tracking of many sequences at once: lanes, size buckets, frame chunks and the local devices.

A run keeps L = D * K *lanes* busy (K per device, D local devices). Every lane tracks one sequence at a time
and takes the next one as soon as its sequence ends (`schedule`: longest sequences first, each to the lane
that frees up first). One device call advances every lane by C frames (`lax.scan` over a chunk of frames,
`--chunk-frames`); a lane whose sequence ends inside a chunk, or that has nothing to do, is masked on the
host: its outputs are dropped, and its state is replaced by its next sequence's init. A lane that starts a
sequence is initialised before the chunk, one lane after the other, and only the starting lanes pay it.
The filter update inside a step likewise runs lane by lane, each lane its own iteration count
(`tracker._optimize`), so batching never makes a lane run iterations it does not need.

Frames of every size share one batch: they are padded with zeros at the bottom and right to the run's
*bucket* (`bucket_shape`: the largest frame of the run, sides rounded up to a multiple of 64), and each
lane's true size goes to `tracker.init` (`image_sz_yx`), so crops, clamps and borders see the real image.
The tracker's cost does not depend on the frame size (a patch is gathered from it), only the transfer and
the float conversion of the frame do, so one bucket per run costs little and keeps one compiled program.

Lanes are sharded over a 1-D mesh of the local devices (`jax.shard_map`: each device runs its own K lanes,
no communication); frames are decoded by a thread pool and transferred to the devices in a background
thread, a chunk ahead of the one being tracked.

Each sequence's random stream is `fold_in(sequence_key(seed, name), frame)`, whatever lane, device or chunk
it lands in, so boxes do not depend on D, K or C (up to float32 reassociation of differently batched
convolutions).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import heapq
import math
import os
import queue
import threading
import time
import zlib
from typing import Callable, Iterator, NamedTuple, Sequence as SequenceT

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cia_jax.data.frames import read_frame
from cia_jax.track import tracker as trk
from cia_jax.track.params import TrackerSettings

# Frame sides are padded up to a multiple of this (fewer distinct compiled shapes across runs).
BUCKET_MULTIPLE = 64
LANES = "lanes"  # the mesh axis of the lanes

# Errors that come from a sequence's data (a missing or undecodable frame, an annotation that does not fit):
# they fail that sequence, not the run. Anything else (a bug, an XLA error) still stops the run.
DATA_ERRORS = (ValueError, OSError)


def sequence_key(seed: int, name: str):
  """The PRNG key of one sequence: a function of the run seed and the sequence name only."""
  return jax.random.fold_in(jax.random.key(int(seed)), zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF)


def first_box(seq) -> np.ndarray:
  """The initialisation box `[4]` (frame 0's ground truth); ValueError naming the sequence if it is unusable."""
  box = np.asarray(seq.boxes[0], np.float64)
  if not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"sequence {seq.name!r}: the first frame has no valid box ({box.tolist()}); "
                     "cannot initialise the tracker")
  return box


def size_error(path: str, shape: tuple[int, ...], expected: tuple[int, ...], against: str) -> ValueError:
  """The error of a frame `[H, W, 3]` whose size is not the `expected` one of `against` (words)."""
  return ValueError(f"{path}: frame size {shape[1]}x{shape[0]} differs from {against} ({expected[1]}x{expected[0]})")


# ------------------------------------------------------------------------------------------------
# Buckets and the lane schedule (host only).

def bucket_shape(sizes: SequenceT[tuple[int, int]], multiple: int = BUCKET_MULTIPLE) -> tuple[int, int]:
  """The padded frame shape (H, W) of a run: the largest height and width of `sizes`, rounded up to `multiple`."""
  sizes = [tuple(int(v) for v in s) for s in sizes]
  if not sizes:
    raise ValueError("bucket_shape: no frame sizes")
  height = max(s[0] for s in sizes)
  width = max(s[1] for s in sizes)
  return (-(-height // multiple) * multiple, -(-width // multiple) * multiple)


def pad_frame(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """`[h, w, 3]` uint8 -> `[H, W, 3]` with zeros below and right of the image (`shape` = (H, W) >= (h, w))."""
  if image.shape[:2] == tuple(shape):
    return image
  out = np.zeros((shape[0], shape[1]) + image.shape[2:], image.dtype)
  out[:image.shape[0], :image.shape[1]] = image
  return out


class Slot(NamedTuple):
  """One sequence's place in the schedule: `index` into the sequence list, `lane`, first `chunk` (its init
  runs just before that chunk) and `chunks` (the chunks its frames 1.. take, at least 1)."""

  index: int
  lane: int
  chunk: int
  chunks: int


def chunks_needed(length: int, chunk: int) -> int:
  """Chunks of `chunk` frames a sequence of `length` frames takes after its init frame (at least one)."""
  return max(1, math.ceil((length - 1) / chunk))


def schedule(lengths: SequenceT[int], lanes: int, chunk: int) -> list[Slot]:
  """Longest-first list scheduling of sequences onto `lanes`: each sequence, longest first (ties: lower index
  first), goes to the lane that is free first (ties: lower lane). Deterministic; returns slots in that order."""
  free = [(0, lane) for lane in range(lanes)]
  heapq.heapify(free)
  slots = []
  for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
    start, lane = heapq.heappop(free)
    n = chunks_needed(lengths[i], chunk)
    slots.append(Slot(i, lane, start, n))
    heapq.heappush(free, (start + n, lane))
  return slots


# ------------------------------------------------------------------------------------------------
# Device functions.

def lane_mesh(devices: SequenceT | None = None) -> Mesh:
  """A 1-D mesh (axis `LANES`) over `devices` (default: this process's local devices)."""
  devices = list(devices) if devices is not None else jax.local_devices()
  return Mesh(np.asarray(devices), (LANES,))


@functools.lru_cache(maxsize=16)
def lane_fns(settings: TrackerSettings, mesh: Mesh) -> dict[str, Callable]:
  """Jitted lane functions over `mesh` (lanes sharded, model replicated), each called with the model first:

    init(model, state, images [L, H, W, 3], boxes [L, 4], keys [L, 2], sizes [L, 2], start [L]) -> state
    chunk(model, state, images [C, L, H, W, 3], keys [L, 2], frames [C, L])
        -> (state, {box_xywh [C, L, 4], max_score [C, L], flag [C, L]})
    empty(model, images, boxes, keys, sizes) -> a zero state of the lanes (the shapes of `init`'s)

  `keys` are the sequences' key data (`jax.random.key_data(sequence_key(...))`); a lane's frame key is
  `fold_in(key, frame)`, as in a one-sequence run. The state argument is donated.

  `chunk` steps every lane on every frame: a lane past its sequence's end (or idle, or failed) steps on
  whatever it is given and its outputs are dropped on the host. Its state is never read again (the lane's next
  sequence starts with `init`, which replaces it), so no per-frame select of the whole state (the sample memory
  is tens of MB per lane) is needed.
  """

  def init_one(model, image, box, key, size):
    key = jax.random.fold_in(jax.random.wrap_key_data(key), 0)
    return trk.init_impl(model, settings, image, box, key, image_sz_yx=size)

  def vinit(model, images, boxes, keys, sizes):
    return jax.vmap(init_one, in_axes=(None, 0, 0, 0, 0))(model, images, boxes, keys, sizes)

  def init(model, state, images, boxes, keys, sizes, start):
    # One lane after the other (`lax.map`, so each lane's `cond` really skips): only the lanes that start a
    # sequence pay an init; under `vmap` every lane would compute one whenever any lane starts.
    def one(args):
      old, image, box, key, size, go = args
      return jax.lax.cond(go, lambda: init_one(model, image, box, key, size), lambda: old)
    return jax.lax.map(one, (state, images, boxes, keys, sizes, start))

  def chunk(model, state, images, keys, frames):
    def one(st, image, key, frame):
      return trk.step_impl(model, settings, st, image, jax.random.fold_in(jax.random.wrap_key_data(key), frame))

    def body(st, xs):
      image, frame = xs
      new, out = jax.vmap(one)(st, image, keys, frame)
      return new, {k: out[k] for k in ("box_xywh", "max_score", "flag")}

    return jax.lax.scan(body, state, (images, frames))

  lane, per_frame, rep = P(LANES), P(None, LANES), P()
  smap = functools.partial(jax.shard_map, mesh=mesh, check_vma=False)
  init_sm = smap(init, in_specs=(rep, lane, lane, lane, lane, lane, lane), out_specs=lane)
  chunk_sm = smap(chunk, in_specs=(rep, lane, per_frame, lane, per_frame), out_specs=(lane, per_frame))

  def empty(model, images, boxes, keys, sizes):
    shapes = jax.eval_shape(vinit, model, images, boxes, keys, sizes)
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

  return {"init": jax.jit(init_sm, donate_argnums=1), "chunk": jax.jit(chunk_sm, donate_argnums=1),
          "empty": jax.jit(empty, out_shardings=NamedSharding(mesh, lane))}


# ------------------------------------------------------------------------------------------------
# Host side: what each chunk needs, decoded and transferred ahead.

@dataclasses.dataclass
class ChunkInput:
  """The inputs of one chunk, on the devices, and what the host needs to file its outputs.

  Attributes:
    starts: slots whose init runs before this chunk (empty: no init call).
    init: (images, boxes, keys, sizes, start) device arrays of the init call, or None.
    steps: (images, keys, frames) device arrays of the chunk call.
    lanes: lane -> (slot, frame index of each of the C chunk positions, active flags `[C]`).
    errors: sequence index -> the data error found while reading its frames for this chunk.
  """

  starts: list[Slot]
  init: tuple | None
  steps: tuple
  lanes: dict[int, tuple[Slot, np.ndarray, np.ndarray]]
  errors: dict[int, Exception]


class ChunkReader:
  """Builds every chunk's `ChunkInput` in schedule order in a background thread (`depth` chunks ahead).

  Frames are read with `reader` on a pool of `workers` threads, padded to `shape` and put on the mesh. A
  frame that cannot be read, or whose size is not the sequence's, stops that sequence: its error is in the
  chunk's `errors`, its lane is masked from that frame on and its later frames are not read.
  """

  def __init__(self, seqs: SequenceT, lengths: SequenceT[int], sizes: SequenceT[tuple[int, int]],
               slots: SequenceT[Slot], lanes: int, chunk: int, shape: tuple[int, int], seed: int, mesh: Mesh,
               depth: int = 2, workers: int | None = None, reader: Callable[[str], np.ndarray] = read_frame):
    self.seqs, self.lengths, self.sizes, self.slots = seqs, lengths, sizes, slots
    self.num_lanes, self.chunk, self.shape, self.mesh, self.reader = lanes, chunk, tuple(shape), mesh, reader
    self.num_chunks = max((s.chunk + s.chunks for s in slots), default=0)
    self.keys = np.zeros((len(seqs), 2), np.uint32)
    for i, s in enumerate(seqs):
      self.keys[i] = np.asarray(jax.random.key_data(sequence_key(seed, s.name)), np.uint32).reshape(-1)[:2]
    self.failed: dict[int, Exception] = {}  # the producer's own record (which frames to skip)
    self._pool = concurrent.futures.ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1), "frame-read")
    self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._work, daemon=True, name="chunk-prefetch")
    self._thread.start()

  def _read(self, index: int, frame: int) -> np.ndarray:
    seq = self.seqs[index]
    image = self.reader(seq.frame_paths[frame])
    expected = tuple(self.sizes[index])
    if image.shape[:2] != expected:
      against = "the sequence's first frame" if frame else "the size in the frame's header"
      raise size_error(seq.frame_paths[frame], image.shape, expected, against)
    return image

  def _read_all(self, wanted: list[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray | Exception]:
    """(sequence, frame) pairs -> frame or the data error reading it."""
    def read(item):
      try:
        return self._read(*item)
      except DATA_ERRORS as e:
        return e
    return dict(zip(wanted, self._pool.map(read, wanted)))

  def _put(self, array: np.ndarray, spec: P):
    return jax.device_put(array, NamedSharding(self.mesh, spec))

  def build(self, t: int, active_slots: dict[int, Slot]) -> ChunkInput:
    """The input of chunk `t` (`active_slots`: lane -> slot covering chunk t)."""
    L, C, (H, W) = self.num_lanes, self.chunk, self.shape
    starts = [s for s in active_slots.values() if s.chunk == t]
    lanes = {}
    wanted = [(s.index, 0) for s in starts if s.index not in self.failed]
    for lane, s in active_slots.items():
      first = 1 + (t - s.chunk) * C
      frames = np.arange(first, first + C)
      lanes[lane] = (s, frames, frames < self.lengths[s.index])
      wanted += [(s.index, int(f)) for f in frames[frames < self.lengths[s.index]] if s.index not in self.failed]
    got = self._read_all(wanted)
    errors: dict[int, Exception] = {}

    def frame_of(index, frame):
      value = got.get((index, frame))
      if isinstance(value, Exception) and index not in self.failed:
        self.failed[index] = errors[index] = value
      return None if isinstance(value, Exception) or index in self.failed else value

    init = None
    if starts:
      images = np.zeros((L, H, W, 3), np.uint8)
      boxes = np.tile(np.asarray([0.0, 0.0, 1.0, 1.0], np.float32), (L, 1))
      keys = np.zeros((L, 2), np.uint32)
      sizes = np.tile(np.asarray([H, W], np.float32), (L, 1))
      start = np.zeros(L, bool)
      for s in starts:
        image = frame_of(s.index, 0)
        keys[s.lane] = self.keys[s.index]
        if image is None:
          continue
        images[s.lane] = pad_frame(image, self.shape)
        boxes[s.lane] = first_box(self.seqs[s.index])
        sizes[s.lane] = self.sizes[s.index]
        start[s.lane] = True
      init = tuple(self._put(a, P(LANES)) for a in (images, boxes, keys, sizes, start))
    images = np.zeros((C, L, H, W, 3), np.uint8)
    keys = np.zeros((L, 2), np.uint32)
    frame_idx = np.zeros((C, L), np.int32)
    for lane, (s, frames, act) in lanes.items():
      keys[lane] = self.keys[s.index]
      frame_idx[:, lane] = frames
      for c in range(C):
        image = frame_of(s.index, int(frames[c])) if act[c] else None
        if image is None:
          act[c:] = False  # a sequence that failed stays masked; so do frames past its end
          break
        images[c, lane] = pad_frame(image, self.shape)
    steps = (self._put(images, P(None, LANES)), self._put(keys, P(LANES)), self._put(frame_idx, P(None, LANES)))
    return ChunkInput(starts, init, steps, lanes, errors)

  def _work(self):
    by_chunk: dict[int, list[Slot]] = {}
    for s in self.slots:
      by_chunk.setdefault(s.chunk, []).append(s)
    current: dict[int, Slot] = {}
    try:
      for t in range(self.num_chunks):
        for s in by_chunk.get(t, []):
          current[s.lane] = s
        current = {lane: s for lane, s in current.items() if t < s.chunk + s.chunks}
        item = ("ok", self.build(t, dict(current)))
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            pass
        if self._stop.is_set():
          return
      self._queue.put(("done", None))
    except BaseException as e:  # pylint: disable=broad-except  # re-raised in the consumer
      self._queue.put(("err", e))

  def __iter__(self) -> Iterator[ChunkInput]:
    while True:
      kind, item = self._queue.get()
      if kind == "err":
        raise item
      if kind == "done":
        return
      yield item

  def close(self) -> None:
    self._stop.set()
    self._thread.join(timeout=30)
    self._pool.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------------------------------
# The loop.

class LaneResult(NamedTuple):
  """One sequence's outcome: boxes `[T, 4]` xywh (frame 0: the init box), seconds per frame `[T]` (the run's
  wall time shared out over the frames tracked in it), max scores `[T]` and flags `[T]` (NaN / -1 on frame 0),
  and the error that stopped it (None when it finished; otherwise the arrays are incomplete)."""

  boxes: np.ndarray
  times: np.ndarray
  scores: np.ndarray
  flags: np.ndarray
  error: Exception | None = None


class _Outputs:
  """The host side of a run's outputs: fills each sequence's arrays from the chunks' outputs, shares the wall
  time out over the frames, and hands each sequence over when its last chunk is filed."""

  def __init__(self, seqs, lengths, slots, on_frame, on_done, on_compiled):
    self.seqs, self.on_frame, self.on_done, self.on_compiled = seqs, on_frame, on_done, on_compiled
    self.boxes = [np.zeros((m, 4)) for m in lengths]
    self.times = [np.zeros(m) for m in lengths]
    self.scores = [np.full(m, np.nan) for m in lengths]
    self.flags = [np.full(m, -1, np.int32) for m in lengths]
    self.errors: dict[int, Exception] = {}
    self.results: list[LaneResult | None] = [None] * len(seqs)
    self.ends: dict[int, list[Slot]] = {}  # chunk index -> slots ending with it
    for s in slots:
      self.ends.setdefault(s.chunk + s.chunks - 1, []).append(s)
    self.clock = time.perf_counter()

  def file(self, t: int, item: ChunkInput, outs) -> bool:
    """Files chunk `t`'s outputs (waits for them); True when `on_done` asked to stop."""
    outs = jax.tree.map(np.asarray, outs)
    now = time.perf_counter()
    if self.on_compiled is not None:  # the first chunk's outputs: its programs are compiled
      self.on_compiled()
      self.on_compiled = None
    self.errors.update(item.errors)
    cells = []
    for s in item.starts:
      if s.index not in self.errors:
        self.boxes[s.index][0] = first_box(self.seqs[s.index])
        cells.append((s.index, 0))
    for lane, (s, frames, act) in item.lanes.items():
      for c in np.nonzero(act)[0]:
        f = int(frames[c])
        self.boxes[s.index][f] = outs["box_xywh"][c, lane]
        self.scores[s.index][f] = outs["max_score"][c, lane]
        self.flags[s.index][f] = outs["flag"][c, lane]
        cells.append((s.index, f))
    for i, f in cells:
      self.times[i][f] = (now - self.clock) / len(cells)
    self.clock = now
    if self.on_frame is not None and cells:
      self.on_frame(len(cells))
    stop = False
    for s in self.ends.get(t, []):
      i = s.index
      self.results[i] = LaneResult(self.boxes[i], self.times[i], self.scores[i], self.flags[i], self.errors.get(i))
      if self.on_done is not None and self.on_done(i, self.results[i]):
        stop = True
    return stop


def track_lanes(model, settings: TrackerSettings, seqs: SequenceT, lengths: SequenceT[int],
                sizes: SequenceT[tuple[int, int]], *, seed: int = 0, lanes_per_device: int = 1, chunk: int = 1,
                mesh: Mesh | None = None, on_frame: Callable[[int], None] | None = None,
                on_done: Callable[[int, LaneResult], bool | None] | None = None,
                on_compiled: Callable[[], None] | None = None, reader: Callable[[str], np.ndarray] = read_frame
                ) -> list[LaneResult | None]:
  """Tracks `seqs` (the first `lengths[i]` frames of each, true frame sizes `sizes[i]` = (H, W)) on the lanes.

  Args:
    model, settings: the `TrackingModel` and `TrackerSettings`.
    seqs, lengths, sizes: the sequences, frames to track of each, and their frame sizes (from `check_sequence`).
    seed: run seed (`sequence_key`).
    lanes_per_device, chunk: K and C; mesh: the devices (default `lane_mesh()`: every local device).
    on_frame: called with the number of frames each chunk tracked (progress).
    on_done: called with (index, result) as each sequence ends; returning True stops the run after that chunk.
    on_compiled: called once, after the first chunk's outputs arrived (its init and step compiled).
    reader: frame reader (`read_frame`).

  Returns:
    One `LaneResult` per sequence (None for those a stop left untracked).
  """
  mesh = mesh or lane_mesh()
  num_lanes = lanes_per_device * mesh.size
  slots = schedule(lengths, num_lanes, chunk)
  outputs = _Outputs(seqs, lengths, slots, on_frame, on_done, on_compiled)
  if not slots:
    return outputs.results
  fns = lane_fns(settings, mesh)
  model = jax.device_put(model, NamedSharding(mesh, P()))
  chunks = ChunkReader(seqs, lengths, sizes, slots, num_lanes, chunk, bucket_shape(sizes), seed, mesh,
                       reader=reader)
  state, pending, stop = None, [], False
  try:
    for t, item in enumerate(chunks):
      if state is None:  # chunk 0 starts a sequence on every lane it uses
        state = fns["empty"](model, *item.init[:4])
      if item.init is not None:
        state = fns["init"](model, state, *item.init)
      state, outs = fns["chunk"](model, state, *item.steps)
      pending.append((t, item, outs))
      if len(pending) > 1:  # file the previous chunk while the devices run this one
        stop = outputs.file(*pending.pop(0))
        if stop:
          break
    while pending and not stop:
      t, item, outs = pending.pop(0)
      stop = outputs.file(t, item, outs)
  finally:
    chunks.close()
  return outputs.results
