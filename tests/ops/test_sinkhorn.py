"""Dustbin Sinkhorn and match readout (keeptrack.md §3.6, 3.7) against a float64 NumPy transcription."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.ops.sinkhorn import log_optimal_transport, match_readout

ITERS = 10
TH = 0.2
TOL = dict(rtol=1e-5, atol=1e-5)


def np_logsumexp(x, axis):
  peak = np.max(x, axis=axis, keepdims=True)
  peak = np.where(np.isfinite(peak), peak, 0.0)
  with np.errstate(divide="ignore"):
    return np.squeeze(np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak, axis)


def np_log_optimal_transport(scores, alpha, iters=ITERS):
  """Spec 3.6 on an unpadded M x N matrix, float64; M = N = 0 gives the single corner at -inf."""
  scores = np.asarray(scores, np.float64)
  m, n = scores.shape
  if m + n == 0:
    return np.full((1, 1), -np.inf)
  couplings = np.full((m + 1, n + 1), float(alpha))
  couplings[:m, :n] = scores
  norm = -np.log(m + n)
  with np.errstate(divide="ignore"):  # log 0 = -inf: an empty set's dustbin has no mass
    log_mu = np.concatenate([np.full(m, norm), [np.log(n) + norm]])
    log_nu = np.concatenate([np.full(n, norm), [np.log(m) + norm]])
  u, v = np.zeros(m + 1), np.zeros(n + 1)
  for _ in range(iters):
    u = log_mu - np_logsumexp(couplings + v[None, :], axis=1)
    v = log_nu - np_logsumexp(couplings + u[:, None], axis=0)
  return couplings + u[:, None] + v[None, :] - norm


def np_readout(log_assignment, threshold=TH):
  """Spec 3.7 on an unpadded (M + 1) x (N + 1) assignment; the empty-set shortcut gives -1 / 0."""
  p = np.asarray(log_assignment, np.float64)[:-1, :-1]
  m, n = p.shape
  if m == 0 or n == 0:
    return -np.ones(m, int), -np.ones(n, int), np.zeros(m), np.zeros(n)
  m0, m1 = p.argmax(1), p.argmax(0)
  mutual0 = m1[m0] == np.arange(m)
  mutual1 = m0[m1] == np.arange(n)
  s0 = np.where(mutual0, np.exp(p[np.arange(m), m0]), 0.0)
  s1 = np.where(mutual1, s0[m1], 0.0)
  valid0 = mutual0 & (s0 > threshold)
  valid1 = mutual1 & valid0[m1]
  return np.where(valid0, m0, -1), np.where(valid1, m1, -1), s0, s1


@functools.partial(jax.jit, static_argnames="num_iterations")
def jax_transport_and_readout(scores, alpha, valid0, valid1, num_iterations=ITERS):
  la = log_optimal_transport(scores, alpha, valid0, valid1, num_iterations)
  return la, match_readout(la, valid0, valid1)


def embed(scores, m_cap, n_cap, rng, fill=np.nan):
  """Scatters an M x N matrix into random slots of an M_cap x N_cap buffer filled with garbage."""
  m, n = scores.shape
  rows = np.sort(rng.choice(m_cap, m, replace=False))
  cols = np.sort(rng.choice(n_cap, n, replace=False))
  padded = np.full((m_cap, n_cap), fill, np.float32)
  padded[np.ix_(rows, cols)] = scores
  valid0, valid1 = np.zeros(m_cap, bool), np.zeros(n_cap, bool)
  valid0[rows], valid1[cols] = True, True
  return padded, valid0, valid1, rows, cols


def assert_same_assignment(la_padded, rows, cols, expected, **tol):
  """The real block + dustbins of a padded assignment equal `expected`; every padded entry is -inf."""
  la_padded = np.asarray(la_padded, np.float64)
  r = np.concatenate([rows, [la_padded.shape[0] - 1]])
  c = np.concatenate([cols, [la_padded.shape[1] - 1]])
  np.testing.assert_allclose(la_padded[np.ix_(r, c)], expected, **(tol or TOL))
  outside = np.ones(la_padded.shape, bool)
  outside[np.ix_(r, c)] = False
  assert np.all(la_padded[outside] == -np.inf)


def assert_same_readout(out, rows, cols, expected):
  """Readout of a padded problem, mapped back to real indices, equals the unpadded `expected`."""
  m0, m1, s0, s1 = (np.asarray(a) for a in out)
  e0, e1, es0, es1 = expected
  to_real0 = {int(r): i for i, r in enumerate(rows)}
  to_real1 = {int(c): j for j, c in enumerate(cols)}
  np.testing.assert_array_equal([to_real1.get(int(j), -1) for j in m0[rows]], e0)
  np.testing.assert_array_equal([to_real0.get(int(i), -1) for i in m1[cols]], e1)
  np.testing.assert_allclose(s0[rows], es0, **TOL)
  np.testing.assert_allclose(s1[cols], es1, **TOL)
  pad0, pad1 = np.setdiff1d(np.arange(len(m0)), rows), np.setdiff1d(np.arange(len(m1)), cols)
  assert np.all(m0[pad0] == -1) and np.all(m1[pad1] == -1) and not s0[pad0].any() and not s1[pad1].any()


SIZES = [(1, 1), (2, 5), (5, 2), (5, 5), (7, 3), (32, 32)]


@pytest.mark.parametrize("m,n", SIZES)
def test_unpadded_matches_numpy(m, n):
  rng = np.random.default_rng(m * 100 + n)
  for scale, alpha in ((1.0, 0.0), (4.0, 1.3), (0.3, -2.0)):
    scores = (scale * rng.normal(size=(m, n))).astype(np.float32)
    la, out = jax_transport_and_readout(scores, alpha, np.ones(m, bool), np.ones(n, bool))
    expected = np_log_optimal_transport(scores, alpha)
    assert la.shape == (m + 1, n + 1)
    np.testing.assert_allclose(la, expected, **TOL)
    readout = np_readout(expected)
    for got, want in zip(out, readout):
      np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL)


@pytest.mark.parametrize("m,n,m_cap,n_cap", [(1, 1, 4, 4), (2, 5, 6, 8), (5, 2, 8, 6), (7, 3, 9, 9),
                                             (31, 30, 32, 32), (32, 32, 32, 32)])
def test_masked_padding_equals_the_unpadded_matrix(m, n, m_cap, n_cap):
  rng = np.random.default_rng(m + 7 * n)
  scores = (2.0 * rng.normal(size=(m, n))).astype(np.float32)
  expected = np_log_optimal_transport(scores, 0.7)
  readout = np_readout(expected)
  unpadded_la, _ = jax_transport_and_readout(scores, 0.7, np.ones(m, bool), np.ones(n, bool))
  for fill in (np.nan, 1e30, -3.0):  # garbage in the padding never leaks
    padded, valid0, valid1, rows, cols = embed(scores, m_cap, n_cap, rng, fill)
    la, out = jax_transport_and_readout(padded, 0.7, valid0, valid1)
    assert la.shape == (m_cap + 1, n_cap + 1)
    assert_same_assignment(la, rows, cols, expected)
    assert_same_assignment(la, rows, cols, np.asarray(unpadded_la, np.float64), rtol=1e-6, atol=1e-6)
    assert_same_readout(out, rows, cols, readout)


@pytest.mark.parametrize("m,n", [(0, 4), (3, 0), (0, 0), (0, 1)])
def test_empty_sets(m, n):
  rng = np.random.default_rng(3)
  expected = np_log_optimal_transport(np.zeros((m, n)), 0.5)
  m_cap, n_cap = 5, 6
  padded, valid0, valid1, rows, cols = embed(rng.normal(size=(m, n)), m_cap, n_cap, rng, fill=7.0)
  la, out = jax_transport_and_readout(padded, 0.5, valid0, valid1)
  assert_same_assignment(la, rows, cols, expected)
  # Closed form: the non-empty set goes to the dustbin with (scaled) probability 1, the corner has none.
  real = np.asarray(la)[np.ix_(np.r_[rows, m_cap], np.r_[cols, n_cap])]
  assert real[-1, -1] == -np.inf and np.all(real[:-1, -1] == 0) and np.all(real[-1, :-1] == 0)
  np.testing.assert_array_equal(out.matches0, -1)
  np.testing.assert_array_equal(out.matches1, -1)
  assert not np.asarray(out.match_scores0).any() and not np.asarray(out.match_scores1).any()
  # Unpadded empty inputs (zero-size buffers) work too.
  la0, out0 = jax_transport_and_readout(np.zeros((m, n), np.float32), 0.5, np.ones(m, bool), np.ones(n, bool))
  np.testing.assert_allclose(la0, expected, **TOL)
  assert out0.matches0.shape == (m,) and out0.matches1.shape == (n,)


def test_float64_under_x64_matches_numpy_tightly():
  rng = np.random.default_rng(11)
  scores = 3.0 * rng.normal(size=(6, 4))
  with jax.enable_x64(True):
    padded, valid0, valid1, rows, cols = embed(scores, 9, 7, rng)
    la = log_optimal_transport(jnp.asarray(padded, jnp.float64).at[np.ix_(rows, cols)].set(scores),
                               jnp.float64(-0.4), valid0, valid1, 25)
    assert la.dtype == jnp.float64
    assert_same_assignment(la, rows, cols, np_log_optimal_transport(scores, -0.4, 25), rtol=1e-12, atol=1e-12)


def test_readout_rules_on_a_constructed_assignment():
  # Rows: 0 <-> col 1 mutual and strong; 1 -> col 1 but col 1 prefers row 0 (not mutual); 2 <-> col 2 mutual
  # but weak (0.15 < 0.2: score kept, no match); row 3 ties between cols 0 and 3 (first index wins).
  p = np.log(np.array([[0.1, 0.9, 0.0, 0.0],
                       [0.05, 0.5, 0.01, 0.0],
                       [0.0, 0.0, 0.15, 0.05],
                       [0.4, 0.0, 0.1, 0.4]]) + 1e-12)
  la = np.full((5, 5), -1.0)
  la[:4, :4] = p
  out = match_readout(jnp.asarray(la, jnp.float32), np.ones(4, bool), np.ones(4, bool))
  np.testing.assert_array_equal(out.matches0, [1, -1, -1, 0])
  np.testing.assert_array_equal(out.matches1, [3, 0, -1, -1])
  np.testing.assert_allclose(out.match_scores0, [0.9, 0.0, 0.15, 0.4], rtol=1e-5)
  np.testing.assert_allclose(out.match_scores1, [0.4, 0.9, 0.15, 0.0], rtol=1e-5)
  for got, want in zip(out, np_readout(la)):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5)


def test_vmap_over_a_batch_of_differently_sized_sets():
  rng = np.random.default_rng(4)
  cap = 8
  sizes = [(3, 5), (8, 8), (0, 2), (6, 1)]
  batch = [embed(rng.normal(size=s).astype(np.float32) * 2, cap, cap, rng) for s in sizes]
  stacked = [np.stack([b[i] for b in batch]) for i in range(3)]
  la, out = jax.jit(jax.vmap(jax_transport_and_readout, in_axes=(0, None, 0, 0)))(stacked[0], 0.25, *stacked[1:])
  for k, (padded, _, _, rows, cols) in enumerate(batch):
    scores = padded[np.ix_(rows, cols)]
    expected = np_log_optimal_transport(scores, 0.25)
    assert_same_assignment(la[k], rows, cols, expected)
    assert_same_readout([o[k] for o in out], rows, cols, np_readout(expected))


@pytest.mark.parametrize("m,n", [(3, 4), (0, 4), (0, 0)])
def test_gradients_are_finite_with_padding_and_empty_sets(m, n):
  rng = np.random.default_rng(9)
  padded, valid0, valid1, _, _ = embed(rng.normal(size=(m, n)).astype(np.float32), 5, 6, rng, fill=0.0)

  def loss(scores, alpha):
    la = log_optimal_transport(scores, alpha, valid0, valid1)
    return jnp.sum(jnp.where(jnp.isfinite(la), la, 0.0))

  g_scores, g_alpha = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(padded), 0.3)
  assert np.all(np.isfinite(g_scores)) and np.isfinite(g_alpha)
  assert not np.asarray(g_scores)[~(valid0[:, None] & valid1[None, :])].any()  # padding gets no gradient
