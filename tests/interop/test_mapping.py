"""Key mapping torch state dict <-> our variables (cia_jax.interop.mapping).

* The generated key table of every full-size arch equals the reference's key names and torch shapes as
  listed in design.md §6.1-6.3 (written out independently below from its tables).
* Synthetic reference state dicts of tiny networks (built with those names, plus the keys the reference has
  and we drop) convert to exactly our init tree and `CIANet.apply` runs on them.
* One ValueError lists missing, unknown and mis-shaped keys together.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.interop import mapping
from cia_jax.models.cia import build_model

TINY = dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)


# ------------------------------------------------------------------------------------------------------------
# Reference key names and torch shapes, from the design.md §6 tables (independent of the mapping's generator).


def _bn(p: str, c: int) -> dict:
  return {f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,), f"{p}.running_var": (c,)}


def _spec_resnet(p: str, arch: str, layer4: bool) -> dict:
  """Spec 6.1 (without fc and num_batches_tracked)."""
  keys = {f"{p}.conv1.weight": (64, 3, 7, 7), **_bn(f"{p}.bn1", 64)}
  blocks = (2, 2, 2, 2) if arch == "r18" else (3, 4, 6, 3)
  c_in = 64
  for li in range(4 if layer4 else 3):
    c = 64 * 2**li
    for b in range(blocks[li]):
      q = f"{p}.layer{li + 1}.{b}"
      if arch == "r18":
        keys[f"{q}.conv1.weight"] = (c, c_in, 3, 3)
        keys.update(_bn(f"{q}.bn1", c))
        keys[f"{q}.conv2.weight"] = (c, c, 3, 3)
        keys.update(_bn(f"{q}.bn2", c))
        out = c
      else:
        keys[f"{q}.conv1.weight"] = (c, c_in, 1, 1)
        keys.update(_bn(f"{q}.bn1", c))
        keys[f"{q}.conv2.weight"] = (c, c, 3, 3)
        keys.update(_bn(f"{q}.bn2", c))
        keys[f"{q}.conv3.weight"] = (4 * c, c, 1, 1)
        keys.update(_bn(f"{q}.bn3", 4 * c))
        out = 4 * c
      if b == 0 and (c_in != out or li > 0):
        keys[f"{q}.downsample.0.weight"] = (out, c_in, 1, 1)
        keys.update(_bn(f"{q}.downsample.1", out))
      c_in = out
  return keys


def _spec_heads(arch: str) -> dict:
  """Spec 6.2: classifier.* and bb_regressor.*."""
  d = 256 if arch == "r18" else 512
  cl2, cl3 = (128, 256) if arch == "r18" else (512, 1024)
  k = {"classifier.filter_initializer.filter_conv.weight": (d, d, 3, 3),
       "classifier.filter_initializer.filter_conv.bias": (d,),
       "classifier.filter_optimizer.log_step_length": (1,), "classifier.filter_optimizer.filter_reg": (1,),
       "classifier.filter_optimizer.label_map_predictor.weight": (1, 100, 1, 1),
       "classifier.filter_optimizer.target_mask_predictor.0.weight": (1, 100, 1, 1),
       "classifier.filter_optimizer.spatial_weight_predictor.weight": (1, 100, 1, 1)}
  if arch == "r18":
    k["classifier.feature_extractor.0.conv1.weight"] = (256, 256, 3, 3)
    k.update(_bn("classifier.feature_extractor.0.bn1", 256))
    k["classifier.feature_extractor.0.conv2.weight"] = (256, 256, 3, 3)
    k.update(_bn("classifier.feature_extractor.0.bn2", 256))
    k["classifier.feature_extractor.1.weight"] = (256, 256, 3, 3)
  else:
    k["classifier.feature_extractor.0.weight"] = (512, 1024, 3, 3)
  blocks = {"conv3_1r": (128, cl2, 3), "conv3_1t": (256, cl2, 3), "conv3_2t": (256, 256, 3),
            "fc3_1r": (256, 128, 3), "conv4_1r": (256, cl3, 3), "conv4_1t": (256, cl3, 3),
            "conv4_2t": (256, 256, 3), "fc34_3r": (256, 512, 1), "fc34_4r": (256, 512, 1)}
  for name, (o, i, ks) in blocks.items():
    k[f"bb_regressor.{name}.0.weight"] = (o, i, ks, ks)
    k[f"bb_regressor.{name}.0.bias"] = (o,)
    k.update(_bn(f"bb_regressor.{name}.1", o))
  for name, fan_in in (("fc3_rt", 6400), ("fc4_rt", 2304)):
    k[f"bb_regressor.{name}.linear.weight"] = (256, fan_in)
    k[f"bb_regressor.{name}.linear.bias"] = (256,)
    k.update(_bn(f"bb_regressor.{name}.bn", 256))
  k["bb_regressor.iou_predictor.weight"] = (1, 512)
  k["bb_regressor.iou_predictor.bias"] = (1,)
  return k


def _spec_cia(arch: str) -> dict:
  """Spec 6.3 without encoder_k / queue (the momentum tree is checked separately)."""
  c3, c4 = (256, 512) if arch == "r18" else (1024, 2048)
  q = "feature_extractor.encoder_q"
  k = {**_spec_resnet(q, arch, layer4=True), **_spec_heads(arch),
       f"{q}.proj.conv1.weight": (c3, c3, 3, 3), f"{q}.proj.conv1.bias": (c3,),
       f"{q}.proj.conv2.weight": (c3, c3, 1, 1), f"{q}.proj.conv2.bias": (c3,),
       "feature_extractor.modulator.alpha_factor": (),
       "feature_extractor.modulator.proj.0.weight": (c3, c3, 1, 1), "feature_extractor.modulator.proj.0.bias": (c3,),
       "feature_extractor.modulator.proj.2.weight": (c3, c3, 1, 1), "feature_extractor.modulator.proj.2.bias": (c3,),
       "upper_classifier.proj_fc.0.weight": (2 * c4, c4), "upper_classifier.proj_fc.0.bias": (2 * c4,),
       "upper_classifier.clf_fc.weight": (70, 2 * c4), "upper_classifier.clf_fc.bias": (70,),
       "upper_classifier.proj_post.weight": (c3, c4), "upper_classifier.proj_post.bias": (c3,)}
  for i in range(3):
    p = f"upper_classifier.transformer_encoder.layers.{i}"
    k.update({f"{p}.self_attn.in_proj_weight": (3 * c3, c3), f"{p}.self_attn.in_proj_bias": (3 * c3,),
              f"{p}.self_attn.out_proj.weight": (c3, c3), f"{p}.self_attn.out_proj.bias": (c3,),
              f"{p}.linear1.weight": (2048, c3), f"{p}.linear1.bias": (2048,),
              f"{p}.linear2.weight": (c3, 2048), f"{p}.linear2.bias": (c3,),
              f"{p}.norm1.weight": (c3,), f"{p}.norm1.bias": (c3,), f"{p}.norm2.weight": (c3,),
              f"{p}.norm2.bias": (c3,)})
  return k


SPEC_KEYS = {
    "dimp18": lambda: {**_spec_resnet("feature_extractor", "r18", layer4=False), **_spec_heads("r18")},
    "superdimp": lambda: {**_spec_resnet("feature_extractor", "r50", layer4=False), **_spec_heads("r50")},
    "cia18": lambda: _spec_cia("r18"),
    "cia50": lambda: _spec_cia("r50"),
    "resnet18": lambda: _spec_resnet("", "r18", layer4=True),
    "resnet50": lambda: _spec_resnet("", "r50", layer4=True),
}


def _table_shapes(arch: str, **overrides) -> dict:
  entries, attention = mapping.key_table(arch, **overrides)
  shapes = {e.torch_key: e.torch_shape for e in entries}
  for a in attention:
    shapes.update(a.torch_shapes)
  return shapes


@pytest.mark.parametrize("arch", sorted(SPEC_KEYS))
def test_full_size_key_table_matches_spec(arch):
  ours = _table_shapes(arch)
  spec = {k.lstrip("."): v for k, v in SPEC_KEYS[arch]().items()}
  assert sorted(set(spec) - set(ours)) == [] and sorted(set(ours) - set(spec)) == []
  wrong = {k: (ours[k], spec[k]) for k in spec if ours[k] != spec[k]}
  assert not wrong


# ------------------------------------------------------------------------------------------------------------
# Tiny networks: synthetic reference state dicts -> our tree -> apply.


def _init(arch: str, seed: int = 0) -> tuple:
  net = build_model(mapping.model_kwargs(arch, **TINY))
  template = mapping.model_template(arch, **TINY)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
  rng = np.random.default_rng(seed)
  values = []
  for path, leaf in leaves:
    if jax.tree_util.keystr(path).endswith("['var']"):  # running variances must be positive
      values.append(rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32))
    else:
      values.append((0.3 * rng.standard_normal(leaf.shape)).astype(np.float32))
  return net, jax.tree_util.tree_unflatten(treedef, values)


def _reference_extras(arch: str, state: dict) -> dict:
  """Keys the reference has and we drop: fc, DiMP's layer4, the MoCo queue."""
  extra = {}
  prefix = {"dimp18": "feature_extractor.", "superdimp": "feature_extractor.", "resnet18": "",
            "resnet50": ""}.get(arch, "feature_extractor.encoder_q.")
  c = 64  # any width: the fc is dropped
  extra[prefix + "fc.weight"] = np.zeros((1000, c), np.float32)
  extra[prefix + "fc.bias"] = np.zeros((1000,), np.float32)
  if arch in ("dimp18", "superdimp"):
    extra[prefix + "layer4.0.conv1.weight"] = np.zeros((64, 32, 3, 3), np.float32)
  if arch.startswith("cia"):
    extra["feature_extractor.queue"] = np.zeros((128, 4), np.float32)
    extra["feature_extractor.queue_ptr"] = np.zeros((1,), np.int64)
    extra["feature_extractor.encoder_k.fc.weight"] = np.zeros((1000, c), np.float32)
  assert not set(extra) & set(state)
  return {**state, **extra}


def _assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
    assert np.shape(x) == np.shape(y), jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("arch", ["dimp18", "superdimp", "cia18", "cia50"])
def test_synthetic_reference_state_dict_converts_and_runs(arch):
  net, variables = _init(arch)
  momentum = None
  if arch.startswith("cia"):
    momentum = {"params": {k: jax.tree.map(lambda x: x + 1.0, variables["params"][k]) for k in ("backbone", "proj")},
                "batch_stats": {"backbone": variables["batch_stats"]["backbone"]}}
  state = mapping.flax_to_torch(variables, arch, momentum=momentum, **TINY)
  assert set(state) >= {k for k in _table_shapes(arch, **TINY)}
  converted, conv_momentum = mapping.torch_to_flax(_reference_extras(arch, state), arch, **TINY)
  _assert_trees_equal(converted, variables)
  if momentum is None:
    assert conv_momentum == {"params": {}, "batch_stats": {}}
  else:
    _assert_trees_equal(conv_momentum, momentum)

  # The converted tree runs in CIANet (eval-mode classification features and IoU prediction).
  images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
  box = jnp.asarray([[16.0, 20.0, 24.0, 20.0], [10.0, 12.0, 30.0, 28.0]])

  @jax.jit
  def run(v):
    feats = net.apply(v, images, train=False, method=net.backbone_features)
    clf = net.apply(v, feats["layer3"], method=net.classification_features)
    mod3, mod4 = net.apply(v, feats["layer2"], feats["layer3"], box, method=net.iou_modulation)
    c3t, c4t = net.apply(v, feats["layer2"], feats["layer3"], method=net.iou_features)
    iou = net.apply(v, mod3, mod4, c3t, c4t, box[:, None], method=net.predict_iou)
    return clf, iou

  clf, iou = run(converted)
  assert clf.shape == (2, 4, 4, TINY["clf_dim"]) and iou.shape == (2, 1)
  assert np.all(np.isfinite(clf)) and np.all(np.isfinite(iou))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_resnet_converts_to_backbone_only(arch):
  _, variables = _init(arch)
  assert set(variables["params"]) == {"backbone"} and "layer4" in variables["params"]["backbone"]
  state = mapping.flax_to_torch(variables, arch, **TINY)
  assert "conv1.weight" in state and "layer4.1.bn2.running_var" in state  # torchvision names, no prefix
  converted, momentum = mapping.torch_to_flax(_reference_extras(arch, state), arch, **TINY)
  _assert_trees_equal(converted, variables)
  assert momentum == {"params": {}, "batch_stats": {}}


def test_conversion_layouts_by_hand():
  """conv (O, I, kh, kw) -> (kh, kw, I, O), linear -> transpose, MHA rows q/k/v -> heads, BN leaves."""
  _, variables = _init("cia18")
  state = mapping.flax_to_torch(variables, "cia18", **TINY)
  p = variables["params"]
  w = state["feature_extractor.encoder_q.layer1.0.conv1.weight"]
  np.testing.assert_array_equal(w[3, 5, 0, 2], p["backbone"]["layer1"]["0"]["conv1"]["kernel"][0, 2, 5, 3])
  fc3 = state["bb_regressor.fc3_rt.linear.weight"]  # (out, C*H*W), CHW order read by our LinearBlock
  np.testing.assert_array_equal(fc3.T, p["bb_regressor"]["fc3_rt"]["linear"]["kernel"])
  attn = p["category_encoder"]["layers_1"]["self_attn"]
  in_w = state["upper_classifier.transformer_encoder.layers.1.self_attn.in_proj_weight"]
  c3 = in_w.shape[1]
  hd = c3 // 4
  # Row r of Wk (rows C3..2C3 of the packed weight) is output feature r = head * hd + j.
  r, i = 2 * hd + 3, 5
  np.testing.assert_array_equal(in_w[c3 + r, i], attn["key"]["kernel"][i, r // hd, r % hd])
  np.testing.assert_array_equal(
      state["upper_classifier.transformer_encoder.layers.1.self_attn.in_proj_bias"][2 * c3 + r],
      attn["value"]["bias"][r // hd, r % hd])
  out_w = state["upper_classifier.transformer_encoder.layers.1.self_attn.out_proj.weight"]
  np.testing.assert_array_equal(out_w[i, r], attn["out"]["kernel"][r // hd, r % hd, i])
  np.testing.assert_array_equal(state["bb_regressor.conv3_1r.1.running_var"],
                                variables["batch_stats"]["bb_regressor"]["conv3_1r"]["1"]["var"])
  assert state["bb_regressor.conv3_1r.1.num_batches_tracked"].dtype == np.int64
  assert state["feature_extractor.modulator.alpha_factor"].shape == ()


def test_one_error_lists_missing_unknown_and_misshaped_keys():
  _, variables = _init("dimp18")
  state = mapping.flax_to_torch(variables, "dimp18", **TINY)
  del state["bb_regressor.iou_predictor.bias"]
  state["classifier.something_new.weight"] = np.zeros((3,), np.float32)
  state["classifier.filter_initializer.filter_conv.weight"] = np.zeros((16, 16, 1, 1), np.float32)
  with pytest.raises(ValueError) as err:
    mapping.torch_to_flax(state, "dimp18", **TINY)
  msg = str(err.value)
  assert "1 missing, 1 unknown, 1 with the wrong shape" in msg
  assert "bb_regressor.iou_predictor.bias" in msg and "classifier.something_new.weight" in msg
  assert "classifier.filter_initializer.filter_conv.weight: (16, 16, 1, 1), expected (16, 16, 3, 3)" in msg


def test_wrong_arch_is_reported_not_crashed():
  _, variables = _init("dimp18")
  state = mapping.flax_to_torch(variables, "dimp18", **TINY)
  with pytest.raises(ValueError, match="does not match arch 'cia18'"):
    mapping.torch_to_flax(state, "cia18", **TINY)
  with pytest.raises(ValueError, match="unknown arch"):
    mapping.torch_to_flax(state, "dimp99")


def test_partial_key_encoder_is_reported():
  _, variables = _init("cia18")
  momentum = {"params": {k: variables["params"][k] for k in ("backbone", "proj")},
              "batch_stats": {"backbone": variables["batch_stats"]["backbone"]}}
  state = mapping.flax_to_torch(variables, "cia18", momentum=momentum, **TINY)
  del state["feature_extractor.encoder_k.proj.conv2.bias"]
  with pytest.raises(ValueError, match="feature_extractor.encoder_k.proj.conv2.bias"):
    mapping.torch_to_flax(state, "cia18", **TINY)


# ------------------------------------------------------------------------------------------------------------
# The real reference layouts (state-dict keys and shapes of the reference constructors, full size;
# tests/data/interop/reference_keys.json.gz from scripts/make_interop_fixtures.py).


def _reference_layouts() -> dict:
  import gzip  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(__file__).resolve().parents[1] / "data" / "interop" / "reference_keys.json.gz"
  with gzip.open(path, "rt") as f:
    return json.load(f)["layouts"]


@pytest.mark.parametrize("arch", ["dimp18", "superdimp", "superdimp_simple", "cia18", "cia50"])
def test_real_reference_layout_converts_completely(arch):
  layout = {k: tuple(v) for k, v in _reference_layouts()[arch].items()}
  entries, attention = mapping.key_table(arch)
  ours = _table_shapes(arch)
  dropped = {k for k in layout if k not in ours}
  # What we drop is exactly the unused part of design.md §6.2 / 6.3 (plus the key encoder, mapped separately).
  allowed = ("num_batches_tracked", ".fc.", "feature_extractor.queue", "feature_extractor.encoder_k.")
  if arch in ("dimp18", "superdimp", "superdimp_simple"):
    allowed += ("feature_extractor.layer4.",)
  assert all(any(a in k for a in allowed) for k in dropped), sorted(k for k in dropped
                                                                    if not any(a in k for a in allowed))
  assert set(ours) <= set(layout)
  assert {k: layout[k] for k in ours} == ours
  # The whole layout (zero-stride dummy arrays: no memory) converts with nothing unknown or missing.
  state = {k: np.broadcast_to(np.zeros((), np.float32), s) for k, s in layout.items()}
  variables, momentum = mapping.torch_to_flax(state, arch)
  n_ours = sum(int(np.prod(e.shape)) for e in entries) + sum(4 * a.dim * a.dim + 4 * a.dim for a in attention)
  assert sum(x.size for x in jax.tree_util.tree_leaves(variables)) == n_ours
  if arch.startswith("cia"):
    assert set(momentum["params"]) == {"backbone", "proj"}
    assert jax.tree.map(np.shape, momentum["params"]["backbone"]) == jax.tree.map(
        np.shape, variables["params"]["backbone"])
  else:
    assert momentum == {"params": {}, "batch_stats": {}}


@pytest.mark.parametrize("arch", ["dimp18", "superdimp", "cia18", "cia50"])
def test_completed_export_has_exactly_the_reference_layout(arch):
  # `cia-jax convert --from cia-jax` must give a file the reference's strict load_state_dict accepts: every key of
  # the reference constructors' state dict with its shape, and nothing else.
  layout = {k: tuple(v) for k, v in _reference_layouts()[arch].items()}
  template = mapping.model_template(arch)
  variables = jax.tree.map(lambda leaf: np.broadcast_to(np.ones((), np.float32), leaf.shape), template)
  state = mapping.complete_reference_state(mapping.flax_to_torch(variables, arch), arch)
  assert {k: tuple(np.shape(v)) for k, v in state.items()} == layout
  if arch.startswith("cia"):  # the key encoder starts as a copy of the query encoder (MoCo's initialisation)
    q, k = "feature_extractor.encoder_q.layer3.0.conv1.weight", "feature_extractor.encoder_k.layer3.0.conv1.weight"
    np.testing.assert_array_equal(state[k], state[q])
