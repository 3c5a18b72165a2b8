"""Sample-memory weight rule (design.md §5.7) against a plain float64 NumPy transcription."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cia_jax.track import memory


def reference_update(w, prev, n, num_init, lr, floor=0.25):
  """Spec 5.7 word for word (prev None = first update)."""
  w = w.copy()
  m = len(w)
  r = n if n < m else int(np.argmin(w[num_init:])) + num_init
  if prev is None:
    w = w / (1 - lr)
    w[r] = lr
  else:
    w[r] = w[prev] / (1 - lr)
  w = w / w.sum()
  if w[:num_init].sum() < floor:
    w = w / (floor + w[num_init:].sum())
    w[:num_init] = floor / num_init
  return w, r


def test_weight_rule_matches_reference_over_250_updates():
  m, num_init = 50, 15
  rng = np.random.default_rng(0)
  lrs = np.where(rng.random(250) < 0.3, 0.02, 0.01)  # mixed normal / hard-negative frames
  feats = jnp.asarray(rng.normal(size=(num_init, 2, 2, 3)), jnp.float32)
  mem = memory.init_memory(feats, jnp.ones((num_init, 4)), m)
  w_ref = np.zeros(m)
  w_ref[:num_init] = 1 / num_init
  prev, n = None, num_init
  upd = jax.jit(lambda mm, f, b, lr: memory.update_memory(mm, f, b, num_init, lr, 0.25))
  floor_hit = False
  for t, lr in enumerate(lrs):
    w_ref, r = reference_update(w_ref, prev, n, num_init, lr)
    floor_hit |= bool(np.isclose(w_ref[:num_init].sum(), 0.25))
    prev, n = r, n + 1
    mem = upd(mem, jnp.full((2, 2, 3), float(t)), jnp.asarray([t, 0, 1, 1], jnp.float32), lr)
    assert int(mem.previous_replace_ind) == r, t
    np.testing.assert_allclose(np.asarray(mem.weights), w_ref, rtol=2e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(mem.features[r]), t)
    assert float(mem.boxes_xywh[r, 0]) == t
  assert int(mem.num_stored) == num_init + 250
  assert floor_hit  # The 0.25 floor was exercised (after ~200 updates),
  assert n > m  # and so was the argmin replacement of a full memory.
  np.testing.assert_allclose(np.asarray(mem.features[:num_init]), np.asarray(feats))  # init slots untouched


def test_init_memory_layout():
  mem = memory.init_memory(jnp.ones((15, 3, 3, 4)), jnp.zeros((15, 4)), 50)
  assert mem.features.shape == (50, 3, 3, 4) and mem.weights.shape == (50,)
  np.testing.assert_allclose(np.asarray(mem.weights[:15]), 1 / 15)
  assert float(jnp.sum(mem.weights[15:])) == 0.0
  assert int(mem.num_stored) == 15 and int(mem.previous_replace_ind) == -1
  # Empty slots hold zeros: the tracker's filter update relies on it (`zero_empty_slots=False`).
  np.testing.assert_array_equal(np.asarray(mem.features[15:]), 0.0)


def test_weight_rule_vmaps():
  """Batched memories (the runner's vmap) follow the same rule per sequence."""
  w0 = np.zeros(20)
  w0[:5] = 0.2
  ws = jnp.asarray(np.stack([w0, w0]), jnp.float32)
  prev = jnp.asarray([-1, 7]), jnp.asarray([5, 8])
  rule = jax.vmap(lambda w, p, n, lr: memory.update_sample_weights(w, p, n, 5, lr))
  w, r = rule(ws, *prev, jnp.asarray([0.01, 0.02]))
  ref0, r0 = reference_update(w0, None, 5, 5, 0.01)
  ref1, r1 = reference_update(w0, 7, 8, 5, 0.02)
  np.testing.assert_allclose(np.asarray(w), np.stack([ref0, ref1]), rtol=1e-6)
  assert list(np.asarray(r)) == [r0, r1]


def test_update_memory_store_flag():
  """store=False (traced) leaves every field as it was; store=True is the plain update (the tracker's
  not-learning frames write nothing, its learning frames one slot)."""
  rng = np.random.default_rng(1)
  mem = memory.init_memory(jnp.asarray(rng.normal(size=(5, 2, 2, 3)), jnp.float32), jnp.ones((5, 4)), 12)
  upd = jax.jit(lambda mm, s: memory.update_memory(mm, jnp.full((2, 2, 3), 7.0), jnp.asarray([1., 2., 3., 4.]), 5,
                                                   0.01, 0.25, None, s))
  for _ in range(3):
    mem = upd(mem, jnp.asarray(True))
  kept = upd(mem, jnp.asarray(False))
  for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(mem)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  stored = upd(mem, jnp.asarray(True))
  plain = memory.update_memory(mem, jnp.full((2, 2, 3), 7.0), jnp.asarray([1., 2., 3., 4.]), 5, 0.01, 0.25)
  for a, b in zip(jax.tree.leaves(stored), jax.tree.leaves(plain)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
  assert int(stored.num_stored) == 9 and int(stored.previous_replace_ind) == 8
  np.testing.assert_array_equal(np.asarray(stored.features[8]), 7.0)
