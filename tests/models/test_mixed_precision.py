"""Mixed precision (design.md §9.1): bf16 forward close to fp32 on the same weights; the float32 islands
(steepest-descent filter optimiser, `predict_iou` / box ascent, losses, EMA, optimiser, BatchNorm statistics,
the tracker's own arithmetic) really are float32 in the jaxprs of the training step and of the tracker step.

The jaxpr checks only trace (no compilation): each equation is attributed to the Flax module it runs in through
its name stack (Flax names every module call), and the dtypes of its inputs and outputs are read.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jcore

from cia_jax.models.cia import build_model, init_variables, random_variables, with_dtype
from cia_jax.models.presets import model_kwargs
from cia_jax.models.stages import stage_outputs
from cia_jax.data.processing.config import PROCESSING_PRESETS
from cia_jax.track import params, tracker as trk
from cia_jax.train.batch import random_batch
from cia_jax.train.state import create_train_state, make_optimizer
from cia_jax.train.step import StepSettings, make_train_step

TINY_NET = dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)

# Relative L2 error of a bf16 stage vs the fp32 one. bf16 keeps 8 significant bits (relative rounding 2^-9 =
# 0.2 %); a few dozen layers of it, each accumulating in float32, give 0.2-2.2 % on these random width-8 networks
# (measured 2026-12-06; the largest in the initial score maps, which partly cancel), so 5 % is the bound; above
# 1e-4 proves that the bf16 path is really taken. The final IoU (a float32 linear layer whose random-weight terms
# nearly cancel) amplifies its inputs' error (1.5-4.2 % here, more at other widths); its inputs `iou_fc3` /
# `iou_fc4` are held to the bound instead.
REL_TOL = 5e-2
BF16 = jnp.dtype(jnp.bfloat16)


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))


def crops(size: int = 64, num: int = 2, num_proposals: int = 4, seed: int = 0):
  """(images `[N, S, S, 3]`, boxes `[N, 4]`, proposals `[N, P, 4]`) around the centre."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(num, size, size, 3)).astype(np.float32)
  box = np.asarray([size / 4, size / 4, size / 2, size / 2]) + rng.uniform(-2, 2, (num, 4))
  proposals = box[:, None] + rng.normal(0, 2, (num, num_proposals, 4))
  return images, box.astype(np.float32), proposals.astype(np.float32)


@pytest.mark.parametrize("preset", ["dimp18", "cia18", "superdimp", "cia50"])
def test_bf16_stages_close_to_fp32(preset):
  net32 = build_model(model_kwargs(preset, **TINY_NET))
  net16 = with_dtype(net32, "bfloat16")
  variables = random_variables(net32)
  images, box, proposals = crops()
  out32, out16 = jax.jit(lambda v: tuple(stage_outputs(n, v, images, box, proposals) for n in (net32, net16)))(
      variables)
  expected = {"layer2", "layer3", "clf_features", "init_filter", "init_scores", "iou_mod3", "iou_mod4", "iou_c3t",
              "iou_c4t", "iou_fc3", "iou_fc4", "iou"}
  if preset.startswith("cia"):
    expected |= {"layer4", "instance", "category", "category_logits", "query"}
  assert set(out32) == set(out16) == expected
  for name in sorted(expected):
    assert out16[name].dtype == out32[name].dtype == jnp.float32, name  # every stage hands on float32
    if name != "iou":
      err = rel_err(out32[name], out16[name])
      assert 1e-4 < err < REL_TOL, (preset, name, err)


def test_model_dtype_is_checked():
  with pytest.raises(ValueError, match="dtype must be 'float32' or 'bfloat16'"):
    build_model(model_kwargs("cia18"), "float16")
  with pytest.raises(ValueError, match="compute_dtype"):
    params.get_settings("cia18", compute_dtype="fp16")


# ------------------------------------------------------------------------------------------------
# The float32 islands, read from jaxprs.

def equations(closed) -> list[tuple[str, bool, jcore.JaxprEqn]]:
  """(module path, backward?, equation) for every equation, nested jaxprs included; the path drops the jvp /
  transpose wrappers and the `Module.method` entries, e.g. 'classifier/filter_optimizer'; backward? = the
  equation belongs to a transpose (reverse-mode) pass."""
  out = []

  def walk(jaxpr, prefix):
    for e in jaxpr.eqns:
      stack = f"{prefix}/{e.source_info.name_stack}"
      out.append((stack, e))
      for sub in jcore.jaxprs_in_params(e.params):
        walk(sub, stack)

  walk(closed.jaxpr, "")
  clean = []
  for stack, e in out:
    backward = "transpose(" in stack
    while (unwrapped := re.sub(r"\b(jvp|transpose|vmap)\(([^()]*)\)", r"\2", stack)) != stack:
      stack = unwrapped
    parts = []
    for p in stack.split("/"):  # 'bb_regressor.get_modulation' -> 'bb_regressor', once
      p = p.split(".")[0]
      if p and p != "CIANet" and (not parts or parts[-1] != p):
        parts.append(p)
    if not parts and "CIANet" in stack:
      parts = ["CIANet"]  # the stage methods' own equations, e.g. the float32 casts of their outputs
    clean.append(("/".join(parts), backward, e))
  return clean


def float_dtypes(e, which: str) -> set:
  vs = e.outvars if which == "out" else [v for v in e.invars if hasattr(v, "aval")]
  return {jnp.dtype(v.aval.dtype) for v in vs if hasattr(v.aval, "dtype") and jnp.issubdtype(v.aval.dtype,
                                                                                                jnp.floating)}


def in_network(path: str) -> bool:
  return path.split("/")[0] in ("CIANet", "backbone", "proj", "modulator", "upper_classifier", "category_encoder",
                                "classifier", "bb_regressor")


FP32_MODULES = ("filter_optimizer", "fc3_rt", "fc4_rt", "iou_predictor")


def check_islands(eqs, expect=("filter_optimizer", "fc3_rt")) -> None:
  """bf16 in the backbone, nowhere outside the network nor in `FP32_MODULES`, in no forward reduction; the
  modules in `expect` are present (so that the check is not vacuous)."""
  bf16_paths = {p for p, _, e in eqs if BF16 in float_dtypes(e, "out") | float_dtypes(e, "in")}
  assert any(p.startswith("backbone/layer3") for p in bf16_paths), "the backbone does not run in bf16"
  # Everything outside the network (losses, InfoNCE-V logits, EMA, Adam; the tracker's localisation, box ascent
  # and memory) and the float32 modules inside it never see a bf16 value.
  outside = sorted(p for p in bf16_paths if not in_network(p))
  assert not outside, outside[:10]
  islands = sorted(p for p in bf16_paths if any(m in p.split("/") for m in FP32_MODULES))
  assert not islands, islands[:10]
  for module in expect:
    assert sum(module in p.split("/") for p, _, _ in eqs) > 5, module
  # No reduction of the forward pass runs in bf16: BatchNorm statistics, L2 norms, softmax, LayerNorm. (The
  # backward pass sums bf16 cotangents into conv / dense bias gradients, as any bf16 training does.)
  forward = [p for p, back, e in eqs if not back and e.primitive.name in ("reduce_sum", "reduce_max", "argmax")
             and BF16 in float_dtypes(e, "in")]
  assert not forward, forward[:10]


def bn_stat_reductions(eqs) -> list:
  """Forward reduce_sum equations of BatchNorm layers (the batch mean and variance)."""
  return [e for p, back, e in eqs
          if not back and re.search(r"/(bn\d?|downsample/1)$", p) and e.primitive.name == "reduce_sum"]


def abstract_variables(net):
  """Zero variables of the right shapes without running the init (tracing only)."""
  shapes = jax.eval_shape(lambda k: init_variables(net, k), jax.random.key(0))
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def test_train_step_fp32_islands():
  net = build_model(model_kwargs("cia18", **TINY_NET), "bfloat16")
  variables = abstract_variables(net)
  proc = PROCESSING_PRESETS["cia18"]
  batch = random_batch(0, 2, 64, num_train=3, num_test=3, num_proposals=int(proc.proposals_per_frame),
                       proposal_mode=proc.proposal_mode, search_area_factor=float(proc.search_area_factor))
  groups = ("feature_extractor", "upper_classifier", "filter_initializer", "filter_optimizer", "clf_feature_extractor",
            "bb_regressor")
  tx = make_optimizer(variables["params"], {g: 1e-4 for g in groups}, steps_per_epoch=10)
  state = create_train_state(variables, tx, jax.random.key(0), use_momentum_encoder=True)
  closed = jax.make_jaxpr(make_train_step(net, StepSettings(), tx))(state, batch)
  eqs = equations(closed)
  check_islands(eqs)
  stats = bn_stat_reductions(eqs)
  assert len(stats) > 20 and all(float_dtypes(e, "in") == {jnp.dtype(jnp.float32)} for e in stats)
  # The new state (params, BN running statistics, EMA params, Adam moments) and every metric are float32.
  out_dtypes = {jnp.dtype(v.aval.dtype) for v in closed.jaxpr.outvars if jnp.issubdtype(v.aval.dtype, jnp.floating)}
  assert out_dtypes == {jnp.dtype(jnp.float32)}


def test_tracker_fp32_islands():
  net = with_dtype(build_model(model_kwargs("cia18", **TINY_NET)), "bfloat16")
  model = trk.TrackingModel(net=net, variables=abstract_variables(net))
  settings = params.get_settings("cia18", image_sample_size=64, compute_dtype="bfloat16")
  image = jax.ShapeDtypeStruct((96, 128, 3), jnp.uint8)
  box = jnp.asarray([30.0, 20.0, 24.0, 24.0])
  key = jax.random.key(0)
  init_jaxpr = jax.make_jaxpr(lambda im: trk.init_impl(model, settings, im, box, key))(image)
  check_islands(equations(init_jaxpr), expect=("filter_optimizer",))  # init has no predict_iou
  state = jax.eval_shape(lambda im: trk.init_impl(model, settings, im, box, key), image)
  step_jaxpr = jax.make_jaxpr(lambda s, im: trk.step_impl(model, settings, s, im, key))(state, image)
  eqs = equations(step_jaxpr)
  check_islands(eqs)
  # The box ascent differentiates predict_iou with respect to the boxes: that backward pass is in the step (and
  # float32, by check_islands).
  assert any(back and "fc3_rt" in p for p, back, _ in eqs)
  # The setting alone is enough: a float32 net with compute_dtype=bfloat16 traces the same bf16 step (the lanes
  # runner, the VOT server and the exporter pass the loaded float32 net).
  fp32_model = model.replace(net=build_model(model_kwargs("cia18", **TINY_NET)))
  assert str(jax.make_jaxpr(lambda s, im: trk.step_impl(fp32_model, settings, s, im, key))(state, image)) == str(
      step_jaxpr)
