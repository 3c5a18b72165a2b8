"""Classification feature extractor (design.md §2.1): InstanceL2Norm, structure, parameter names, shapes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.dimp.features import ClassificationFeatures, InstanceL2Norm, feat_norm_scale
from cia_jax.models.resnet import BasicBlock


def np_conv3x3(x, k):
  """NHWC cross-correlation, pad 1, float64; k `[3, 3, Cin, Cout]`."""
  x = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = x.shape[1] - 2, x.shape[2] - 2
  return sum(np.einsum("nhwc,co->nhwo", x[:, u:u + h, v:v + w], np.asarray(k, np.float64)[u, v])
             for u in range(3) for v in range(3))


def np_l2norm(x, scale, eps=1e-5):
  x = np.asarray(x, np.float64)
  ss = (x**2).reshape(len(x), -1).sum(1)[:, None, None, None]
  return x * scale * np.sqrt(x[0].size / (ss + eps))


def test_norm_scales():
  assert feat_norm_scale(256) == 1 / 64
  np.testing.assert_allclose(feat_norm_scale(512), 0.011048543, rtol=1e-7)


def test_instance_l2_norm_sum_of_squares_and_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 5, 6, 8)) * np.array([0.1, 1.0, 30.0])[:, None, None, None]
  scale = feat_norm_scale(8)
  y = np.asarray(InstanceL2Norm(scale).apply({}, jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(y, np_l2norm(x, scale), rtol=1e-5)
  # Per sample, sum y^2 = scale^2 * C*H*W * S / (S + eps) = H*W/16 (up to eps), whatever the input's scale.
  np.testing.assert_allclose((y**2).sum((1, 2, 3)), 5 * 6 / 16, rtol=1e-5)
  with pytest.raises(ValueError, match="rank 4"):
    InstanceL2Norm(scale).apply({}, jnp.zeros((5, 6, 8)))


def test_r50_matches_numpy_and_param_names():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 5, 5, 6)), jnp.float32)
  m = ClassificationFeatures("r50", out_dim=4, in_dim=6)
  v = m.init(jax.random.PRNGKey(0), x, train=True)
  assert jax.tree.map(jnp.shape, v) == {"params": {"0": {"kernel": (3, 3, 6, 4)}}}
  y = m.apply(v, x, train=False)
  ref = np_l2norm(np_conv3x3(x, v["params"]["0"]["kernel"]), math.sqrt(1 / (4 * 16)))
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-6)


def test_r18_structure_param_names_and_bn_modes():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(4, 5, 5, 6)), jnp.float32)
  m = ClassificationFeatures("r18", out_dim=4, in_dim=6)
  v = m.init(jax.random.PRNGKey(0), x, train=True)
  p = v["params"]
  assert sorted(p) == ["0", "1"] and sorted(p["0"]) == ["bn1", "bn2", "conv1", "conv2"]
  assert p["1"]["kernel"].shape == (3, 3, 6, 4) and "bias" not in p["1"]
  # Conv init N(0, sqrt(2 / (9 * out))): the block's 6->6 and the final 6->4 kernels.
  assert 0.1 < float(jnp.std(p["1"]["kernel"])) / math.sqrt(2 / 36) < 2.0
  for train in (True, False):
    y, upd = m.apply(v, x, train=train, mutable=["batch_stats"])
    block = BasicBlock(6).apply({"params": p["0"], "batch_stats": v["batch_stats"]["0"]}, x,
                                use_running_average=not train, mutable=["batch_stats"])[0]
    ref = np_l2norm(np_conv3x3(block, p["1"]["kernel"]), 1 / 8)  # sqrt(1 / (4 * 16))
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-6)
    moved = not np.allclose(upd["batch_stats"]["0"]["bn1"]["mean"], 0.0)
    assert moved == train  # running statistics move only in training mode


def test_full_size_shapes():
  for arch, cin, out_dim, hw in (("r18", 256, 256, 18), ("r50", 1024, 512, 22)):
    m = ClassificationFeatures(arch, out_dim)
    x = jax.ShapeDtypeStruct((6, hw, hw, cin), jnp.float32)
    v = jax.eval_shape(lambda x: m.init(jax.random.PRNGKey(0), x, train=False), x)
    y = jax.eval_shape(lambda v, x: m.apply(v, x, train=False), v, x)
    assert y.shape == (6, hw, hw, out_dim)
  assert v["params"]["0"]["kernel"].shape == (3, 3, 1024, 512)


def test_errors():
  m = ClassificationFeatures("r18", out_dim=256)
  with pytest.raises(ValueError, match=r"\[N, H, W, 256\]"):
    m.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 128)), train=False)
  with pytest.raises(ValueError, match=r"\[N, H, W, 256\]"):
    m.init(jax.random.PRNGKey(0), jnp.zeros((4, 4, 256)), train=False)
  with pytest.raises(ValueError, match="arch"):
    ClassificationFeatures("r34", out_dim=256).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 256)),
                                                    train=False)
