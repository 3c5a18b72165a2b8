"""Instance-aware module: contrastive projector, target embedding, angle modulation (design.md §4.1, 4.3, 4.4)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.instance import AngleModulator, ContrastiveProjector

C = 8  # tiny width


def np_conv(x, kernel, bias, padding):
  """float64 NHWC cross-correlation, kernel HWIO, symmetric zero padding."""
  x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  kh, kw = kernel.shape[:2]
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  out = np.zeros((x.shape[0], ho, wo, kernel.shape[-1]))
  for i in range(kh):
    for j in range(kw):
      out += np.einsum("nhwc,co->nhwo", x[:, i:i + ho, j:j + wo], kernel[i, j])
  return out + bias


def np_projector(x, p, padding):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  y = np.maximum(np_conv(x, p["conv1"]["kernel"], p["conv1"]["bias"], padding), 0.0)
  return np_conv(y, p["conv2"]["kernel"], p["conv2"]["bias"], 0)


def np_normalize(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def np_modulate(x, y, p):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  y_hat = np_normalize(y)
  y_mod = np_conv(np.maximum(np_conv(y_hat, p["proj_0"]["kernel"], p["proj_0"]["bias"], 0), 0.0),
                  p["proj_2"]["kernel"], p["proj_2"]["bias"], 0)
  n = np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  return n * np_normalize(np.exp(p["alpha_factor"]) * x / n + y_mod)


def _features(seed, shape):
  return np.random.default_rng(seed).normal(size=shape)


@pytest.mark.parametrize("padding", [0, 1])
def test_projector_matches_numpy(padding):
  x = _features(0, (2, 5, 6, C))
  proj = ContrastiveProjector()
  params = proj.init(jax.random.key(0), jnp.asarray(x, jnp.float32), padding)["params"]
  y = proj.apply({"params": params}, jnp.asarray(x, jnp.float32), padding)
  expected = np_projector(x, params, padding)
  assert y.shape == expected.shape == (2, 3 + 2 * padding, 4 + 2 * padding, C)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_projector_init_and_bad_padding():
  x = jnp.zeros((1, 3, 3, C))
  params = ContrastiveProjector().init(jax.random.key(1), x, 1)["params"]
  # PyTorch default: U(+-1/sqrt(fan_in)) for kernel and bias, fan_in = k*k*C.
  for name, fan_in in (("conv1", 9 * C), ("conv2", C)):
    bound = 1 / np.sqrt(fan_in)
    for leaf in params[name].values():
      assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.5 * bound
  assert params["conv1"]["kernel"].shape == (3, 3, C, C) and params["conv2"]["kernel"].shape == (1, 1, C, C)
  with pytest.raises(ValueError, match="padding"):
    ContrastiveProjector().apply({"params": params}, x, 2)


def test_embed_target_pools_box_and_normalises():
  # Per-channel linear maps f(y, x) = a*y + b*x + c: the bilinear interpolant is exact inside the
  # map, so each PrRoI bin equals f at the bin centre (in feature cells, box / 16, x2 = x + w).
  h = w = 10
  rng = np.random.default_rng(2)
  a, b, c = rng.normal(size=(3, C))
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  fmap = a * yy[..., None] + b * xx[..., None] + c
  layer3 = np.stack([fmap, -fmap])  # [2, H, W, C]
  # In cells (x1, y1)-(x2, y2): (2, 3)-(5, 6) and (1, 1.5)-(7, 6).
  box_xywh = np.array([[32.0, 48.0, 48.0, 48.0], [16.0, 24.0, 96.0, 72.0]])
  proj = ContrastiveProjector()
  params = proj.init(jax.random.key(3), jnp.zeros((1, 3, 3, C)), 0)["params"]
  embed = jax.jit(lambda p, f, b: proj.apply({"params": p}, f, b, method=ContrastiveProjector.embed_target))
  emb = embed(params, jnp.asarray(layer3, jnp.float32), jnp.asarray(box_xywh, jnp.float32))
  pooled = []
  for n, (x0, y0, bw, bh) in enumerate(box_xywh / 16.0):
    cy = y0 + (np.arange(3) + 0.5) * bh / 3
    cx = x0 + (np.arange(3) + 0.5) * bw / 3
    sign = 1.0 if n == 0 else -1.0
    pooled.append(sign * (a * cy[:, None, None] + b * cx[None, :, None] + c))
  expected = np_normalize(np_projector(np.stack(pooled), params, 0).reshape(2, C))
  assert emb.shape == (2, C)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(emb, expected, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="box_xywh"):
    proj.apply({"params": params}, jnp.asarray(layer3), jnp.zeros((3, 4)),
               method=ContrastiveProjector.embed_target)


@pytest.mark.parametrize("alpha_factor", [0.0, -2.0, 1.5])
def test_modulator_matches_numpy(alpha_factor):
  x = _features(4, (2, 4, 5, C))
  y = _features(5, (2, 4, 5, C))
  x[0, 0, 0] = 0.0  # a dead pixel: |z| = max(|x|, 1e-12), no NaN
  mod = AngleModulator()
  params = mod.init(jax.random.key(4), jnp.asarray(x), jnp.asarray(y))["params"]
  assert float(params["alpha_factor"]) == 0.0 and params["alpha_factor"].shape == ()
  params = dict(params, alpha_factor=jnp.asarray(alpha_factor, jnp.float32))
  z = mod.apply({"params": params}, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
  expected = np_modulate(x, y, params)
  np.testing.assert_allclose(z, expected, rtol=1e-4, atol=1e-5)
  # The norm of every pixel is kept; only its direction changes.
  np.testing.assert_allclose(np.linalg.norm(z, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(z)) and np.linalg.norm(np.asarray(z)[0, 0, 0]) <= 1.01e-12


@pytest.mark.parametrize("alpha_factor", [-3.0, 0.0, 2.0])
def test_modulator_alpha_is_positive(alpha_factor):
  # With P's output zeroed, z = |x| normalize(alpha x / |x|) = x exactly when alpha > 0 (a signed
  # alpha_factor used directly as alpha would flip x for negative values).
  x = jnp.asarray(_features(6, (1, 3, 3, C)), jnp.float32)
  mod = AngleModulator()
  params = mod.init(jax.random.key(5), x, x)["params"]
  params = jax.tree.map(jnp.zeros_like, params)
  params["alpha_factor"] = jnp.asarray(alpha_factor)
  np.testing.assert_allclose(mod.apply({"params": params}, x, x), x, rtol=1e-5, atol=1e-6)


def test_modulator_init():
  c = 256  # enough samples to estimate the std to a few percent
  x = jnp.zeros((1, 1, 1, c))
  params = AngleModulator().init(jax.random.key(6), x, x)["params"]
  for name in ("proj_0", "proj_2"):
    k = np.asarray(params[name]["kernel"])
    assert k.shape == (1, 1, c, c)
    np.testing.assert_allclose(k.std(), np.sqrt(2 / c), rtol=0.03)
    assert np.abs(k).max() > 3 * np.sqrt(2 / c)  # a normal, not a 2-sigma truncated normal
    assert np.all(np.asarray(params[name]["bias"]) == 0)
  assert not np.array_equal(params["proj_0"]["kernel"], params["proj_2"]["kernel"])


class _InstancePath(nn.Module):
  """The wiring of design.md §4.3/4.4: one shared projector, dense path through the modulator."""

  @nn.compact
  def __call__(self, layer3, box_xywh):
    proj = ContrastiveProjector(name="proj")
    z = AngleModulator(name="modulator")(layer3, proj(layer3, padding=1))
    return z, proj.embed_target(layer3, box_xywh)


def test_dense_projector_path_is_stop_gradient():
  layer3 = jnp.asarray(_features(7, (2, 6, 6, C)), jnp.float32)
  box = jnp.asarray([[16.0, 16.0, 48.0, 40.0], [8.0, 20.0, 60.0, 50.0]])
  model = _InstancePath()
  params = jax.jit(model.init)(jax.random.key(7), layer3, box)["params"]
  w = jnp.asarray(_features(8, (2, 6, 6, C)), jnp.float32)

  def modulation_loss(p, x):
    return jnp.sum(w * model.apply({"params": p}, x, box)[0])

  gp, gx = jax.jit(jax.grad(modulation_loss, argnums=(0, 1)))(params, layer3)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(gp["proj"]))
  assert all(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree.leaves(gp["modulator"]))
  assert np.abs(np.asarray(gx)).sum() > 0
  # The contrastive path does train the projector.
  g_emb = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, layer3, box)[1][:, 0])))(params)
  assert all(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree.leaves(g_emb["proj"]))


@pytest.mark.parametrize("c3,size", [(256, 18), (1024, 22)])  # CIA18 / CIA50
def test_full_size_shapes(c3, size):
  layer3 = jax.ShapeDtypeStruct((6, size, size, c3), jnp.float32)
  box = jax.ShapeDtypeStruct((6, 4), jnp.float32)
  variables = jax.eval_shape(_InstancePath().init, jax.random.key(0), layer3, box)
  p = variables["params"]
  assert p["proj"]["conv1"]["kernel"].shape == (3, 3, c3, c3)
  assert p["proj"]["conv2"]["kernel"].shape == (1, 1, c3, c3)
  assert p["modulator"]["proj_0"]["kernel"].shape == (1, 1, c3, c3)
  assert p["modulator"]["alpha_factor"].shape == ()
  z, emb = jax.eval_shape(_InstancePath().apply, variables, layer3, box)
  assert z.shape == (6, size, size, c3) and emb.shape == (6, c3)
