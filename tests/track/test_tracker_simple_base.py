"""The tracker on a SuperDiMP-simple network (hinge filter optimiser on tracker labels, keeptrack.md §0): the
memory keeps every sample's Gaussian label, as the reference's `target_labels`, and the filter learns from them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.cia import CIANet, init_variables
from cia_jax.models.presets import model_kwargs
from cia_jax.track import params, tracker

# A tiny ResNet-18 under the simple base's classifier: the backbone does not matter here and compiles faster.
TINY = dict(backbone_width=8, clf_dim=16, iou_dim=16, backbone_arch="resnet18", clf_arch="r18", frozen_layers=())
# Random shifts on (non-trivial label offsets), 96 px patches (6 x 6 features, 7 x 7 labels), an update every frame.
SETTINGS = params.get_settings("superdimp", image_sample_size=96, search_area_scale=4.0, box_refinement_iter=2,
                               train_skipping=1, net_opt_iter=3, target_not_found_threshold=0.0)


@pytest.fixture(scope="module")
def simple_model():
  net = CIANet(**model_kwargs("superdimp_simple", **TINY))
  variables = init_variables(net, jax.random.key(0))
  variables["params"]["classifier"]["filter_optimizer"]["residual_module"]["filter_reg"] = jnp.asarray([0.3])
  return tracker.TrackingModel(net=net, variables=variables)


def moving_square(num_frames: int, size=(112, 144), target: int = 24, seed: int = 0):
  rng = np.random.default_rng(seed)
  tex = np.kron(rng.choice([20.0, 235.0], (4, 4, 3)), np.ones((target // 4, target // 4, 1)))
  frames = []
  for t in range(num_frames):
    img = rng.normal(128, 20, (*size, 3)).clip(0, 255)
    img[30:30 + target, 20 + 3 * t:20 + 3 * t + target] = tex
    frames.append(img.astype(np.uint8))
  return np.stack(frames), np.asarray([20, 30, target, target], np.float32)


def reference_label(box_xywh, base_sz_yx, feat: int, patch: int, sigma_factor=0.25):
  """pytracking's label_function_spatial for a sample whose target box (patch pixels, centre x + (w - 1) / 2)
  is `box_xywh`: centre feat * (box centre - (patch - 1) / 2) / patch + 1/2 cells on the grid
  k = -(feat - 1) / 2 .. (feat + 1) / 2, sigma = sigma_factor * sqrt(prod(feat / patch * base_sz))."""
  box = np.asarray(box_xywh, np.float64)
  c_yx = box[1::-1] + (box[:1:-1] - 1) / 2 - (patch - 1) / 2
  centre = feat * c_yx / patch + 0.5
  sigma = sigma_factor * np.sqrt(np.prod(feat / patch * np.asarray(base_sz_yx, np.float64)))
  k = np.arange(-(feat - 1) / 2, (feat + 1) / 2 + 1)
  gy, gx = (np.exp(-(k - c) ** 2 / (2 * sigma**2)) for c in centre)
  return gy[:, None] * gx[None, :]


def test_memory_labels_follow_the_reference_label_function(simple_model):
  frames, box = moving_square(4)
  state = tracker.init(simple_model, SETTINGS, frames[0], box, jax.random.key(1))
  mem = state.memory
  assert mem.labels.shape == (SETTINGS.sample_memory_size, 7, 7)
  n_init = SETTINGS.num_init_samples
  base = np.asarray(state.base_target_sz_yx)

  def check(memory, slots):
    for i in slots:
      want = reference_label(np.asarray(memory.boxes_xywh[i]), base, 6, 96)
      np.testing.assert_allclose(np.asarray(memory.labels[i]), want, rtol=1e-4, atol=1e-5, err_msg=f"slot {i}")

  check(mem, range(n_init))
  assert np.ptp(np.asarray(mem.boxes_xywh[:n_init, 0])) > 1.0  # the random shifts moved the samples' labels
  assert not np.any(np.asarray(mem.labels[n_init:]))
  # The init filter is the hinge optimiser's on these labels.
  v, net = simple_model.variables, simple_model.net
  x, boxes = mem.features[:n_init, None], mem.boxes_xywh[:n_init, None]
  f0 = net.apply(v, x, boxes, method=CIANet.init_filter)
  want_filter, _, _ = net.apply(v, f0, x, boxes, None, SETTINGS.net_opt_iter, label=mem.labels[:n_init, None],
                                method=CIANet.optimize_filter)
  np.testing.assert_allclose(np.asarray(state.filter), np.asarray(want_filter[0]), rtol=1e-4, atol=1e-6)

  shapes = jax.tree.map(jnp.shape, state)
  stored = 0
  for t in range(1, len(frames)):
    before = state.filter
    state, out = tracker.step(simple_model, SETTINGS, state, frames[t], jax.random.key(t))
    assert jax.tree.map(jnp.shape, state) == shapes  # fixed shapes: the jitted step never retraces on them
    if int(out["flag"]) in (tracker.FLAG_NORMAL, tracker.FLAG_HARD_NEGATIVE):
      slot = int(state.memory.previous_replace_ind)
      check(state.memory, [slot])
      assert not np.allclose(np.asarray(state.filter), np.asarray(before))
      stored += 1
  assert stored > 0
