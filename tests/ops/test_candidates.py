"""Candidate extraction (keeptrack.md §2.1-2.3) against a loop-level NumPy local-maximum search."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.ops.candidates import (candidate_image_coords, find_local_maxima, gather_descriptors,
                                    local_maximum_mask)

TH = 0.05


def np_local_maxima(scores, threshold, pool=5):
  """Every cell equal to the max of its window clipped to the map and > threshold; sorted by (-score, row, col)."""
  scores = np.asarray(scores, np.float32).astype(np.float64)
  threshold = float(np.float32(threshold))  # the comparison the float32 implementation makes
  h, w = scores.shape
  r = pool // 2
  found = []
  for i in range(h):
    for j in range(w):
      window = scores[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
      if scores[i, j] == window.max() and scores[i, j] > threshold:
        found.append((-scores[i, j], i, j))
  found.sort()
  return np.array([(i, j) for _, i, j in found], np.int64).reshape(-1, 2), np.array([-s for s, _, _ in found])


def check(scores, capacity, threshold=TH):
  scores = np.asarray(scores, np.float32)
  coords, values = np_local_maxima(scores, threshold)
  out = jax.jit(find_local_maxima, static_argnums=2)(scores, threshold, capacity)
  k = min(len(coords), capacity)
  assert out.coords.shape == (capacity, 2) and out.coords.dtype == jnp.int32
  assert out.scores.shape == (capacity,) and out.valid.shape == (capacity,)
  assert int(out.num_maxima) == len(coords) and int(out.count) == k
  np.testing.assert_array_equal(out.valid, np.arange(capacity) < k)
  np.testing.assert_array_equal(out.coords[:k], coords[:k])
  np.testing.assert_array_equal(out.scores[:k], values[:k].astype(np.float32))
  np.testing.assert_array_equal(out.coords[k:], 0)
  np.testing.assert_array_equal(out.scores[k:], 0)
  return out


def test_plateaus_give_several_candidates_in_row_major_order():
  s = np.zeros((9, 9))
  s[4, 4] = s[4, 5] = 0.6  # horizontal plateau: both cells are maxima
  s[7, 1] = s[8, 1] = s[8, 0] = 0.3  # plateau at the border
  s[1, 7] = 0.6  # same score as the first plateau, earlier in row-major order
  out = check(s, 8)
  np.testing.assert_array_equal(out.coords[:6], [[1, 7], [4, 4], [4, 5], [7, 1], [8, 0], [8, 1]])


def test_border_cells_compete_only_with_real_neighbours():
  # Each corner / edge cell is the max of its clipped window; with zero padding instead of -inf a negative
  # corner could never be a maximum, here the threshold is negative so it must be one.
  s = np.full((7, 7), -1.0)
  s[0, 0], s[0, 6], s[6, 3], s[3, 0] = -0.5, 0.2, 0.4, 0.1
  out = check(s, 6, threshold=-0.8)
  np.testing.assert_array_equal(out.coords[:4], [[6, 3], [0, 6], [3, 0], [0, 0]])
  # A peak two cells inside the window of a higher one is suppressed; three cells away it is not.
  s = np.zeros((11, 11))
  s[5, 5], s[5, 7], s[5, 8] = 1.0, 0.9, 0.8
  out = check(s, 4)
  np.testing.assert_array_equal(out.coords[:out.count], [[5, 5]])
  s[5, 7] = 0.0
  out = check(s, 4)
  np.testing.assert_array_equal(out.coords[:out.count], [[5, 5], [5, 8]])


def test_threshold_is_strict_and_empty_maps_give_no_candidates():
  s = np.zeros((8, 8), np.float32)
  s[2, 2] = TH  # equal to the (float32) threshold: not a candidate
  s[6, 6] = np.nextafter(np.float32(TH), np.float32(1))
  out = check(s, 3)
  np.testing.assert_array_equal(out.coords[:out.count], [[6, 6]])
  s[6, 6] = 0.01
  out = check(s, 3)
  assert int(out.count) == 0 and not bool(out.valid.any())
  out = check(np.zeros((5, 5)), 0)
  assert out.coords.shape == (0, 2)


def test_more_maxima_than_capacity_keeps_the_best():
  s = np.zeros((23, 23))
  rng = np.random.default_rng(1)
  cells = [(i, j) for i in range(0, 23, 3) for j in range(0, 23, 3)]
  for (i, j), v in zip(cells, rng.uniform(0.1, 1.0, len(cells))):
    s[i, j] = v
  out = check(s, 5)
  assert int(out.num_maxima) == len(cells) and int(out.count) == 5
  check(s, len(cells) + 7)  # capacity beyond the number of maxima: padding
  check(s[:4, :4], 40)  # capacity beyond S * S


@pytest.mark.parametrize("seed", range(4))
def test_random_maps_match_numpy(seed):
  rng = np.random.default_rng(seed)
  size = (23, 31, 17, 5)[seed]
  s = rng.uniform(-0.2, 1.0, (size, size))
  s = np.round(s, 1)  # many exact ties and plateaus
  check(s, 12)
  check(rng.normal(0.0, 0.2, (size, size)), 8)


def test_vmap_and_traced_threshold():
  rng = np.random.default_rng(5)
  maps = np.round(rng.uniform(0, 1, (3, 13, 13)), 1).astype(np.float32)
  ths = np.array([0.05, 0.5, 0.95], np.float32)
  out = jax.jit(jax.vmap(find_local_maxima, in_axes=(0, 0, None)), static_argnums=2)(maps, ths, 6)
  for b in range(3):
    coords, values = np_local_maxima(maps[b], ths[b])
    k = min(len(coords), 6)
    np.testing.assert_array_equal(out.coords[b, :k], coords[:k])
    np.testing.assert_array_equal(out.valid[b], np.arange(6) < k)
  mask = local_maximum_mask(maps[0], 0.05)
  assert mask.shape == (13, 13) and int(mask.sum()) == len(np_local_maxima(maps[0], 0.05)[0])


def test_candidate_image_coords_formula():
  coords = np.array([[0, 0], [22, 22], [11, 3]])
  box = np.array([100.0, 50.0, 220.0, 176.0])  # x, y, w, h
  out = np.asarray(candidate_image_coords(coords, box, 23))
  expected = np.stack([176.0 * coords[:, 0] / 22 + 50.0, 220.0 * coords[:, 1] / 22 + 100.0], axis=-1)
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  batched = candidate_image_coords(np.stack([coords, coords]), np.stack([box, box + 1]), 23)
  assert batched.shape == (2, 3, 2)
  np.testing.assert_allclose(batched[1], expected + 1 + np.array([[1.0, 1.0]]) * coords / 22, rtol=1e-6)


def test_gather_descriptors_takes_the_integer_cell():
  rng = np.random.default_rng(2)
  fmap = rng.normal(size=(9, 9, 6)).astype(np.float32)
  coords = np.array([[0, 8], [4, 2], [8, 8], [0, 0]], np.int32)
  valid = np.array([True, True, True, False])
  out = jax.jit(gather_descriptors)(fmap, coords, valid)
  np.testing.assert_array_equal(out[:3], fmap[coords[:3, 0], coords[:3, 1]])
  np.testing.assert_array_equal(out[3], 0)
  np.testing.assert_array_equal(gather_descriptors(fmap, coords), fmap[coords[:, 0], coords[:, 1]])
