"""TFDS builders for the training benchmarks: GOT-10k, LaSOT, TrackingNet and COCO-as-sequences.

Every builder reads the extracted benchmark through the folder readers of `cia_jax.data.datasets` (so the
boxes, visibility and categories are the readers' own, parsed once) and writes two builder configs:

* `sequences`: one example per sequence (the logical example of the issue): `name`, `dataset`, `category`
  ("" = none), `boxes` `[T, 4]` float64 xywh pixels (NaN = no box), `visible` `[T]` bool, `frame_files`
  `[T]` (paths relative to the manual dir), `frame_records` `[T]` int64 (record numbers of the frames in the
  `frames` config, same split) and `attributes` (the reader's extra per-sequence data as JSON);
* `frames`: one example per distinct frame file: `image` (the file's encoded bytes, unchanged) and `file`.

Why two configs rather than one example holding all frames: the DiMP sampler needs 6 frames of a sequence
per sample, and a LaSOT sequence holds 2000+ frames of 1280x720 (~200 MB of JPEG); with per-frame records a
sample reads ~6 small records instead of deserialising a whole sequence. The metadata (a few hundred bytes
per frame) is small enough for every host to hold. COCO images with several annotations are stored once.

The JPEG bytes are stored as read from disk, never re-encoded: `cia_jax.data.pipeline.load_image` decodes
them with the same `cv2.imdecode` call as the files, so pixels and hence batches are bit-identical.

Deterministic layout: the builders set `disable_shuffling`; record r of a split is written with key
`r * (2**128 // N)` (N = records in the split). The TFDS writer sorts by key, so the record order is the
folder reader's order and record numbers are stable, and spreading the keys over the 128-bit key space
keeps the writer's on-disk buckets (1000 key ranges, each sorted in memory) at ~1/1000 of the data each, where
small integer keys would all fall into one bucket. Shard boundaries follow from the sizes (or
`DownloadConfig(num_shards=...)`), so the same input gives the same shards.

The default file format is `array_record` (random access via `as_data_source`, which the sampler needs).

Build (synthetic or real data) with any of

  cia-jax tfds-build --dataset got10k --manual_dir /data/got10k --data_dir /data/tfds
  python -m cia_jax.data.tfds build cia_got10k --imports cia_jax.data.tfds.builders \
      --manual_dir /data/got10k --data_dir /data/tfds
  tfds build cia_got10k --imports cia_jax.data.tfds.builders --manual_dir ... --data_dir ...

(the last needs apache_beam installed: TFDS 4.9.10's `tfds` script imports it at start-up; the second is the
same `build` command without that import). Preparation is one pass over the files in one process.

Splits: GOT-10k train/val/test (the folders present); LaSOT train/test when `testing_set.txt` or
`training_set.txt` is in the manual dir, else `full` (every sequence; TFDS reserves the name `all`);
TrackingNet train (all `TRAIN_<k>` chunks) and test (`TEST`); COCO train/val (2017 annotations present).
"""

from __future__ import annotations

import json
import logging
import os
import re

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from cia_jax.data.datasets import load_dataset
from cia_jax.data.datasets.base import Sequence

_LOG = logging.getLogger(__name__)

SEQUENCES = "sequences"
FRAMES = "frames"
VERSION = "1.0.0"
_KEY_SPACE = 2**128  # TFDS hashes keys to 128 bits; with disable_shuffling it uses ours in that range.

_MANUAL = """\
Point `--manual_dir` at the extracted benchmark, in the layout its folder reader in
`cia_jax.data.datasets` documents ({layout}). Nothing is downloaded."""


def sequence_features() -> tfds.features.FeaturesDict:
  """Feature spec of a `sequences` example (one per sequence; T frames)."""
  return tfds.features.FeaturesDict({
      "name": tfds.features.Text(),
      "dataset": tfds.features.Text(),
      "category": tfds.features.Text(),  # "" when the benchmark gives none
      "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float64),  # xywh, 0-based pixels
      "visible": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
      "frame_files": tfds.features.Tensor(shape=(None,), dtype=np.str_),
      "frame_records": tfds.features.Tensor(shape=(None,), dtype=np.int64),
      "attributes": tfds.features.Text(),  # JSON, see `encode_attributes`
  })


def frame_features() -> tfds.features.FeaturesDict:
  """Feature spec of a `frames` example (one per distinct frame file)."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # the file's bytes, not re-encoded
      "file": tfds.features.Text(),
  })


def _to_json(value):
  if isinstance(value, np.ndarray):
    return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
  if isinstance(value, dict):
    return {str(k): _to_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_json(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def _from_json(value):
  if isinstance(value, dict):
    if "__ndarray__" in value:
      return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
    return {k: _from_json(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_from_json(v) for v in value]
  return value


def encode_attributes(attributes: dict) -> str:
  """`Sequence.attributes` -> JSON text; NumPy arrays keep their dtype (`decode_attributes` inverts it)."""
  return json.dumps(_to_json(attributes), sort_keys=True)


def decode_attributes(text: str) -> dict:
  """Inverse of `encode_attributes`."""
  return _from_json(json.loads(text)) if text else {}


def frame_table(sequences: list[Sequence]) -> tuple[list[np.ndarray], list[str]]:
  """Record numbers of the distinct frame files, in order of first use.

  Args:
    sequences: the split's sequences, in the reader's order.

  Returns:
    (`records`, `files`): `records[j]` is `[T_j]` int64, the record number of each frame of sequence j;
    `files[r]` is the absolute path stored in record r.
  """
  index: dict[str, int] = {}
  records = []
  for seq in sequences:
    records.append(np.asarray([index.setdefault(p, len(index)) for p in seq.frame_paths], np.int64))
  return records, list(index)


def _record_key(r: int, n: int) -> int:
  """Order-preserving key of record r of n, spread over TFDS's 128-bit key range (see module docstring)."""
  return r * (_KEY_SPACE // max(n, 1))


def _read_bytes(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    # Stored empty, so the pipeline skips it exactly as it skips the unreadable file on disk.
    _LOG.warning("frame %s unreadable (%s); stored as empty bytes", path, e)
    return b""


class TrackingBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared logic; subclasses set `FORMAT` (the folder reader) and `splits_in(manual_dir)`."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): "Sequences (metadata) and frames (encoded bytes) configs."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=SEQUENCES, description="One example per sequence: boxes, visibility, "
                              "category, frame record numbers."),
      tfds.core.BuilderConfig(name=FRAMES, description="One example per frame file: its encoded bytes."),
  ]
  FORMAT = ""
  LAYOUT = ""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # pylint: disable=invalid-overridden-method
    # No download checksums to find next to the code (manual data only). TFDS 4.9.10's own lookup needs the
    # undeclared `importlib_resources` package, so skipping it also keeps `tfds build` working without it.
    return None

  def __init__(self, *, file_format=None, **kwargs):
    # array_record unless asked otherwise: the pipeline needs random access (`as_data_source`).
    super().__init__(file_format=file_format or "array_record", **kwargs)

  @classmethod
  def splits_in(cls, manual_dir: str) -> list[str]:
    """The benchmark splits present in `manual_dir`."""
    raise NotImplementedError

  def read_split(self, manual_dir: str, split: str) -> list[Sequence]:
    """The split's sequences, read by the folder reader."""
    return load_dataset(self.FORMAT, manual_dir, None if split == "full" else split)

  def _info(self) -> tfds.core.DatasetInfo:
    features = sequence_features() if self.builder_config.name == SEQUENCES else frame_features()
    return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True,
                                 description=f"{self.FORMAT} for cia_jax ({self.builder_config.name})")

  @classmethod
  def present_splits(cls, manual_dir: str) -> list[str]:
    """`splits_in(manual_dir)`, or ValueError naming the expected layout when there is none."""
    splits = cls.splits_in(manual_dir)
    if not splits:
      raise ValueError(f"{cls.name}: no {cls.FORMAT} split found in manual dir {manual_dir} "
                       f"(expected {cls.LAYOUT})")
    return splits

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    splits = self.present_splits(manual_dir)
    return {split: self._generate_examples(manual_dir, split) for split in splits}

  def _generate_examples(self, manual_dir: str, split: str):
    sequences = self.read_split(manual_dir, split)
    records, files = frame_table(sequences)
    if self.builder_config.name == FRAMES:
      for r, path in enumerate(files):
        yield _record_key(r, len(files)), {"image": _read_bytes(path), "file": os.path.relpath(path, manual_dir)}
      return
    for j, (seq, rec) in enumerate(zip(sequences, records)):
      yield _record_key(j, len(sequences)), {
          "name": seq.name,
          "dataset": seq.dataset,
          "category": seq.category or "",
          "boxes": seq.boxes,
          "visible": seq.visible,
          "frame_files": np.asarray([os.path.relpath(p, manual_dir) for p in seq.frame_paths], object),
          "frame_records": rec,
          "attributes": encode_attributes(seq.attributes),
      }


class CiaGot10k(TrackingBuilder):
  """GOT-10k: splits train / val / test (the sub-folders present, or the one split folder given)."""

  name = "cia_got10k"
  FORMAT = "got10k"
  LAYOUT = "train/, val/ and/or test/ folders of GOT-10k_<Split>_%06d sequences"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL.format(layout=LAYOUT)

  @classmethod
  def splits_in(cls, manual_dir: str) -> list[str]:
    found = [s for s in ("train", "val", "test") if os.path.isdir(os.path.join(manual_dir, s))]
    if not found:  # the manual dir is one split folder itself (as the folder reader also accepts)
      found = sorted({m.group(1).lower() for n in os.listdir(manual_dir)
                      if (m := re.fullmatch(r"GOT-10k_(Train|Val|Test)_\d+", n))})
    return found


class CiaLasot(TrackingBuilder):
  """LaSOT: train / test from `testing_set.txt` (or `training_set.txt`), else one split `full`."""

  name = "cia_lasot"
  FORMAT = "lasot"
  LAYOUT = "<class>/<class>-<n>/ sequence folders, optionally testing_set.txt"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL.format(layout=LAYOUT)

  @classmethod
  def splits_in(cls, manual_dir: str) -> list[str]:
    if not any(os.path.isdir(os.path.join(manual_dir, n)) for n in os.listdir(manual_dir)):
      return []
    if any(os.path.isfile(os.path.join(manual_dir, f)) for f in ("testing_set.txt", "training_set.txt")):
      return ["train", "test"]
    return ["full"]  # the folder reader's split None / "all"; TFDS reserves "all"


class CiaTrackingnet(TrackingBuilder):
  """TrackingNet: train (every `TRAIN_<k>` chunk; the reader picks chunks) and test (`TEST`)."""

  name = "cia_trackingnet"
  FORMAT = "trackingnet"
  LAYOUT = "TRAIN_<k>/ and/or TEST/ chunks with anno/ and frames/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL.format(layout=LAYOUT)

  @classmethod
  def splits_in(cls, manual_dir: str) -> list[str]:
    names = os.listdir(manual_dir)
    out = ["train"] if any(re.fullmatch(r"TRAIN_\d+", n) for n in names) else []
    return out + (["test"] if "TEST" in names else [])


class CiaCoco(TrackingBuilder):
  """COCO 2017 as one-frame sequences (one per kept annotation): train / val."""

  name = "cia_coco"
  FORMAT = "coco"
  LAYOUT = "annotations/instances_<split>2017.json and <split>2017/ image folders"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL.format(layout=LAYOUT)

  @classmethod
  def splits_in(cls, manual_dir: str) -> list[str]:
    return [s for s in ("train", "val")
            if os.path.isfile(os.path.join(manual_dir, "annotations", f"instances_{s}2017.json"))]


BUILDERS: dict[str, type[TrackingBuilder]] = {
    "got10k": CiaGot10k, "lasot": CiaLasot, "trackingnet": CiaTrackingnet, "coco": CiaCoco}


def build(name: str, manual_dir: str, data_dir: str, num_shards: int | None = None,
          configs: tuple[str, ...] = (SEQUENCES, FRAMES), overwrite: bool = False) -> dict[str, str]:
  """Builds both configs of one benchmark offline (the programmatic `tfds build`).

  Args:
    name: "got10k", "lasot", "trackingnet" or "coco".
    manual_dir: the extracted benchmark (its folder reader's layout).
    data_dir: TFDS data dir to write into.
    num_shards: files per split (None = TFDS's size-based choice).
    configs: which configs to build.
    overwrite: rebuild a config already prepared in `data_dir` (TFDS otherwise keeps it as it is, even when
      the manual dir has changed since).

  Returns:
    config name -> the prepared builder's directory.
  """
  if name not in BUILDERS:
    raise ValueError(f"unknown TFDS benchmark {name!r}; expected one of {', '.join(BUILDERS)}")
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"{name} manual dir not found: {manual_dir}")
  builder_cls = BUILDERS[name]
  builder_cls.present_splits(manual_dir)  # checked before TFDS, which stops on an assertion for an empty dir
  mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  out = {}
  for config in configs:
    builder = builder_cls(config=config, data_dir=data_dir if "://" in data_dir else os.path.abspath(data_dir))
    if not overwrite and epath.Path(builder.data_dir, "dataset_info.json").exists():
      _LOG.warning("%s/%s already prepared in %s: kept as it is (overwrite=True rebuilds it)", builder.name,
                   config, builder.data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.path.abspath(manual_dir), num_shards=num_shards, download_mode=mode))
    out[config] = os.fspath(builder.data_dir)
  return out
