"""`winograd_convs`: the tracker with its 3x3 convolutions by Winograd F(2x2, 3x3) follows the direct tracker.

A random-weight DiMP network of width 32 (layer3 128 channels, so at the default `winograd_min_channels` 128 the
backbone's layer3 and layer4 and the classification block are eligible, at 32 layer1 and layer2 too), a 96 px
patch, a synthetic moving square."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cia_jax.models.cia import CIANet, init_variables
from cia_jax.ops import winograd
from cia_jax.track import params, tracker

NET = dict(backbone_width=32, clf_dim=128, iou_dim=32, category_classification=False, category_encoder=False,
           contrastive=False, instance_encoder=False)
SETTINGS = dict(image_sample_size=96, deterministic=True, target_not_found_threshold=0.0)
FRAMES = 5


def _frames():
  rng = np.random.default_rng(0)
  out = []
  for t in range(FRAMES):
    img = rng.integers(0, 90, (120, 160, 3), dtype=np.uint8)
    img[40 + 2 * t:70 + 2 * t, 50 + 3 * t:84 + 3 * t] = (220, 180, 60)
    out.append(img)
  return out, np.asarray([50.0, 40.0, 34.0, 30.0], np.float32)


def _track(model, settings):
  frames, box = _frames()
  key = jax.random.key(0)
  state = tracker.init(model, settings, frames[0], box, key)
  boxes, scores = [], []
  for i, frame in enumerate(frames[1:], 1):
    state, out = tracker.step(model, settings, state, frame, jax.random.fold_in(key, i))
    boxes.append(np.asarray(out["box_xywh"]))
    scores.append(float(out["max_score"]))
  return np.stack(boxes), np.asarray(scores)


@pytest.fixture(scope="module")
def model():
  net = CIANet(**NET)
  return tracker.TrackingModel(net=net, variables=init_variables(net, jax.random.key(0)))


def test_winograd_tracker_follows_the_direct_one(model):
  base = params.get_settings("dimp18", **SETTINGS)
  wino = params.get_settings("dimp18", **SETTINGS, winograd_convs=True)
  prepared = tracker.prepare(model)
  assert winograd.COLLECTION in prepared.variables and winograd.COLLECTION not in model.variables
  assert tracker.prepare(prepared).variables.keys() == prepared.variables.keys()  # idempotent
  want_boxes, want_scores = _track(model, base)
  for settings in (wino, wino.replace(winograd_min_channels=32)):
    boxes, scores = _track(prepared, settings)  # (unprepared kernels: tests/models/test_resnet.py, tests/ops)
    np.testing.assert_allclose(boxes, want_boxes, atol=1e-3)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-6)


def test_the_step_runs_fewer_direct_convolutions(model):
  frames, box = _frames()
  counts = {}
  for flag, min_channels in ((False, 128), (True, 128), (True, 32)):
    settings = params.get_settings("dimp18", **SETTINGS, winograd_convs=flag, winograd_min_channels=min_channels)
    state = tracker.init(model, settings, frames[0], box, jax.random.key(0))
    jaxpr = jax.make_jaxpr(lambda s, f, settings=settings: tracker.step_impl(model, settings, s, f,
                                                                             jax.random.key(1)))(state, frames[1])
    counts[flag, min_channels] = str(jaxpr).count("conv_general_dilated")
  assert counts[True, 32] < counts[True, 128] < counts[False, 128]


def test_winograd_convs_is_validated():
  with pytest.raises(ValueError, match="winograd_convs"):
    params.get_settings("dimp18", winograd_convs="yes")
  for bad in (0, 64.0, True):
    with pytest.raises(ValueError, match="winograd_min_channels"):
      params.get_settings("dimp18", winograd_min_channels=bad)
