"""DiMPSteepestDescentGN (design.md §2.4) against a float64 NumPy implementation written from the equations."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.dimp.filter import apply_filter
from cia_jax.models.dimp.optimizer import DiMPSteepestDescentGN

NIMG, B, H, D, FS, STRIDE = 3, 2, 6, 4, 4, 16
# One optimizer and one jitted apply shared by the tests: eager `apply` recompiles the scan on every call.
OPT = DiMPSteepestDescentGN(num_iter=2, init_gauss_sigma=0.9)
APPLY = jax.jit(OPT.apply, static_argnames="num_iter")
INIT = jax.jit(lambda filt, feat, box: OPT.init(jax.random.PRNGKey(0), filt, feat, box))


def np_corr(x, f):
  """s[n, b, i, j] = sum_{u, v, d} pad(x)[n, b, i + u, j + v, d] f[b, u, v, d], zero pad fs // 2."""
  fh, fw = f.shape[1:3]
  xp = np.pad(x, ((0, 0), (0, 0), (fh // 2,) * 2, (fw // 2,) * 2, (0, 0)))
  ho, wo = xp.shape[2] - fh + 1, xp.shape[3] - fw + 1
  return sum(np.einsum("nbhwd,bd->nbhw", xp[:, :, u:u + ho, v:v + wo], f[:, u, v])
             for u in range(fh) for v in range(fw))


def np_corr_adjoint(x, r, fh, fw):
  """J^T: g[b, u, v, d] = sum_{n, i, j} pad(x)[n, b, i + u, j + v, d] r[n, b, i, j]."""
  xp = np.pad(x, ((0, 0), (0, 0), (fh // 2,) * 2, (fw // 2,) * 2, (0, 0)))
  ho, wo = r.shape[2:]
  g = np.zeros((x.shape[1], fh, fw, x.shape[-1]))
  for u in range(fh):
    for v in range(fw):
      g[:, u, v] = np.einsum("nbhwd,nbhw->bd", xp[:, :, u:u + ho, v:v + wo], r)
  return g


def np_dist_bins(box, out_hw, num_bins=100, disp=0.1):
  """[N, B, Ho, Wo, K] bins of the distance to ((y + h/2)/16, (x + w/2)/16)."""
  cy = (box[..., 1] + box[..., 3] / 2) / STRIDE
  cx = (box[..., 0] + box[..., 2] / 2) / STRIDE
  ii, jj = np.meshgrid(np.arange(out_hw[0]), np.arange(out_hw[1]), indexing="ij")
  t = np.sqrt((ii - cy[..., None, None]) ** 2 + (jj - cx[..., None, None]) ** 2)[..., None] / disp
  k = np.arange(num_bins)
  bins = np.maximum(0.0, 1.0 - np.abs(t - k))
  bins[..., -1] = np.clip(1.0 + t[..., 0] - (num_bins - 1), 0.0, 1.0)
  return bins


def np_steepest_descent(p, f, x, box, num_iter, sample_weight=None, min_reg=1e-3):
  """Spec 2.4 step by step in float64. p: the optimizer's params. Returns (iterates, losses)."""
  f, x, box = (np.asarray(a, np.float64) for a in (f, x, box))
  kern = lambda name: np.asarray(name["kernel"], np.float64).reshape(-1)  # noqa: E731
  dist = np_dist_bins(box, (x.shape[2] + 1, x.shape[3] + 1))
  y = dist @ kern(p["label_map_predictor"])
  m = 1.0 / (1.0 + np.exp(-(dist @ kern(p["target_mask_predictor"]["0"]))))
  vs = dist @ kern(p["spatial_weight_predictor"])
  if sample_weight is None:
    v = math.sqrt(1.0 / x.shape[0]) * vs
  else:
    w = np.broadcast_to(np.asarray(sample_weight, np.float64).reshape(x.shape[0], -1), x.shape[:2])
    v = np.sqrt(w)[:, :, None, None] * vs
  lam = max(float(p["filter_reg"][0]) ** 2, min_reg**2)
  beta = math.exp(float(p["log_step_length"][0]))
  act = lambda s: (1 - m) / 2 * np.abs(s) + (1 + m) / 2 * s  # noqa: E731

  def loss(f):
    return (((v * (act(np_corr(x, f)) - y)) ** 2).sum() + lam * (f**2).sum()) / x.shape[1]

  iterates, losses = [f], []
  for _ in range(num_iter):
    s = np_corr(x, f)
    r = v * (act(s) - y)
    losses.append(loss(f))
    da = (1 - m) / 2 * np.sign(s) + (1 + m) / 2
    g = np_corr_adjoint(x, da * v * r, *f.shape[1:3]) + lam * f
    q = v * da * np_corr(x, g)
    num = (g**2).sum((1, 2, 3))
    den = np.maximum((q**2).sum((0, 2, 3)) + lam * num, 1e-8)
    f = f - beta * (num / den)[:, None, None, None] * g
    iterates.append(f)
  losses.append(loss(f))
  return np.stack(iterates), np.array(losses)


def make_problem(seed=0, nimg=NIMG, b=B, h=H, d=D):
  rng = np.random.default_rng(seed)
  feat = rng.normal(size=(nimg, b, h, h, d)).astype(np.float32)
  filt = (0.3 * rng.normal(size=(b, FS, FS, d))).astype(np.float32)
  img = h * STRIDE
  wh = rng.uniform(0.2, 0.5, (nimg, b, 2)) * img
  xy = rng.uniform(0, img, (nimg, b, 2)) - wh / 2
  box = np.concatenate([xy, wh], -1).astype(np.float32)
  return jnp.asarray(filt), jnp.asarray(feat), jnp.asarray(box)


def perturbed_variables(filt, feat, box, seed=1):
  """Init, then move every learned parameter away from its initial value so the test checks the wiring."""
  v = INIT(filt, feat, box)
  rng = np.random.default_rng(seed)
  p = jax.tree.map(np.asarray, v["params"])
  p["log_step_length"] = np.array([math.log(0.7)], np.float32)
  p["filter_reg"] = np.array([0.3], np.float32)
  for path in (("label_map_predictor",), ("target_mask_predictor", "0"), ("spatial_weight_predictor",)):
    leaf = p
    for k in path:
      leaf = leaf[k]
    leaf["kernel"] = (leaf["kernel"] + 0.3 * rng.normal(size=leaf["kernel"].shape)).astype(np.float32)
  return {"params": jax.tree.map(jnp.asarray, p)}


def test_adjoint_reference_is_the_transpose():
  rng = np.random.default_rng(5)
  x, f, r = rng.normal(size=(2, 3, 5, 5, 2)), rng.normal(size=(3, 4, 4, 2)), rng.normal(size=(2, 3, 6, 6))
  np.testing.assert_allclose((np_corr(x, f) * r).sum(), (f * np_corr_adjoint(x, r, 4, 4)).sum(), rtol=1e-12)


def test_predictor_initialisation():
  filt, feat, box = make_problem()
  p = INIT(filt, feat, box)["params"]
  d = 0.1 * np.arange(100)
  g = np.exp(-0.5 * (d / 0.9) ** 2)
  np.testing.assert_allclose(p["label_map_predictor"]["kernel"][0, 0, :, 0], g - g.min(), rtol=1e-6,
                             atol=1e-7)
  np.testing.assert_allclose(p["target_mask_predictor"]["0"]["kernel"][0, 0, :, 0], 3 * np.tanh(2 - d),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(p["spatial_weight_predictor"]["kernel"], np.ones((1, 1, 100, 1)))
  np.testing.assert_allclose(p["log_step_length"], [math.log(0.9)], rtol=1e-6)
  np.testing.assert_allclose(p["filter_reg"], [0.1], rtol=1e-6)


@pytest.mark.parametrize("weights", ["none", "per_sample", "per_image"])
def test_iterations_match_numpy(weights):
  filt, feat, box = make_problem()
  v = perturbed_variables(filt, feat, box)
  rng = np.random.default_rng(3)
  sw = {"none": None, "per_sample": rng.uniform(0.05, 0.6, (NIMG, B)),
        "per_image": rng.uniform(0.05, 0.6, (NIMG,))}[weights]
  final, iterates, losses = APPLY(v, filt, feat, box, None if sw is None else jnp.asarray(sw, jnp.float32))
  ref_it, ref_loss = np_steepest_descent(v["params"], filt, feat, box, 2, sw)
  assert iterates.shape == (3, B, FS, FS, D) and losses.shape == (3,)
  np.testing.assert_array_equal(np.asarray(iterates[0]), np.asarray(filt))
  np.testing.assert_array_equal(np.asarray(final), np.asarray(iterates[-1]))
  for t in (1, 2):
    scale = np.abs(ref_it[t]).max()
    np.testing.assert_allclose(np.asarray(iterates[t]), ref_it[t], rtol=1e-5, atol=1e-5 * scale)
  np.testing.assert_allclose(np.asarray(losses), ref_loss, rtol=1e-5)
  assert not np.allclose(ref_it[1], ref_it[0], rtol=1e-3)  # the step is not negligible


def test_sample_weight_variants_agree():
  filt, feat, box = make_problem(seed=2)
  v = INIT(filt, feat, box)
  run = lambda *a, **k: APPLY(v, *a, **k)[1]  # noqa: E731
  none = run(filt, feat, box)
  uniform = run(filt, feat, box, jnp.full((NIMG, B), 1.0 / NIMG))
  np.testing.assert_allclose(np.asarray(uniform), np.asarray(none), rtol=1e-5, atol=1e-7)
  w = jnp.array([0.5, 0.3, 0.2])
  per_seq = jnp.broadcast_to(w[:, None], (NIMG, B))
  np.testing.assert_allclose(np.asarray(run(filt, feat, box, w)), np.asarray(run(filt, feat, box, per_seq)),
                             rtol=1e-6)


def test_zero_weight_slots_contribute_nothing():
  """A memory slot of weight 0 (even holding NaN features and a NaN box) changes nothing."""
  filt, feat, box = make_problem(seed=4)
  v = INIT(filt, feat, box)
  w = jnp.array([[0.6, 0.1], [0.4, 0.9]])
  _, it_two, loss_two = APPLY(v, filt, feat[:2], box[:2], w)
  feat_pad = feat.at[2].set(jnp.nan)
  box_pad = box.at[2].set(jnp.nan)
  w_pad = jnp.concatenate([w, jnp.zeros((1, B))])
  _, it_pad, loss_pad = APPLY(v, filt, feat_pad, box_pad, w_pad)
  np.testing.assert_allclose(np.asarray(it_pad), np.asarray(it_two), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(loss_pad), np.asarray(loss_two), rtol=1e-5)


def test_unmasked_finite_empty_slots_give_the_same_filter():
  """zero_empty_slots=False (the tracker's memory, whose empty slots hold finite values) skips the masking copy
  and gives the masked result: weight-0 slots holding finite non-zero features still add nothing."""
  unmasked = jax.jit(functools.partial(OPT.apply, zero_empty_slots=False))
  filt, feat, box = make_problem(seed=4)
  v = INIT(filt, feat, box)
  w = jnp.array([[0.6, 0.1], [0.4, 0.9]])
  _, it_two, loss_two = APPLY(v, filt, feat[:2], box[:2], w)
  feat_pad = feat.at[2].multiply(7.0)  # finite garbage in the empty slot
  w_pad = jnp.concatenate([w, jnp.zeros((1, B))])
  _, it_pad, loss_pad = unmasked(v, filt, feat_pad, box, w_pad)
  np.testing.assert_allclose(np.asarray(it_pad), np.asarray(it_two), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(loss_pad), np.asarray(loss_two), rtol=1e-5)
  final, _, _ = unmasked(v, filt, feat_pad, box, w_pad, active_iter=jnp.asarray(2))  # the tracker's form
  np.testing.assert_allclose(np.asarray(final), np.asarray(it_two[-1]), rtol=1e-5, atol=1e-7)
  _, it_nan, _ = unmasked(v, filt, feat.at[2].set(jnp.nan), box, w_pad)
  assert np.isnan(np.asarray(it_nan[-1])).any()  # the contract: unmasked, a NaN slot is not safe


def test_loss_decreases_on_synthetic_problem():
  """Random features, zero initial filter, initial params: the residual loss drops at every iteration."""
  filt, feat, box = make_problem(seed=6)
  _, iterates, losses = APPLY(INIT(filt, feat, box), jnp.zeros_like(filt), feat, box, num_iter=8)
  losses = np.asarray(losses)
  assert np.all(np.diff(losses) <= 1e-6 * losses[0]), losses
  assert losses[-1] < 0.6 * losses[0], losses
  assert np.all(np.isfinite(np.asarray(iterates)))


@pytest.mark.parametrize("which", ["all", "last"])
def test_gradients_flow_through_the_iterates(which):
  """Outer loss on the test scores of every iterate ('all', training) or of the last one only ('last').

  'last' also runs with tracker-style sample weights and an empty memory slot holding a NaN feature map and
  box: the gradients stay finite and that slot's feature gradient is exactly zero.
  """
  filt, feat, box = make_problem(seed=7)
  v = INIT(filt, feat, box)
  sw = None
  if which == "last":
    feat = feat.at[2, 1].set(jnp.nan)
    box = box.at[2, 1].set(jnp.nan)
    sw = jnp.array([[0.5, 0.7], [0.3, 0.3], [0.2, 0.0]])
  test_feat = jnp.asarray(np.random.default_rng(8).normal(size=(2, B, H, H, D)), jnp.float32)

  def outer(v, x, f0):
    _, iterates, _ = OPT.apply(v, f0, x, box, sw, num_iter=3)
    its = iterates if which == "all" else iterates[-1:]
    return sum(jnp.mean((apply_filter(test_feat, f) - 0.5) ** 2) for f in its)

  gv, gx, gf = jax.jit(jax.grad(outer, argnums=(0, 1, 2)))(v, feat, filt)
  if which == "last":
    np.testing.assert_array_equal(np.asarray(gx[2, 1]), 0.0)
    gx = gx[:2]
  leaves = jax.tree_util.tree_leaves_with_path(gv) + [("feat", gx), ("filt", gf)]
  for path, g in leaves:
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), path
    assert np.abs(g).max() > 0, path
  assert len(leaves) == 7  # 5 learned params (label, mask, weight kernels, step, reg) + features + filter


def test_num_iter_override_and_zero():
  filt, feat, box = make_problem()
  v = INIT(filt, feat, box)
  final, iterates, losses = APPLY(v, filt, feat, box, num_iter=0)
  assert iterates.shape == (1, B, FS, FS, D) and losses.shape == (1,)
  np.testing.assert_array_equal(np.asarray(final), np.asarray(filt))
  five = DiMPSteepestDescentGN(num_iter=5, init_gauss_sigma=0.9)
  assert jax.eval_shape(five.apply, v, filt, feat, box)[1].shape[0] == 6  # the module default
  assert jax.eval_shape(lambda v: five.apply(v, filt, feat, box, num_iter=1), v)[1].shape[0] == 2


def test_errors():
  filt, feat, box = make_problem()
  opt = DiMPSteepestDescentGN()
  v = INIT(filt, feat, box)
  with pytest.raises(ValueError, match="box_xywh"):
    opt.apply(v, filt, feat, box[0])
  with pytest.raises(ValueError, match="sample_weight"):
    opt.apply(v, filt, feat, box, jnp.ones((NIMG, B + 1)))
  with pytest.raises(ValueError, match="num_iter"):
    opt.apply(v, filt, feat, box, num_iter=-1)
  with pytest.raises(ValueError, match="rank 5"):
    opt.apply(v, filt, feat[0], box)
  with pytest.raises(ValueError, match="disagree"):
    opt.apply(v, filt[..., :2], feat, box)


def test_traced_iteration_count_matches_the_numpy_iterates():
  """`active_iter` (traced, one compilation for every count) gives the NumPy iterate of that count, also per
  sequence under `vmap` (each sequence stops at its own count; a batch runs the largest count once)."""
  filt, feat, box = make_problem(seed=9)
  v = perturbed_variables(filt, feat, box)
  sw = jnp.asarray(np.random.default_rng(4).uniform(0.05, 0.6, (NIMG, B)), jnp.float32)
  traced = jax.jit(lambda n: OPT.apply(v, filt, feat, box, sw, num_iter=3, active_iter=n)[0])
  ref_it, _ = np_steepest_descent(v["params"], filt, feat, box, 3, np.asarray(sw))
  static = [APPLY(v, filt, feat, box, sw, num_iter=n)[0] for n in range(4)]
  for n in range(-1, 6):
    got = np.asarray(traced(jnp.asarray(n)))
    k = min(max(n, 0), 3)  # clamped to [0, num_iter]
    np.testing.assert_allclose(got, ref_it[k], rtol=1e-5, atol=1e-5 * np.abs(ref_it[k]).max())
    np.testing.assert_allclose(got, np.asarray(static[k]), rtol=1e-6, atol=1e-7)
  assert traced._cache_size() == 1

  # Per sequence: sequence b's own problem (its features, boxes, weights) with its own count.
  def one(f, x, bx, w, n):
    return OPT.apply(v, f[None], x[:, None], bx[:, None], w[:, None], num_iter=3, active_iter=n)[0][0]
  counts = jnp.asarray([2, 0])
  batched = jax.jit(jax.vmap(one, in_axes=(0, 1, 1, 1, 0)))(filt, feat, box, sw, counts)
  for b in range(B):
    ref_b, _ = np_steepest_descent(v["params"], filt[b:b + 1], feat[:, b:b + 1], box[:, b:b + 1],
                                   int(counts[b]), np.asarray(sw[:, b:b + 1]))
    np.testing.assert_allclose(np.asarray(batched[b]), ref_b[-1][0], rtol=1e-5, atol=1e-5 * np.abs(ref_b).max())
  np.testing.assert_array_equal(np.asarray(batched[1]), np.asarray(filt[1]))  # count 0: untouched
