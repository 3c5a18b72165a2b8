"""Per-sequence filter application (design.md §2.2) against a float64 NumPy correlation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.dimp.filter import apply_filter, score_size


def np_correlate(feat, filt):
  """scores[n, b, i, j] = sum_{u, v, d} pad(feat)[n, b, i + u, j + v, d] * filt[b, u, v, d], pad = fh // 2."""
  feat, filt = np.asarray(feat, np.float64), np.asarray(filt, np.float64)
  n, b, h, w, d = feat.shape
  fh, fw = filt.shape[1:3]
  xp = np.pad(feat, ((0, 0), (0, 0), (fh // 2, fh // 2), (fw // 2, fw // 2), (0, 0)))
  ho, wo = xp.shape[2] - fh + 1, xp.shape[3] - fw + 1
  out = np.zeros((n, b, ho, wo))
  for i in range(ho):
    for j in range(wo):
      out[:, :, i, j] = np.einsum("nbuvd,buvd->nb", xp[:, :, i:i + fh, j:j + fw], filt)
  return out


@pytest.mark.parametrize("impl", ["taps", "grouped"])
@pytest.mark.parametrize("fsz", [(4, 4), (3, 3), (4, 3)])
def test_apply_filter_matches_numpy(impl, fsz):
  rng = np.random.default_rng(0)
  feat = rng.normal(size=(3, 2, 6, 5, 4)).astype(np.float32)
  filt = rng.normal(size=(2, *fsz, 4)).astype(np.float32)
  got = apply_filter(jnp.asarray(feat), jnp.asarray(filt), impl=impl)
  ref = np_correlate(feat, filt)
  assert got.shape == ref.shape == (3, 2, *score_size((6, 5), fsz))
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)


def np_filter_vjp(feat, r, fsz):
  """Adjoint of np_correlate in the filter.

  g[b, u, v, d] = sum_{n, i, j} r[n, b, i, j] pad(feat)[n, b, i + u, j + v, d].
  """
  feat, r = np.asarray(feat, np.float64), np.asarray(r, np.float64)
  fh, fw = fsz
  xp = np.pad(feat, ((0, 0), (0, 0), (fh // 2, fh // 2), (fw // 2, fw // 2), (0, 0)))
  ho, wo = r.shape[2:]
  return np.stack([np.stack([np.einsum("nbij,nbijd->bd", r, xp[:, :, u:u + ho, v:v + wo]) for v in range(fw)], 1)
                   for u in range(fh)], 1)


@pytest.mark.parametrize("fsz", [(4, 4), (3, 3)])
def test_single_sequence_gemm_path_and_its_gradient(fsz):
  """B = 1 (the tracker's memory, also vmapped over lanes) takes the plain-GEMM path: value and filter VJP."""
  rng = np.random.default_rng(2)
  feat = rng.normal(size=(3, 7, 1, 6, 5, 4)).astype(np.float32)  # 3 lanes x Nimg 7
  filt = rng.normal(size=(3, 1, *fsz, 4)).astype(np.float32)
  r = rng.normal(size=(3, 7, 1, *score_size((6, 5), fsz))).astype(np.float32)

  def value_and_vjp(x, f, rr):
    s, vjp = jax.vjp(lambda ff: apply_filter(x, ff), f)
    return s, vjp(rr)[0]
  s, g = jax.jit(jax.vmap(value_and_vjp))(jnp.asarray(feat), jnp.asarray(filt), jnp.asarray(r))
  for lane in range(3):
    np.testing.assert_allclose(np.asarray(s[lane]), np_correlate(feat[lane], filt[lane]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g[lane]), np_filter_vjp(feat[lane], r[lane], fsz), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("b", [1, 2])
def test_taps_derivatives_match_the_grouped_convolution(b):
  """'taps' sums its taps with shifted slices and a hand-written VJP (`sum_taps`); the grouped convolution is
  differentiated by JAX. Both agree on the feature gradient and on the second-order terms training takes
  (the gradient of a loss on the filter VJP, as when backpropagating through the unrolled optimizer)."""
  rng = np.random.default_rng(5)
  with jax.enable_x64():
    feat = jnp.asarray(rng.normal(size=(3, b, 6, 5, 4)))
    filt = jnp.asarray(rng.normal(size=(b, 4, 3, 4)))
    r = jnp.asarray(rng.normal(size=(3, b, *score_size((6, 5), (4, 3)))))

    def outer(impl):
      def loss(x, f):
        s, vjp = jax.vjp(lambda ff: apply_filter(x, ff, impl=impl), f)
        (g,) = vjp(r * jnp.tanh(s))
        return jnp.sum(g**2) + jnp.sum(jnp.sin(apply_filter(x, f - 0.1 * g, impl=impl)))
      return jax.jit(jax.grad(loss, argnums=(0, 1)))(feat, filt)

    for got, ref in zip(outer("taps"), outer("grouped")):
      np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-10, atol=1e-10)


def test_score_size_even_filter_adds_one_cell():
  assert score_size((18, 18), (4, 4)) == (19, 19)
  assert score_size((22, 22), (4, 4)) == (23, 23)
  assert score_size((22, 22), (3, 3)) == (22, 22)


def test_sequences_use_their_own_filter():
  rng = np.random.default_rng(1)
  feat = jnp.asarray(rng.normal(size=(2, 3, 5, 5, 4)), jnp.float32)
  filt = jnp.asarray(rng.normal(size=(3, 4, 4, 4)), jnp.float32)
  full = apply_filter(feat, filt)
  for b in range(3):
    np.testing.assert_allclose(np.asarray(apply_filter(feat[:, b:b + 1], filt[b:b + 1]))[:, 0],
                               np.asarray(full[:, b]), rtol=1e-5, atol=1e-5)


def test_full_size_shape():
  out = jax.eval_shape(apply_filter, jax.ShapeDtypeStruct((3, 8, 18, 18, 256), jnp.float32),
                       jax.ShapeDtypeStruct((8, 4, 4, 256), jnp.float32))
  assert out.shape == (3, 8, 19, 19)


def test_apply_filter_errors():
  feat, filt = jnp.zeros((3, 2, 6, 6, 4)), jnp.zeros((2, 4, 4, 4))
  with pytest.raises(ValueError, match="rank 5"):
    apply_filter(feat[0], filt)
  with pytest.raises(ValueError, match="rank 4"):
    apply_filter(feat, filt[0])
  with pytest.raises(ValueError, match="disagree"):
    apply_filter(feat, filt[:1])
  with pytest.raises(ValueError, match="disagree"):
    apply_filter(feat, filt[..., :3])
  with pytest.raises(ValueError, match="impl"):
    apply_filter(feat, filt, impl="fft")
