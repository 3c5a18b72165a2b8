"""Reads the prepared TFDS benchmarks back as `Sequence`s that the DiMP sampler and pipeline use unchanged.

`load_tfds_dataset(name, split, data_dir=...)` reads the small `sequences` config (boxes, visibility,
category, frame record numbers) and returns `Sequence`s whose `frame_paths` are frame URIs
`tfds:<frames builder dir>#<split>/<record>`. `cia_jax.data.pipeline.load_image` recognises the scheme and
fetches that one record's encoded bytes from the `frames` config by random access (`as_data_source` on
array_record) before the same `cv2.imdecode` as for files. Hence the sampler draws the same sequence and
frame ids as from the folders, the decoder sees the same bytes, and for the same seed the batches are
bit-identical; a sample reads only its ~6 frame records, never a whole sequence.

`load_sequences(name, split, source=...)` is the config switch: `source="folders"` reads the extracted
benchmark with `cia_jax.data.datasets.load_dataset(name, root, split)`, `source="tfds"` reads the TFDS
data; the reader options (`split_file`, `sequences`, `classes`, `chunks`, `min_size`) mean the same.

Multi-host: by default every host loads all sequences (a few hundred bytes per frame) and
`make_dataset` gives host p of P the global sample indices p, p + P, ...; sample i is a pure function of
(seed, i), so the global batches are the same for any host count, and each host fetches only the frame
records its own samples draw. With `shard_by_host=True` host p keeps only the contiguous block of
sequences `host_sequence_range(n, p, P)`; since frame records are written in sequence order, its frames
are a contiguous record range, i.e. ~1/P of the frame shard files, which it alone opens. The index
sharding of `make_dataset` still applies on top, so host p's stream is a pure function of (seed, p, P)
and the data: deterministic and exactly replayable for a fixed host count, but (unlike the default) not the
same samples as a run on another number of hosts.
"""

from __future__ import annotations

import os
import threading

from etils import epath
import jax
import numpy as np
import tensorflow_datasets as tfds

from cia_jax.data.datasets import load_dataset
from cia_jax.data.datasets import parsing as ann
from cia_jax.data.datasets.base import Sequence
from cia_jax.data.tfds.builders import FRAMES, SEQUENCES, decode_attributes

SCHEME = "tfds:"
SOURCES = ("folders", "tfds")
BENCHMARKS = ("got10k", "lasot", "trackingnet", "coco")
_BUILDER_NAMES = {"got10k": "cia_got10k", "lasot": "cia_lasot", "trackingnet": "cia_trackingnet",
                  "coco": "cia_coco"}
# Reader options each benchmark accepts, as in its folder reader.
_OPTIONS = {
    "got10k": ("split_file", "sequences"),
    "lasot": ("split_file", "classes"),
    "trackingnet": ("chunks", "split_file"),
    "coco": ("min_size",),
}
_VERSION = "1.0.0"

_SOURCE_CACHE: dict[tuple[str, str], object] = {}
_CACHE_LOCK = threading.Lock()


def _absolute(path: str) -> str:
  """Local paths made absolute; URLs (`gs://...`, as on a pod) kept as they are."""
  return path if "://" in path else os.path.abspath(path)


def builder_dir(data_dir: str, name: str, config: str, version: str = _VERSION) -> str:
  """`<data_dir>/cia_<name>/<config>/<version>`, the folder `tfds build` writes."""
  if name not in _BUILDER_NAMES:
    raise ValueError(f"unknown TFDS benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
  return os.path.join(_absolute(data_dir), _BUILDER_NAMES[name], config, version)


def _open(path: str, split: str):
  """The array_record data source of one prepared split (cached per process, thread-safe)."""
  key = (path, split)
  with _CACHE_LOCK:
    source = _SOURCE_CACHE.get(key)
    if source is None:
      builder = tfds.builder_from_directory(path)
      if split not in builder.info.splits:
        raise ValueError(f"TFDS data {path} has no split {split!r}; it has {', '.join(builder.info.splits)}")
      fmt = builder.info.file_format
      if fmt is None or fmt.value != "array_record":
        raise ValueError(f"TFDS data {path} is stored as {fmt and fmt.value}; the pipeline needs random "
                         f"access: rebuild with --file_format=array_record (the builders' default)")
      source = builder.as_data_source(split)
      _SOURCE_CACHE[key] = source
  return source


def _forget(*paths: str) -> None:
  """Drops the cached data sources of these builder dirs (a rebuild replaces their files)."""
  with _CACHE_LOCK:
    for key in [k for k in _SOURCE_CACHE if k[0] in paths]:
      del _SOURCE_CACHE[key]


def frame_uri(frames_dir: str, split: str, record: int) -> str:
  """The `frame_paths` entry of frame record `record` of `split` in the `frames` builder dir."""
  return f"{SCHEME}{frames_dir}#{split}/{int(record)}"


def parse_frame_uri(uri: str) -> tuple[str, str, int]:
  """`tfds:<dir>#<split>/<record>` -> (dir, split, record)."""
  body, sep, tail = uri[len(SCHEME):].rpartition("#")
  split, _, record = tail.rpartition("/")
  if not uri.startswith(SCHEME) or not sep or not split or not record.isdigit():
    raise ValueError(f"not a TFDS frame URI (tfds:<dir>#<split>/<record>): {uri!r}")
  return body, split, int(record)


def read_frame_bytes(uri: str) -> bytes | None:
  """The encoded image bytes of one frame URI, or None when the record cannot be read.

  Like a missing file, an unreadable record is reported by None so that the pipeline skips it and redraws
  the sample; a wrong data dir or split is caught earlier, by `load_tfds_dataset`.
  """
  try:
    path, split, record = parse_frame_uri(uri)
    data = _open(path, split)[record]["image"]
  except (ValueError, IndexError, OSError, KeyError, RuntimeError):
    return None
  return bytes(data)


def host_sequence_range(num_sequences: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, stop) of host `process_index`'s contiguous block of `num_sequences` (blocks differ by <= 1).

  The P blocks are disjoint and cover 0..n-1; host p's block is [floor(p n / P), floor((p + 1) n / P)).
  """
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"host_sequence_range: need 0 <= process_index < process_count, got {process_index}, "
                     f"{process_count}")
  n = int(num_sequences)
  return n * process_index // process_count, n * (process_index + 1) // process_count


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _stored_splits(name: str, split: str | None, available: list[str], kw: dict) -> list[str]:
  """The prepared splits that hold the folder reader's `split` (before its options filter them)."""
  if name == "lasot":
    if split not in (None, "all", "train", "test"):
      raise ValueError(f"LaSOT split must be None, 'all', 'train' or 'test', got {split!r}")
    # A split_file selects among all sequences, as in the folder reader.
    if split in ("train", "test") and kw.get("split_file") is None:
      want = [split]
    else:
      want = ["full"] if "full" in available else ["train", "test"]
  elif name == "got10k":
    want = [{None: "train", "vottrain": "train", "votval": "train"}.get(split, split)]
  else:
    want = [split or "train"]
  missing = [s for s in want if s not in available]
  if missing:
    raise ValueError(f"TFDS {name}: split {split!r} needs the prepared split(s) {', '.join(missing)}; "
                     f"prepared: {', '.join(available)}")
  return want


def load_tfds_dataset(name: str, split: str | None = None, *, data_dir: str, shard_by_host: bool = False,
                      process_index: int | None = None, process_count: int | None = None,
                      **kw) -> list[Sequence]:
  """Reads one prepared benchmark split as `Sequence`s with TFDS frame URIs.

  Args:
    name: "got10k", "lasot", "trackingnet" or "coco".
    split: as for the folder reader (got10k train/val/test/vottrain/votval; lasot train/test/all;
      trackingnet train/test; coco train/val); None = the reader's default.
    data_dir: the TFDS data dir given to `tfds build --data_dir`.
    shard_by_host: keep only this host's contiguous block of the sequences (see the module docstring).
    process_index, process_count: this host and the number of hosts (default `jax.process_index()` /
      `jax.process_count()`); only used with `shard_by_host`.
    **kw: the folder reader's options: got10k `split_file`, `sequences`; lasot `split_file`, `classes`;
      trackingnet `chunks`, `split_file`; coco `min_size` (>= the build's 2 px).

  Returns:
    The sequences in the folder reader's order: `boxes` `[T, 4]` xywh pixels, `visible` `[T]`, `category`,
    `attributes` as the folder reader gives them, and `frame_paths` = frame URIs.

  Raises:
    FileNotFoundError: the data is not prepared (names the expected folder and the build command).
    ValueError: unknown benchmark, split or option.
  """
  if name not in _BUILDER_NAMES:
    raise ValueError(f"unknown TFDS benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
  unknown = set(kw) - set(_OPTIONS[name])
  if unknown:
    raise ValueError(f"TFDS {name}: unknown option(s) {', '.join(sorted(unknown))}; accepted: "
                     f"{', '.join(_OPTIONS[name])}")
  if name == "got10k" and split in ("vottrain", "votval") and kw.get("split_file") is None:
    raise ValueError(f"GOT-10k split {split!r} needs split_file= (a list of train-sequence ids)")
  meta_dir = builder_dir(data_dir, name, SEQUENCES)
  frames_dir = builder_dir(data_dir, name, FRAMES)
  for d in (meta_dir, frames_dir):
    if not epath.Path(d, "dataset_info.json").exists():  # local or gs:// alike
      raise FileNotFoundError(
          f"TFDS {name} not prepared: {d} missing; build it with `cia-jax tfds-build --dataset {name} "
          f"--manual_dir <{name} root> --data_dir {data_dir}`")
  _forget(meta_dir, frames_dir)  # read what is on disk now, also after a rebuild in this process
  available = list(tfds.builder_from_directory(meta_dir).info.splits)
  stored_splits = _stored_splits(name, split, available, kw)
  seqs, chunks, folders = [], [], []
  for stored in stored_splits:
    meta = _open(meta_dir, stored)
    examples = [meta[i] for i in range(len(meta))]
    # Frame records are numbered densely 0..N-1 over the split's distinct files: both configs must agree.
    n_frames = len(_open(frames_dir, stored))
    n_used = 1 + max((int(ex["frame_records"].max()) for ex in examples if len(ex["frame_records"])), default=-1)
    if n_used != n_frames:
      raise ValueError(f"TFDS {name} split {stored!r}: the sequences config refers to {n_used} frame records, "
                       f"the frames config holds {n_frames}; they were built from different data: rebuild "
                       f"both (`cia-jax tfds-build --dataset {name} ...`)")
    for ex in examples:
      uris = tuple(frame_uri(frames_dir, stored, r) for r in ex["frame_records"])
      seqs.append(Sequence(_text(ex["name"]), uris, ex["boxes"], ex["visible"],
                           _text(ex["category"]) or None, _text(ex["dataset"]),
                           decode_attributes(_text(ex["attributes"]))))
      # TrackingNet's chunk, for `chunks=`: the first frame's path is TRAIN_<k>/frames/...
      first = _text(ex["frame_files"][0]) if len(ex["frame_files"]) else ""
      chunks.append(first.split("/")[0])
      folders.append(os.path.dirname(os.path.dirname(first)))  # LaSOT: <class>/<class>-<n>
  if len(stored_splits) > 1:
    # LaSOT train + test: back to the folder reader's natural order of <class>/<sequence> folders.
    order = sorted(range(len(seqs)), key=lambda i: [ann.natural_key(p) for p in folders[i].split("/")])
    seqs, chunks = [seqs[i] for i in order], [chunks[i] for i in order]
  seqs = _apply_options(name, split, seqs, chunks, kw)
  if shard_by_host:
    if process_index is None or process_count is None:
      process_index = jax.process_index() if process_index is None else process_index
      process_count = jax.process_count() if process_count is None else process_count
    start, stop = host_sequence_range(len(seqs), int(process_index), int(process_count))
    seqs = seqs[start:stop]
  return seqs


def _apply_options(name: str, split: str | None, seqs: list[Sequence], chunks: list[str],
                   kw: dict) -> list[Sequence]:
  """The folder readers' selection options, applied in their order."""
  keep = [True] * len(seqs)
  names = [s.name for s in seqs]
  if kw.get("split_file") is not None:
    listed = set(ann.read_list(kw["split_file"]) if name == "trackingnet"
                 else ann.read_split_file(kw["split_file"], names))
    keep = [k and n in listed for k, n in zip(keep, names)]
  if kw.get("sequences") is not None:
    wanted = set(kw["sequences"])
    keep = [k and n in wanted for k, n in zip(keep, names)]
  if kw.get("classes") is not None:
    wanted = set(kw["classes"])
    keep = [k and s.category in wanted for k, s in zip(keep, seqs)]
  if kw.get("min_size") is not None:
    m = float(kw["min_size"])
    keep = [k and bool(s.boxes[0, 2] >= m and s.boxes[0, 3] >= m) for k, s in zip(keep, seqs)]
  order = list(range(len(seqs)))
  if kw.get("chunks") is not None and split != "test":  # the folder reader ignores chunks for TEST
    # Only the chunks given, walked in the order given (as the folder reader does).
    rank = {f"TRAIN_{int(c)}": i for i, c in reversed(list(enumerate(kw["chunks"])))}
    keep = [k and c in rank for k, c in zip(keep, chunks)]
    order = sorted(order, key=lambda i: rank.get(chunks[i], -1))  # stable: reader order within a chunk
  return [seqs[i] for i in order if keep[i]]


def load_sequences(name: str, split: str | None = None, *, source: str = "folders", root: str | None = None,
                   data_dir: str | None = None, **kw) -> list[Sequence]:
  """The input switch of the training config: the same sequences from the raw folders or from TFDS.

  Args:
    name: benchmark ("got10k", "lasot", "trackingnet", "coco"; with `source="folders"` any reader name).
    split: the benchmark split, as for the folder readers.
    source: "folders" (read `root`) or "tfds" (read `data_dir`).
    root: the extracted benchmark (source "folders").
    data_dir: the TFDS data dir (source "tfds").
    **kw: reader options (`split_file`, `sequences`, `classes`, `chunks`, `min_size`; with "tfds" also
      `shard_by_host`, `process_index`, `process_count`).

  Returns:
    `Sequence`s in the folder reader's order; a `DiMPSampler` over either list draws the same samples.
  """
  if source == "folders":
    if root is None:
      raise ValueError(f"load_sequences({name!r}): source 'folders' needs root= (the extracted benchmark)")
    return load_dataset(name, root, split, **kw)
  if source == "tfds":
    if data_dir is None:
      raise ValueError(f"load_sequences({name!r}): source 'tfds' needs data_dir= (the TFDS data dir)")
    return load_tfds_dataset(name, split, data_dir=data_dir, **kw)
  raise ValueError(f"load_sequences({name!r}): source must be one of {SOURCES}, got {source!r}")


def sequence_frame_records(seq: Sequence) -> np.ndarray:
  """`[T]` int64 frame record numbers of a sequence loaded by `load_tfds_dataset`."""
  return np.asarray([parse_frame_uri(p)[2] for p in seq.frame_paths], np.int64)


def _same(x, y) -> bool:
  """Equality of attribute values: dicts by key, arrays by value and dtype, the rest by ==."""
  if isinstance(x, dict) or isinstance(y, dict):
    return isinstance(x, dict) and isinstance(y, dict) and set(x) == set(y) and all(_same(x[k], y[k]) for k in x)
  if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
    return (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == y.dtype
            and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"))
  return x == y


def compare_with_folders(name: str, root: str, data_dir: str, split: str | None = None,
                         frames_per_sequence: int | None = 2) -> list[str]:
  """Differences between the folder reader's view of `root` and the TFDS data (empty list = identical).

  Compares names and order, boxes, visibility, category, attributes and the stored bytes of the first
  `frames_per_sequence` frames of each sequence against the files (None = every frame).
  """
  raw = load_dataset(name, root, split)
  prepared = load_tfds_dataset(name, split, data_dir=data_dir)
  if [s.name for s in raw] != [s.name for s in prepared]:
    return [f"{name}/{split}: sequence names or order differ ({len(raw)} in the folders, {len(prepared)} in TFDS)"]
  out = []
  for a, b in zip(raw, prepared):
    if not (np.array_equal(a.boxes, b.boxes, equal_nan=True) and np.array_equal(a.visible, b.visible)):
      out.append(f"{a.name}: boxes or visibility differ")
    if (a.category, a.dataset) != (b.category, b.dataset):
      out.append(f"{a.name}: category/dataset {a.category}/{a.dataset} vs {b.category}/{b.dataset}")
    if not _same(a.attributes, b.attributes):
      out.append(f"{a.name}: attributes differ")
    for path, uri in list(zip(a.frame_paths, b.frame_paths))[:frames_per_sequence]:
      try:
        with open(path, "rb") as f:
          data = f.read()
      except OSError:
        data = b""
      if read_frame_bytes(uri) != data:
        out.append(f"{a.name}: frame {path} differs from its record ({uri})")
  return out


def compare_splits_with_folders(name: str, root: str, data_dir: str,
                                frames_per_sequence: int | None = 2) -> dict[str, list[str]]:
  """`compare_with_folders` for every prepared split of a benchmark: split -> its differences (empty = same).

  The prepared split `full` (LaSOT without split files) is compared as the folder reader's split "all".
  """
  splits = tfds.builder_from_directory(builder_dir(data_dir, name, SEQUENCES)).info.splits
  return {split: compare_with_folders(name, root, data_dir, "all" if split == "full" else split,
                                      frames_per_sequence) for split in splits}
