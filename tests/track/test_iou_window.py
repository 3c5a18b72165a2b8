"""IoU-Net features on windows around the boxes (`iou_feature_windows`, design.md §5.6): which branch runs, and
that every branch (windows, whole maps, the fallback when the ascent leaves a window, batched lanes) gives the
boxes and scores of the whole-map ascent. Tiny random-weight CIA network, a 128 px patch (layer2 16 x 16,
layer3 8 x 8)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.cia import CIANet, init_variables
from cia_jax.track import params, tracker

TINY = dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)
# Windows (cells): (8, 6) and (12, 7) on the 16 x 16 / 8 x 8 maps.
SETTINGS = params.get_settings("cia18", image_sample_size=128, box_refinement_iter=3, box_refinement_step_length=0.5,
                               iou_feature_windows=((64, 96), (96, 112)))
SMALL = [[52.0, 50.0, 20.0, 24.0], [50.0, 54.0, 22.0, 18.0]]  # x, y, w, h patch pixels, centred
MEDIUM = [[40.0, 44.0, 50.0, 40.0], [42.0, 40.0, 44.0, 46.0]]  # too wide for the first windows
LARGE = [[8.0, 10.0, 110.0, 100.0], [12.0, 20.0, 90.0, 80.0]]  # fits no window
EDGE = [[2.0, 70.0, 26.0, 30.0], [4.0, 74.0, 22.0, 26.0]]  # at the map's left edge: windows shifted inside


@pytest.fixture(scope="module")
def inputs():
  net = CIANet(**TINY)
  model = tracker.TrackingModel(net=net, variables=init_variables(net, jax.random.key(0)))

  @jax.jit
  def features(m):
    patch = jnp.asarray(np.random.default_rng(4).uniform(0, 255, (1, 128, 128, 3)), jnp.float32)
    layer2, layer3, _ = tracker.extract_features(m, patch)
    mod3, mod4 = m.net.apply(m.variables, layer2, layer3, jnp.asarray([[48.0, 50.0, 28.0, 26.0]]),
                             method=CIANet.iou_modulation)
    return layer2, layer3, mod3[0], mod4[0]
  return model, features(model)


def _branch(model, feats, boxes, needed=True):
  layer2, layer3, _, _ = feats
  return int(jax.jit(lambda b: tracker._window_plan(SETTINGS, layer2, layer3, b, needed)[0])(jnp.asarray(boxes)))


def _refine(model, feats, boxes, settings=SETTINGS, needed=True):
  layer2, layer3, mod3, mod4 = feats
  return jax.jit(lambda b: tracker._refine(model, settings, mod3, mod4, layer2, layer3, b, needed))(
      jnp.asarray(boxes))


def _full(model, feats, boxes, settings=SETTINGS):
  layer2, layer3, mod3, mod4 = feats
  whole = jax.jit(lambda b: tracker.refine_whole_maps(model, settings, mod3, mod4, layer2, layer3, b))
  return whole(jnp.asarray(boxes))


def test_the_smallest_window_that_holds_the_boxes_is_chosen(inputs):
  model, feats = inputs
  assert _branch(model, feats, SMALL) == 1
  assert _branch(model, feats, MEDIUM) == 2
  assert _branch(model, feats, LARGE) == 3  # whole maps
  assert _branch(model, feats, EDGE) == 1
  assert _branch(model, feats, SMALL, needed=False) == 0


@pytest.mark.parametrize("boxes", [SMALL, MEDIUM, LARGE, EDGE], ids=["small", "medium", "large", "edge"])
def test_every_branch_gives_the_whole_map_ascent(inputs, boxes):
  model, feats = inputs
  got_boxes, got_scores = _refine(model, feats, boxes)
  want_boxes, want_scores = _full(model, feats, boxes)
  assert not np.allclose(np.asarray(want_boxes), np.asarray(boxes), atol=1e-2)  # the ascent moved them
  np.testing.assert_allclose(np.asarray(got_boxes), np.asarray(want_boxes), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(got_scores), np.asarray(want_scores), rtol=1e-5, atol=1e-6)


def test_an_ascent_that_leaves_its_window_falls_back_to_the_whole_maps(inputs):
  model, feats = inputs
  layer2, layer3, mod3, mod4 = feats
  settings = SETTINGS.replace(box_refinement_step_length=400.0)  # steps of several cells
  boxes = jnp.asarray(SMALL)
  window = jax.jit(lambda b: tracker._window_plan(settings, layer2, layer3, b, True)[1][0])(boxes)
  _, _, ok = jax.jit(lambda b, w: tracker._refine_windowed(model, settings, mod3, mod4, layer2, layer3, b, w))(
      boxes, window)
  assert not bool(ok)
  got = _refine(model, feats, SMALL, settings)
  want = _full(model, feats, SMALL, settings)
  np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), rtol=1e-5, atol=1e-3)


def test_no_refinement_when_not_needed(inputs):
  model, feats = inputs
  got_boxes, got_scores = _refine(model, feats, SMALL, needed=False)
  np.testing.assert_array_equal(np.asarray(got_boxes), np.asarray(SMALL, np.float32))
  np.testing.assert_array_equal(np.asarray(got_scores), 0.0)


def test_lanes_choose_one_branch_for_the_batch(inputs):
  """vmap over lanes whose boxes want different branches (one not needed) == each lane's whole-map ascent."""
  model, feats = inputs
  layer2, layer3, mod3, mod4 = feats
  lanes = jnp.asarray([SMALL, MEDIUM, EDGE, SMALL])
  needed = jnp.asarray([True, True, True, False])
  got_boxes, got_scores = jax.jit(jax.vmap(
      lambda b, n: tracker._refine(model, SETTINGS, mod3, mod4, layer2, layer3, b, n)))(lanes, needed)
  for i in range(3):
    want_boxes, want_scores = _full(model, feats, lanes[i])
    np.testing.assert_allclose(np.asarray(got_boxes[i]), np.asarray(want_boxes), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got_scores[i]), np.asarray(want_scores), rtol=1e-5, atol=1e-6)


def test_windows_are_validated():
  for bad in ((160, 192), ((160, 200),), ((0, 192),), [(160, 192)]):
    with pytest.raises(ValueError, match="iou_feature_windows"):
      params.get_settings("dimp18", iou_feature_windows=bad)
