"""blocked_sum: the sum of `jnp.sum`, with a rounding error that stays small on long float32 sums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.ops.sums import blocked_sum


@pytest.mark.parametrize("shape,axis", [((3, 40, 7), None), ((3, 40, 7), 1), ((3, 40, 7), (0, 2)),
                                        ((50, 1, 19, 19), (0, 2, 3)), ((2, 4, 4, 512), (1, 2, 3)),
                                        ((5, 300), -1), ((6,), 0)])
def test_same_sum_as_float64_numpy(shape, axis):
  x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  got = np.asarray(jax.jit(lambda v: blocked_sum(v, axis, block=16))(x))
  want = np.sum(x.astype(np.float64), axis=axis)
  assert got.shape == np.shape(want)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.sum(np.abs(x.astype(np.float64)), axis=axis).max())


def test_long_positive_sum_keeps_its_digits():
  # 18050 positive terms (the optimiser's sum q^2 on a full 50-slot memory). One after the other in float32 the
  # sum drifts by ~1e-5 relative; the blocked sum stays near float32's own resolution.
  x = (1.0 + np.random.default_rng(1).random(18050)).astype(np.float32)
  exact = np.sum(x.astype(np.float64))
  sequential = np.cumsum(x, dtype=np.float32)[-1]
  blocked = float(jax.jit(blocked_sum)(x))
  assert abs(sequential - exact) / exact > 1e-6  # the problem is real for this input
  assert abs(blocked - exact) / exact < 3e-7
  assert abs(blocked - exact) < abs(sequential - exact) / 10


def test_differentiable_and_batched():
  x = np.random.default_rng(2).standard_normal((4, 9, 33)).astype(np.float32)
  g = jax.grad(lambda v: blocked_sum(v * v, (1, 2), block=8).sum())(x)
  np.testing.assert_allclose(np.asarray(g), 2 * x, rtol=1e-6)
  v = jax.vmap(lambda v: blocked_sum(v, None, block=8))(x)
  np.testing.assert_allclose(np.asarray(v), x.astype(np.float64).sum(axis=(1, 2)), rtol=0, atol=1e-4)


def test_bad_block():
  with pytest.raises(ValueError, match="block must be >= 1"):
    blocked_sum(jnp.ones(4), block=0)
