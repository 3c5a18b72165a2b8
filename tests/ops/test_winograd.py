"""Winograd F(2x2, 3x3) against a float64 NumPy convolution written from its definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.ops import winograd


def conv_ref(x, k, pad):
  """Direct cross-correlation in float64: y[n, i, j, o] = sum_{a, b, c} xp[n, i + a, j + b, c] k[a, b, c, o]."""
  x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = xp.shape[1] - 2, xp.shape[2] - 2
  y = np.zeros((x.shape[0], ho, wo, k.shape[-1]))
  for a in range(3):
    for b in range(3):
      y += np.einsum("nijc,co->nijo", xp[:, a:a + ho, b:b + wo], k[a, b])
  return y


def _data(shape, cout, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape).astype(np.float32)
  k = (rng.standard_normal((3, 3, shape[-1], cout)) * np.sqrt(2.0 / (9 * shape[-1]))).astype(np.float32)
  return x, k


def test_kernel_transform_is_g_k_gt():
  g = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
  _, k = _data((1, 4, 4, 3), 5)
  want = np.einsum("ai,ijco,bj->abco", g, k.astype(np.float64), g).reshape(16, 3, 5)
  np.testing.assert_allclose(np.asarray(winograd.kernel_transform(k)), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape,pad", [((2, 8, 8, 4), 1), ((1, 7, 9, 3), 1), ((1, 6, 5, 2), 0),
                                       ((1, 9, 6, 4), 2), ((1, 3, 3, 2), 0), ((1, 1, 2, 3), 1)])
def test_matches_direct_convolution_float64(shape, pad):
  x, k = _data(shape, 6)
  with jax.enable_x64(True):
    got = np.asarray(winograd.conv3x3(jnp.asarray(x, jnp.float64), jnp.asarray(k, jnp.float64), pad))
  want = conv_ref(x, k, pad)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("hw,c", [(22, 256), (18, 128), (11, 128)])
def test_float32_rounding_is_that_of_the_direct_convolution(hw, c):
  """On ResNet-sized maps the float32 result is as close to the exact one as XLA's direct convolution."""
  x, k = _data((1, hw, hw, c), c, seed=hw)
  exact = conv_ref(x, k, 1)
  wino = np.asarray(jax.jit(winograd.conv3x3, static_argnums=2)(x, k, 1))
  direct = np.asarray(jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC")))
  scale = np.abs(exact).max()
  err_wino, err_direct = np.abs(wino - exact).max() / scale, np.abs(direct - exact).max() / scale
  assert err_wino < 2e-6
  assert err_wino < 3 * err_direct


def test_gradients_match_the_direct_convolution():
  x, k = _data((1, 6, 7, 3), 4)
  direct = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),  # noqa: E731
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))  # noqa: E731
  with jax.enable_x64(True):
    x64, k64 = jnp.asarray(x, jnp.float64), jnp.asarray(k, jnp.float64)
    got = jax.grad(loss(lambda x, k: winograd.conv3x3(x, k, 1)), argnums=(0, 1))(x64, k64)
    want = jax.grad(loss(direct), argnums=(0, 1))(x64, k64)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-10, atol=1e-12)


def test_bad_shapes_raise_clear_errors():
  x, k = _data((1, 4, 4, 3), 2)
  with pytest.raises(ValueError, match="kernel must be"):
    winograd.kernel_transform(k[:2])
  with pytest.raises(ValueError, match="expected x"):
    winograd.conv3x3(x, k[:, :, :2], 1)
  with pytest.raises(ValueError, match="padding"):
    winograd.conv3x3(x, k, -1)
  with pytest.raises(ValueError, match="no output"):
    winograd.conv3x3(x[:, :1, :1], k, 0)


@pytest.mark.parametrize("cin,min_channels,stride,dtype,padding,used", [
    (128, 128, 1, None, 1, True), (128, 128, 1, None, 0, True), (64, 128, 1, None, 1, False),
    (64, 64, 1, None, 1, True), (128, 128, 2, None, 1, False), (128, 128, 1, jnp.bfloat16, 1, False)])
def test_conv2d_takes_winograd_only_where_eligible(cin, min_channels, stride, dtype, padding, used):
  """`Conv2d(winograd=n)`: 3x3, stride 1, >= n inputs, float32; its output stays the direct one's."""
  from cia_jax.models.layers import Conv2d  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 9, 8, cin)), jnp.float32)
  conv = Conv2d(16, 3, stride=stride, padding=padding, dtype=dtype, winograd=min_channels)
  variables = conv.init(jax.random.key(0), x)
  jaxpr = str(jax.make_jaxpr(lambda v: conv.apply(v, x))(variables))
  assert ("conv_general_dilated" not in jaxpr) == used
  got = np.asarray(conv.apply(variables, x), np.float64)
  want = np.asarray(conv.clone(winograd=0).apply(variables, x), np.float64)
  tol = 2e-2 if dtype is not None else 2e-6
  np.testing.assert_allclose(got, want, atol=tol * np.abs(want).max())
