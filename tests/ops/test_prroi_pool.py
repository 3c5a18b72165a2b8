"""Precise RoI Pooling against an independent float64 NumPy reference (dense numerical integration)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.ops.prroi_pool import prroi_pool, prroi_pool_grouped


def _bilinear_zero_padded(feat, ys, xs):
  """f(y, x) of a [H, W, C] map at points ys [P], xs [Q] -> [P, Q, C], zero outside, by floor/ceil lookup."""
  h, w, c = feat.shape
  padded = np.zeros((h + 2, w + 2, c))
  padded[1:-1, 1:-1] = feat

  def corners(t, n):
    t0 = np.floor(t)
    frac = t - t0
    i0 = t0.astype(int) + 1  # +1: index into the padded map
    i0c = np.clip(i0, 0, n + 1)
    i1c = np.clip(i0 + 1, 0, n + 1)
    # Points beyond the 1-cell zero band read zeros anyway; clip keeps indices legal.
    far = (t < -1) | (t > n)
    return i0c, i1c, frac, far

  y0, y1, fy, fary = corners(ys, h)
  x0, x1, fx, farx = corners(xs, w)
  out = ((1 - fy)[:, None, None] * (1 - fx)[None, :, None] * padded[y0][:, x0]
         + (1 - fy)[:, None, None] * fx[None, :, None] * padded[y0][:, x1]
         + fy[:, None, None] * (1 - fx)[None, :, None] * padded[y1][:, x0]
         + fy[:, None, None] * fx[None, :, None] * padded[y1][:, x1])
  out[fary] = 0.0
  out[:, farx] = 0.0
  return out


def _reference_prroi(features, rois, ph, pw, scale, samples=240):
  """Mean of the interpolant over each bin by the midpoint rule (float64)."""
  k = rois.shape[0]
  c = features.shape[-1]
  out = np.zeros((k, ph, pw, c))
  for r in range(k):
    b = int(rois[r, 0])
    x1, y1, x2, y2 = rois[r, 1:] * scale
    bw = max(x2 - x1, 0.0) / pw
    bh = max(y2 - y1, 0.0) / ph
    if bw * bh == 0:
      continue
    for i in range(ph):
      ys = y1 + bh * (i + (np.arange(samples) + 0.5) / samples)
      for j in range(pw):
        xs = x1 + bw * (j + (np.arange(samples) + 0.5) / samples)
        out[r, i, j] = _bilinear_zero_padded(features[b], ys, xs).mean(axis=(0, 1))
  return out


def _random_rois(rng, n_images, k, h, w, stride):
  """Boxes in input pixels, many partly outside the map, plus degenerate ones."""
  x1 = rng.uniform(-2.5, w + 0.5, size=k) * stride
  y1 = rng.uniform(-2.5, h + 0.5, size=k) * stride
  bw = rng.uniform(0.2, 0.7 * w, size=k) * stride
  bh = rng.uniform(0.2, 0.7 * h, size=k) * stride
  rois = np.stack([rng.integers(0, n_images, size=k), x1, y1, x1 + bw, y1 + bh], axis=1)
  rois[0, 3] = rois[0, 1]  # zero width
  rois[1, 4] = rois[1, 2] - 3.0  # negative height
  return rois


@pytest.mark.parametrize("output_size,stride", [((3, 3), 16.0), ((4, 5), 8.0), ((1, 1), 32.0)])
def test_matches_dense_integration(output_size, stride):
  rng = np.random.default_rng(0)
  n, h, w, c = 2, 7, 9, 3
  features = rng.normal(size=(n, h, w, c))
  rois = _random_rois(rng, n, 12, h, w, stride)
  ph, pw = output_size
  ours = np.asarray(prroi_pool(jnp.asarray(features, jnp.float32), jnp.asarray(rois, jnp.float32),
                               output_size, 1.0 / stride))
  ref = _reference_prroi(features, rois, ph, pw, 1.0 / stride)
  # Midpoint rule on a piecewise bilinear function: error ~ 1/samples^2 relative to the map scale.
  np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-3)
  assert np.all(ours[0] == 0.0) and np.all(ours[1] == 0.0)  # degenerate boxes give defined zeros
  assert np.all(np.isfinite(ours))


def test_box_far_outside_is_zero_and_grouped_matches():
  rng = np.random.default_rng(1)
  features = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
  far = jnp.array([[1, 200.0, 200.0, 260.0, 230.0]])
  assert np.all(np.asarray(prroi_pool(features, far, 2, 1 / 16)) == 0.0)
  boxes = jnp.asarray(rng.uniform(0, 80, size=(2, 3, 2)), jnp.float32)
  boxes = jnp.concatenate([boxes, boxes + 20.0], axis=-1)
  grouped = prroi_pool_grouped(features, boxes, 3, 1 / 16)
  rois = jnp.concatenate([jnp.repeat(jnp.arange(2.0), 3)[:, None], boxes.reshape(-1, 4)], axis=1)
  np.testing.assert_allclose(np.asarray(grouped).reshape(6, 3, 3, 4),
                             np.asarray(prroi_pool(features, rois, 3, 1 / 16)), rtol=1e-6, atol=1e-6)


def test_constant_map_interior_box_gives_the_constant():
  features = jnp.full((1, 10, 10, 2), 3.0)
  out = prroi_pool(features, jnp.array([[0, 16.0, 20.0, 100.0, 90.0]]), 4, 1 / 16)
  np.testing.assert_allclose(np.asarray(out), 3.0, rtol=1e-6)


def test_box_gradient_matches_central_differences():
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    features = jnp.asarray(rng.normal(size=(1, 6, 7, 2)))
    proj = jnp.asarray(rng.normal(size=(3, 3, 2)))

    def f(box):
      rois = jnp.concatenate([jnp.zeros((1,)), box])[None]
      return jnp.sum(prroi_pool(features, rois, 3, 1 / 8) * proj)

    for box in ([5.0, 3.3, 41.7, 30.2], [-10.0, -6.0, 20.0, 25.0], [30.0, 20.0, 70.0, 60.0]):
      box = jnp.asarray(box)
      grad = np.asarray(jax.grad(f)(box))
      eps = 1e-4
      fd = np.array([(f(box.at[i].add(eps)) - f(box.at[i].add(-eps))) / (2 * eps) for i in range(4)])
      np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)
      assert np.all(grad != 0.0)


def test_feature_gradient_and_jit_vmap():
  rng = np.random.default_rng(3)
  features = jnp.asarray(rng.normal(size=(2, 5, 5, 3)), jnp.float32)
  rois = jnp.array([[0, 8.0, 4.0, 24.0, 32.0], [1, 0.0, 0.0, 16.0, 16.0]])  # inside [0, (5-1)*8]
  g = jax.grad(lambda f: jnp.sum(prroi_pool(f, rois, 2, 1 / 8)))(features)
  # The pooling is linear in the features with weights summing to (covered area)/(bin area) = 1
  # per bin for boxes inside [0, (H-1)*stride]: the total gradient mass equals the number of outputs.
  np.testing.assert_allclose(float(jnp.sum(g)), 2 * 2 * 2 * 3, rtol=1e-5)
  batched = jax.jit(jax.vmap(lambda f: prroi_pool(f[None], rois[:1].at[0, 0].set(0), 2, 1 / 8)))(features)
  assert batched.shape == (2, 1, 2, 2, 3)


def test_bad_input_raises_clear_errors():
  with pytest.raises(ValueError, match="features must be"):
    prroi_pool(jnp.zeros((5, 5, 3)), jnp.zeros((1, 5)), 2, 1.0)
  with pytest.raises(ValueError, match="rois must be"):
    prroi_pool(jnp.zeros((1, 5, 5, 3)), jnp.zeros((1, 4)), 2, 1.0)


def test_window_with_origin_pools_what_the_whole_map_pools():
  """A window of the map with its origin gives the whole map's pooling (the float64 reference) and box gradient
  for boxes whose weights vanish outside it (design.md §5.6); a box reaching out of the window does not."""
  rng = np.random.default_rng(3)
  feat = rng.normal(size=(2, 20, 20, 5))
  stride, origin = 8.0, np.array([[4, 6], [0, 9]])  # (row, column) of the window's first cell per image
  # x1, y1, x2, y2 pixels, per image: inside the 10 x 10 window by >= 1 cell (weights vanish beyond +-1 cell).
  boxes = np.array([[[7.2, 5.1, 14.0, 12.5], [9.0, 8.0, 10.5, 9.5]],
                    [[10.3, 1.0, 17.4, 8.2], [12.0, 0.5, 16.0, 3.0]]]) * stride
  window = np.stack([feat[i, o[0]:o[0] + 10, o[1]:o[1] + 10] for i, o in enumerate(origin)])
  ref = _reference_prroi(feat, np.concatenate([np.c_[np.full(2, i), boxes[i]] for i in range(2)]), 3, 3,
                         1 / stride).reshape(2, 2, 3, 3, 5)
  pool = jax.jit(lambda f, b, o: prroi_pool_grouped(f, b, 3, 1 / stride, o))
  whole = pool(jnp.asarray(feat, jnp.float32), jnp.asarray(boxes, jnp.float32), None)
  win = pool(jnp.asarray(window, jnp.float32), jnp.asarray(boxes, jnp.float32), jnp.asarray(origin))
  np.testing.assert_allclose(np.asarray(win), ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(win), np.asarray(whole), rtol=1e-6, atol=1e-6)
  grad = lambda f, o: jax.grad(lambda b: jnp.sum(jnp.sin(prroi_pool_grouped(f, b, 3, 1 / stride, o))))(  # noqa: E731
      jnp.asarray(boxes, jnp.float32))
  np.testing.assert_allclose(np.asarray(grad(jnp.asarray(window, jnp.float32), jnp.asarray(origin))),
                             np.asarray(grad(jnp.asarray(feat, jnp.float32), None)), rtol=1e-5, atol=1e-5)
  # Reaching past the window's last column (x2 = 16.5 cells > 6 + 10 - 1): the window lacks cells it reads.
  out = boxes.copy()
  out[0, 0, 2] = 16.5 * stride
  a = pool(jnp.asarray(window, jnp.float32), jnp.asarray(out, jnp.float32), jnp.asarray(origin))
  b = pool(jnp.asarray(feat, jnp.float32), jnp.asarray(out, jnp.float32), None)
  assert np.abs(np.asarray(a)[0, 0] - np.asarray(b)[0, 0]).max() > 1e-3


def test_origin_must_have_one_row_per_image():
  with pytest.raises(ValueError, match=r"origin_yx must be \[N=2, 2\]"):
    prroi_pool_grouped(jnp.zeros((2, 4, 4, 1)), jnp.zeros((2, 1, 4)), 2, 1.0, jnp.zeros((1, 2), jnp.int32))
