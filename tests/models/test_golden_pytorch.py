"""Golden-value tests: the Flax DiMP core against the PyTorch reference (visionml/pytracking).

The fixtures in tests/data/golden/ were produced by running the reference modules themselves
(`scripts/make_golden_fixtures.py`, see tests/data/golden/README.md); these tests only load them (no torch).
Torch-layout weights are converted here with the standard rules (conv (O, I, kh, kw) -> (kh, kw, I, O), linear
(out, in) -> (in, out), BN weight/bias/running_mean/running_var -> scale/bias/mean/var) and the converted tree
must have exactly the structure and shapes of our module's own init (a renamed or re-shaped parameter fails).

Tolerance: float32 on both sides, so |ours - ref| <= RTOL * |ref| + ATOL_REL * max|ref| with RTOL = 1e-5 and
ATOL_REL = 1e-5 (the absolute part, scaled to the array's magnitude, covers elements that are sums of terms of
mixed sign and end up near zero). Gradients use 1e-4 / 1e-5 (longer float32 chains through the unrolled loop).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.dimp.features import ClassificationFeatures
from cia_jax.models.dimp.initializer import FilterInitializerLinear
from cia_jax.models.dimp.optimizer import DiMPSteepestDescentGN
from cia_jax.models.iou_net import AtomIoUNet
from cia_jax.ops.image import gaussian_label
from cia_jax.ops.labels import distance_map

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "data" / "golden"
RTOL = 1e-5
ATOL_REL = 1e-5


@functools.lru_cache(maxsize=None)
def _load(name: str) -> dict[str, np.ndarray]:
  path = GOLDEN / name
  if not path.is_file():
    raise FileNotFoundError(f"{path}: golden fixture missing; see tests/data/golden/README.md")
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def _assert_close(ours, ref, what: str, rtol: float = RTOL, atol_rel: float = ATOL_REL) -> None:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
  atol = atol_rel * float(np.max(np.abs(ref))) if ref.size else 0.0
  err = np.abs(ours - ref)
  worst = float(np.max(err - rtol * np.abs(ref))) if ref.size else 0.0
  assert np.all(err <= rtol * np.abs(ref) + atol), (
      f"{what}: max abs err {err.max():.3g} (max |ref| {np.abs(ref).max():.3g}, excess {worst:.3g})")


# ------------------------------------------------------------------------------------------------------------
# torch state_dict -> Flax variables (written for these tests, independent of cia_jax.interop).


def _state_dict(data: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """Torch state entries `prefix/<key>`; quantised ones (`q<prefix>/<key>` int8, `qexp/<key>`) are decoded."""
  out = {k[len(prefix) + 1:]: v for k, v in data.items() if k.startswith(prefix + "/")}
  for k, q in data.items():
    if k.startswith("q" + prefix + "/"):
      key = k[len(prefix) + 2:]
      out[key] = q.astype(np.float32) * np.float32(2.0) ** int(data["qexp/" + key])
  return out


def _to_flax(state: dict[str, np.ndarray]) -> dict[str, dict]:
  """{'a.b.weight': ...} -> {'params': {'a': {'b': {'kernel': ...}}}, 'batch_stats': {...}}."""
  bn_modules = {k.rsplit(".", 1)[0] for k in state if k.endswith("running_mean")}
  variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
  for key, value in state.items():
    module, _, leaf = key.rpartition(".")
    value = np.asarray(value, np.float32)
    if module in bn_modules:
      collection, name = {"weight": ("params", "scale"), "bias": ("params", "bias"),
                          "running_mean": ("batch_stats", "mean"),
                          "running_var": ("batch_stats", "var")}[leaf]
    elif leaf == "weight" and value.ndim == 4:
      collection, name, value = "params", "kernel", np.transpose(value, (2, 3, 1, 0))
    elif leaf == "weight" and value.ndim == 2:
      collection, name, value = "params", "kernel", value.T
    else:
      collection, name = "params", leaf
    node = variables[collection]
    for part in module.split(".") if module else []:
      node = node.setdefault(part, {})
    node[name] = jnp.asarray(value)
  return {k: v for k, v in variables.items() if v}


def _assert_same_structure(converted, initialised, what: str) -> None:
  shapes = lambda tree: jax.tree_util.tree_map(lambda x: tuple(x.shape), tree)  # noqa: E731
  conv = {k: shapes(converted.get(k, {})) for k in initialised}
  init = {k: shapes(v) for k, v in initialised.items()}
  assert conv == init, f"{what}: converted torch tree != module init tree\n{conv}\nvs\n{init}"


nchw = lambda x: np.moveaxis(x, -3, -1)  # [..., C, H, W] -> [..., H, W, C]  # noqa: E731
to_torch = lambda x: np.moveaxis(np.asarray(x), -1, -3)  # [..., H, W, C] -> [..., C, H, W]  # noqa: E731


# ------------------------------------------------------------------------------------------------------------
# (a) DiMPSteepestDescentGN.


def _optimizer_module(data) -> DiMPSteepestDescentGN:
  c = {k[len("ctor/"):]: float(v) for k, v in data.items() if k.startswith("ctor/")}
  return DiMPSteepestDescentGN(
      num_iter=int(c["num_iter"]), feat_stride=int(c["feat_stride"]), init_step_length=c["init_step_length"],
      init_filter_reg=c["init_filter_reg"], init_gauss_sigma=c["init_gauss_sigma"],
      num_dist_bins=int(c["num_dist_bins"]), bin_displacement=c["bin_displacement"],
      mask_init_factor=c["mask_init_factor"], min_filter_reg=c["min_filter_reg"], alpha_eps=c["alpha_eps"])


def _optimizer_inputs(data):
  return (jnp.asarray(nchw(data["weights0"])), jnp.asarray(nchw(data["feat"])), jnp.asarray(data["bb"]))


def test_optimizer_init_matches_reference_constructor():
  data = _load("dimp_optimizer.npz")
  module = _optimizer_module(data)
  filt, feat, bb = _optimizer_inputs(data)
  ours = module.init(jax.random.key(0), filt, feat, bb, num_iter=0)
  ref = _to_flax(_state_dict(data, "init_state"))
  _assert_same_structure(ref, ours, "DiMPSteepestDescentGN")
  jax.tree_util.tree_map(lambda a, b: _assert_close(a, b, "optimizer init", rtol=1e-6, atol_rel=1e-7),
                         ours["params"], ref["params"])


def test_optimizer_training_path_iterates_losses_and_intermediates():
  data = _load("dimp_optimizer.npz")
  module = _optimizer_module(data)
  filt, feat, bb = _optimizer_inputs(data)
  variables = _to_flax(_state_dict(data, "init_state"))
  num_iter = int(data["num_iter"])
  (final, iterates, losses), state = module.apply(variables, filt, feat, bb, num_iter=num_iter,
                                                  capture_intermediates=True, mutable=["intermediates"])
  _assert_close(to_torch(iterates), data["train/iterates"], "iterates (training path)")
  _assert_close(to_torch(final), data["train/final"], "final filter")
  _assert_close(losses, data["train/losses"], "losses")
  # Distance-bin map, label, mask (after the sigmoid) and spatial weight on the score grid.
  inter = state["intermediates"]
  nimg, nseq = data["bb"].shape[:2]
  grid = data["train/label_map"].shape[-2:]
  center_yx = (data["bb"][..., 1::-1] + 0.5 * data["bb"][..., :1:-1]) / 16.0
  dist = distance_map(center_yx.reshape(-1, 2), grid)
  _assert_close(to_torch(dist), data["train/dist_map"], "distance map")
  for name in ("label_map_predictor", "target_mask_predictor", "spatial_weight_predictor"):
    ours = inter[name]["__call__"][0].reshape(nimg * nseq, *grid)
    ref_key = {"label_map_predictor": "label_map", "target_mask_predictor": "target_mask",
               "spatial_weight_predictor": "spatial_weight"}[name]
    _assert_close(ours, data["train/" + ref_key].reshape(nimg * nseq, *grid), ref_key)


def test_optimizer_gradients_through_unrolled_iterations():
  data = _load("dimp_optimizer.npz")
  module = _optimizer_module(data)
  filt, feat, bb = _optimizer_inputs(data)
  params = _to_flax(_state_dict(data, "init_state"))["params"]
  proj = jnp.asarray(nchw(data["grad_projections"]))
  num_iter = int(data["num_iter"])

  def objective(params, filt, feat):
    _, iterates, _ = module.apply({"params": params}, filt, feat, bb, num_iter=num_iter)
    return jnp.sum(iterates * proj)

  g_params, g_filt, g_feat = jax.jit(jax.grad(objective, argnums=(0, 1, 2)))(params, filt, feat)
  _assert_close(to_torch(g_filt), data["train/grad_weights0"], "d/d filter0")
  _assert_close(to_torch(g_feat), data["train/grad_feat"], "d/d feat")
  ref = _to_flax({k[len("train/grad_param/"):]: v for k, v in data.items()
                  if k.startswith("train/grad_param/")})["params"]
  _assert_same_structure({"params": ref}, {"params": g_params}, "optimizer gradients")
  for path, ours in jax.tree_util.tree_leaves_with_path(g_params):
    refv = functools.reduce(lambda node, k: node[k.key], path, ref)
    _assert_close(ours, refv, f"d/d {jax.tree_util.keystr(path)}")


def test_optimizer_tracker_path_with_sample_weights():
  data = _load("dimp_optimizer.npz")
  module = _optimizer_module(data)
  filt, feat, bb = _optimizer_inputs(data)
  variables = _to_flax(_state_dict(data, "tracker_state"))
  # This parameter set has filter_reg^2 < min_filter_reg^2: lambda is clamped.
  assert float(variables["params"]["filter_reg"][0]) ** 2 < 1e-6
  sample_weight = jnp.asarray(data["sample_weight"])
  _, iterates, losses = module.apply(variables, filt, feat, bb, sample_weight=sample_weight,
                                     num_iter=int(data["num_iter"]))
  _assert_close(to_torch(iterates), data["tracker/iterates"], "iterates (tracker path)")
  _assert_close(losses, data["tracker/losses"], "losses (tracker path)")


# ------------------------------------------------------------------------------------------------------------
# (b) Classification features and filter initializer.


def test_r18_classification_features_eval_and_train():
  data = _load("dimp_features.npz")
  x = jnp.asarray(nchw(data["r18/input"]))
  dim = x.shape[-1]
  module = ClassificationFeatures("r18", out_dim=dim, in_dim=dim)
  variables = _to_flax(_state_dict(data, "r18/state"))
  _assert_same_structure(variables, module.init(jax.random.key(0), x, train=False), "r18 features")
  _assert_close(to_torch(module.apply(variables, x, train=False)), data["r18/eval_output"], "r18 eval")
  out, updated = module.apply(variables, x, train=True, mutable=["batch_stats"])
  _assert_close(to_torch(out), data["r18/train_output"], "r18 train")
  ref_stats = _to_flax(_state_dict(data, "r18/state_after_train"))["batch_stats"]
  jax.tree_util.tree_map(lambda a, b: _assert_close(a, b, "r18 running stats"), updated["batch_stats"],
                         ref_stats)


def test_r50_classification_features():
  data = _load("dimp_features.npz")
  x = jnp.asarray(nchw(data["r50/input"]))
  variables = _to_flax(_state_dict(data, "r50/state"))
  out_dim = variables["params"]["0"]["kernel"].shape[-1]
  module = ClassificationFeatures("r50", out_dim=out_dim, in_dim=x.shape[-1])
  _assert_same_structure(variables, module.init(jax.random.key(0), x, train=False), "r50 features")
  _assert_close(to_torch(module.apply(variables, x, train=False)), data["r50/output"], "r50 features")


def test_filter_initializer():
  data = _load("dimp_features.npz")
  feat = jnp.asarray(nchw(data["initializer/feat"]))
  bb = jnp.asarray(data["initializer/bb"])
  variables = _to_flax(_state_dict(data, "initializer/state"))
  filter_size = data["initializer/filter"].shape[-1]
  module = FilterInitializerLinear(filter_size=filter_size, feature_stride=16)
  _assert_same_structure(variables, module.init(jax.random.key(0), feat, bb), "filter initializer")
  _assert_close(to_torch(module.apply(variables, feat, bb)), data["initializer/filter"], "initial filter")


# ------------------------------------------------------------------------------------------------------------
# (c) AtomIoUNet.


def _iou_setup():
  data = _load("iou_net.npz")
  module = AtomIoUNet(input_dim=tuple(int(v) for v in data["ctor/input_dim"]),
                      pred_input_dim=tuple(int(v) for v in data["ctor/pred_input_dim"]),
                      pred_inter_dim=tuple(int(v) for v in data["ctor/pred_inter_dim"]))
  variables = _to_flax(_state_dict(data, "state"))
  inputs = {k: jnp.asarray(nchw(data[k])) for k in ("train_feat2", "train_feat3", "test_feat2", "test_feat3")}
  inputs["train_box_xywh"] = jnp.asarray(data["train_bb"])
  inputs["proposals_xywh"] = jnp.asarray(data["proposals"])
  return data, module, variables, inputs


def test_iou_net_parameter_tree_matches_reference():
  _, module, variables, inputs = _iou_setup()
  init = jax.eval_shape(lambda: module.init(jax.random.key(0), **inputs, train=False))
  _assert_same_structure(variables, init, "AtomIoUNet")


def test_iou_net_eval_stages_and_box_gradient():
  data, module, variables, x = _iou_setup()
  n_te, b, p, _ = x["proposals_xywh"].shape
  flat = lambda t: t.reshape((-1,) + t.shape[2:])  # noqa: E731  frame-major [Nte * B, ...]

  @jax.jit
  def run(variables, x):
    mod3, mod4 = module.apply(variables, x["train_feat2"][0], x["train_feat3"][0], x["train_box_xywh"][0],
                              method=AtomIoUNet.get_modulation)
    c3t, c4t = module.apply(variables, flat(x["test_feat2"]), flat(x["test_feat3"]),
                            method=AtomIoUNet.get_iou_feat)
    mods = [jnp.tile(m, (n_te, 1)) for m in (mod3, mod4)]

    def total_iou(props):
      iou = module.apply(variables, *mods, c3t, c4t, props, method=AtomIoUNet.predict_iou)
      return jnp.sum(iou), iou

    (_, iou), grad = jax.value_and_grad(total_iou, has_aux=True)(flat(x["proposals_xywh"]))
    full = module.apply(variables, **x, train=False)
    return mod3, mod4, c3t, c4t, iou, grad, full

  mod3, mod4, c3t, c4t, iou, grad, full = run(variables, x)
  _assert_close(mod3, data["eval/mod3"], "mod3")
  _assert_close(mod4, data["eval/mod4"], "mod4")
  _assert_close(to_torch(c3t), data["eval/c3t"], "c3t")
  _assert_close(to_torch(c4t), data["eval/c4t"], "c4t")
  _assert_close(iou.reshape(n_te, b, p), data["eval/iou"], "predicted IoU (eval)")
  # d sum(iou) / d proposals (x, y, w, h): the box refinement's ascent direction. Reference: autograd through
  # the script's torch PrRoIPool (exact derivative, as the CUDA coordinate backward).
  _assert_close(grad.reshape(n_te, b, p, 4), data["eval/grad_proposals"], "d iou / d box")
  _assert_close(full, data["eval/iou"], "training-forward signature, eval mode")


def test_iou_net_train_mode_batch_statistics():
  data, module, variables, x = _iou_setup()
  apply = jax.jit(lambda v, x: module.apply(v, **x, train=True, mutable=["batch_stats"]))
  out, updated = apply(variables, x)
  _assert_close(out, data["train/iou"], "predicted IoU (train mode)")
  ref_stats = _to_flax(_state_dict(data, "state_after_train"))["batch_stats"]
  _assert_same_structure({"batch_stats": ref_stats}, {"batch_stats": updated["batch_stats"]}, "IoU-Net stats")
  for path, ours in jax.tree_util.tree_leaves_with_path(updated["batch_stats"]):
    refv = functools.reduce(lambda node, k: node[k.key], path, ref_stats)
    _assert_close(ours, refv, f"running stat {jax.tree_util.keystr(path)}")


# ------------------------------------------------------------------------------------------------------------
# (d) Gaussian labels.


@pytest.mark.parametrize("case", ["dimp18", "cia50", "no_end_pad", "odd_kernel"])
def test_gaussian_label(case):
  data = _load("labels.npz")
  img, feat_sz, sigma_factor, kernel_sz, end_pad = data[f"{case}/params"].tolist()
  label = gaussian_label(data[f"{case}/box_xywh"], sigma_factor, int(feat_sz), int(img),
                         kernel_sz=int(kernel_sz), end_pad=bool(end_pad))
  _assert_close(label, data[f"{case}/label"], f"gaussian label ({case})", atol_rel=1e-6)
