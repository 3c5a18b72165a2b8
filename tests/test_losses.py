"""Losses against float64 NumPy written from the spec's equations (2.5, 3.4, 4.3, 4.5)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax import losses

RTOL = 1e-5  # float32 vs float64 on O(1..10) values.


def _unit_rows(rng, m, d):
  x = rng.normal(size=(m, d))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pair(seed=0, m=18, d=8, noise=0.5):
  rng = np.random.default_rng(seed)
  q = _unit_rows(rng, m, d)
  k = q + noise * rng.normal(size=(m, d))
  k /= np.linalg.norm(k, axis=1, keepdims=True)
  return q, k


def np_infonce_reference(q, k, ids, t):
  s = q @ k.T / t
  pos = ids[:, None] == ids[None, :]
  return -np.log(np.sum(np.exp(s) * pos) / np.sum(np.exp(s)))


def np_infonce_reference_grads(q, k, ids, t):
  """dL/dq, dL/dk of L = log(sum exp S) - log(sum_pos exp S), S = q k^T / t."""
  s = q @ k.T / t
  pos = ids[:, None] == ids[None, :]
  e = np.exp(s)
  c = e / e.sum() - e * pos / (e * pos).sum()  # dL/dS
  return c @ k / t, c.T @ q / t


def np_infonce_per_pair(q, k, ids, t):
  s = q @ k.T / t
  terms = []
  for i in range(len(ids)):
    neg = s[i, ids != ids[i]]
    for p in np.flatnonzero(ids == ids[i]):
      terms.append(-np.log(np.exp(s[i, p]) / (np.exp(s[i, p]) + np.exp(neg).sum())))
  return np.mean(terms)


IDS = np.repeat(np.arange(3), 6)  # 3 sequences x 6 frames, sequence-major.


@pytest.mark.parametrize("form,ref", [("reference", np_infonce_reference), ("per_pair", np_infonce_per_pair)])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_infonce_matches_numpy(form, ref, temperature):
  q, k = _pair()
  loss = losses.infonce_v(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), jnp.asarray(IDS),
                          temperature, form=form)
  np.testing.assert_allclose(float(loss), ref(q, k, IDS, temperature), rtol=RTOL)


def test_infonce_forms_differ_and_unordered_ids():
  # Positives are defined by id equality, not by position: permuting rows leaves the loss unchanged.
  q, k = _pair(seed=1)
  perm = np.random.default_rng(2).permutation(len(IDS))
  for form in losses.INFONCE_FORMS:
    a = losses.infonce_v(jnp.asarray(q), jnp.asarray(k), jnp.asarray(IDS), form=form)
    b = losses.infonce_v(jnp.asarray(q[perm]), jnp.asarray(k[perm]), jnp.asarray(IDS[perm]), form=form)
    np.testing.assert_allclose(float(a), float(b), rtol=RTOL)
  ref = losses.infonce_v(jnp.asarray(q), jnp.asarray(k), jnp.asarray(IDS), form="reference")
  paper = losses.infonce_v(jnp.asarray(q), jnp.asarray(k), jnp.asarray(IDS), form="paper")
  assert abs(float(ref) - float(paper)) > 1e-2


def test_infonce_reference_gradient_matches_numpy():
  q, k = _pair(seed=3)
  gq, gk = jax.grad(lambda a, b: losses.infonce_v(a, b, jnp.asarray(IDS)), argnums=(0, 1))(
      jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32))
  rq, rk = np_infonce_reference_grads(q, k, IDS, 0.07)
  np.testing.assert_allclose(gq, rq, atol=1e-5 * np.abs(rq).max())
  np.testing.assert_allclose(gk, rk, atol=1e-5 * np.abs(rk).max())


def test_infonce_extreme_temperature_and_no_negatives_are_finite():
  q, k = _pair(seed=4, noise=2.0)
  # T = 0.005: |S| up to 200, exp overflows float32 without the max shift.
  for form, ref in (("reference", np_infonce_reference), ("per_pair", np_infonce_per_pair)):
    with np.errstate(over="ignore"):
      expected = ref(q.astype(np.longdouble), k.astype(np.longdouble), IDS, 0.005)
    loss = losses.infonce_v(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), jnp.asarray(IDS), 0.005,
                            form=form)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-4)
  # One sequence only: every pair is positive, both forms give 0 with finite gradients.
  same = jnp.zeros(len(IDS), jnp.int32)
  for form in losses.INFONCE_FORMS:
    loss_fn = lambda a: losses.infonce_v(a, jnp.asarray(k), same, form=form)  # noqa: E731
    loss, g = jax.value_and_grad(loss_fn)(jnp.asarray(q))
    np.testing.assert_allclose(float(loss), 0.0, atol=1e-6)
    assert np.all(np.isfinite(g))


def test_infonce_bad_input():
  q = jnp.ones((4, 3))
  ids = jnp.arange(4)
  with pytest.raises(ValueError, match="form"):
    losses.infonce_v(q, q, ids, form="moco")
  with pytest.raises(ValueError, match="q and k"):
    losses.infonce_v(q, q[:3], ids)
  with pytest.raises(ValueError, match="seq_ids"):
    losses.infonce_v(q, q, ids.astype(jnp.float32))
  with pytest.raises(ValueError, match="temperature"):
    losses.infonce_v(q, q, ids, temperature=0.0)


_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    from cia_jax.losses import infonce_v

    n_dev = len(jax.devices())
    rng = np.random.default_rng(0)
    m_local, d = 3, 5
    M = n_dev * m_local
    q = rng.normal(size=(M, d)); q /= np.linalg.norm(q, axis=1, keepdims=True)
    k = q + 0.3 * rng.normal(size=(M, d)); k /= np.linalg.norm(k, axis=1, keepdims=True)
    q, k = jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32)
    ids = jnp.asarray(np.repeat(np.arange(M // 6), 6), jnp.int32)  # sequences straddle devices
    mesh = Mesh(np.array(jax.devices()), ("data",))
    out = {"n_dev": n_dev}
    for form in ("reference", "per_pair"):
      single = jax.value_and_grad(lambda q, k: infonce_v(q, k, ids, form=form), argnums=(0, 1))
      ref_l, ref_g = jax.jit(single)(q, k)
      def loss_local(q, k, i):
        return infonce_v(q, k, i, form=form, axis_name="data")
      res = {}
      f = jax.shard_map(loss_local, mesh=mesh, in_specs=(P("data"),) * 3, out_specs=P())
      res["outer"] = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(q, k, ids)
      for cv in (True, False):
        def inner(q, k, i):
          l, g = jax.value_and_grad(loss_local, argnums=(0, 1))(q, k, i)
          return l[None], g[0], g[1]
        l, gq, gk = jax.jit(jax.shard_map(inner, mesh=mesh, in_specs=(P("data"),) * 3, out_specs=P("data"),
                                          check_vma=cv))(q, k, ids)
        res[f"inner_check_vma_{cv}"] = (l, (gq, gk))
      l, (gq, gk) = jax.pmap(jax.value_and_grad(loss_local, argnums=(0, 1)), axis_name="data")(
          q.reshape(n_dev, m_local, d), k.reshape(n_dev, m_local, d), ids.reshape(n_dev, m_local))
      res["pmap"] = (l, (gq.reshape(M, d), gk.reshape(M, d)))
      for name, (l, (gq, gk)) in res.items():
        out[f"{form}/{name}"] = {
            "loss": float(np.max(np.abs(np.asarray(l) - float(ref_l)))),
            "grad_q": float(np.max(np.abs(gq - ref_g[0]))), "grad_k": float(np.max(np.abs(gk - ref_g[1]))),
            "grad_scale": float(min(np.abs(ref_g[0]).max(), np.abs(ref_g[1]).max())),
            "loss_value": float(ref_l)}
    print(json.dumps(out))
    """)


def test_infonce_eight_devices_matches_single_device():
  """The global-batch loss and its gradients are the same on 8 devices as on one (4 ways to shard)."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_SCRIPT], env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out.pop("n_dev") == 8
  assert len(out) == 8  # 2 forms x (outer grad, inner grad checked / unchecked, pmap)
  for name, r in out.items():
    assert r["loss_value"] > 0.1, name
    assert r["grad_scale"] > 1e-2, name  # gradients are not trivially zero
    assert r["loss"] < 1e-5 * max(1.0, r["loss_value"]), (name, r)
    assert r["grad_q"] < 1e-5 and r["grad_k"] < 1e-5, (name, r)


# ------------------------------------------------------------------------------------------------
# InfoNCE-V as the paper's Eq. 3 (form="paper"): one log-ratio, negatives-only denominator.


def np_infonce_eq3(q, k, ids, t):
  """Eq. 3 transcribed literally in float64: -log( sum_{same seq} e^{q.k/T} / sum_{different seq} e^{q.k/T} )."""
  num = den = 0.0
  for i in range(len(ids)):
    for l in range(len(ids)):
      e = np.exp(np.dot(q[i], k[l]) / t)
      if ids[i] == ids[l]:
        num += e
      else:
        den += e
  return -np.log(num / den)


def np_infonce_eq3_grads(q, k, ids, t):
  """dL/dq, dL/dk of L = log(sum_neg exp S) - log(sum_pos exp S), S = q k^T / t."""
  s = q @ k.T / t
  pos = ids[:, None] == ids[None, :]
  e = np.exp(s)
  c = e * ~pos / (e * ~pos).sum() - e * pos / (e * pos).sum()  # dL/dS
  return c @ k / t, c.T @ q / t


# Sequence ids of the Eq. 3 checks: sequence-major; slots 0 and 2 holding the same sequence (their 12 rows are
# all positives of each other); ids in no particular order.
EQ3_IDS = {
    "sequence_major": IDS,
    "two_slots_share_a_sequence": np.repeat([7, 3, 7], 6),
    "unordered": np.random.default_rng(11).permutation(np.repeat(np.arange(3), 6)),
}


@pytest.mark.parametrize("ids_name", sorted(EQ3_IDS))
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_infonce_paper_is_eq3(ids_name, temperature):
  ids = EQ3_IDS[ids_name]
  q, k = _pair(seed=6)
  loss, (gq, gk) = jax.value_and_grad(
      lambda a, b: losses.infonce_v(a, b, jnp.asarray(ids), temperature, form="paper"), argnums=(0, 1))(
          jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32))
  np.testing.assert_allclose(float(loss), np_infonce_eq3(q, k, ids, temperature), rtol=RTOL, atol=1e-5)
  rq, rk = np_infonce_eq3_grads(q, k, ids, temperature)
  np.testing.assert_allclose(gq, rq, atol=1e-5 * np.abs(rq).max())
  np.testing.assert_allclose(gk, rk, atol=1e-5 * np.abs(rk).max())


def test_infonce_paper_differs_from_the_other_forms_and_can_be_negative():
  q, k = _pair(seed=7, noise=0.05)  # keys close to their queries: the positives dominate
  ids = jnp.asarray(IDS)
  paper = float(losses.infonce_v(jnp.asarray(q), jnp.asarray(k), ids, form="paper"))
  np.testing.assert_allclose(paper, np_infonce_eq3(q, k, IDS, 0.07), rtol=RTOL)
  assert paper < 0  # -log(P / N) < 0 when P > N; the reference form -log(P / (P + N)) is always > 0
  reference = float(losses.infonce_v(jnp.asarray(q), jnp.asarray(k), ids, form="reference"))
  # The two log-ratios share the numerator: L_ref - L_paper = log((P + N) / N).
  s = q @ k.T / 0.07
  pos = IDS[:, None] == IDS[None, :]
  np.testing.assert_allclose(reference - paper, np.log(np.exp(s).sum() / np.exp(s)[~pos].sum()), rtol=1e-4)
  assert abs(float(losses.infonce_v(jnp.asarray(q), jnp.asarray(k), ids, form="per_pair")) - paper) > 1e-2


def test_infonce_paper_extreme_temperature_and_no_negatives():
  q, k = _pair(seed=4, noise=2.0)
  with np.errstate(over="ignore"):
    expected = np_infonce_eq3(q.astype(np.longdouble), k.astype(np.longdouble), IDS, 0.005)
  loss = losses.infonce_v(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), jnp.asarray(IDS), 0.005,
                          form="paper")
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-4)
  # One sequence: Eq. 3 has an empty denominator; the loss is 0 with zero (finite) gradients.
  loss, g = jax.value_and_grad(lambda a: losses.infonce_v(a, jnp.asarray(k), jnp.zeros(len(IDS), jnp.int32),
                                                          form="paper"))(jnp.asarray(q))
  assert float(loss) == 0.0 and np.all(np.asarray(g) == 0)


_EQ3_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    from cia_jax.losses import infonce_v

    n_dev = len(jax.devices())
    rng = np.random.default_rng(1)
    m_local, d = 3, 5
    M = n_dev * m_local
    q64 = rng.normal(size=(M, d)); q64 /= np.linalg.norm(q64, axis=1, keepdims=True)
    k64 = q64 + 0.3 * rng.normal(size=(M, d)); k64 /= np.linalg.norm(k64, axis=1, keepdims=True)
    q, k = jnp.asarray(q64, jnp.float32), jnp.asarray(k64, jnp.float32)
    batches = {
        "straddling": np.repeat(np.arange(M // 6), 6),  # sequences straddle devices
        # slots 0 and 2 hold the same sequence (on different devices), slot 1 another.
        "shared_sequence": np.repeat([5, 9, 5, 1], 6),
    }
    mesh = Mesh(np.array(jax.devices()), ("data",))

    def loss_local(q, k, i):
      return infonce_v(q, k, i, form="paper", axis_name="data")

    def inner(q, k, i):
      l, g = jax.value_and_grad(loss_local, argnums=(0, 1))(q, k, i)
      return l[None], g[0], g[1]

    runs = {
        "outer": jax.jit(jax.value_and_grad(jax.shard_map(loss_local, mesh=mesh, in_specs=(P("data"),) * 3,
                                                           out_specs=P()), argnums=(0, 1))),
        "inner_check_vma_True": jax.jit(jax.shard_map(inner, mesh=mesh, in_specs=(P("data"),) * 3,
                                                      out_specs=P("data"), check_vma=True)),
        "inner_check_vma_False": jax.jit(jax.shard_map(inner, mesh=mesh, in_specs=(P("data"),) * 3,
                                                       out_specs=P("data"), check_vma=False)),
    }
    pmapped = jax.pmap(jax.value_and_grad(loss_local, argnums=(0, 1)), axis_name="data")
    out = {"n_dev": n_dev}
    for name, ids64 in batches.items():
      ids = jnp.asarray(ids64, jnp.int32)
      s = q64 @ k64.T / 0.07
      pos = ids64[:, None] == ids64[None, :]
      e = np.exp(s)
      eq3 = -np.log(e[pos].sum() / e[~pos].sum())  # Eq. 3 in float64
      c = e * ~pos / e[~pos].sum() - e * pos / e[pos].sum()
      ref_gq, ref_gk = c @ k64 / 0.07, c.T @ q64 / 0.07
      res = {"single": jax.jit(jax.value_and_grad(lambda q, k: infonce_v(q, k, ids, form="paper"),
                                                  argnums=(0, 1)))(q, k)}
      res["outer"] = runs["outer"](q, k, ids)
      for run in ("inner_check_vma_True", "inner_check_vma_False"):
        l, gq, gk = runs[run](q, k, ids)
        res[run] = (l, (gq, gk))
      l, (gq, gk) = pmapped(q.reshape(n_dev, m_local, d), k.reshape(n_dev, m_local, d),
                            ids.reshape(n_dev, m_local))
      res["pmap"] = (l, (gq.reshape(M, d), gk.reshape(M, d)))
      for run, (l, (gq, gk)) in res.items():
        out[f"{name}/{run}"] = {
            "loss": float(np.max(np.abs(np.asarray(l, np.float64) - eq3))), "eq3": float(eq3),
            "grad_q": float(np.max(np.abs(np.asarray(gq, np.float64) - ref_gq))),
            "grad_k": float(np.max(np.abs(np.asarray(gk, np.float64) - ref_gk))),
            "grad_scale": float(min(np.abs(ref_gq).max(), np.abs(ref_gk).max()))}
    print(json.dumps(out))
    """)


def test_infonce_paper_eight_devices_matches_float64_eq3():
  """Eq. 3 on 8 simulated devices (4 ways to shard) equals the float64 transcription, value and gradients,
  also when two batch slots on different devices hold the same sequence."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _EQ3_MULTI_DEVICE_SCRIPT], env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out.pop("n_dev") == 8
  assert len(out) == 10  # 2 batches x (single device, outer grad, inner grad checked / unchecked, pmap)
  for name, r in out.items():
    assert r["grad_scale"] > 1e-2, name  # gradients are not trivially zero
    assert r["loss"] < 1e-5 * max(1.0, abs(r["eq3"])), (name, r)
    assert r["grad_q"] < 1e-5 and r["grad_k"] < 1e-5, (name, r)


# ------------------------------------------------------------------------------------------------
# DiMP classifier hinge loss (design.md §2.5).


def np_lbhinge(scores, labels, threshold):
  neg = labels < threshold
  pred = np.where(neg, np.maximum(scores, 0.0), scores)
  target = np.where(neg, 0.0, labels)
  return np.mean((pred - target) ** 2)


def _gaussian_labels(rng, shape):
  nte, b, h, w = shape
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  c = rng.uniform(2, h - 2, size=(nte, b, 2))
  d2 = (yy - c[..., :1, None]) ** 2 + (xx - c[..., 1:, None]) ** 2
  return np.exp(-d2 / (2 * 0.9 ** 2))


def test_hinge_iterate_weights():
  np.testing.assert_allclose(losses.hinge_iterate_weights(6), [100.0] * 6)
  np.testing.assert_allclose(losses.hinge_iterate_weights(4), [100.0, 200.0, 200.0, 100.0])
  np.testing.assert_allclose(losses.hinge_iterate_weights(2, (1.0, 2.0, 400.0)), [2.0, 1.0])
  with pytest.raises(ValueError, match="iterates"):
    losses.hinge_iterate_weights(1)


def test_discriminative_hinge_loss_matches_numpy():
  rng = np.random.default_rng(5)
  shape = (3, 2, 7, 7)
  labels = _gaussian_labels(rng, shape)
  scores = rng.normal(scale=0.5, size=(6,) + shape)
  assert (labels < 0.05).any() and (labels >= 0.05).any()
  total, per = losses.discriminative_hinge_loss(jnp.asarray(scores, jnp.float32),
                                                jnp.asarray(labels, jnp.float32))
  per_ref = np.array([np_lbhinge(s, labels, 0.05) for s in scores])
  np.testing.assert_allclose(per, per_ref, rtol=RTOL)
  total_ref = 100 * per_ref[5] + 100 * per_ref[0] + 400 / 4 * per_ref[1:5].sum()
  np.testing.assert_allclose(float(total), total_ref, rtol=RTOL)
  # Negative scores on negatives cost nothing; on positives they do.
  zero_neg = np.where(labels < 0.05, -1.0, labels)
  np.testing.assert_allclose(float(losses.hinge_loss(jnp.asarray(zero_neg), jnp.asarray(labels))), 0.0,
                             atol=1e-7)
  with pytest.raises(ValueError, match="scores_iterates"):
    losses.discriminative_hinge_loss(jnp.asarray(scores[:, 0]), jnp.asarray(labels))


# ------------------------------------------------------------------------------------------------
# IoU-Net losses (design.md §3.4).


def test_iou_mse_loss():
  rng = np.random.default_rng(6)
  pred, target = rng.normal(size=(3, 2, 8)), rng.uniform(-1, 1, size=(3, 2, 8))
  np.testing.assert_allclose(float(losses.iou_mse_loss(jnp.asarray(pred), jnp.asarray(target))),
                             np.mean((pred - target) ** 2), rtol=RTOL)
  with pytest.raises(ValueError, match="iou_target"):
    losses.iou_mse_loss(jnp.asarray(pred), jnp.asarray(target[..., :4]))


def np_kl_regression(s, q, p):
  x = s - np.log(q)
  lse = np.log(np.sum(np.exp(x - x.max(-1, keepdims=True)), -1)) + x.max(-1)
  return np.mean(lse - np.log(s.shape[-1]) - np.mean(s * p / q, -1))


def test_kl_regression_loss_matches_numpy():
  rng = np.random.default_rng(7)
  shape = (3, 2, 128)
  s = rng.normal(scale=2.0, size=shape)
  q = np.exp(rng.normal(scale=2.0, size=shape))  # densities over many orders of magnitude
  p = np.exp(rng.normal(scale=2.0, size=shape))
  loss = losses.kl_regression_loss(*(jnp.asarray(a, jnp.float32) for a in (s, q, p)))
  np.testing.assert_allclose(float(loss), np_kl_regression(s, q, p), rtol=1e-4)
  with pytest.raises(ValueError, match="same shape"):
    losses.kl_regression_loss(jnp.asarray(s), jnp.asarray(q[..., :5]), jnp.asarray(p))


# ------------------------------------------------------------------------------------------------
# Category cross-entropy (design.md §4.5).


def np_masked_ce(logits, labels):
  valid = labels >= 0
  if not valid.any():
    return 0.0
  z = logits - logits.max(1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  return -np.mean(logp[valid, labels[valid]])


def test_category_cross_entropy_masks_unlabelled():
  rng = np.random.default_rng(8)
  logits = rng.normal(scale=3.0, size=(12, 70))
  labels = np.array([3, -1, 69, 0, -1, 5, 5, -1, 12, 40, -1, 1])
  loss_fn = jax.jit(losses.category_cross_entropy)
  np.testing.assert_allclose(float(loss_fn(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))),
                             np_masked_ce(logits, labels), rtol=RTOL)
  # Unlabelled rows get no gradient.
  g = jax.grad(losses.category_cross_entropy)(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
  assert np.all(np.asarray(g)[labels < 0] == 0) and np.all(np.abs(np.asarray(g)[labels >= 0]).sum(1) > 0)


def test_category_cross_entropy_all_unlabelled_is_zero():
  logits = jnp.asarray(np.random.default_rng(9).normal(size=(6, 70)), jnp.float32)
  labels = -jnp.ones(6, jnp.int32)
  loss, g = jax.value_and_grad(losses.category_cross_entropy)(logits, labels)
  assert float(loss) == 0.0
  assert np.all(np.asarray(g) == 0)


def test_category_cross_entropy_bad_labels():
  logits = jnp.zeros((3, 70))
  with pytest.raises(ValueError, match="labels must lie"):
    losses.category_cross_entropy(logits, jnp.asarray([0, 70, -1]))
  with pytest.raises(ValueError, match="labels must lie"):
    losses.category_cross_entropy(logits, jnp.asarray([0, -2, -1]))
  with pytest.raises(ValueError, match="integers"):
    losses.category_cross_entropy(logits, jnp.asarray([0.0, 1.0, -1.0]))
  with pytest.raises(ValueError, match=r"\[N, C\]"):
    losses.category_cross_entropy(logits, jnp.asarray([0, 1]))


# ------------------------------------------------------------------------------------------------
# Weighted total.


def test_total_loss_weights_and_reports_terms():
  terms = {"clf": jnp.asarray(2.0), "iou": jnp.asarray(0.5), "category": jnp.asarray(4.0),
           "contrastive": jnp.asarray(1.5)}
  weights = {"clf": 1.0, "iou": 0.01, "category": 0.1, "contrastive": 1.0, "unused": 7.0}
  total, report = losses.total_loss(terms, weights)
  np.testing.assert_allclose(float(total), 2.0 + 0.005 + 0.4 + 1.5, rtol=1e-6)
  assert set(report) == set(terms) | {"total"}
  assert float(report["category"]) == 4.0
  with pytest.raises(ValueError, match="no weight"):
    losses.total_loss(terms, {"clf": 1.0})
  with pytest.raises(ValueError, match="scalar"):
    losses.total_loss({"clf": jnp.ones(3)}, {"clf": 1.0})
