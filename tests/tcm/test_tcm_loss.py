"""KeepTrack's assignment loss and metrics (keeptrack.md §5.4) against a float64 NumPy transcription and the
PyTorch reference module's output (golden)."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from cia_jax.ops.sinkhorn import log_optimal_transport
from cia_jax.tcm.loss import match_precision, match_recall, matching_loss


def np_loss(la, gt_assignment, gm0, gm1, beta=0.5):
  """§5.4 for one unpadded sample, float64, with explicit loops."""
  m, n = gt_assignment.shape
  num_pos = max(gt_assignment.sum(), 1.0)
  nll_pos = -sum(la[i, j] for i in range(m) for j in range(n) if gt_assignment[i, j]) / num_pos
  neg = [la[i, n] for i in range(m) if gm0[i] == -1] + [la[m, j] for j in range(n) if gm1[j] == -1]
  nll_neg = -sum(neg) / max(len(neg), 1)
  return beta * nll_pos + (1 - beta) * nll_neg, nll_pos, nll_neg


def np_labels(rng, m, n):
  """Random labels in the reference's form: a partial permutation, some -1 and some -2 (ignored)."""
  gt = np.zeros((m, n))
  gm0, gm1 = -np.ones(m, int), -np.ones(n, int)
  for i, j in zip(rng.permutation(m)[:min(m, n) - 1], rng.permutation(n)[:min(m, n) - 1]):
    gt[i, j], gm0[i], gm1[j] = 1, j, i
  gm0[rng.random(m) < 0.2] = -2
  gm1[rng.random(n) < 0.2] = -2
  return gt, gm0, gm1


def test_loss_matches_numpy_transcription():
  rng = np.random.default_rng(0)
  las, gts, g0s, g1s, want = [], [], [], [], []
  for _ in range(6):
    m = n = 5
    la = np.asarray(log_optimal_transport(rng.normal(size=(m, n)) * 3, rng.normal(), np.ones(m, bool),
                                          np.ones(n, bool)), np.float64)
    gt, gm0, gm1 = np_labels(rng, m, n)
    las.append(la), gts.append(gt), g0s.append(gm0), g1s.append(gm1)
    want.append(np_loss(la, gt, gm0, gm1))
  out = matching_loss(np.stack(las), np.stack(gts), np.stack(g0s), np.stack(g1s))
  want = np.asarray(want)
  np.testing.assert_allclose(out.total, want[:, 0], rtol=1e-5)
  np.testing.assert_allclose(out.nll_pos, want[:, 1], rtol=1e-5)
  np.testing.assert_allclose(out.nll_neg, want[:, 2], rtol=1e-5)
  np.testing.assert_allclose(out.sinkhorn_norm, np.exp(np.stack(las)[:, :-1]).sum(2).mean(1), rtol=1e-5)


def test_no_labels_gives_zero_and_counts_at_least_one():
  la = np.asarray(log_optimal_transport(np.zeros((3, 3)), 0.0, np.ones(3, bool), np.ones(3, bool)))[None]
  out = matching_loss(la, np.zeros((1, 3, 3)), -2 * np.ones((1, 3), int), -2 * np.ones((1, 3), int))
  assert float(out.total[0]) == 0.0
  assert float(out.num_matchable[0]) == 1.0 and float(out.num_unmatchable[0]) == 1.0


def test_padded_sets_equal_unpadded_with_finite_gradients():
  """A 3 x 2 problem in a 5 x 5 buffer (padding -inf in log_assignment) gives the unpadded loss and finite grads."""
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(3, 2))
  gt = np.array([[0, 1], [0, 0], [1, 0]], float)
  gm0, gm1 = np.array([1, -1, 0]), np.array([2, 0])
  want = np_loss(np.asarray(log_optimal_transport(scores, 0.3, np.ones(3, bool), np.ones(2, bool)), np.float64),
                 gt, gm0, gm1)[0]
  valid0, valid1 = np.arange(5) < 3, np.arange(5) < 2
  pad_gt = np.zeros((1, 5, 5))
  pad_gt[0, :3, :2] = gt
  pad0, pad1 = -2 * np.ones((1, 5), int), -2 * np.ones((1, 5), int)
  pad0[0, :3], pad1[0, :2] = gm0, gm1

  def loss(s, alpha):
    la = log_optimal_transport(s, alpha, valid0, valid1)
    return matching_loss(la[None], pad_gt, pad0, pad1, valid0[None]).total[0]

  padded = np.zeros((5, 5))
  padded[:3, :2] = scores
  value, grads = jax.value_and_grad(loss, argnums=(0, 1))(jnp.asarray(padded, jnp.float32), jnp.float32(0.3))
  np.testing.assert_allclose(value, want, rtol=1e-5)
  assert np.all(np.isfinite(grads[0])) and np.isfinite(grads[1])
  assert np.all(np.asarray(grads[0])[3:] == 0) and np.all(np.asarray(grads[0])[:, 2:] == 0)
  assert np.any(np.asarray(grads[0])[:3, :2] != 0)


def test_recall_precision():
  m1 = np.array([[0, -1, 2, 1], [-1, -1, -1, -1]])
  gt = np.array([[0, 1, 2, -2], [-1, -1, -2, -2]])
  np.testing.assert_allclose(match_recall(m1, gt)[0], 2 / 3)
  np.testing.assert_allclose(match_precision(m1, gt)[0], 1.0)  # slot 3 (gt -2) is not counted
  assert np.isnan(match_recall(m1, gt)[1]) and np.isnan(match_precision(m1, gt)[1])


def test_loss_equals_the_pytorch_reference_module():
  """pytracking's TargetCandidateMatchingLoss on the golden assignment (tests/data/interop/keeptrack_matcher.npz)."""
  root = pathlib.Path(__file__).resolve().parents[2]
  spec = importlib.util.spec_from_file_location("tcm_fixture_values", root / "scripts" / "tcm_fixture_values.py")
  fv = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(fv)
  golden = np.load(root / "tests" / "data" / "interop" / "keeptrack_matcher.npz")
  labels = fv.loss_labels()
  out = matching_loss(golden["training/log_assignment"], labels["gt_assignment"], labels["gt_matches0"],
                      labels["gt_matches1"])
  for k in ("total", "nll_pos", "nll_neg", "sinkhorn_norm"):
    np.testing.assert_allclose(getattr(out, k), golden[f"loss/{k}"], rtol=1e-6, err_msg=k)
