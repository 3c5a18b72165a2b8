"""Tests of the DiMP sampler's rules (design.md §4.9): usable sequences, windows, retry rule, weights, purity."""

import collections

import numpy as np
import pytest

from cia_jax.data.datasets.base import Sequence
from cia_jax.data.sampler import SAMPLER_PRESETS, DiMPSampler, SamplerConfig, sample_rng


def _seq(name, visible, category=None, dataset="toy"):
  visible = np.asarray(visible, bool)
  boxes = np.tile([10.0, 10.0, 20.0, 20.0], (len(visible), 1))
  boxes[~visible] = np.nan
  return Sequence(name, [f"/nonexistent/{name}/{i:04d}.jpg" for i in range(len(visible))], boxes, visible,
                  category, dataset)


def _dense(name, n=100, category="airplane", dataset="toy"):
  return _seq(name, np.ones(n, bool), category, dataset)


def test_same_seed_same_samples_and_seeds_differ():
  s = DiMPSampler([[_dense(f"s{i}") for i in range(5)]], max_gap=30)
  a = [s.sample(3, i) for i in range(30)]
  b = [s.sample(3, i) for i in reversed(range(30))][::-1]  # order of calls does not matter
  c = [s.sample(4, i) for i in range(30)]
  key = lambda fs: (fs.sequence_index, fs.train_frame_ids, fs.test_frame_ids)  # noqa: E731
  assert [key(x) for x in a] == [key(x) for x in b]
  assert [key(x) for x in a] != [key(x) for x in c]
  assert key(s.sample(3, 0, attempt=1)) != key(a[0])
  with pytest.raises(ValueError, match="seed"):
    sample_rng(-1, 0)


def test_dense_video_windows():
  """With every frame visible no window is ever empty (g = 0): the plain windows of design.md §4.9 hold."""
  n, max_gap = 60, 7
  s = DiMPSampler([[_dense("a", n)]], max_gap=max_gap)
  dup = 0
  for i in range(400):
    fs = s.sample(0, i)
    base, prev, test = fs.train_frame_ids[0], fs.train_frame_ids[1:], fs.test_frame_ids
    assert len(fs.train_frame_ids) == 3 and len(test) == 3
    assert 2 <= base < n - 3
    assert all(base - max_gap <= p < base for p in prev)
    assert all(base + 1 <= t < base + max_gap for t in test)
    dup += len(set(test)) < 3 or prev[0] == prev[1]
  assert dup > 0  # draws are with replacement


def test_retry_rule_grows_the_gap_in_steps_of_five():
  # Every 3rd frame visible, max_gap 1: with g = 0 the test window [b + 1, b + 1) is empty, so every sample
  # needs a retry; with g = 5 the train window [b - 6, b) holds b - 3 and b - 6 and the test window
  # [b + 1, b + 6) holds b + 3. A smaller step (g = 3 would already succeed) could never reach b - 6.
  vis = np.zeros(100, bool)
  vis[::3] = True
  s = DiMPSampler([[_seq("sparse", vis)]], max_gap=1)
  far = 0
  for i in range(300):
    fs = s.sample(2, i)
    base, prev, test = fs.train_frame_ids[0], fs.train_frame_ids[1:], fs.test_frame_ids
    assert vis[base] and 2 <= base < 97
    assert set(prev) <= {base - 3, base - 6} and set(test) == {base + 3}
    far += (base - 6) in prev
  assert far > 50


def test_retry_redraws_the_base():
  # Visible: 2..5 and 30..39 (14 > 12). Base 2 never has a visible frame before it, at any gap: it is always
  # rejected, and the sampler only terminates because the base is drawn again after each failure.
  vis = np.zeros(40, bool)
  vis[2:6] = True
  vis[30:40] = True
  s = DiMPSampler([[_seq("holes", vis)]], max_gap=3)
  bases = collections.Counter()
  for i in range(400):
    fs = s.sample(1, i)
    assert all(vis[f] for f in fs.train_frame_ids + fs.test_frame_ids)
    base = fs.train_frame_ids[0]
    bases[base] += 1
    assert all(p < base for p in fs.train_frame_ids[1:]) and all(t > base for t in fs.test_frame_ids)
  assert bases[2] == 0 and len(bases) >= 8


def test_usable_sequences_only():
  good = _dense("good", 25)
  short = _dense("short", 19)  # < 20 frames
  few = _seq("few", np.r_[np.ones(12, bool), np.zeros(30, bool)])  # 12 visible, need > 12
  s = DiMPSampler([[short, good, few]])
  assert s.num_usable() == [1]
  assert {s.sample(0, i).sequence.name for i in range(50)} == {"good"}
  with pytest.raises(ValueError, match="no usable sequence"):
    DiMPSampler([[short, few]])


def test_dataset_weights():
  d0 = [_dense("a0", dataset="lasot")]
  d1 = [_dense("b0", dataset="got10k"), _dense("b1", dataset="got10k")]
  s = DiMPSampler([d0, d1], weights=[0.25, 1.0])
  n = 4000
  counts = np.bincount([s.sample(0, i).dataset_index for i in range(n)], minlength=2)
  p = 0.25 / 1.25
  assert abs(counts[0] / n - p) < 4 * np.sqrt(p * (1 - p) / n)
  # A zero-weight dataset is never drawn (and may be unusable).
  s0 = DiMPSampler([d0, [_dense("tiny", 5)]], weights=[1.0, 0.0])
  assert all(s0.sample(0, i).dataset_index == 0 for i in range(50))
  with pytest.raises(ValueError, match="weights"):
    DiMPSampler([d0, d1], weights=[1.0])
  with pytest.raises(ValueError, match="weights"):
    DiMPSampler([d0, d1], weights=[-1.0, 2.0])


def test_image_dataset_repeats_the_image_and_category_is_attached():
  coco = [Sequence(f"img{i}", [f"/x/{i}.jpg"], [[1.0, 2.0, 30.0, 40.0]], [True], "zebra", "coco")
          for i in range(3)]
  video = [_dense("v", category="not-a-lasot-class")]
  s = DiMPSampler([coco, video], weights=[1.0, 1.0])
  assert s.is_image_dataset == [True, False]
  seen = set()
  for i in range(60):
    fs = s.sample(0, i)
    seen.add(fs.dataset_index)
    if fs.dataset_index == 0:
      assert fs.train_frame_ids == (0, 0, 0) and fs.test_frame_ids == (0, 0, 0)
      assert fs.category_id == fs.sequence.category_id == 69  # 'zebra' is the last LaSOT class
    else:
      assert fs.category_id == -1
  assert seen == {0, 1}


def test_config_and_presets():
  assert SAMPLER_PRESETS["cia18"].max_gap == 30 and SAMPLER_PRESETS["cia50"].max_gap == 200
  assert dict(SAMPLER_PRESETS["cia18"].dataset_weights)["lasot_train"] == 0.25
  with pytest.raises(ValueError, match="max_gap"):
    SamplerConfig(max_gap=0)
  s = DiMPSampler([[_dense("a")]], config=SAMPLER_PRESETS["cia50"], num_test_frames=2)
  fs = s.sample(0, 0)
  assert len(fs.test_frame_ids) == 2 and s.config.max_gap == 200
  with pytest.raises(ValueError, match="expected a Sequence"):
    DiMPSampler([["not a sequence"]])
