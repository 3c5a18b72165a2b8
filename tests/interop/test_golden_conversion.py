"""Numerical equivalence with the PyTorch reference *through the converter* (1e-5).

Real reference modules' state dicts (under their full network key names) are dropped into a whole-network
reference-layout state dict, converted by `cia_jax.interop.mapping.torch_to_flax`, and `CIANet`'s stage
methods must reproduce the reference outputs stored with them:

* tests/data/interop/cia_modules.npz (scripts/make_interop_fixtures.py, CIA reference zxgravity/CIA):
  `encoder_q.proj` + `Modulator_v2` (angle modulation), `FCClassifier_v2` (category logits) and its
  `TransformerEncoder_v2` on the projected `clf_fc.weight[:, C4:]` dictionary -- this checks the packed MHA
  mapping and the dictionary slice -- and the contrastive embedding.
* tests/data/golden/*.npz (scripts/make_golden_fixtures.py, pytracking): the DiMP classification features
  (R18 and R50), filter initializer, steepest-descent optimizer and the IoU-Net.

The rest of each network (keys the fixture does not cover) comes from a random tree of ours mapped with
`flax_to_torch`; every fixture key must already be one of the generated reference keys with the same shape
(so a misnamed key fails), and after the overwrite the conversion must accept the state dict as a whole.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.interop import mapping
from cia_jax.models.cia import build_model

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
RTOL = 1e-5
ATOL_REL = 1e-5

nchw_to_nhwc = lambda x: np.moveaxis(np.asarray(x), -3, -1)  # noqa: E731
nhwc_to_nchw = lambda x: np.moveaxis(np.asarray(x), -1, -3)  # noqa: E731


@functools.lru_cache(maxsize=None)
def _load(rel: str) -> dict[str, np.ndarray]:
  with np.load(DATA / rel) as z:
    return {k: z[k] for k in z.files}


def _assert_close(ours, ref, what: str) -> None:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
  err = np.abs(ours - ref)
  bound = RTOL * np.abs(ref) + ATOL_REL * float(np.max(np.abs(ref)))
  assert np.all(err <= bound), f"{what}: max abs err {err.max():.3g} (max |ref| {np.abs(ref).max():.3g})"


def _random_state(arch: str, overrides: dict, seed: int = 0) -> dict[str, np.ndarray]:
  template = mapping.model_template(arch, **overrides)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if jax.tree_util.keystr(path).endswith("['var']"):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)

  variables = jax.tree_util.tree_map_with_path(draw, template)
  return mapping.flax_to_torch(variables, arch, **overrides)


def _converted(arch: str, overrides: dict, reference: dict[str, np.ndarray]):
  """Whole-network conversion with the reference's own tensors for the keys in `reference`."""
  state = _random_state(arch, overrides)
  for key, value in reference.items():
    assert key in state, f"fixture key {key} is not a reference key of our {arch} network"
    assert state[key].shape == value.shape, f"{key}: fixture {value.shape} vs expected {state[key].shape}"
    state[key] = value
  variables, _ = mapping.torch_to_flax(state, arch, **overrides)
  return build_model(mapping.model_kwargs(arch, **overrides)), variables


def _prefixed(data: dict, fixture_prefix: str, torch_prefix: str) -> dict[str, np.ndarray]:
  """`fixture_prefix/<key>` entries (quantised `q...`/`qexp/` ones decoded) as `torch_prefix<key>`."""
  out = {}
  for k, v in data.items():
    if k.startswith(fixture_prefix + "/"):
      key = k[len(fixture_prefix) + 1:]
      if not key.endswith("num_batches_tracked"):
        out[torch_prefix + key] = v
    elif k.startswith("q" + fixture_prefix + "/"):
      key = k[len(fixture_prefix) + 2:]
      out[torch_prefix + key] = v.astype(np.float32) * np.float32(2.0) ** int(data["qexp/" + key])
  return out


# ------------------------------------------------------------------------------------------------------------
# CIA: angle modulation, category classifier, category encoder (MHA packing + dictionary), contrastive embedding.

CIA_TINY = dict(backbone_width=4, clf_dim=8, iou_dim=8, encoder_ffn=16)  # C3 = 16, C4 = 32


def test_cia_modules_match_reference():
  data = _load("interop/cia_modules.npz")
  reference = {k[len("state/"):]: v for k, v in data.items() if k.startswith("state/")}
  net, variables = _converted("cia18", CIA_TINY, reference)
  layer3 = jnp.asarray(nchw_to_nhwc(data["layer3"]))
  layer4 = jnp.asarray(nchw_to_nhwc(data["layer4"]))
  box = jnp.asarray(data["box_xywh"])

  @jax.jit
  def run(v):
    ins = net.apply(v, layer3, method=lambda m, x: m.modulator(x, m.proj(x, padding=1)))
    encoded = net.apply(v, layer3, method=net.classification_input)
    logits = net.apply(v, layer4, box, method=net.category_logits)
    query = net.apply(v, layer3, box, method=net.contrastive_embedding)
    return ins, encoded, logits, query

  ins, encoded, logits, query = run(variables)
  _assert_close(nhwc_to_nchw(ins), data["ins"], "angle modulation (layer3_ins)")
  _assert_close(nhwc_to_nchw(encoded), data["encoded"], "category encoder output (semantic_trans)")
  _assert_close(logits, data["logits"], "category logits")
  _assert_close(query, data["query"], "contrastive embedding")
  # The dictionary really is the right half of clf_fc (a wrong slice would also change `encoded`).
  clf = variables["params"]["upper_classifier"]["clf_fc"]["kernel"]
  np.testing.assert_array_equal(clf[32:].T, reference["upper_classifier.clf_fc.weight"][:, 32:])


# ------------------------------------------------------------------------------------------------------------
# DiMP (pytracking goldens).


def test_dimp_classifier_features_initializer_optimizer_match_reference():
  feats, opt = _load("golden/dimp_features.npz"), _load("golden/dimp_optimizer.npz")
  # Forward hyper-parameters of the golden optimizer are the LinearFilter defaults used by CIANet.
  assert float(opt["ctor/min_filter_reg"]) == 1e-3 and float(opt["ctor/alpha_eps"]) == 0.0
  assert int(opt["ctor/num_dist_bins"]) == 100 and float(opt["ctor/bin_displacement"]) == 0.1
  reference = {**_prefixed(feats, "r18/state", "classifier.feature_extractor."),
               **_prefixed(feats, "initializer/state", "classifier.filter_initializer."),
               **_prefixed(opt, "init_state", "classifier.filter_optimizer.")}
  net, variables = _converted("dimp18", dict(backbone_width=2, clf_dim=8, iou_dim=8), reference)  # C3 = 8
  x = jnp.asarray(nchw_to_nhwc(feats["r18/input"]))
  init_feat = jnp.asarray(nchw_to_nhwc(feats["initializer/feat"]))
  opt_feat = jnp.asarray(nchw_to_nhwc(opt["feat"]))
  weights0 = jnp.asarray(nchw_to_nhwc(opt["weights0"]))

  @jax.jit
  def run(v):
    eval_out = net.apply(v, x, method=net.classification_features)
    train_out, _ = net.apply(v, x, train=True, method=net.classification_features, mutable=["batch_stats"])
    filt = net.apply(v, init_feat, jnp.asarray(feats["initializer/bb"]), method=net.init_filter)
    _, iterates, losses = net.apply(v, weights0, opt_feat, jnp.asarray(opt["bb"]),
                                    num_iter=int(opt["num_iter"]), method=net.optimize_filter)
    return eval_out, train_out, filt, iterates, losses

  eval_out, train_out, filt, iterates, losses = run(variables)
  _assert_close(nhwc_to_nchw(eval_out), feats["r18/eval_output"], "R18 classification features (eval)")
  _assert_close(nhwc_to_nchw(train_out), feats["r18/train_output"], "R18 classification features (train)")
  _assert_close(nhwc_to_nchw(filt), feats["initializer/filter"], "initial filter")
  _assert_close(nhwc_to_nchw(iterates), opt["train/iterates"], "optimizer iterates")
  _assert_close(losses, opt["train/losses"], "optimizer losses")


def test_superdimp_classification_features_match_reference():
  feats = _load("golden/dimp_features.npz")
  reference = _prefixed(feats, "r50/state", "classifier.feature_extractor.")
  net, variables = _converted("superdimp", dict(backbone_width=1, clf_dim=8, iou_dim=8), reference)  # C3 = 16
  out = jax.jit(lambda v, x: net.apply(v, x, method=net.classification_features))(
      variables, jnp.asarray(nchw_to_nhwc(feats["r50/input"])))
  _assert_close(nhwc_to_nchw(out), feats["r50/output"], "R50 classification features")


@pytest.mark.parametrize("arch", ["dimp18", "cia18"])
def test_iou_net_matches_reference(arch):
  data = _load("golden/iou_net.npz")
  assert tuple(data["ctor/pred_input_dim"]) == (16, 16) == tuple(data["ctor/pred_inter_dim"])
  reference = _prefixed(data, "state", "bb_regressor.")
  overrides = dict(backbone_width=4, clf_dim=8, iou_dim=16, encoder_ffn=16)  # layer2 / layer3 = 8 / 16
  net, variables = _converted(arch, overrides, reference)
  x = {k: jnp.asarray(nchw_to_nhwc(data[k])) for k in ("train_feat2", "train_feat3", "test_feat2", "test_feat3")}
  n_te, b, p, _ = data["proposals"].shape
  flat = lambda t: t.reshape((-1,) + t.shape[2:])  # noqa: E731

  @jax.jit
  def run(v):
    mod3, mod4 = net.apply(v, x["train_feat2"][0], x["train_feat3"][0], jnp.asarray(data["train_bb"][0]),
                           method=net.iou_modulation)
    c3t, c4t = net.apply(v, flat(x["test_feat2"]), flat(x["test_feat3"]), method=net.iou_features)
    iou = net.apply(v, jnp.tile(mod3, (n_te, 1)), jnp.tile(mod4, (n_te, 1)), c3t, c4t,
                    jnp.asarray(data["proposals"]).reshape(n_te * b, p, 4), method=net.predict_iou)
    return mod3, mod4, c3t, c4t, iou

  mod3, mod4, c3t, c4t, iou = run(variables)
  _assert_close(mod3, data["eval/mod3"], "mod3")
  _assert_close(mod4, data["eval/mod4"], "mod4")
  _assert_close(nhwc_to_nchw(c3t), data["eval/c3t"], "c3t")
  _assert_close(nhwc_to_nchw(c4t), data["eval/c4t"], "c4t")
  _assert_close(iou.reshape(n_te, b, p), data["eval/iou"], "predicted IoU (fc3_rt / fc4_rt CHW flatten)")
