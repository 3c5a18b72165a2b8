"""FilterInitializerLinear (design.md §2.3) against float64 NumPy: conv3x3 + bias, PrRoI pooling, image mean."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.dimp.initializer import FilterInitializerLinear


def np_conv3x3_bias(x, k, b):
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = x.shape[1:3]
  return b + sum(np.einsum("nhwc,co->nhwo", xp[:, u:u + h, v:v + w], k[u, v])
                 for u in range(3) for v in range(3))


def np_prroi(fmap, box_xyxy, out, scale):
  """Spec 3.3: mean over each bin of the zero-padded bilinear interpolant, via the hat antiderivative G."""

  def big_g(u):
    u = np.clip(u, -1, 1)
    return np.where(u <= 0, 0.5 * (1 + u) ** 2, 1 - 0.5 * (1 - u) ** 2)

  x1, y1, x2, y2 = np.asarray(box_xyxy, np.float64) * scale
  bh, bw = max(y2 - y1, 0) / out, max(x2 - x1, 0) / out
  res = np.zeros((out, out, fmap.shape[-1]))
  if bh * bw == 0:
    return res
  for p in range(out):
    for q in range(out):
      a_y, b_y, a_x, b_x = y1 + p * bh, y1 + (p + 1) * bh, x1 + q * bw, x1 + (q + 1) * bw
      wy = big_g(b_y - np.arange(fmap.shape[0])) - big_g(a_y - np.arange(fmap.shape[0]))
      wx = big_g(b_x - np.arange(fmap.shape[1])) - big_g(a_x - np.arange(fmap.shape[1]))
      res[p, q] = np.einsum("i,j,ijc->c", wy, wx, fmap) / (bh * bw)
  return res


def test_matches_numpy():
  rng = np.random.default_rng(0)
  nimg, b, h, d = 3, 2, 6, 5
  feat = rng.normal(size=(nimg, b, h, h, d)).astype(np.float32)
  # Fractional boxes; the last one sticks out of the 96 px crop (the interpolant decays to 0 outside).
  box = np.array([[[10.3, 20.7, 40.1, 30.9], [0.0, 0.0, 96.0, 96.0]],
                  [[33.3, 5.5, 20.0, 50.2], [50.0, 60.0, 17.0, 9.0]],
                  [[70.0, 71.0, 40.0, 35.0], [-8.0, 12.0, 30.0, 30.0]]], np.float32)
  m = FilterInitializerLinear(filter_size=4, feature_stride=16)
  v = m.init(jax.random.PRNGKey(0), jnp.asarray(feat), jnp.asarray(box))
  p = v["params"]["filter_conv"]
  assert p["kernel"].shape == (3, 3, d, d) and p["bias"].shape == (d,)
  np.testing.assert_array_equal(np.asarray(p["bias"]), 0.0)
  p = {"kernel": p["kernel"], "bias": jnp.asarray(rng.normal(size=(d,)), jnp.float32)}  # exercise the bias
  got = m.apply({"params": {"filter_conv": p}}, jnp.asarray(feat), jnp.asarray(box))
  assert got.shape == (b, 4, 4, d)
  k, bias = np.asarray(p["kernel"], np.float64), np.asarray(p["bias"], np.float64)
  conv = np_conv3x3_bias(feat.reshape(nimg * b, h, h, d).astype(np.float64), k, bias)
  conv = conv.reshape(nimg, b, h, h, d)
  ref = np.zeros((b, 4, 4, d))
  for n in range(nimg):
    for s in range(b):
      x, y, w, hh = box[n, s]
      ref[s] += np_prroi(conv[n, s], (x, y, x + w, y + hh), 4, 1 / 16) / nimg
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)


def test_conv_init_std():
  d = 64
  v = FilterInitializerLinear().init(jax.random.PRNGKey(1), jnp.zeros((1, 1, 4, 4, d)), jnp.zeros((1, 1, 4)))
  std = float(jnp.std(v["params"]["filter_conv"]["kernel"]))
  np.testing.assert_allclose(std, math.sqrt(2 / (9 * d)), rtol=0.1)


def test_full_size_shape():
  m = FilterInitializerLinear()
  feat = jax.ShapeDtypeStruct((3, 8, 18, 18, 256), jnp.float32)
  box = jax.ShapeDtypeStruct((3, 8, 4), jnp.float32)
  v = jax.eval_shape(lambda f, b: m.init(jax.random.PRNGKey(0), f, b), feat, box)
  assert jax.eval_shape(m.apply, v, feat, box).shape == (8, 4, 4, 256)


def test_errors():
  m = FilterInitializerLinear()
  with pytest.raises(ValueError, match="rank 5"):
    m.init(jax.random.PRNGKey(0), jnp.zeros((2, 6, 6, 4)), jnp.zeros((2, 1, 4)))
  with pytest.raises(ValueError, match="box_xywh"):
    m.init(jax.random.PRNGKey(0), jnp.zeros((2, 1, 6, 6, 4)), jnp.zeros((2, 4)))
