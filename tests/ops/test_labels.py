"""Distance-bin map (design.md §2.4) and Gaussian label (design.md §2.5) against float64 NumPy written from the spec."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.ops.image import gaussian_label
from cia_jax.ops.labels import distance_bin_readout, distance_map


def np_distance_map(center_yx, hw, num_bins, disp):
  """Loop-level reference: bins max(0, 1 - |t - k|), last bin clip(1 + t - (K - 1), 0, 1)."""
  center_yx = np.asarray(center_yx, np.float64).reshape(-1, 2)
  out = np.zeros((len(center_yx), hw[0], hw[1], num_bins))
  for n, (cy, cx) in enumerate(center_yx):
    for i in range(hw[0]):
      for j in range(hw[1]):
        t = np.hypot(i - cy, j - cx) / disp
        for k in range(num_bins - 1):
          out[n, i, j, k] = max(0.0, 1.0 - abs(t - k))
        out[n, i, j, -1] = min(max(1.0 + t - (num_bins - 1), 0.0), 1.0)
  return out


def np_gaussian_label(box_xywh, sigma_factor, feat_sz, image_sz, kernel_sz, end_pad):
  box = np.asarray(box_xywh, np.float64).reshape(-1, 4)
  extra = 1 if (end_pad and kernel_sz % 2 == 0) else 0
  shift = 0.5 if kernel_sz % 2 == 0 else 0.0
  k = -(feat_sz - 1) / 2 + np.arange(feat_sz + extra)
  sigma = sigma_factor * feat_sz
  out = []
  for x, y, w, h in box:
    cx = feat_sz * (x + w / 2 - image_sz / 2) / image_sz + shift
    cy = feat_sz * (y + h / 2 - image_sz / 2) / image_sz + shift
    out.append(np.exp(-((k[:, None] - cy) ** 2 + (k[None, :] - cx) ** 2) / (2 * sigma**2)))
  return np.stack(out)


def test_distance_map_matches_numpy():
  rng = np.random.default_rng(0)
  # Fractional centres, one on a grid point, one outside the grid; small K so the saturating bin is exercised.
  centers = np.concatenate([rng.uniform(-2, 9, (4, 2)), [[3.0, 4.0]]]).astype(np.float32)
  got = distance_map(centers.reshape(5, 1, 2), (7, 8), num_bins=12, bin_displacement=0.5)
  assert got.shape == (5, 1, 7, 8, 12)
  np.testing.assert_allclose(np.asarray(got)[:, 0], np_distance_map(centers, (7, 8), 12, 0.5), atol=2e-6)


def test_distance_map_defaults_peak_and_saturating_bin():
  d = np.asarray(distance_map(jnp.array([9.0, 9.0]), (19, 19)))
  assert d.shape == (19, 19, 100)
  np.testing.assert_array_equal(d[9, 9], np.eye(100)[0])  # on the centre: bin 0 only
  np.testing.assert_allclose(d[9, 10, 10], 1.0, atol=1e-5)  # 1 cell away = bin 10
  np.testing.assert_array_equal(d[0, 0], np.eye(100)[99])  # 12.7 cells >= 9.9: last bin saturated at 1
  np.testing.assert_allclose(d.sum(-1), 1.0, atol=1e-5)  # hat bins + saturating bin: partition of unity
  # Between bins 98 and 99 (t = 98.5) both hold 0.5.
  e = np.asarray(distance_map(jnp.array([0.0, 0.0]), (1, 11), num_bins=100, bin_displacement=10 / 98.5))
  np.testing.assert_allclose(e[0, 10, 98:], [0.5, 0.5], atol=1e-4)


@pytest.mark.parametrize("num_bins, disp", [(12, 0.5), (100, 0.1), (2, 1.5)])
def test_distance_bin_readout_equals_the_map_times_the_weights(num_bins, disp):
  """The interpolated read-out against the NumPy bin map @ weights: cells at the centre, between bins, on bin
  edges and past the saturating last bin."""
  rng = np.random.default_rng(3)
  centers = np.array([[3.0, 4.0], [2.3, 5.7], [0.0, 0.0], [6.5, -2.0], [3.0, 4.5]])
  w = rng.normal(size=num_bins)
  ref = np_distance_map(centers, (7, 8), num_bins, disp) @ w
  with jax.enable_x64():
    got = distance_bin_readout(jnp.asarray(centers.reshape(5, 1, 2)), (7, 8), jnp.asarray(w), disp)
    assert got.shape == (5, 1, 7, 8) and got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got)[:, 0], ref, rtol=1e-12, atol=1e-12)
    # Its weight gradient is the bin map itself (training learns the three predictors through it).
    gw = jax.grad(lambda v: jnp.sum(distance_bin_readout(jnp.asarray(centers), (7, 8), v, disp)))(jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(gw), np_distance_map(centers, (7, 8), num_bins, disp).sum((0, 1, 2)),
                               rtol=1e-12, atol=1e-12)
  got32 = distance_bin_readout(jnp.asarray(centers, jnp.float32), (7, 8), jnp.asarray(w, jnp.float32), disp)
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got32), ref, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="weights must be"):
    distance_bin_readout(jnp.zeros(2), (3, 3), jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match="num_bins >= 2"):
    distance_bin_readout(jnp.zeros(2), (3, 3), jnp.zeros(1))


def test_distance_map_gradient_finite_at_centre():
  g = jax.grad(lambda c: jnp.sum(distance_map(c, (5, 5), 10, 0.3) * jnp.arange(10.0)))(jnp.array([2.0, 2.0]))
  assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("kernel_sz,end_pad", [(4, True), (4, False), (3, True)])
def test_gaussian_label_matches_numpy(kernel_sz, end_pad):
  rng = np.random.default_rng(1)
  boxes = np.concatenate([rng.uniform(40, 160, (5, 2)), rng.uniform(20, 120, (5, 2))], -1).astype(np.float32)
  ref = np_gaussian_label(boxes, 0.25 / 5, 18, 288, kernel_sz, end_pad)
  got_np = gaussian_label(boxes, 0.25 / 5, 18, 288, kernel_sz, end_pad)
  got_jx = gaussian_label(jnp.asarray(boxes), 0.25 / 5, 18, 288, kernel_sz, end_pad)
  assert isinstance(got_np, np.ndarray) and isinstance(got_jx, jax.Array)
  n = 19 if (kernel_sz == 4 and end_pad) else 18
  assert got_np.shape == got_jx.shape == (5, n, n)
  np.testing.assert_allclose(got_np, ref, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got_jx), ref, atol=1e-6)


def test_gaussian_label_peak_at_box_centre_and_consistent_with_distance_map():
  # Centre (x + w/2, y + h/2) = (160, 96) px -> cells (col, row) = (10, 6) at stride 16 (+0.5 shift included).
  box = np.array([140.0, 76.0, 40.0, 40.0], np.float32)
  lab = gaussian_label(box, 0.25 / 5, 18, 288)
  assert lab.shape == (19, 19)
  assert np.unravel_index(np.argmax(lab), lab.shape) == (6, 10)
  np.testing.assert_allclose(lab[6, 10], 1.0, atol=1e-6)
  # Same grid as the distance map centred at box_centre / 16: label = exp(-d^2 / (2 sigma^2)), sigma = 0.9.
  yy, xx = np.mgrid[:19, :19]
  d2 = (yy - 96 / 16) ** 2 + (xx - 160 / 16) ** 2
  np.testing.assert_allclose(lab, np.exp(-d2 / (2 * 0.9**2)), atol=1e-6)
  # An odd kernel has no +0.5 shift: the same box peaks half a cell earlier (between cells 5/6 and 9/10).
  odd = gaussian_label(box, 0.25 / 5, 18, 288, kernel_sz=3)
  assert odd.shape == (18, 18)
  np.testing.assert_allclose(odd[5, 9], odd[6, 10], rtol=1e-6)
  np.testing.assert_allclose(odd[5, 9], np.exp(-0.5 / (2 * 0.81)), rtol=1e-5)  # d^2 = 0.5 cells^2


def test_gaussian_label_rectangular_sizes():
  lab = gaussian_label(np.array([[0.0, 0.0, 64.0, 32.0]]), 0.05, (10, 12), (160, 192))
  assert lab.shape == (1, 11, 13)
  assert np.unravel_index(np.argmax(lab[0]), (11, 13)) == (1, 2)  # centre (32, 16) px / 16


@pytest.mark.parametrize("kwargs,match", [
    (dict(box_xywh=np.zeros((3,)), sigma_factor=0.05, feat_sz=18, image_sz=288), "box_xywh"),
    (dict(box_xywh=np.zeros((4,)), sigma_factor=0.0, feat_sz=18, image_sz=288), "sigma_factor"),
    (dict(box_xywh=np.zeros((4,)), sigma_factor=0.05, feat_sz=(1, 2, 3), image_sz=288), "feat_sz"),
    (dict(box_xywh=np.zeros((4,)), sigma_factor=0.05, feat_sz=18, image_sz=-1), "image_sz"),
])
def test_gaussian_label_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    gaussian_label(**kwargs)


def test_distance_map_errors():
  with pytest.raises(ValueError, match="center_yx"):
    distance_map(jnp.zeros((3,)), (5, 5))
  with pytest.raises(ValueError, match="output_hw"):
    distance_map(jnp.zeros((2,)), (5,))
  with pytest.raises(ValueError, match="num_bins"):
    distance_map(jnp.zeros((2,)), (5, 5), num_bins=1)
