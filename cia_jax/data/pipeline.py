"""The tf.data training input pipeline: sampler + processing -> batches laid out for the training step.

Sample `i` of a run is a pure function of `(seed, i)` (`load_sample`): the sampler draws its frames with
`sample_rng(seed, i, attempt, 0)`, the processing draws its jitter, flips and proposals with
`sample_rng(seed, i, attempt, 1)`. Hence the same seed gives the same batches whatever the parallelism, and
a run resumed at step t replays exactly (pass `start_step=t`).

Sharding over hosts: host p of P builds its local samples k = 0, 1, 2, ... from the global indices
i = p + k * P, so the hosts' streams are disjoint and together cover 0, 1, 2, ...; the global batch of step t
is the contiguous index range [t * G, (t + 1) * G), G = P * local batch.

Decoding (OpenCV, which releases the GIL) and processing run in one `tf.numpy_function` per sample, mapped
with `num_parallel_calls`; see BENCHMARKS.md ("Input pipeline") for the measured choice against TF-native
decoding. A frame that cannot be read (missing, truncated to nothing, not an image) is skipped: the whole
sample is redrawn with the next `attempt` and the unreadable files are counted in `skipped_images`.
Frames prepared as TFDS data (`cia_jax.data.tfds`) have `tfds:` frame URIs as paths: `load_image` fetches
the record's stored file bytes and decodes them the same way, so both sources give the same batches.

Batch layout (every leaf is a NumPy array with leading axes [D, B] = [local devices, sequences per device];
frames come first inside a sequence):

  train_images        [D, B, Ntr, S, S, 3] float32, normalised RGB crops
  test_images         [D, B, Nte, S, S, 3] float32
  train_box_xywh      [D, B, Ntr, 4] float32, crop pixels
  test_box_xywh       [D, B, Nte, 4] float32, crop pixels
  test_label          [D, B, Nte, f+1, f+1] float32, Gaussian labels (design.md §2.5)
  test_proposals_xywh [D, B, Nte, P, 4] float32, crop pixels
  proposal_iou        [D, B, Nte, P] float32, 'mse' only: regression target 2 IoU - 1 (the reference's name)
  proposal_density    [D, B, Nte, P] float32, 'kl' only
  gt_density          [D, B, Nte, P] float32, 'kl' only
  category_id         [D, B] int32, LaSOT class id or -1
  sample_index        [D, B] int32, global sample index i
  skipped_images      [D, B] int32, unreadable frames skipped while making each sample (sum = per-batch count)
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterator

import cv2
import jax
import numpy as np
import tensorflow as tf

from cia_jax.data.processing import ProcessingConfig, output_specs, process_sample
from cia_jax.data.sampler import DiMPSampler, sample_rng
from cia_jax.data.tfds.reader import read_frame_bytes

_LOG = logging.getLogger(__name__)
_WARNED: set[str] = set()
_WARN_LOCK = threading.Lock()
_MAX_WARNINGS = 100

EXTRA_SPECS: dict[str, tuple[tuple, Any]] = {
    "category_id": ((), np.int32),
    "sample_index": ((), np.int32),
    "skipped_images": ((), np.int32),
}


def load_image(path: str) -> np.ndarray | None:
  """Decode an image file to `[H, W, 3]` uint8 RGB, or None when it is missing or not decodable.

  `path` may also be a TFDS frame URI `tfds:<dir>#<split>/<record>` (`cia_jax.data.tfds.reader`): the
  record's stored file bytes go through the same decoder, so the pixels are identical.
  """
  if path.startswith("tfds:"):
    raw = read_frame_bytes(path)
    if raw is None:
      return None
    data = np.frombuffer(raw, np.uint8)
  else:
    try:
      with open(path, "rb") as f:
        data = np.frombuffer(f.read(), np.uint8)
    except OSError:
      return None
  if data.size == 0:
    return None
  try:
    image = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB)
  except cv2.error:
    return None
  if image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
    return None
  return image


def _warn_unreadable(path: str) -> None:
  with _WARN_LOCK:
    if path in _WARNED or len(_WARNED) >= _MAX_WARNINGS:
      return
    _WARNED.add(path)
  _LOG.warning("skipping unreadable image %s", path)


def load_sample(sampler: DiMPSampler, cfg: ProcessingConfig, seed: int, index: int,
                max_attempts: int = 32) -> dict[str, np.ndarray]:
  """Sample number `index` of a run with `seed`: draw frames, decode them and process them.

  A pure function of (sampler, cfg, seed, index) and the files on disk. When a frame cannot be read, the
  sample is redrawn (`attempt` + 1) and the unreadable files are counted in `skipped_images`.

  Args:
    sampler: the `DiMPSampler`.
    cfg: `ProcessingConfig`.
    seed: non-negative run seed.
    index: non-negative global sample index.
    max_attempts: redraws before giving up (a RuntimeError then; only when the data is mostly unreadable).

  Returns:
    dict of arrays without batch axes: the `process_sample` fields plus category_id, sample_index and
    skipped_images (int32 scalars).
  """
  skipped = 0
  for attempt in range(max_attempts):
    fs = sampler.sample(seed, index, attempt)
    ids = fs.train_frame_ids + fs.test_frame_ids
    images, bad = {}, []
    for fid in dict.fromkeys(ids):  # unique, in order
      path = fs.sequence.frame_paths[fid]
      image = load_image(path)
      if image is None:
        bad.append(path)
      else:
        images[fid] = image
    if bad:
      skipped += len(bad)
      for path in bad:
        _warn_unreadable(path)
      continue
    boxes = fs.sequence.boxes
    out = process_sample(
        [images[i] for i in fs.train_frame_ids], boxes[list(fs.train_frame_ids)],
        [images[i] for i in fs.test_frame_ids], boxes[list(fs.test_frame_ids)],
        sample_rng(seed, index, attempt, stream=1), cfg)
    out["category_id"] = np.int32(fs.category_id)
    out["sample_index"] = np.int32(index)
    out["skipped_images"] = np.int32(skipped)
    return out
  raise RuntimeError(f"load_sample: sample {index} (seed {seed}): no readable frames in {max_attempts} "
                     f"attempts ({skipped} unreadable images); check the dataset files")


def sample_specs(sampler: DiMPSampler, cfg: ProcessingConfig) -> dict[str, tuple[tuple, Any]]:
  """Name -> (shape, dtype) of one sample from `load_sample` (no batch axes)."""
  specs = output_specs(cfg, sampler.config.num_train_frames, sampler.config.num_test_frames)
  specs.update(EXTRA_SPECS)
  return specs


def host_sample_indices(step: int, local_batch: int, process_index: int = 0,
                        process_count: int = 1) -> np.ndarray:
  """Global sample indices `[local_batch]` that host `process_index` uses at training step `step`."""
  k = np.arange(step * local_batch, (step + 1) * local_batch, dtype=np.int64)
  return process_index + k * process_count


def hide_gpus_from_tf() -> None:
  """Keep TensorFlow off accelerators (they belong to JAX)."""
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TF already initialised its devices; nothing to do then
    pass


def _load_sample_op(sampler: DiMPSampler, cfg: ProcessingConfig, seed: int, max_attempts: int):
  """`load_sample` as a TF op: an int64 scalar sample index -> dict of tensors with the `sample_specs` shapes."""
  specs = sample_specs(sampler, cfg)
  names = list(specs)
  dtypes = [tf.as_dtype(np.dtype(d)) for _, d in specs.values()]

  def load(index):
    out = load_sample(sampler, cfg, seed, int(index), max_attempts)
    return tuple(out[name] for name in names)

  def load_tf(index):
    tensors = tf.numpy_function(load, [index], dtypes, stateful=False, name="load_sample")
    out = {}
    for name, t in zip(names, tensors):
      t.set_shape(specs[name][0])
      out[name] = t
    return out

  return load_tf


def make_dataset(sampler: DiMPSampler, cfg: ProcessingConfig, *, seed: int, seqs_per_device: int,
                 num_local_devices: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, start_step: int = 0, num_batches: int | None = None,
                 deterministic: bool = True, num_parallel_calls: int | None = None, prefetch: int = 2,
                 max_attempts: int = 32, opencv_threads: int | None = 1):
  """A `tf.data.Dataset` of training batches laid out `[num_local_devices, seqs_per_device, ...]`.

  Args:
    sampler: the `DiMPSampler` over this run's training sequences.
    cfg: `ProcessingConfig` (e.g. `PROCESSING_PRESETS['cia18']`).
    seed: non-negative data seed; the same seed gives the same batches.
    seqs_per_device: sequences per device B (global batch / total devices).
    num_local_devices: D; default `jax.local_device_count()`.
    process_index, process_count: this host and the number of hosts; default `jax.process_index()` /
      `jax.process_count()`.
    start_step: first training step (a resumed run replays from here).
    num_batches: stop after this many batches (None = endless).
    deterministic: keep the element order fixed under parallel processing (the content of a sample never
      depends on the parallelism).
    num_parallel_calls: parallel `load_sample` calls (None = `tf.data.AUTOTUNE`).
    prefetch: batches prefetched (0 = none; -1 = AUTOTUNE).
    max_attempts: redraws of a sample with unreadable frames.
    opencv_threads: size of OpenCV's own thread pool, set process-wide (`cv2.setNumThreads`); 1 (default)
      keeps OpenCV from spreading each resize over cores that tf.data's parallel calls already use (the
      usual advice for data-loader workers; on 2 cores the CPU time per sample was the same either way, see
      BENCHMARKS.md). None leaves it unchanged.

  Returns:
    A dataset of dicts of tensors (see the module docstring for the fields and shapes).
  """
  hide_gpus_from_tf()
  if opencv_threads is not None:
    cv2.setNumThreads(int(opencv_threads))
  if num_local_devices is None or process_index is None or process_count is None:
    num_local_devices = jax.local_device_count() if num_local_devices is None else num_local_devices
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  for name, value, low in (("seed", seed, 0), ("seqs_per_device", seqs_per_device, 1),
                           ("num_local_devices", num_local_devices, 1), ("process_count", process_count, 1),
                           ("start_step", start_step, 0), ("max_attempts", max_attempts, 1)):
    if int(value) < low:
      raise ValueError(f"make_dataset: {name} must be >= {low}, got {value}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"make_dataset: process_index must be in [0, {process_count}), got {process_index}")
  local_batch = int(num_local_devices) * int(seqs_per_device)
  last_index = (start_step + (num_batches or 0) + 1) * local_batch * process_count
  if num_batches is not None and last_index >= 2**31:
    raise ValueError(f"make_dataset: sample indices would exceed int32 ({last_index})")

  specs = sample_specs(sampler, cfg)
  load_tf = _load_sample_op(sampler, cfg, seed, max_attempts)

  def to_devices(batch):
    return {k: tf.reshape(v, [int(num_local_devices), int(seqs_per_device), *specs[k][0]])
            for k, v in batch.items()}

  ds = tf.data.Dataset.counter(start=int(start_step) * local_batch, dtype=tf.int64)
  ds = ds.map(lambda k: int(process_index) + k * int(process_count))
  ds = ds.map(load_tf, num_parallel_calls=num_parallel_calls or tf.data.AUTOTUNE,
              deterministic=deterministic)
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.map(to_devices)
  if num_batches is not None:
    ds = ds.take(int(num_batches))
  if prefetch:
    ds = ds.prefetch(tf.data.AUTOTUNE if prefetch < 0 else int(prefetch))
  options = tf.data.Options()
  options.deterministic = bool(deterministic)
  return ds.with_options(options)


def make_iterator(sampler: DiMPSampler, cfg: ProcessingConfig, **kwargs) -> Iterator[dict[str, np.ndarray]]:
  """`make_dataset(...)` as an iterator of NumPy batches (same arguments)."""
  return make_dataset(sampler, cfg, **kwargs).as_numpy_iterator()

