"""`memory_buckets`: the filter update runs on the smallest memory prefix that holds the filled slots.

A random-weight DiMP network of width 32 (as in test_winograd_tracking.py), a 96 px patch. The claims: the
update reads only the chosen prefix (slots past it may hold anything), its filter is the one the whole
memory gives (empty slots are zeros of weight 0), and a tracker with buckets gives the boxes of one without.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.cia import CIANet, init_variables
from cia_jax.track import memory as mem_lib
from cia_jax.track import params, tracker

NET = dict(backbone_width=32, clf_dim=128, iou_dim=32, category_classification=False, category_encoder=False,
           contrastive=False, instance_encoder=False)
SETTINGS = dict(image_sample_size=96, deterministic=True, target_not_found_threshold=0.0)


@pytest.fixture(scope="module")
def model():
  net = CIANet(**NET)
  return tracker.TrackingModel(net=net, variables=init_variables(net, jax.random.key(0)))


def test_prefixes_come_from_the_settings():
  s = params.TrackerSettings(**SETTINGS)
  assert s.num_init_samples == 15 and s.sample_memory_size == 50
  assert tracker.memory_prefixes(s) == (30, 50)
  assert tracker.memory_prefixes(s.replace(memory_buckets=(40, 20, 30))) == (20, 30, 40, 50)
  # Sizes below the initial samples or at / above the capacity add nothing; () keeps the whole memory.
  assert tracker.memory_prefixes(s.replace(memory_buckets=(10, 30, 30, 50, 64))) == (30, 50)
  assert tracker.memory_prefixes(s.replace(memory_buckets=())) == (50,)


@pytest.mark.parametrize("bad", [(0,), [20, 30], (20.0,), (True,), ("20",)])
def test_memory_buckets_is_validated(bad):
  with pytest.raises(ValueError, match="memory_buckets"):
    params.TrackerSettings(memory_buckets=bad)


def _memory(num_stored: int, poison_from: int, capacity: int = 50, num_init: int = 15, seed: int = 0):
  """A memory with `num_stored` filled slots (random features, boxes, weights) and NaN features from slot
  `poison_from` on (weight 0): any read of those slots makes the filter NaN."""
  rng = np.random.default_rng(seed)
  feats = rng.normal(size=(num_init, 6, 6, 128)).astype(np.float32)
  boxes = np.tile(np.asarray([[30.0, 34.0, 28.0, 24.0]], np.float32), (num_init, 1))
  mem = mem_lib.init_memory(jnp.asarray(feats), jnp.asarray(boxes), capacity)
  for t in range(num_stored - num_init):
    mem = mem_lib.update_memory(mem, jnp.asarray(rng.normal(size=(6, 6, 128)), jnp.float32),
                                jnp.asarray([28.0 + t, 32.0, 28.0, 24.0]), num_init, 0.01)
  return mem.replace(features=mem.features.at[poison_from:].set(jnp.nan))


@pytest.mark.parametrize("num_stored,prefix", [(15, 20), (20, 20), (21, 30), (38, 40)])
def test_the_update_reads_only_its_prefix(model, num_stored, prefix):
  s = params.TrackerSettings(**SETTINGS, memory_buckets=(20, 30, 40))
  model = tracker.for_settings(model, s)
  filt = jax.random.normal(jax.random.key(1), (4, 4, 128)) * 0.01
  clean = _memory(num_stored, poison_from=50)
  mem = _memory(num_stored, poison_from=prefix)
  run = jax.jit(lambda st, f, m, n: tracker._optimize(model, st, f, m, n, 2), static_argnums=0)
  two = jnp.asarray(2, jnp.int32)
  got = np.asarray(run(s, filt, mem, two))
  assert np.all(np.isfinite(got))  # slots from `prefix` on were not read
  want = np.asarray(run(s.replace(memory_buckets=()), filt, clean, two))  # the whole (clean) memory
  assert not np.allclose(want, np.asarray(filt), atol=1e-6)  # the update did move the filter
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  # Without buckets the whole memory is read: the poisoned slots reach the filter.
  assert not np.all(np.isfinite(np.asarray(run(s.replace(memory_buckets=()), filt, mem, two))))
  # A count of 0 leaves the filter as it is, whatever the memory holds.
  np.testing.assert_array_equal(np.asarray(run(s, filt, mem, jnp.asarray(0, jnp.int32))), np.asarray(filt))


def test_tracking_with_buckets_gives_the_same_boxes(model):
  rng = np.random.default_rng(0)
  frames = []
  for t in range(8):
    img = rng.integers(0, 90, (120, 160, 3), dtype=np.uint8)
    img[40 + 2 * t:70 + 2 * t, 50 + 3 * t:84 + 3 * t] = (220, 180, 60)
    frames.append(img)
  box = np.asarray([50.0, 40.0, 34.0, 30.0], np.float32)
  # An update with 2 iterations on every frame, so every frame runs the bucketed optimiser.
  base = params.TrackerSettings(**SETTINGS, train_skipping=1)
  out = {}
  for name, s in (("buckets", base), ("whole", base.replace(memory_buckets=()))):
    state = tracker.init(model, s, frames[0], box, jax.random.key(0))
    boxes = []
    for frame in frames[1:]:
      state, o = tracker.step(model, s, state, frame, jax.random.key(0))
      boxes.append(np.asarray(o["box_xywh"]))
    out[name] = (np.stack(boxes), np.asarray(state.filter), int(state.memory.num_stored))
  assert out["buckets"][2] == out["whole"][2] > 15  # samples were stored: the prefix grew past the init slots
  np.testing.assert_allclose(out["buckets"][0], out["whole"][0], atol=1e-3)
  # 14 steepest-descent iterations on differently shaped sums: float32 summation order, amplified a little.
  whole_filter = out["whole"][1]
  np.testing.assert_allclose(out["buckets"][1], whole_filter, atol=1e-4 * np.abs(whole_filter).max())
