"""Tests of the tf.data training pipeline: layout, determinism, replay, host sharding, unreadable images."""

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
import pytest

from cia_jax.data import pipeline
from cia_jax.data.datasets.base import Sequence
from cia_jax.data.processing import PROCESSING_PRESETS
from cia_jax.data.sampler import DiMPSampler

# Small crops keep the tests fast; the full-size layout is checked once with the CIA18 preset.
SMALL = dataclasses.replace(PROCESSING_PRESETS["cia18"], output_sz=32, feature_sz=2)
SMALL_KL = dataclasses.replace(PROCESSING_PRESETS["cia50"], output_sz=32, feature_sz=2,
                               proposals_per_frame=16)


def _write_sequence(root, name, n, category, seed, h=48, w=64):
  rng = np.random.default_rng(seed)
  os.makedirs(root / name, exist_ok=True)
  paths, boxes = [], []
  for t in range(n):
    img = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
    x, y = 10 + t % 20, 8 + t % 12
    img[y:y + 16, x:x + 20] = (230, 40, 40)
    path = str(root / name / f"{t:04d}.jpg")
    cv2.imwrite(path, img[..., ::-1])
    paths.append(path)
    boxes.append([x, y, 20, 16])
  return Sequence(name, paths, np.asarray(boxes, np.float64), np.ones(n, bool), category, "toy")


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
  root = tmp_path_factory.mktemp("seqs")
  return [_write_sequence(root, f"seq{i}", 24, "airplane", i) for i in range(3)]


def _ds(sampler, cfg=SMALL, **kw):
  args = dict(seed=0, seqs_per_device=2, num_local_devices=2, process_index=0, process_count=1, num_batches=2,
              num_parallel_calls=2)
  args.update(kw)
  return list(pipeline.make_iterator(sampler, cfg, **args))


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("cfg", [SMALL, SMALL_KL], ids=["mse", "kl"])
def test_batch_layout(sequences, cfg):
  sampler = DiMPSampler([sequences], max_gap=5)
  batches = _ds(sampler, cfg, num_local_devices=2, seqs_per_device=3)
  assert len(batches) == 2
  s, l, p = cfg.output_sz, cfg.label_sz, cfg.proposals_per_frame
  expected = {
      "train_images": (2, 3, 3, s, s, 3), "test_images": (2, 3, 3, s, s, 3), "train_box_xywh": (2, 3, 3, 4),
      "test_box_xywh": (2, 3, 3, 4), "test_label": (2, 3, 3, l, l), "test_proposals_xywh": (2, 3, 3, p, 4),
      "category_id": (2, 3), "sample_index": (2, 3), "skipped_images": (2, 3)}
  if cfg.proposal_mode == "mse":
    expected["proposal_iou"] = (2, 3, 3, p)
  else:
    expected.update(proposal_density=(2, 3, 3, p), gt_density=(2, 3, 3, p))
  for step, batch in enumerate(batches):
    assert {k: v.shape for k, v in batch.items()} == expected
    assert batch["train_images"].dtype == np.float32 and batch["category_id"].dtype == np.int32
    # Device d holds local samples d * B .. d * B + B - 1 of the step.
    np.testing.assert_array_equal(batch["sample_index"], np.arange(6 * step, 6 * step + 6).reshape(2, 3))
    assert np.all(batch["category_id"] == 0)  # 'airplane'
    assert np.all(batch["skipped_images"] == 0)


def test_full_size_cia18_layout(sequences):
  cfg = PROCESSING_PRESETS["cia18"]
  (batch,) = _ds(DiMPSampler([sequences]), cfg, num_local_devices=1, seqs_per_device=1, num_batches=1)
  assert batch["train_images"].shape == (1, 1, 3, 288, 288, 3)
  assert batch["test_label"].shape == (1, 1, 3, 19, 19)
  assert batch["test_proposals_xywh"].shape == (1, 1, 3, 8, 4) and batch["proposal_iou"].shape == (1, 1, 3, 8)


def test_same_seed_same_batches(sequences):
  sampler = DiMPSampler([sequences], max_gap=5)
  a = _ds(sampler, seed=7)
  b = _ds(sampler, seed=7, num_parallel_calls=1)
  _assert_batches_equal(a, b)
  c = _ds(sampler, seed=8)
  assert not np.array_equal(a[0]["train_images"], c[0]["train_images"])


def test_resume_replays(sequences):
  sampler = DiMPSampler([sequences], max_gap=5)
  full = _ds(sampler, num_batches=3)
  resumed = _ds(sampler, start_step=1, num_batches=2)
  _assert_batches_equal(full[1:], resumed)


def test_parallel_elements_equal_eager_load_sample(sequences):
  """Each element made inside Dataset.map (non-deterministic order) equals the eager `load_sample`."""
  sampler = DiMPSampler([sequences], max_gap=5)
  batches = _ds(sampler, deterministic=False, num_batches=2, seed=3)
  seen = []
  for batch in batches:
    for d in range(2):
      for b in range(2):
        idx = int(batch["sample_index"][d, b])
        seen.append(idx)
        eager = pipeline.load_sample(sampler, SMALL, 3, idx)
        for k, v in eager.items():
          np.testing.assert_array_equal(batch[k][d, b], v, err_msg=k)
  assert len(set(seen)) == len(seen)


def test_two_hosts_are_disjoint_and_cover(sequences):
  sampler = DiMPSampler([sequences], max_gap=5)
  single = _ds(sampler, num_batches=2, seed=5)
  hosts = [_ds(sampler, num_batches=2, seed=5, process_index=p, process_count=2) for p in range(2)]
  idx = [np.concatenate([b["sample_index"].ravel() for b in h]) for h in hosts]
  assert not set(idx[0]) & set(idx[1])
  assert sorted(np.concatenate(idx).tolist()) == list(range(16))  # 2 hosts x 2 steps x 4 samples
  for p in range(2):
    np.testing.assert_array_equal(idx[p], pipeline.host_sample_indices(0, 4, p, 2).tolist() +
                                  pipeline.host_sample_indices(1, 4, p, 2).tolist())
  # The same global index gives the same sample on any host (single-host step 0 = indices 0..3).
  by_index = {int(i): (h, s) for h in range(2) for s, i in enumerate(idx[h])}
  for s, i in enumerate(single[0]["sample_index"].ravel()):
    h, pos = by_index[int(i)]
    batch = hosts[h][pos // 4]
    host_images = batch["train_images"].reshape(4, *batch["train_images"].shape[2:])
    single_images = single[0]["train_images"].reshape(4, *single[0]["train_images"].shape[2:])
    np.testing.assert_array_equal(host_images[pos % 4], single_images[s])


def test_unreadable_images_are_skipped_and_counted(sequences, tmp_path):
  # A sequence whose frames are garbage bytes, truncated to nothing or missing.
  bad_paths = []
  for t in range(24):
    path = tmp_path / f"bad{t:04d}.jpg"
    if t % 3 == 0:
      path.write_bytes(b"this is not a jpeg" * 10)
    elif t % 3 == 1:
      path.write_bytes(b"")
    bad_paths.append(str(path))
  boxes = np.tile([5.0, 5.0, 10.0, 10.0], (24, 1))
  bad = Sequence("bad", bad_paths, boxes, np.ones(24, bool), "bear", "toy")  # 'bear' = id 2
  sampler = DiMPSampler([[sequences[0], bad]], max_gap=5)
  seed = 11
  batches = _ds(sampler, seed=seed, num_batches=4)
  total = 0
  for batch in batches:
    assert np.all(batch["category_id"] == 0)  # never a sample from the unreadable sequence
    for idx, skipped in zip(batch["sample_index"].ravel(), batch["skipped_images"].ravel()):
      # Independent count: unique frames of every attempt that drew the bad sequence.
      expect, attempt = 0, 0
      while True:
        fs = sampler.sample(seed, int(idx), attempt)
        if fs.sequence.name != "bad":
          break
        expect += len(set(fs.train_frame_ids + fs.test_frame_ids))
        attempt += 1
      assert skipped == expect
      total += skipped
  assert total > 0
  # Only unreadable data everywhere: a clear error instead of an endless loop.
  only_bad = DiMPSampler([[bad]], max_gap=5)
  with pytest.raises(RuntimeError, match="no readable frames"):
    pipeline.load_sample(only_bad, SMALL, 0, 0, max_attempts=3)


def test_bad_arguments(sequences):
  sampler = DiMPSampler([sequences])
  with pytest.raises(ValueError, match="process_index"):
    pipeline.make_dataset(sampler, SMALL, seed=0, seqs_per_device=1, num_local_devices=1, process_index=2,
                          process_count=2)
  with pytest.raises(ValueError, match="seqs_per_device"):
    pipeline.make_dataset(sampler, SMALL, seed=0, seqs_per_device=0, num_local_devices=1, process_index=0,
                          process_count=1)
  assert pipeline.load_image("/nonexistent/frame.jpg") is None
