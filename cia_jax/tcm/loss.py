"""The association network's training loss and metrics (keeptrack.md §5.4), pure `jnp`.

Per sample, with L the `[M + 1, N + 1]` `log_assignment` (dustbins last, the +log(M + N) offset included,
-inf on padded rows / columns; `cia_jax.ops.sinkhorn`):

  num_pos = max(sum_ij gt_assignment_ij, 1)
  nll_pos = -sum_ij gt_assignment_ij L_ij / num_pos
  neg0_i = [gt_matches0_i == -1], neg1_j = [gt_matches1_j == -1], num_neg = max(sum neg0 + sum neg1, 1)
  nll_neg = -(sum_i neg0_i L_{i, dustbin} + sum_j neg1_j L_{dustbin, j}) / num_neg
  loss = beta nll_pos + (1 - beta) nll_neg                   (beta = nll_balancing = 0.5; nll_weight 1)

Labels -2 are ignored. The batch loss is the mean over samples. Entries selected by no label never enter a
product (`jnp.where`, not a multiplication), so the -inf of padded slots cannot turn into NaN; a label on a
padded slot is an error of the caller and gives +inf.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = Any

NLL_BALANCING = 0.5  # the reference's TargetCandidateMatchingLoss(nll_balancing=0.5)
NLL_WEIGHT = 1.0


class MatchingLoss(NamedTuple):
  """Per-sample loss terms, each `[B]`.

  Attributes:
    total: nll_weight * (beta nll_pos + (1 - beta) nll_neg), the value to minimise (mean over B).
    nll_pos, nll_neg: the two normalised negative log-likelihoods.
    num_matchable, num_unmatchable: num_pos and num_neg (each at least 1).
    sinkhorn_norm: mean over the valid rows of the row sum of exp(L) (dustbin column included).
  """

  total: jax.Array
  nll_pos: jax.Array
  nll_neg: jax.Array
  num_matchable: jax.Array
  num_unmatchable: jax.Array
  sinkhorn_norm: jax.Array


def _masked_sum(values: jax.Array, mask: jax.Array, axes) -> jax.Array:
  return jnp.sum(jnp.where(mask, values, jnp.zeros((), values.dtype)), axis=axes)


def matching_loss(log_assignment: Array, gt_assignment: Array, gt_matches0: Array, gt_matches1: Array,
                  valid0: Array | None = None, nll_balancing: float = NLL_BALANCING,
                  nll_weight: float = NLL_WEIGHT) -> MatchingLoss:
  """KeepTrack's assignment NLL (keeptrack.md §5.4) for a batch of candidate-set pairs.

  Args:
    log_assignment: `[B, M + 1, N + 1]` from the matcher (dustbin row / column last).
    gt_assignment: `[B, M, N]` 0/1 (bool or number) positive pairs.
    gt_matches0: `[B, M]` int, -1 = supervised towards the dustbin, -2 = ignored, >= 0 = matched.
    gt_matches1: `[B, N]` int, the same for set 1.
    valid0: optional `[B, M]` bool, the real rows (for `sinkhorn_norm` only; default: all rows).
    nll_balancing: beta.
    nll_weight: factor of `total`.

  Returns:
    `MatchingLoss` of `[B]` arrays.
  """
  la = jnp.asarray(log_assignment)
  if la.ndim != 3:
    raise ValueError(f"matching_loss: log_assignment must be [B, M + 1, N + 1], got {la.shape}")
  b, m1, n1 = la.shape
  pos = jnp.asarray(gt_assignment)
  gm0, gm1 = jnp.asarray(gt_matches0), jnp.asarray(gt_matches1)
  if pos.shape != (b, m1 - 1, n1 - 1) or gm0.shape != (b, m1 - 1) or gm1.shape != (b, n1 - 1):
    raise ValueError(f"matching_loss: with log_assignment {la.shape} need gt_assignment {(b, m1 - 1, n1 - 1)}, "
                     f"gt_matches0 {(b, m1 - 1)}, gt_matches1 {(b, n1 - 1)}; got {pos.shape}, {gm0.shape}, "
                     f"{gm1.shape}")
  pos = pos.astype(la.dtype)
  neg0, neg1 = gm0 == -1, gm1 == -1
  one = jnp.ones((), la.dtype)
  num_pos = jnp.maximum(jnp.sum(pos, axis=(1, 2)), one)
  num_neg = jnp.maximum(jnp.sum(neg0, axis=1) + jnp.sum(neg1, axis=1), 1).astype(la.dtype)
  inner = la[:, :-1, :-1]
  nll_pos = -jnp.sum(jnp.where(pos != 0, inner, 0) * pos, axis=(1, 2)) / num_pos
  nll_neg = -(_masked_sum(la[:, :-1, -1], neg0, 1) + _masked_sum(la[:, -1, :-1], neg1, 1)) / num_neg
  total = nll_weight * (nll_balancing * nll_pos + (1 - nll_balancing) * nll_neg)
  rows = jnp.ones((b, m1 - 1), bool) if valid0 is None else jnp.asarray(valid0, bool)
  row_sums = jnp.sum(jnp.exp(la[:, :-1]), axis=2)
  norm = _masked_sum(row_sums, rows, 1) / jnp.maximum(jnp.sum(rows, axis=1), 1).astype(la.dtype)
  return MatchingLoss(total, nll_pos, nll_neg, num_pos, num_neg, norm)


def match_recall(matches1: Array, gt_matches1: Array) -> jax.Array:
  """`[B]` fraction of the labelled matches (gt > -1) that `matches1` gets right; NaN where there is none."""
  m, gt = jnp.asarray(matches1), jnp.asarray(gt_matches1)
  mask = gt > -1
  return jnp.sum((m == gt) & mask, axis=1) / jnp.sum(mask, axis=1)


def match_precision(matches1: Array, gt_matches1: Array) -> jax.Array:
  """`[B]` fraction of the predicted matches (> -1, on slots with gt >= -1) that are right; NaN where no gt match.

  As the reference: the denominator is at least 1, and a sample without any labelled match (gt > -1) is NaN.
  """
  m, gt = jnp.asarray(matches1), jnp.asarray(gt_matches1)
  mask = (m > -1) & (gt >= -1)
  prec = jnp.sum((m == gt) & mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1)
  return jnp.where(jnp.any(gt > -1, axis=1), prec, jnp.nan)
