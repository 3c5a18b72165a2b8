"""HingeSteepestDescentGN (keeptrack.md §0, SuperDiMP-simple's filter optimiser) against float64 NumPy.

The reference here is written independently of the module: per sequence, the correlation is an explicit matrix X
(rows = score cells of all images, columns = filter taps), the residual r(f) = [sqrt(w) (a(X f, m) - m y);
filter_reg f] and its Jacobian J = [sqrt(w) a'(X f, m) X; filter_reg I] are dense, and one Gauss-Newton steepest
descent step is g = J^T r, f <- f - (g.g / (J g).(J g)) g.
"""

import os
import pathlib
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.dimp.hinge_optimizer import HingeSteepestDescentGN

NIMG, B, H, D, FS = 4, 2, 5, 3, 4
HO = H + 1  # even filter: one extra score cell
OPT = HingeSteepestDescentGN(num_iter=3, init_filter_reg=0.1, hinge_threshold=0.05, activation_leak=0.1)
APPLY = jax.jit(OPT.apply, static_argnames="num_iter")


def dense_correlation(x_b):
  """X `[N * HO * HO, FS * FS * D]` of one sequence's features `[N, H, H, D]` (zero padding FS // 2)."""
  n = x_b.shape[0]
  pad = np.pad(x_b, ((0, 0), (FS // 2, FS // 2), (FS // 2, FS // 2), (0, 0)))
  rows = np.zeros((n, HO, HO, FS, FS, D))
  for i in range(HO):
    for j in range(HO):
      rows[:, i, j] = pad[:, i:i + FS, j:j + FS, :]
  return rows.reshape(n * HO * HO, FS * FS * D)


def numpy_hinge_gn(filt, feat, label, weights, filter_reg, num_iter, threshold=0.05, leak=0.1):
  """Iterates `[num_iter + 1, B, FS, FS, D]` and mean-squared-residual losses, float64."""
  filt, feat, label = (np.asarray(a, np.float64) for a in (filt, feat, label))
  n = feat.shape[0]
  w = np.full((n, B), 1.0 / n) if weights is None else np.broadcast_to(np.asarray(weights, np.float64)
                                                                       .reshape(n, -1), (n, B))
  f = filt.reshape(B, -1).copy()
  iterates, sq = [f.copy()], []
  data = []
  for b in range(B):
    x = dense_correlation(feat[:, b])
    y = label[:, b].reshape(-1)
    m = np.minimum((y > threshold) + leak, 1.0)
    sw = np.repeat(np.sqrt(w[:, b]), HO * HO)
    data.append((x, y, m, sw))

  def residual(b, fb):
    x, y, m, sw = data[b]
    s = x @ fb
    return np.concatenate([sw * ((1 - m) / 2 * np.abs(s) + (1 + m) / 2 * s - m * y), filter_reg * fb])

  def jacobian(b, fb):
    x, _, m, sw = data[b]
    da = (1 - m) / 2 * np.sign(x @ fb) + (1 + m) / 2
    return np.concatenate([(sw * da)[:, None] * x, filter_reg * np.eye(fb.size)])

  for _ in range(num_iter + 1):
    sq.append(sum((residual(b, f[b]) ** 2).sum() for b in range(B)))
    if len(iterates) == num_iter + 1:
      break
    for b in range(B):
      r, jac = residual(b, f[b]), jacobian(b, f[b])
      g = jac.T @ r
      jg = jac @ g
      f[b] = f[b] - (g @ g) / max(jg @ jg, 1e-8) * g
    iterates.append(f.copy())
  numel = n * B * HO * HO + f.size
  return np.stack(iterates).reshape(num_iter + 1, *filt.shape), np.asarray(sq) / numel


def problem(seed):
  rng = np.random.default_rng(seed)
  feat = rng.standard_normal((NIMG, B, H, H, D)).astype(np.float32)
  filt = (0.3 * rng.standard_normal((B, FS, FS, D))).astype(np.float32)
  yy, xx = np.meshgrid(np.arange(HO), np.arange(HO), indexing="ij")
  centre = rng.uniform(1.0, HO - 2.0, (NIMG, B, 2))
  label = np.exp(-((yy - centre[..., :1, None]) ** 2 + (xx - centre[..., 1:, None]) ** 2) / (2 * 0.8**2))
  return filt, feat, label.astype(np.float32)


def test_filter_reg_parameter_only():
  filt, feat, label = problem(0)
  v = OPT.init(jax.random.PRNGKey(0), filt, feat, label)
  assert jax.tree.map(np.shape, v["params"]) == {"residual_module": {"filter_reg": (1,)}}
  np.testing.assert_allclose(v["params"]["residual_module"]["filter_reg"], [0.1], rtol=1e-7)


@pytest.mark.parametrize("seed,weights,filter_reg", [
    (0, None, 0.1), (1, "random", 0.37), (2, "zeros", 0.05)])
def test_iterations_match_dense_gauss_newton(seed, weights, filter_reg):
  filt, feat, label = problem(seed)
  rng = np.random.default_rng(seed + 100)
  w = None
  if weights == "random":
    w = rng.uniform(0.05, 1.0, (NIMG, B)).astype(np.float32)
  elif weights == "zeros":  # weight-0 slots, one holding NaN features and labels (an empty memory slot)
    w = np.asarray([0.5, 0.0, 0.3, 0.0], np.float32)
    feat[3], label[3] = np.nan, np.nan
  params = {"params": {"residual_module": {"filter_reg": jnp.asarray([filter_reg], jnp.float32)}}}
  final, iterates, losses = APPLY(params, filt, feat, label, w, num_iter=3)
  if weights == "zeros":
    keep = [0, 2]  # the reference simply has no such samples
    ref_it, ref_loss = numpy_hinge_gn(filt, feat[keep], label[keep], w[keep], filter_reg, 3)
    ref_loss = ref_loss * (2 * B * HO * HO + filt.size) / (NIMG * B * HO * HO + filt.size)  # our numel: all slots
  else:
    ref_it, ref_loss = numpy_hinge_gn(filt, feat, label, w, filter_reg, 3)
  scale = np.abs(ref_it).max()
  for t in range(4):
    np.testing.assert_allclose(np.asarray(iterates[t]), ref_it[t], rtol=1e-4, atol=2e-5 * scale, err_msg=f"it {t}")
  np.testing.assert_allclose(np.asarray(final), ref_it[-1], rtol=1e-4, atol=2e-5 * scale)
  np.testing.assert_allclose(np.asarray(losses), ref_loss, rtol=1e-4)
  assert ref_loss[-1] < 0.9 * ref_loss[0]  # the steps do something
  assert not np.allclose(ref_it[1], ref_it[0], rtol=1e-3)


def test_traced_iteration_count_equals_static_prefix():
  filt, feat, label = problem(3)
  params = OPT.init(jax.random.PRNGKey(0), filt, feat, label)
  w = np.asarray([0.4, 0.3, 0.0, 0.3], np.float32)
  _, iterates, _ = APPLY(params, filt, feat, label, w, num_iter=3)
  traced = jax.jit(lambda k: OPT.apply(params, filt, feat, label, w, num_iter=3, active_iter=k)[0])
  for k in (0, 1, 2, 3, 7):
    np.testing.assert_allclose(np.asarray(traced(k)), np.asarray(iterates[min(k, 3)]), rtol=1e-6, atol=1e-7)


def test_bad_label_shape_is_a_clear_error():
  filt, feat, label = problem(0)
  with pytest.raises(ValueError, match="label must be"):
    OPT.init(jax.random.PRNGKey(0), filt, feat, label[:, :, :-1])


_ROOT = pathlib.Path(__file__).resolve().parents[2]
_TORCH_PYTHON = pathlib.Path(os.environ.get("CIA_JAX_TORCH_PYTHON", str(_ROOT.parent / "torchref" / "bin" / "python")))
_PYTRACKING = _ROOT / "third_party" / "pytracking"


@pytest.mark.skipif(not (_TORCH_PYTHON.is_file() and (_PYTRACKING / "ltr").is_dir()),
                    reason=f"needs the torch venv {_TORCH_PYTHON} and third_party/pytracking")
def test_matches_pytrackings_gn_steepest_descent(tmp_path):
  """pytracking's own GNSteepestDescent + LinearFilterHinge (residual_batch_dim=1, leak 0.1, threshold 0.05), run
  in float64 in the torch venv on the same problem, with per-sample weights as the KeepTrack tracker passes them."""
  filt, feat, label = problem(5)
  w = np.random.default_rng(7).uniform(0.05, 1.0, NIMG).astype(np.float32)
  np.savez(tmp_path / "in.npz", filt=filt, feat=feat, label=label, w=w)
  code = """
import pathlib, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
import torch_reference as tr
tr._install(pathlib.Path(sys.argv[2]), "keeptrack")
tr.plain_list_autograd()
from ltr.models.meta.steepestdescent import GNSteepestDescent
from ltr.models.target_classifier.residual_modules import LinearFilterHinge
from pytracking import TensorList
torch.set_default_dtype(torch.float64)
d = np.load(sys.argv[3])
res = LinearFilterHinge(init_filter_reg=float(np.float32(0.37)), hinge_threshold=0.05, activation_leak=0.1,
                        score_act="relu")
opt = GNSteepestDescent(residual_module=res, num_iter=3, residual_batch_dim=1, compute_losses=True)
t = lambda a: torch.tensor(np.asarray(a, np.float64))
with torch.no_grad():
  f0 = TensorList([t(d["filt"]).permute(0, 3, 1, 2).contiguous()])
  _, its, losses = opt(f0, feat=t(d["feat"]).permute(0, 1, 4, 2, 3), bb=None, train_label=t(d["label"]),
                       sample_weight=t(d["w"]).view(-1, 1, 1, 1))
np.savez(sys.argv[4], its=np.stack([i[0].permute(0, 2, 3, 1).numpy() for i in its]),
         losses=np.array([float(l) for l in losses]))
"""
  res = subprocess.run([str(_TORCH_PYTHON), "-c", code, str(_ROOT / "scripts"), str(_PYTRACKING),
                        str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                       capture_output=True, text=True, timeout=180)
  assert res.returncode == 0, res.stderr[-3000:]
  ref = np.load(tmp_path / "out.npz")
  params = {"params": {"residual_module": {"filter_reg": jnp.asarray([0.37], jnp.float32)}}}
  _, iterates, losses = APPLY(params, filt, feat, label, w, num_iter=3)
  scale = np.abs(ref["its"]).max()
  np.testing.assert_allclose(np.asarray(iterates), ref["its"], rtol=1e-4, atol=2e-5 * scale)
  np.testing.assert_allclose(np.asarray(losses), ref["losses"], rtol=1e-4)
  # And the NumPy transcription above agrees with the reference to ~1e-8: the reference builds its target mask with
  # `.float()`, so the mask and the activation's (1 -+ m) / 2 are float32 values even in a float64 run.
  np_its, np_losses = numpy_hinge_gn(filt, feat, label, w, np.float32(0.37), 3)
  np.testing.assert_allclose(np_its, ref["its"], rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(np_losses, ref["losses"], rtol=1e-7)
