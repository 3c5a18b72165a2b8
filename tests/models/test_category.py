"""Category-aware module: classifier, dictionary, category encoder (design.md §4.5, 4.6, 6.3)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.category import (CategoryClassifier, CategoryEncoder, attention_params_from_torch)

C3, C4, HEADS, FFN = 16, 24, 4, 32  # tiny widths
A = 70


def _rng(seed):
  return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------------
# Classifier and dictionary.


def test_classifier_matches_numpy_and_pools_box_centre():
  # layer4 = per-channel linear map a*y + b*x + c: PrRoIPool 1x1 = the map at the box centre (cells).
  h = w = 8
  rng = _rng(0)
  a, b, c = rng.normal(size=(3, C4))
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  fmap = a * yy[..., None] + b * xx[..., None] + c
  layer4 = np.stack([fmap, 2.0 * fmap, -fmap])
  box_xywh = np.array([[32.0, 64.0, 64.0, 96.0], [10.0, 20.0, 150.0, 100.0], [0.0, 0.0, 224.0, 200.0]])
  clf = CategoryClassifier()
  params = jax.jit(clf.init)(jax.random.key(0), jnp.zeros((1, h, w, C4)), jnp.zeros((1, 4)))["params"]
  logits = jax.jit(clf.apply)({"params": params}, jnp.asarray(layer4, jnp.float32),
                              jnp.asarray(box_xywh, jnp.float32))
  cx = (box_xywh[:, 0] + box_xywh[:, 2] / 2) / 32
  cy = (box_xywh[:, 1] + box_xywh[:, 3] / 2) / 32
  pooled = np.array([1.0, 2.0, -1.0])[:, None] * (a * cy[:, None] + b * cx[:, None] + c)
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
  hidden = np.maximum(pooled @ p["proj_fc"]["kernel"] + p["proj_fc"]["bias"], 0.0)
  expected = hidden @ p["clf_fc"]["kernel"] + p["clf_fc"]["bias"]
  assert logits.shape == (3, A)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="box_xywh"):
    clf.apply({"params": params}, jnp.asarray(layer4), jnp.zeros((2, 4)))
  # PyTorch default Linear init: kernel and bias U(+-1/sqrt(fan_in)).
  for name, shape, fan_in in (("proj_fc", (C4, 2 * C4), C4), ("clf_fc", (2 * C4, A), 2 * C4)):
    assert params[name]["kernel"].shape == shape
    for leaf in params[name].values():
      bound = 1 / np.sqrt(fan_in)
      assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.8 * bound


class _CategoryPath(nn.Module):
  """Classifier + encoder wired as in design.md §4.7 (dictionary from the classifier's live weights)."""

  num_known_categories: int = A
  ffn_dim: int = FFN

  @nn.compact
  def __call__(self, x, layer4, box_xywh, deterministic=True):
    clf = CategoryClassifier(name="classifier")
    logits = clf(layer4, box_xywh)
    encoder = CategoryEncoder(num_heads=HEADS, ffn_dim=self.ffn_dim,
                              num_known_categories=self.num_known_categories,
                              dictionary_features=layer4.shape[-1], name="encoder")
    known = self.num_known_categories > 0
    return logits, encoder(x, clf.dictionary() if known else None, deterministic=deterministic)


def _inputs(n=2, size=4, seed=2):
  rng = _rng(seed)
  x = jnp.asarray(rng.normal(size=(n, size, size, C3)), jnp.float32)
  layer4 = jnp.asarray(rng.normal(size=(n, 3, 3, C4)), jnp.float32)
  box = jnp.asarray([[8.0, 8.0, 60.0, 50.0]] * n)
  return x, layer4, box


def _compiled_path(num_known_categories, with_dropout):
  """One init and one forward/gradient/dropout program per variant (compiling is the slow part on 2 cores)."""
  x, layer4, box = _inputs()
  model = _CategoryPath(num_known_categories=num_known_categories)
  params = jax.jit(model.init)(jax.random.key(3), x, layer4, box)["params"]

  @jax.jit
  def run(p, key):
    """(deterministic output, its gradient of sum(y^2), dropout outputs for two keys or None)."""
    fwd = lambda p, det, k: model.apply({"params": p}, x, layer4, box, det, rngs={"dropout": k})[1]
    grad = jax.grad(lambda p: jnp.sum(fwd(p, True, key) ** 2))(p)
    if not with_dropout:
      return fwd(p, True, key), grad, None, None
    return fwd(p, True, key), grad, fwd(p, False, key), fwd(p, False, jax.random.fold_in(key, 1))

  return (x, layer4, box), params, run(params, jax.random.key(0))


@pytest.fixture(scope="module")
def known_path():
  return _compiled_path(A, with_dropout=True)


@pytest.fixture(scope="module")
def learned_path():
  return _compiled_path(0, with_dropout=False)


def test_dictionary_is_right_half_of_clf_fc_and_carries_gradient(known_path):
  _, params, (_, g, _, _) = known_path
  d = CategoryClassifier().apply({"params": params["classifier"]}, method=CategoryClassifier.dictionary)
  torch_weight = np.asarray(params["classifier"]["clf_fc"]["kernel"]).T  # (70, 2C4), torch layout
  np.testing.assert_array_equal(d, torch_weight[:, C4:])
  # The encoder's output reaches clf_fc's right half only (and never its left half or proj_fc).
  gk = np.asarray(g["classifier"]["clf_fc"]["kernel"])
  assert np.all(gk[:C4] == 0) and np.abs(gk[C4:]).sum() > 0
  assert np.all(np.asarray(g["classifier"]["proj_fc"]["kernel"]) == 0)
  with pytest.raises(ValueError, match="no parameters"):
    CategoryClassifier().apply({"params": {}}, method=CategoryClassifier.dictionary)


def test_encoder_dropout_switch(known_path):
  _, _, (det, _, train_a, train_b) = known_path
  assert np.abs(np.asarray(train_a - det)).max() > 1e-3
  assert np.abs(np.asarray(train_a - train_b)).max() > 1e-3


def test_no_known_categories_learns_its_own_dictionary(learned_path):
  """Table 2 "w/o known categories": a random (70, C4) dictionary trained by the tracking loss only."""
  (x, _, _), params, (y, g, _, _) = learned_path
  d = np.asarray(params["encoder"]["dictionary"])
  assert d.shape == (A, C4) and np.abs(d).max() <= 1 / np.sqrt(2 * C4) and d.std() > 0
  # Same computation as the known-category encoder fed that dictionary.
  tp = params["encoder"]
  known = CategoryEncoder(num_heads=HEADS, ffn_dim=FFN)
  y_known = jax.jit(lambda p, d: known.apply({"params": p}, x, d, deterministic=True))(
      {k: v for k, v in tp.items() if k != "dictionary"}, tp["dictionary"])
  np.testing.assert_allclose(y, y_known, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(g["encoder"]["dictionary"])).sum() > 0
  assert np.all(np.asarray(g["classifier"]["clf_fc"]["kernel"]) == 0)  # the classifier is not the dictionary


# ------------------------------------------------------------------------------------------------
# Encoder vs NumPy (torch semantics on torch-layout parameters).


def _layer_norm(x, g, b):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * g + b


def np_encoder_layer(t, atoms, p, heads):
  """torch TransformerEncoderLayer (post-norm, ReLU) with cross-attention to the atoms; eval mode."""
  c = t.shape[1]
  hd = c // heads
  wq, wk, wv = np.split(p["in_proj_weight"], 3)
  bq, bk, bv = np.split(p["in_proj_bias"], 3)
  q = ((t @ wq.T + bq) * hd ** -0.5).reshape(len(t), heads, hd)
  k = (atoms @ wk.T + bk).reshape(len(atoms), heads, hd)
  v = (atoms @ wv.T + bv).reshape(len(atoms), heads, hd)
  logits = np.einsum("lhd,ahd->hla", q, k)
  wts = np.exp(logits - logits.max(-1, keepdims=True))
  wts /= wts.sum(-1, keepdims=True)
  o = np.einsum("hla,ahd->lhd", wts, v).reshape(len(t), c)
  t = _layer_norm(t + o @ p["out_proj_weight"].T + p["out_proj_bias"], p["norm1_weight"], p["norm1_bias"])
  f = np.maximum(t @ p["linear1_weight"].T + p["linear1_bias"], 0.0)
  f = f @ p["linear2_weight"].T + p["linear2_bias"]
  return _layer_norm(t + f, p["norm2_weight"], p["norm2_bias"])


def np_encoder(x, dictionary, torch_params, heads):
  n, h, w, c = x.shape
  atoms = dictionary @ torch_params["proj_post_weight"].T + torch_params["proj_post_bias"]
  tokens = x.reshape(-1, c)  # row-major over (n, h, w)
  t = tokens
  for p in torch_params["layers"]:
    t = np_encoder_layer(t, atoms, p, heads)
  return (tokens + t).reshape(x.shape)


def _random_torch_params(rng, c3, c4, ffn, num_layers=3):
  """Random torch-layout parameters, different in every layer (catches layer mix-ups)."""
  u = lambda *shape: rng.uniform(-0.3, 0.3, size=shape)
  layers = []
  for _ in range(num_layers):
    layers.append({
        "in_proj_weight": u(3 * c3, c3), "in_proj_bias": u(3 * c3), "out_proj_weight": u(c3, c3),
        "out_proj_bias": u(c3), "linear1_weight": u(ffn, c3), "linear1_bias": u(ffn),
        "linear2_weight": u(c3, ffn), "linear2_bias": u(c3), "norm1_weight": 1 + u(c3), "norm1_bias": u(c3),
        "norm2_weight": 1 + u(c3), "norm2_bias": u(c3)})
  return {"proj_post_weight": u(c3, c4), "proj_post_bias": u(c3), "layers": layers}


def _flax_from_torch(tp, heads):
  """The design.md §6.3 mapping, built with the module's own `attention_params_from_torch`."""
  out = {"proj_post": {"kernel": tp["proj_post_weight"].T, "bias": tp["proj_post_bias"]}}
  for i, p in enumerate(tp["layers"]):
    out[f"layers_{i}"] = {
        "self_attn": attention_params_from_torch(p["in_proj_weight"], p["in_proj_bias"], p["out_proj_weight"],
                                                 p["out_proj_bias"], heads),
        "linear1": {"kernel": p["linear1_weight"].T, "bias": p["linear1_bias"]},
        "linear2": {"kernel": p["linear2_weight"].T, "bias": p["linear2_bias"]},
        "norm1": {"scale": p["norm1_weight"], "bias": p["norm1_bias"]},
        "norm2": {"scale": p["norm2_weight"], "bias": p["norm2_bias"]}}
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), out)


def test_encoder_matches_numpy_with_torch_parameters():
  rng = _rng(4)
  x = rng.normal(size=(2, 3, 4, C3))
  dictionary = rng.normal(size=(A, C4))
  tp = _random_torch_params(rng, C3, C4, FFN)
  encoder = CategoryEncoder(num_heads=HEADS, ffn_dim=FFN)
  init_shapes = jax.tree.map(jnp.shape, jax.eval_shape(
      lambda: encoder.init(jax.random.key(0), jnp.zeros((1, 2, 2, C3)), jnp.zeros((A, C4)),
                           deterministic=True))["params"])
  params = _flax_from_torch(tp, HEADS)
  assert jax.tree.map(jnp.shape, params) == init_shapes  # the mapping fills every parameter, nothing else
  y = jax.jit(lambda p, x, d: encoder.apply({"params": p}, x, d, deterministic=True))(
      params, jnp.asarray(x, jnp.float32), jnp.asarray(dictionary, jnp.float32))
  np.testing.assert_allclose(y, np_encoder(x, dictionary, tp, HEADS), rtol=1e-4, atol=1e-4)


def test_attention_mapping_rejects_bad_shapes():
  with pytest.raises(ValueError, match="in_proj_weight"):
    attention_params_from_torch(np.zeros((3 * C3, C3 + 1)), np.zeros(3 * C3), np.zeros((C3, C3)),
                                np.zeros(C3), 4)
  with pytest.raises(ValueError, match="divisible"):
    attention_params_from_torch(np.zeros((30, 10)), np.zeros(30), np.zeros((10, 10)), np.zeros(10), 4)


def test_encoder_init_identical_layers_and_torch_init(known_path):
  params = known_path[1]["encoder"]
  l0 = params["layers_0"]
  for i in (1, 2):
    jax.tree.map(np.testing.assert_array_equal, params[f"layers_{i}"], l0)
  attn = l0["self_attn"]
  in_bound = np.sqrt(6 / (4 * C3))  # xavier-uniform over the packed (3C, C) in_proj
  for name in ("query", "key", "value"):
    kmax = np.abs(attn[name]["kernel"]).max()
    assert 0.9 * in_bound < kmax <= in_bound
    assert np.all(np.asarray(attn[name]["bias"]) == 0)
  assert not np.array_equal(attn["query"]["kernel"], attn["key"]["kernel"])
  assert not np.array_equal(attn["key"]["kernel"], attn["value"]["kernel"])
  out_bound = 1 / np.sqrt(C3)
  assert np.abs(attn["out"]["kernel"]).max() <= out_bound and np.all(np.asarray(attn["out"]["bias"]) == 0)
  assert np.all(np.asarray(l0["norm1"]["scale"]) == 1) and np.all(np.asarray(l0["norm2"]["bias"]) == 0)
  assert np.abs(l0["linear1"]["kernel"]).max() <= 1 / np.sqrt(C3)
  assert np.abs(l0["linear2"]["kernel"]).max() <= 1 / np.sqrt(FFN)
  assert np.abs(params["proj_post"]["kernel"]).max() <= 1 / np.sqrt(C4)



def test_encoder_bad_dictionary():
  x = jnp.zeros((1, 2, 2, C3))
  with pytest.raises(ValueError, match="dictionary must be"):
    CategoryEncoder(num_heads=HEADS, ffn_dim=FFN).init(jax.random.key(0), x, None, deterministic=True)
  with pytest.raises(ValueError, match="dictionary must be"):
    CategoryEncoder(num_heads=HEADS, ffn_dim=FFN).init(jax.random.key(0), x, jnp.zeros((69, C4)),
                                                       deterministic=True)
  with pytest.raises(ValueError, match="dictionary=None"):
    CategoryEncoder(num_known_categories=0, dictionary_features=C4).init(
        jax.random.key(0), x, jnp.zeros((A, C4)), deterministic=True)
  with pytest.raises(ValueError, match="dictionary_features"):
    CategoryEncoder(num_known_categories=0).init(jax.random.key(0), x, None, deterministic=True)
  with pytest.raises(ValueError, match="num_known_categories"):
    CategoryEncoder(num_known_categories=10).init(jax.random.key(0), x, jnp.zeros((A, C4)),
                                                  deterministic=True)


@pytest.mark.parametrize("c3,c4,size", [(256, 512, 18), (1024, 2048, 22)])  # CIA18 / CIA50
def test_full_size_shapes(c3, c4, size):
  x = jax.ShapeDtypeStruct((6, size, size, c3), jnp.float32)
  layer4 = jax.ShapeDtypeStruct((6, (size + 1) // 2, (size + 1) // 2, c4), jnp.float32)
  box = jax.ShapeDtypeStruct((6, 4), jnp.float32)
  model = _CategoryPath(ffn_dim=2048)
  model_default = CategoryEncoder()
  assert (model_default.num_layers, model_default.num_heads, model_default.ffn_dim,
          model_default.dropout_rate) == (3, 4, 2048, 0.1)
  variables = jax.eval_shape(model.init, jax.random.key(0), x, layer4, box)
  p = variables["params"]
  # Flax shapes of the design.md §6.3 tensors (torch (out, in) -> kernel (in, out)).
  assert p["classifier"]["proj_fc"]["kernel"].shape == (c4, 2 * c4)
  assert p["classifier"]["clf_fc"]["kernel"].shape == (2 * c4, A)
  assert p["encoder"]["proj_post"]["kernel"].shape == (c4, c3)
  attn = p["encoder"]["layers_2"]["self_attn"]
  assert attn["query"]["kernel"].shape == (c3, 4, c3 // 4) and attn["out"]["kernel"].shape == (4, c3 // 4, c3)
  assert p["encoder"]["layers_0"]["linear1"]["kernel"].shape == (c3, 2048)
  logits, y = jax.eval_shape(model.apply, variables, x, layer4, box)
  assert logits.shape == (6, A) and y.shape == (6, size, size, c3)
