"""Dustbin optimal transport and the match readout of KeepTrack's matcher (keeptrack.md §3.6, 3.7).

Candidate sets live in static buffers: a score matrix `[M_cap, N_cap]` with validity masks `valid0 [M_cap]`
(previous frame, rows) and `valid1 [N_cap]` (current frame, columns). The real sizes are M = sum(valid0) and
N = sum(valid1); the result equals the unpadded computation on the real M x N block (the masks may select
any slots, not only a prefix).

Layout of `log_assignment` `[M_cap + 1, N_cap + 1]`: row `M_cap` is the dustbin row and column `N_cap` the
dustbin column (after the padded slots, not after the M real ones). Entries whose row or column is padding
are -inf (zero probability). Values include the reference's `+log(M + N)` offset, so a real row sums to
about 1 in probability space.

Empty sets (M = 0 or N = 0; the reference network short-cuts them and returns no assignment): the transport
problem has one solution, every real candidate of the non-empty set goes to the dustbin, so
`log_assignment` is 0 there and -inf elsewhere (the corner included); with M = N = 0 it is -inf everywhere.
The readout gives all -1 and zero scores, like the reference's shortcut. Everything is pure `jnp` with static
shapes (jit / vmap); values and gradients are finite whenever M, N > 0.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = Any

NUM_ITERATIONS = 10  # the KeepTrack constructor's default (SuperGlue's own is 50)
MATCH_THRESHOLD = 0.2  # SuperGlue's filter_threshold, not overridden by KeepTrack


class Matches(NamedTuple):
  """Match readout of one assignment (keeptrack.md §3.7).

  Attributes:
    matches0: `[M_cap]` int32, for each previous candidate the matched current index, -1 if none.
    matches1: `[N_cap]` int32, for each current candidate the matched previous index, -1 if none.
    match_scores0: `[M_cap]` exp(log_assignment) of the mutual best pair (scaled by M + N), 0 if not mutual.
      Like the reference, a mutual pair below the threshold keeps its score while its match is -1.
    match_scores1: `[N_cap]` the same for the current candidates.
  """

  matches0: jax.Array
  matches1: jax.Array
  match_scores0: jax.Array
  match_scores1: jax.Array


def _check_masks(scores: jax.Array, valid0: Array, valid1: Array) -> tuple[jax.Array, jax.Array]:
  """Validates `[M_cap, N_cap]` scores against `[M_cap]` / `[N_cap]` masks; returns the masks as bool."""
  valid0 = jnp.asarray(valid0, bool)
  valid1 = jnp.asarray(valid1, bool)
  if scores.ndim != 2 or valid0.shape != scores.shape[:1] or valid1.shape != scores.shape[1:]:
    raise ValueError(f"need scores [M_cap, N_cap], valid0 [M_cap], valid1 [N_cap]; got {scores.shape}, "
                     f"{valid0.shape}, {valid1.shape}")
  return valid0, valid1


def _masked_couplings(scores: jax.Array, bin_score: Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """`[M_cap + 1, N_cap + 1]` couplings: scores, alpha in the dustbin row / column / corner, -inf on padding."""
  m_cap, n_cap = scores.shape
  alpha = jnp.asarray(bin_score, scores.dtype)
  couplings = jnp.concatenate([
      jnp.concatenate([scores, jnp.broadcast_to(alpha, (m_cap, 1))], axis=1),
      jnp.broadcast_to(alpha, (1, n_cap + 1)),
  ], axis=0)
  return jnp.where(rows[:, None] & cols[None, :], couplings, -jnp.inf)


def log_optimal_transport(scores: Array, bin_score: Array, valid0: Array, valid1: Array,
                          num_iterations: int = NUM_ITERATIONS) -> jax.Array:
  """Dustbin-augmented log-domain Sinkhorn (keeptrack.md §3.6) over a padded score matrix.

  With M, N the real sizes and norm = -log(M + N): real rows have log-marginal norm and the dustbin row
  log N + norm; real columns norm and the dustbin column log M + norm. From u = v = 0, `num_iterations`
  times: u = log_mu - logsumexp_j(C + v), then v = log_nu - logsumexp_i(C + u). Output C + u + v - norm.

  Args:
    scores: `[M_cap, N_cap]` similarity scores S_ij (previous i, current j).
    bin_score: scalar alpha, shared by the dustbin row, column and corner.
    valid0: `[M_cap]` bool, real previous candidates.
    valid1: `[N_cap]` bool, real current candidates.
    num_iterations: Sinkhorn iterations (static; 10 in KeepTrack).

  Returns:
    `[M_cap + 1, N_cap + 1]` log_assignment, dustbins last, -inf on padding (see the module docstring,
    also for empty sets).
  """
  scores = jnp.asarray(scores)
  if not jnp.issubdtype(scores.dtype, jnp.floating):
    scores = scores.astype(jnp.float32)
  valid0, valid1 = _check_masks(scores, valid0, valid1)
  dtype = scores.dtype
  rows = jnp.concatenate([valid0, jnp.ones((1,), bool)])
  cols = jnp.concatenate([valid1, jnp.ones((1,), bool)])
  couplings = _masked_couplings(scores, bin_score, rows, cols)
  m = jnp.sum(valid0).astype(dtype)
  n = jnp.sum(valid1).astype(dtype)
  # The iterations run on sizes >= 1, so that they stay finite for empty sets; the empty-set result is
  # replaced by its closed form below.
  m_safe, n_safe = jnp.maximum(m, 1), jnp.maximum(n, 1)
  norm = -jnp.log(m_safe + n_safe)
  log_mu = jnp.where(rows, jnp.concatenate([jnp.broadcast_to(norm, valid0.shape), (jnp.log(n_safe) + norm)[None]]),
                     0)
  log_nu = jnp.where(cols, jnp.concatenate([jnp.broadcast_to(norm, valid1.shape), (jnp.log(m_safe) + norm)[None]]),
                     0)
  # Padded rows / columns are all -inf in `couplings`; their logsumexp runs on zeros instead (finite values
  # and gradients), and their potentials stay 0, so they add exp(-inf) = 0 to the real sums.
  row_input = jnp.where(rows[:, None], couplings, 0)
  col_input = jnp.where(cols[None, :], couplings, 0)

  def step(_, uv):
    u, v = uv
    u = jnp.where(rows, log_mu - jax.nn.logsumexp(row_input + v[None, :], axis=1), 0)
    v = jnp.where(cols, log_nu - jax.nn.logsumexp(col_input + u[:, None], axis=0), 0)
    return u, v

  u, v = jax.lax.fori_loop(0, num_iterations, step, (jnp.zeros_like(log_mu), jnp.zeros_like(log_nu)))
  log_assignment = couplings + u[:, None] + v[None, :] - norm
  corner = jnp.zeros(couplings.shape, bool).at[-1, -1].set(True)
  empty = jnp.where(rows[:, None] & cols[None, :] & ~corner, jnp.zeros((), dtype), -jnp.inf)
  return jnp.where((m > 0) & (n > 0), log_assignment, empty)


def match_readout(log_assignment: Array, valid0: Array, valid1: Array,
                  threshold: float = MATCH_THRESHOLD) -> Matches:
  """Mutual-argmax matches from the inner (non-dustbin) block of `log_assignment` (keeptrack.md §3.7).

  m0[i] = argmax_j P[i, j] and m1[j] = argmax_i P[i, j] over the real entries only (the dustbin is not
  compared against; ties go to the first index). A pair is mutual if m1[m0[i]] == i; its score is
  exp(P[i, m0[i]]); a mutual pair is a match if that score > `threshold`. Padded slots and empty sets give
  -1 and score 0.

  Args:
    log_assignment: `[M_cap + 1, N_cap + 1]` from `log_optimal_transport`.
    valid0: `[M_cap]` bool.
    valid1: `[N_cap]` bool.
    threshold: minimum (scaled) probability of a match, strict.

  Returns:
    `Matches`.
  """
  log_assignment = jnp.asarray(log_assignment)
  inner = log_assignment[:-1, :-1]
  valid0, valid1 = _check_masks(inner, valid0, valid1)
  if 0 in inner.shape:  # a zero-capacity buffer: nothing to compare (argmax of an empty axis is undefined)
    zeros0, zeros1 = jnp.zeros(valid0.shape, inner.dtype), jnp.zeros(valid1.shape, inner.dtype)
    return Matches(-jnp.ones(valid0.shape, jnp.int32), -jnp.ones(valid1.shape, jnp.int32), zeros0, zeros1)
  real = valid0[:, None] & valid1[None, :]
  masked = jnp.where(real, inner, -jnp.inf)
  m0 = jnp.argmax(masked, axis=1).astype(jnp.int32)
  m1 = jnp.argmax(masked, axis=0).astype(jnp.int32)
  # A row with no real column (N = 0) has argmax 0; requiring that column to be real rejects it.
  mutual0 = valid0 & valid1[m0] & (m1[m0] == jnp.arange(m0.shape[0]))
  mutual1 = valid1 & valid0[m1] & (m0[m1] == jnp.arange(m1.shape[0]))
  best0 = jnp.take_along_axis(inner, m0[:, None], axis=1)[:, 0]
  zero = jnp.zeros((), inner.dtype)
  scores0 = jnp.where(mutual0, jnp.exp(jnp.where(mutual0, best0, 0)), zero)
  scores1 = jnp.where(mutual1, scores0[m1], zero)
  match0 = mutual0 & (scores0 > threshold)
  match1 = mutual1 & match0[m1]
  return Matches(jnp.where(match0, m0, -1), jnp.where(match1, m1, -1), scores0, scores1)
