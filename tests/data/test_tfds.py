"""Tests of the TFDS builders and reader: splits, contents equal to the folder readers' (decoded frames
bit-identical), deterministic record order, same batches from folders and TFDS, host shards."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cia_jax.data import pipeline, synthetic
from cia_jax.data.datasets import load_dataset
from cia_jax.data.processing import PROCESSING_PRESETS
from cia_jax.data.sampler import DiMPSampler
from cia_jax.data.tfds import builders, reader

SMALL = dataclasses.replace(PROCESSING_PRESETS["cia18"], output_sz=32, feature_sz=2)
_SIZE = (64, 48)
# (benchmark, split, reader options) pairs checked against the folder readers.
# (min_size 12 drops one of the 3 COCO boxes; "VOTTRAIN" stands for the split file the fixture writes.)
CASES = [("got10k", "train", {}), ("got10k", "val", {}), ("got10k", "test", {}),
         ("got10k", "vottrain", {"split_file": "VOTTRAIN"}), ("lasot", "train", {}), ("lasot", "test", {}),
         ("lasot", None, {}), ("lasot", "train", {"classes": ["bird"]}), ("trackingnet", "train", {}),
         ("trackingnet", "train", {"chunks": [0]}), ("trackingnet", "test", {}),
         ("trackingnet", "test", {"chunks": [0]}), ("coco", "train", {}), ("coco", "train", {"min_size": 12.0})]


@pytest.fixture(scope="session")
def roots(tmp_path_factory):
  """Tiny synthetic benchmarks in their exact layouts: 2-4 sequences of 8-20 frames of 64x48 pixels."""
  base = tmp_path_factory.mktemp("tfds_raw")
  kw = dict(image_size=_SIZE, num_distractors=0, occlusion=False, out_of_view=False)
  got = str(base / "got10k")
  synthetic.generate(got, "got10k", num_sequences=3, num_frames=20, split="train", **kw)
  synthetic.generate(got, "got10k", num_sequences=2, num_frames=8, split="val", seed=1, image_size=_SIZE)
  synthetic.generate(got, "got10k", num_sequences=2, num_frames=8, split="test", seed=2, image_size=_SIZE)
  with open(os.path.join(got, "vottrain.txt"), "w") as f:
    f.write("0\n2\n")  # 0-based indices into train/list.txt, as pytracking's split files
  lasot = str(base / "lasot")
  names = synthetic.generate(lasot, "lasot", num_sequences=4, num_frames=20, seed=3,
                             categories=["airplane", "bird", "airplane", "bird"], **kw)
  with open(os.path.join(lasot, "testing_set.txt"), "w") as f:
    f.write(f"{names[1]}\n{names[2]}\n")
  tn = str(base / "trackingnet")
  synthetic.generate(tn, "trackingnet", num_sequences=2, num_frames=10, split="train", seed=4, image_size=_SIZE)
  synthetic.generate(tn, "trackingnet", num_sequences=2, num_frames=8, split="test", seed=5, image_size=_SIZE)
  coco = str(base / "coco")
  synthetic.generate(coco, "coco", num_sequences=3, seed=6, image_size=_SIZE)
  return {"got10k": got, "lasot": lasot, "trackingnet": tn, "coco": coco}


@pytest.fixture(scope="session")
def data_dir(roots, tmp_path_factory):
  """All four benchmarks built with the programmatic `tfds build` (2 shards per split)."""
  out = str(tmp_path_factory.mktemp("tfds_data"))
  tfds.disable_progress_bar()
  for name, root in roots.items():
    builders.build(name, root, out, num_shards=2)
  return out


def _options(kw, roots, name):
  return {k: (os.path.join(roots[name], "vottrain.txt") if v == "VOTTRAIN" else v) for k, v in kw.items()}


@pytest.mark.parametrize("name, splits", [("got10k", {"train", "val", "test"}), ("lasot", {"train", "test"}),
                                          ("trackingnet", {"train", "test"}), ("coco", {"train"})])
def test_splits_counts_and_shards(roots, data_dir, name, splits):
  for config in (builders.SEQUENCES, builders.FRAMES):
    info = tfds.builder_from_directory(reader.builder_dir(data_dir, name, config)).info
    assert set(info.splits) == splits
    assert info.file_format.value == "array_record"
    for split in splits:
      seqs = load_dataset(name, roots[name], split)
      expected = len(seqs) if config == builders.SEQUENCES else len({p for s in seqs for p in s.frame_paths})
      assert info.splits[split].num_examples == expected, (config, split)
      assert info.splits[split].num_shards == min(2, expected)


@pytest.mark.parametrize("name, split, kw", CASES)
def test_contents_equal_folder_reader(roots, data_dir, name, split, kw):
  kw = _options(kw, roots, name)
  raw = load_dataset(name, roots[name], split, **kw)
  prepared = reader.load_tfds_dataset(name, split, data_dir=data_dir, **kw)
  assert [s.name for s in prepared] == [s.name for s in raw] and raw
  for a, b in zip(raw, prepared):
    np.testing.assert_array_equal(b.boxes, a.boxes)  # NaN rows (test splits) compare equal
    np.testing.assert_array_equal(b.visible, a.visible)
    assert (b.category, b.dataset, b.category_id, len(b)) == (a.category, a.dataset, a.category_id, len(a))
    assert set(b.attributes) == set(a.attributes)
    for key, value in a.attributes.items():
      if isinstance(value, np.ndarray):
        assert b.attributes[key].dtype == value.dtype
        np.testing.assert_array_equal(b.attributes[key], value)
      else:
        assert b.attributes[key] == value
    for path, uri in zip(a.frame_paths, b.frame_paths):
      with open(path, "rb") as f:
        assert reader.read_frame_bytes(uri) == f.read()  # stored as is, never re-encoded
      x, y = pipeline.load_image(path), pipeline.load_image(uri)
      assert x is not None and x.shape == (_SIZE[1], _SIZE[0], 3)
      np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("name, split", [("got10k", "train"), ("lasot", "train"), ("coco", "train")])
def test_record_order_is_reader_order(roots, data_dir, name, split):
  """Record r of the frames split is the r-th distinct frame file in reader order, whatever the shards."""
  raw = load_dataset(name, roots[name], split)
  records, files = builders.frame_table(raw)
  frames = tfds.builder_from_directory(reader.builder_dir(data_dir, name, "frames")).as_data_source(split)
  stored = [frames[r]["file"].decode() for r in range(len(frames))]
  assert stored == [os.path.relpath(p, roots[name]) for p in files]
  prepared = reader.load_tfds_dataset(name, split, data_dir=data_dir)
  for rec, seq in zip(records, prepared):
    np.testing.assert_array_equal(reader.sequence_frame_records(seq), rec)
  if name != "coco":  # videos: each sequence's frames are one contiguous record range
    np.testing.assert_array_equal(np.concatenate(records), np.arange(len(files)))


def test_same_seed_same_batches_folders_and_tfds(roots, data_dir):
  mix = [("got10k", "train"), ("lasot", "train"), ("coco", "train")]
  folders = DiMPSampler([reader.load_sequences(n, s, source="folders", root=roots[n]) for n, s in mix],
                        weights=[1.0, 0.5, 1.0])
  prepared = DiMPSampler([reader.load_sequences(n, s, source="tfds", data_dir=data_dir) for n, s in mix],
                         weights=[1.0, 0.5, 1.0])
  args = dict(seed=3, seqs_per_device=2, num_local_devices=2, process_index=0, process_count=1,
              num_batches=2, num_parallel_calls=2)
  a = list(pipeline.make_iterator(folders, SMALL, **args))
  b = list(pipeline.make_iterator(prepared, SMALL, **args))
  assert len(a) == len(b) == 2
  for x, y in zip(a, b):
    assert set(x) == set(y)
    for k in x:
      np.testing.assert_array_equal(y[k], x[k], err_msg=k)
  assert len(set(np.concatenate([x["category_id"].ravel() for x in a]).tolist())) > 1  # a real mix
  # A second seed gives other batches (the comparison above is not vacuous).
  c = next(pipeline.make_iterator(prepared, SMALL, **{**args, "seed": 4, "num_batches": 1}))
  assert not np.array_equal(c["test_images"], a[0]["test_images"])


@pytest.mark.parametrize("n, hosts", [(0, 1), (3, 1), (3, 2), (7, 3), (2, 4), (10, 4)])
def test_host_sequence_ranges_partition(n, hosts):
  ranges = [reader.host_sequence_range(n, p, hosts) for p in range(hosts)]
  covered = [i for a, b in ranges for i in range(a, b)]
  assert covered == list(range(n))  # disjoint, contiguous, in order, covering
  sizes = [b - a for a, b in ranges]
  assert max(sizes) - min(sizes) <= 1


def test_host_shards_disjoint_and_covering(data_dir):
  full = reader.load_tfds_dataset("got10k", "train", data_dir=data_dir)
  shards = [reader.load_tfds_dataset("got10k", "train", data_dir=data_dir, shard_by_host=True,
                                     process_index=p, process_count=2) for p in range(2)]
  assert [s.name for shard in shards for s in shard] == [s.name for s in full]
  # Default host = jax.process_index() of jax.process_count() (1 here): the whole list.
  single = reader.load_tfds_dataset("got10k", "train", data_dir=data_dir, shard_by_host=True)
  assert [s.name for s in single] == [s.name for s in full]
  recs = [np.concatenate([reader.sequence_frame_records(s) for s in shard]) for shard in shards]
  assert not set(recs[0].tolist()) & set(recs[1].tolist())
  assert recs[0].max() < recs[1].min()  # host 0 reads the leading records, host 1 the trailing ones
  # Hence host 0 (1 of 3 sequences: records 0-19 of 60, shards of 30) opens only the first shard file.
  lengths = tfds.builder_from_directory(reader.builder_dir(data_dir, "got10k", "frames")).info.splits[
      "train"].shard_lengths
  shard_of = lambda r: int(np.searchsorted(np.cumsum(lengths), r, side="right"))  # noqa: E731
  assert lengths == [30, 30] and {shard_of(r) for r in recs[0]} == {0}
  # Each host's stream is a pure function of (seed, host, hosts): rebuilding it gives the same samples.
  s1 = DiMPSampler([shards[1]], min_length=8)
  again = DiMPSampler([reader.load_tfds_dataset("got10k", "train", data_dir=data_dir, shard_by_host=True,
                                                process_index=1, process_count=2)], min_length=8)
  for i in range(5):
    x, y = s1.sample(0, 1 + 2 * i), again.sample(0, 1 + 2 * i)
    assert (x.sequence.name, x.train_frame_ids, x.test_frame_ids) == (
        y.sequence.name, y.train_frame_ids, y.test_frame_ids)


def test_tfds_build_cli(roots, tmp_path):
  """TFDS's `tfds build` command (its build-only entry point, see `cia_jax/data/tfds/__main__.py`) on a
  synthetic layout: both configs are built by default."""
  out = str(tmp_path / "cli_data")
  cmd = [sys.executable, "-m", "cia_jax.data.tfds", "build", "cia_coco", "--imports",
         "cia_jax.data.tfds.builders", "--manual_dir", roots["coco"], "--data_dir", out]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  raw = load_dataset("coco", roots["coco"], "train")
  prepared = reader.load_tfds_dataset("coco", "train", data_dir=out)
  assert [s.name for s in prepared] == [s.name for s in raw]
  np.testing.assert_array_equal(pipeline.load_image(prepared[-1].frame_paths[0]),
                                pipeline.load_image(raw[-1].frame_paths[0]))


def test_attributes_round_trip():
  attrs = {"cover": np.array([0, 8, 3]), "cut": np.array([True, False]), "meta": {"a": "b"}, "id": 7,
           "nlp": "text", "boxes": np.array([[1.5, np.nan]], np.float32)}
  back = builders.decode_attributes(builders.encode_attributes(attrs))
  assert set(back) == set(attrs) and back["meta"] == {"a": "b"} and back["id"] == 7 and back["nlp"] == "text"
  for k in ("cover", "cut", "boxes"):
    assert back[k].dtype == attrs[k].dtype
    np.testing.assert_array_equal(back[k], attrs[k])


def test_unreadable_records_and_bad_inputs(roots, data_dir, tmp_path):
  seq = reader.load_tfds_dataset("got10k", "val", data_dir=data_dir)[0]
  path, split, record = reader.parse_frame_uri(seq.frame_paths[3])
  assert (split, record) == ("val", 3) and path == reader.builder_dir(data_dir, "got10k", "frames")
  missing = reader.frame_uri(path, split, 10_000)
  assert reader.read_frame_bytes(missing) is None and pipeline.load_image(missing) is None
  with pytest.raises(ValueError, match="not a TFDS frame URI"):
    reader.parse_frame_uri("tfds:/x/y")
  with pytest.raises(FileNotFoundError, match="cia-jax tfds-build --dataset lasot"):
    reader.load_tfds_dataset("lasot", "train", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="prepared: train"):
    reader.load_tfds_dataset("coco", "val", data_dir=data_dir)
  with pytest.raises(ValueError, match="unknown option"):
    reader.load_tfds_dataset("coco", "train", data_dir=data_dir, chunks=[0])
  with pytest.raises(ValueError, match="needs split_file"):
    reader.load_tfds_dataset("got10k", "vottrain", data_dir=data_dir)
  with pytest.raises(ValueError, match="unknown TFDS benchmark"):
    reader.load_tfds_dataset("otb", None, data_dir=data_dir)
  with pytest.raises(ValueError, match="source must be one of"):
    reader.load_sequences("got10k", "train", source="tfrecord", data_dir=data_dir)
  with pytest.raises(ValueError, match="needs root"):
    reader.load_sequences("got10k", "train", source="folders")
  with pytest.raises(ValueError, match="no cia_got10k|no got10k split"):
    builders.build("got10k", str(tmp_path), str(tmp_path / "out"))


def test_lasot_without_split_files_is_one_full_split(tmp_path):
  root = str(tmp_path / "lasot")
  synthetic.generate(root, "lasot", num_sequences=3, num_frames=8, seed=9, image_size=_SIZE,
                     categories=["zebra", "airplane", "zebra"])
  out = str(tmp_path / "data")
  builders.build("lasot", root, out)
  info = tfds.builder_from_directory(reader.builder_dir(out, "lasot", "sequences")).info
  assert set(info.splits) == {"full"}  # TFDS reserves "all"
  raw = load_dataset("lasot", root, "all")
  for split in (None, "all"):
    prepared = reader.load_tfds_dataset("lasot", split, data_dir=out)
    assert [s.name for s in prepared] == [s.name for s in raw] == ["airplane-1", "zebra-1", "zebra-2"]
  with pytest.raises(ValueError, match="prepared: full"):
    reader.load_tfds_dataset("lasot", "train", data_dir=out)


def test_unreadable_frames_skipped_alike(tmp_path):
  """A truncated (empty) and a garbage frame file: both sources skip them and redraw identically."""
  root = str(tmp_path / "got10k")
  synthetic.generate(root, "got10k", num_sequences=2, num_frames=16, split="train", seed=11, image_size=_SIZE,
                     num_distractors=0, occlusion=False, out_of_view=False)
  raw = load_dataset("got10k", root, "train")
  open(raw[0].frame_paths[5], "wb").close()
  with open(raw[1].frame_paths[7], "wb") as f:
    f.write(b"not a jpeg")
  out = str(tmp_path / "data")
  builders.build("got10k", root, out)
  prepared = reader.load_tfds_dataset("got10k", "train", data_dir=out)
  assert pipeline.load_image(prepared[0].frame_paths[5]) is None
  assert pipeline.load_image(prepared[1].frame_paths[7]) is None
  a, b = DiMPSampler([raw], min_length=8), DiMPSampler([prepared], min_length=8)
  skipped = 0
  for i in range(12):
    x, y = pipeline.load_sample(a, SMALL, 0, i), pipeline.load_sample(b, SMALL, 0, i)
    for k in x:
      np.testing.assert_array_equal(y[k], x[k], err_msg=f"sample {i} {k}")
    skipped += int(x["skipped_images"])
  assert skipped > 0  # the skip path was exercised


def test_rebuild_is_byte_identical(roots, data_dir, tmp_path):
  """Deterministic sharding: a second build of the same layout writes the same shard files."""
  out = str(tmp_path / "again")
  builders.build("got10k", roots["got10k"], out, num_shards=2)
  for config in (builders.SEQUENCES, builders.FRAMES):
    d1, d2 = reader.builder_dir(data_dir, "got10k", config), reader.builder_dir(out, "got10k", config)
    shards = sorted(f for f in os.listdir(d1) if ".array_record-" in f)
    assert shards == sorted(f for f in os.listdir(d2) if ".array_record-" in f) and len(shards) == 6
    for f in shards:
      with open(os.path.join(d1, f), "rb") as x, open(os.path.join(d2, f), "rb") as y:
        assert x.read() == y.read(), f


def test_cia_jax_tfds_build_command(roots, tmp_path, capsys):
  from cia_jax import cli  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "cmd")
  assert cli.main(["tfds-build", "--dataset", "trackingnet", "--manual_dir", roots["trackingnet"],
                   "--data_dir", out, "--num_shards", "1"]) == 0
  assert reader.builder_dir(out, "trackingnet", "frames") in capsys.readouterr().out
  raw = load_dataset("trackingnet", roots["trackingnet"], "test")
  prepared = reader.load_tfds_dataset("trackingnet", "test", data_dir=out)
  assert [s.name for s in prepared] == [s.name for s in raw]
  lasot = str(tmp_path / "lasot")
  shutil.copytree(roots["lasot"], lasot)  # a private copy: one frame is changed below
  assert cli.main(["tfds-build", "--dataset", "lasot", "--manual_dir", lasot, "--data_dir", out,
                   "--verify", "-1"]) == 0
  printed = capsys.readouterr().out
  assert "verify lasot/train: identical" in printed and "verify lasot/test: identical" in printed
  # A frame changed on disk after the build is reported.
  path = load_dataset("lasot", lasot, "test")[0].frame_paths[0]
  with open(path, "rb") as f:
    original = f.read()
  with open(path, "wb") as f:
    f.write(original[:-10])
  found = reader.compare_with_folders("lasot", lasot, out, "test", frames_per_sequence=1)
  assert len(found) == 1 and "differs from its record" in found[0]
  # Building again keeps the prepared data (TFDS's reuse), so --verify still reports the change ...
  assert cli.main(["tfds-build", "--dataset", "lasot", "--manual_dir", lasot, "--data_dir", out,
                   "--verify", "1"]) == 1
  assert "verify lasot/test: 1 difference(s)" in capsys.readouterr().out
  # ... and --overwrite rebuilds with the new bytes: identical again.
  assert cli.main(["tfds-build", "--dataset", "lasot", "--manual_dir", lasot, "--data_dir", out,
                   "--overwrite", "--verify", "-1"]) == 0
  # A bad flag value is one error line with exit code 2 (cia_jax.cli's contract), not an exception.
  assert cli.main(["tfds-build", "--dataset", "coco", "--manual_dir", roots["coco"], "--data_dir", out,
                   "--num_shards", "0"]) == 2
  assert "cia-jax tfds-build: error: --num_shards must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("unknown_dataset", "unknown TFDS benchmark 'kitti'"),
    ("missing_manual_dir", "manual dir not found"),
    ("empty_manual_dir", "no coco split found in manual dir"),
    ("data_dir_is_a_file", "Not a directory"),
    ("zero_shards", "--num_shards must be >= 1"),
])
def test_cia_jax_tfds_build_bad_arguments_give_one_line(roots, tmp_path, capsys, case, message):
  from cia_jax import cli  # pylint: disable=g-import-not-at-top
  (tmp_path / "empty").mkdir()
  (tmp_path / "file").write_text("not a folder")
  dataset, manual_dir, data_dir, extra = "coco", roots["coco"], str(tmp_path / "out"), []
  if case == "unknown_dataset":
    dataset = "kitti"
  elif case == "missing_manual_dir":
    manual_dir = str(tmp_path / "nowhere")
  elif case == "empty_manual_dir":
    manual_dir = str(tmp_path / "empty")
  elif case == "data_dir_is_a_file":
    data_dir = str(tmp_path / "file")
  else:
    extra = ["--num_shards", "0"]
  assert cli.main(["tfds-build", "--dataset", dataset, "--manual_dir", manual_dir, "--data_dir", data_dir,
                   *extra]) == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err
  assert err.startswith("cia-jax tfds-build: error: ") and message in err and err.count("\n") == 1, err


def test_got10k_manual_dir_may_be_one_split_folder(roots, tmp_path):
  """As in the training configs (`got10k.root=/data/got10k/train`): the split folder itself."""
  train = os.path.join(roots["got10k"], "train")
  out = str(tmp_path / "data")
  builders.build("got10k", train, out)
  assert set(tfds.builder_from_directory(reader.builder_dir(out, "got10k", "frames")).info.splits) == {"train"}
  raw = load_dataset("got10k", train, "train")
  prepared = reader.load_tfds_dataset("got10k", "train", data_dir=out)
  assert [s.name for s in prepared] == [s.name for s in raw]
  np.testing.assert_array_equal(pipeline.load_image(prepared[2].frame_paths[-1]),
                                pipeline.load_image(raw[2].frame_paths[-1]))


def test_trackingnet_chunks_select_and_order_as_folder_reader(tmp_path):
  root, other = str(tmp_path / "tn"), str(tmp_path / "other")
  synthetic.generate(other, "trackingnet", num_sequences=2, num_frames=6, seed=20, image_size=_SIZE)
  os.makedirs(root)
  os.rename(os.path.join(other, "TRAIN_0"), os.path.join(root, "TRAIN_1"))
  synthetic.generate(root, "trackingnet", num_sequences=3, num_frames=6, seed=21, image_size=_SIZE)
  out = str(tmp_path / "data")
  builders.build("trackingnet", root, out)
  first_frames = {}
  for chunks, count in ((None, 5), ((1, 0), 5), ((1,), 2), ((0,), 3)):
    kw = {} if chunks is None else {"chunks": list(chunks)}
    raw = load_dataset("trackingnet", root, "train", **kw)
    prepared = reader.load_tfds_dataset("trackingnet", "train", data_dir=out, **kw)
    assert len(prepared) == len(raw) == count
    first_frames[chunks] = raw[0].frame_paths[0]
    for a, b in zip(raw, prepared):
      assert a.name == b.name
      np.testing.assert_array_equal(b.boxes, a.boxes)
      np.testing.assert_array_equal(pipeline.load_image(b.frame_paths[0]), pipeline.load_image(a.frame_paths[0]))
  assert "TRAIN_1" in first_frames[(1, 0)] and "TRAIN_0" in first_frames[None]  # the order did change


def test_record_keys_keep_order_and_spread_over_writer_buckets():
  """The keys the builders write keep record order and fill TFDS's 1000 sort buckets evenly."""
  from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
  n = 5000
  keys = [builders._record_key(r, n) for r in range(n)]  # pylint: disable=protected-access
  assert keys == sorted(keys) and len(set(keys)) == n and keys[-1] < 2**128
  buckets = np.bincount([shuffle.get_bucket_number(k, shuffle.BUCKETS_NUMBER) for k in keys],
                        minlength=shuffle.BUCKETS_NUMBER)
  assert buckets.min() >= 4 and buckets.max() <= 6  # ~n / 1000 records each, never all in one bucket


def test_configs_built_from_different_data_are_refused(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  synthetic.generate(a, "got10k", num_sequences=3, num_frames=6, split="val", image_size=_SIZE)
  synthetic.generate(b, "got10k", num_sequences=2, num_frames=6, split="val", image_size=_SIZE)
  out = str(tmp_path / "data")
  builders.build("got10k", a, out, configs=(builders.SEQUENCES,))
  builders.build("got10k", b, out, configs=(builders.FRAMES,))
  with pytest.raises(ValueError, match="refers to 18 frame records, the frames config holds 12"):
    reader.load_tfds_dataset("got10k", "val", data_dir=out)


_HOST_SCRIPT = """
import json, sys
import jax
port, pid, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
from cia_jax.data.tfds import reader
seqs = reader.load_tfds_dataset("got10k", "train", data_dir=data_dir, shard_by_host=True)
print("RESULT " + json.dumps({"process": jax.process_index(), "names": [s.name for s in seqs]}))
jax.distributed.shutdown()
"""


def test_two_jax_processes_read_disjoint_covering_shards(data_dir, tmp_path):
  """Two real JAX processes (`jax.distributed` on localhost): each keeps its own block by default."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  script = tmp_path / "host.py"
  script.write_text(_HOST_SCRIPT)
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen([sys.executable, str(script), str(port), str(p), data_dir], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env) for p in range(2)]
  outs = [p.communicate(timeout=180) for p in procs]
  assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
  results = [json.loads(line[7:]) for out, _ in outs for line in out.splitlines() if line.startswith("RESULT ")]
  by_host = {r["process"]: r["names"] for r in sorted(results, key=lambda r: r["process"])}
  full = [s.name for s in reader.load_tfds_dataset("got10k", "train", data_dir=data_dir)]
  assert set(by_host) == {0, 1} and by_host[0] + by_host[1] == full
  assert by_host[0] == full[slice(*reader.host_sequence_range(len(full), 0, 2))]


REAL_LASOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data", "real",
                          "LaSOT_airplane-1")


@pytest.mark.skipif(not os.path.isdir(REAL_LASOT), reason=f"real LaSOT sequence not found at {REAL_LASOT}")
def test_real_lasot_sequence_round_trip(tmp_path):
  """The real LaSOT airplane-1 (300 JPEG frames of 640x360) linked into a LaSOT layout: every frame's
  bytes, the metadata and a batch are the same from TFDS."""
  root = tmp_path / "lasot"
  (root / "airplane").mkdir(parents=True)
  os.symlink(os.path.abspath(REAL_LASOT), root / "airplane" / "airplane-1")
  out = str(tmp_path / "data")
  builders.build("lasot", str(root), out)
  assert reader.compare_with_folders("lasot", str(root), out, "all", frames_per_sequence=None) == []
  raw = load_dataset("lasot", str(root), "all")
  prepared = reader.load_tfds_dataset("lasot", "all", data_dir=out)
  assert len(prepared[0]) == 300 and prepared[0].category == "airplane"
  args = dict(seed=5, seqs_per_device=3, num_local_devices=1, process_index=0, process_count=1, num_batches=1)
  x = next(pipeline.make_iterator(DiMPSampler([raw]), SMALL, **args))
  y = next(pipeline.make_iterator(DiMPSampler([prepared]), SMALL, **args))
  for k in x:
    np.testing.assert_array_equal(y[k], x[k], err_msg=k)
