"""The pure training step: EMA, switches, optimiser groups, overfitting, and 1 vs 8 devices."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax import config_lib
from cia_jax.models.cia import CIANet
from cia_jax.train.batch import random_batch
from cia_jax.train.state import FROZEN, create_train_state, make_optimizer, param_labels
from cia_jax.train.step import StepSettings, make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The reference optimiser's learning rate per parameter group (their home: configs/cia18.py).
CIA18_LEARNING_RATES = dict(config_lib.load_config(os.path.join(ROOT, "configs", "cia18.py")).optim.learning_rates)
TINY = dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)
IMAGE = 64


def _frame_major(b):
  return [jnp.swapaxes(jnp.asarray(b[k]), 0, 1) for k in
          ("train_images", "test_images", "train_box_xywh", "test_box_xywh", "test_proposals_xywh")]


def _init(model, batch, key=0):
  # Jitted: one compilation instead of an eager init's one per primitive and shape (2-3x faster cold).
  init = jax.jit(lambda b: model.init({"params": jax.random.key(key), "dropout": jax.random.key(key)},
                                      *_frame_major(b)))
  return init(batch)


def _optimizer(params, lr_scale=1.0, frozen=()):
  lrs = {k: v * lr_scale for k, v in CIA18_LEARNING_RATES.items()}
  return make_optimizer(params, lrs, steps_per_epoch=100, frozen_layers=frozen)


def _state(model, batch, lr_scale=1.0, momentum=True, frozen=()):
  variables = _init(model, batch)
  tx = _optimizer(variables["params"], lr_scale, frozen)
  return create_train_state(variables, tx, jax.random.key(1), use_momentum_encoder=momentum and model.contrastive)


@pytest.fixture(scope="module")
def cia_run():
  """One tiny CIA model trained for a few steps on a fixed batch (shared by several tests).

  Every module and loss term is on; one category-encoder layer and one training filter iteration (instead of
  3 and 5) halve the step's compilation, which is what this fixture spends its time on."""
  model = CIANet(**TINY, encoder_layers=1, num_iter=1)
  batch = random_batch(0, 2, IMAGE)
  state0 = _state(model, batch, lr_scale=10.0)
  old = jax.tree.map(np.asarray, (state0.params, state0.momentum_params))
  step = make_train_step(model, StepSettings(), _optimizer(state0.params, lr_scale=10.0))
  state, metrics = step(state0, batch)
  first = {k: float(v) for k, v in metrics.items()}
  after_one = jax.tree.map(np.asarray, (state.params, state.momentum_params))
  totals = [first["total"]]
  for _ in range(29):
    state, metrics = step(state, batch)
    totals.append(float(metrics["total"]))
  return dict(old=old, after_one=after_one, first=first, totals=totals, state=state)


def test_ema_is_exactly_the_momentum_update(cia_run):
  (old_params, old_mom), (new_params, new_mom) = cia_run["old"], cia_run["after_one"]
  assert set(new_mom) == {"backbone", "proj"}
  # The key encoder starts as a copy of the query encoder ...
  jax.tree.map(np.testing.assert_array_equal, old_mom, {k: old_params[k] for k in old_mom})
  # ... and after one step is eta * old + (1 - eta) * new params, in float32 (no gradient reached it).
  eta = np.float32(0.999)
  expected = jax.tree.map(lambda k, q: eta * k + np.float32(1.0 - 0.999) * q, old_mom,
                          {k: new_params[k] for k in old_mom})
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), new_mom, expected)
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: np.any(a != b), old_params["backbone"],
                                         new_params["backbone"]))
  assert any(changed)


def test_reports_every_term_and_overfits_a_fixed_batch(cia_run):
  first = cia_run["first"]
  for key in ("clf", "clf_init", "clf_final", "iou", "category", "contrastive", "total", "grad_norm", "param_norm"):
    assert np.isfinite(first[key]), key
  weighted = first["clf"] + first["iou"] + 0.1 * first["category"] + first["contrastive"]
  np.testing.assert_allclose(first["total"], weighted, rtol=1e-5)
  totals = cia_run["totals"]
  assert totals[-1] < 0.5 * totals[0], totals


# Paper Table 1 rows (+ Table 2 "w/o known categories"): switches -> expected top-level params and loss terms.
ABLATIONS = {
    "dimp": (dict(category_classification=False, category_encoder=False, contrastive=False, instance_encoder=False),
             set(), set()),
    "cc": (dict(category_classification=True, category_encoder=False, contrastive=False, instance_encoder=False),
           {"upper_classifier"}, {"category"}),
    "cc_ce": (dict(category_classification=True, category_encoder=True, contrastive=False, instance_encoder=False),
              {"upper_classifier", "category_encoder"}, {"category"}),
    "cl": (dict(category_classification=False, category_encoder=False, contrastive=True, instance_encoder=False),
           {"proj"}, {"contrastive"}),
    "cl_ie": (dict(category_classification=False, category_encoder=False, contrastive=True, instance_encoder=True),
              {"proj", "modulator"}, {"contrastive"}),
    "full": (dict(), {"proj", "modulator", "upper_classifier", "category_encoder"}, {"category", "contrastive"}),
    "no_known_categories": (dict(category_classification=False, num_known_categories=0),
                            {"proj", "modulator", "category_encoder"}, {"contrastive"}),
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_switches_change_params_and_terms(name):
  switches, extra_params, extra_terms = ABLATIONS[name]
  model = CIANet(**TINY, **switches)
  batch = random_batch(0, 2, IMAGE)
  shapes = jax.eval_shape(lambda: _init(model, batch))
  assert set(shapes["params"]) == {"backbone", "classifier", "bb_regressor"} | extra_params
  if name == "no_known_categories":
    assert "dictionary" in shapes["params"]["category_encoder"]
  state = jax.eval_shape(lambda: _state(model, batch))
  _, metrics = jax.eval_shape(make_train_step(model, StepSettings(), _optimizer(state.params)), state, batch)
  terms = set(metrics) & {"clf", "iou", "category", "contrastive"}
  assert terms == {"clf", "iou"} | extra_terms


def test_category_encoder_needs_a_dictionary_source():
  model = CIANet(**TINY, category_classification=False, category_encoder=True)
  with pytest.raises(ValueError, match="dictionary comes from the category classifier"):
    jax.eval_shape(lambda: _init(model, random_batch(0, 1, IMAGE)))


def test_frozen_layers_get_no_update_and_groups_are_the_reference_ones():
  model = CIANet(**TINY, frozen_layers=("conv1", "layer1", "layer2"), contrastive=False, instance_encoder=False,
                 category_classification=False, category_encoder=False, num_iter=1)
  batch = random_batch(1, 2, IMAGE)
  state = _state(model, batch, frozen=("conv1", "layer1", "layer2"))
  labels = param_labels(state.params, ("conv1", "layer1", "layer2"))
  assert labels["backbone"]["conv1"]["kernel"] == FROZEN and labels["backbone"]["bn1"]["scale"] == FROZEN
  assert labels["backbone"]["layer2"]["0"]["conv1"]["kernel"] == FROZEN
  assert labels["backbone"]["layer3"]["0"]["conv1"]["kernel"] == "feature_extractor"
  assert labels["classifier"]["filter_optimizer"]["log_step_length"] == "filter_optimizer"
  assert labels["classifier"]["feature_extractor"]["1"]["kernel"] == "clf_feature_extractor"
  before = jax.tree.map(np.asarray, state.params)
  tx = _optimizer(state.params, frozen=("conv1", "layer1", "layer2"))
  state, _ = make_train_step(model, StepSettings(momentum=False), tx)(state, batch)
  for layer in ("conv1", "bn1", "layer1", "layer2"):
    jax.tree.map(np.testing.assert_array_equal, before["backbone"][layer],
                 jax.device_get(state.params["backbone"][layer]))
  assert np.any(before["backbone"]["layer3"]["0"]["conv1"]["kernel"]
                != np.asarray(state.params["backbone"]["layer3"]["0"]["conv1"]["kernel"]))


def test_step_decay_schedule():
  params = {"bb_regressor": {"w": jnp.ones(3)}}
  tx = make_optimizer(params, {"bb_regressor": 1e-3}, steps_per_epoch=10, decay_every_epochs=15)
  from cia_jax.train.state import learning_rate_schedules
  sched = learning_rate_schedules({"bb_regressor": 1e-3}, 10, 15)["bb_regressor"]
  np.testing.assert_allclose([sched(0), sched(149), sched(150), sched(300)], [1e-3, 1e-3, 2e-4, 4e-5], rtol=1e-6)
  assert tx is not None
  with pytest.raises(ValueError, match="no learning rate for parameter group"):
    make_optimizer({"bb_regressor": {"w": jnp.ones(3)}, "classifier": {"filter_optimizer": {"x": jnp.ones(1)}}},
                   {"bb_regressor": 1e-3}, steps_per_epoch=10)


_MULTI_DEVICE = textwrap.dedent("""
    import os, json, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np, optax
    jax.config.update("jax_threefry_partitionable", False)
    from jax.sharding import PartitionSpec as P
    from cia_jax.models.cia import CIANet
    from cia_jax.train.batch import random_batch
    from cia_jax.train.state import create_train_state
    from cia_jax.train.step import StepSettings, loss_and_grads, data_mesh, shard_batch, DATA_AXIS
    assert jax.device_count() == 8
    # One encoder layer and one filter iteration: the cross-device parts (key all-gather, psums) are all there,
    # and the two compilations are what this test spends its time on.
    model = CIANet(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32, encoder_layers=1, num_iter=1)
    batch = random_batch(3, 8, 64)
    fm = lambda k: jnp.swapaxes(jnp.asarray(batch[k]), 0, 1)
    # Jitted init: one compilation instead of an eager init's many small ones.
    v = jax.jit(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, fm("train_images"),
                                   fm("test_images"), fm("train_box_xywh"), fm("test_box_xywh"),
                                   fm("test_proposals_xywh")))()
    state = create_train_state(v, optax.sgd(1.0), jax.random.key(1), True)
    # Make the key encoder differ from the query encoder, as after some training.
    state = state.replace(momentum_params=jax.tree.map(lambda x: x * 0.97, state.momentum_params))
    settings = StepSettings(bn_train=False, dropout=False)
    f1 = jax.jit(lambda s, b: loss_and_grads(s, b, net=model, settings=settings)[:3])
    total1, terms1, grads1 = f1(state, batch)
    mesh = data_mesh()
    per_dev = lambda s, b: loss_and_grads(s, b, net=model, settings=settings, axis_name=DATA_AXIS)[:3]
    f8 = jax.jit(jax.shard_map(per_dev, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=P()))
    total8, terms8, grads8 = f8(state, shard_batch(batch, mesh))
    # Error relative to each leaf's scale, floored at 1e-6 of the largest gradient entry: some leaves
    # (the attention key biases: softmax over the atoms is invariant to a shared key shift) have an
    # exactly-zero true gradient, and their float32 values are pure rounding noise.
    gmax = max(float(np.max(np.abs(np.asarray(g)))) for g in jax.tree.leaves(grads1))
    err = jax.tree.leaves(jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))
                           / (np.max(np.abs(np.asarray(a))) + 1e-6 * gmax)),
        grads1, grads8))
    print(json.dumps({"total1": float(total1), "total8": float(total8),
                      "terms1": {k: float(x) for k, x in terms1.items()},
                      "terms8": {k: float(x) for k, x in terms8.items()},
                      "max_rel_grad_err": max(err),
                      "grad_norm": float(optax.tree.norm(grads1))}))
""")


def test_one_vs_eight_devices_same_loss_and_gradients(tmp_path):
  """Same global batch on 1 and 8 (simulated CPU) devices, BN in inference mode: same loss and gradients."""
  script = tmp_path / "multi.py"
  script.write_text(_MULTI_DEVICE)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
  assert res.returncode == 0, res.stderr[-3000:]
  out = json.loads(res.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(out["total8"], out["total1"], rtol=1e-5)
  for k, v in out["terms1"].items():
    np.testing.assert_allclose(out["terms8"][k], v, rtol=1e-5, atol=1e-7, err_msg=k)
  assert out["terms1"]["contrastive"] > 0 and out["grad_norm"] > 0
  # Gradients relative to each leaf's scale (float32 sums in a different order).
  assert out["max_rel_grad_err"] < 1e-4, out["max_rel_grad_err"]
