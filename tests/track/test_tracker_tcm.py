"""KeepTrack / CIA50-tcm in the jitted tracker step (keeptrack.md §1, 4.3-4.6): jit and vmap, the crossing-distractor
scenario, the DiMP path without tcm, search-area rescaling, certainty-weighted memory, presets and the CLI.

Tiny networks (width-8 ResNet-18 CIA net, 8-d association net), 64-288 px images.
"""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax import cli
from cia_jax.models.cia import CIANet
from cia_jax.models.cia import init_variables
from cia_jax.models.tcm import MatcherOutput, TargetCandidateMatchingNet
from cia_jax.ops.image import IMAGENET_MEAN, IMAGENET_STD
from cia_jax.track import keeptrack, params, runner, tracker
from cia_jax.track.memory import init_memory, update_sample_weights

TINY = dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)
TINY_TCM = dict(descriptor_dim=8, keypoint_encoder=(8,), num_heads=4)


@pytest.fixture(scope="module")
def tcm_model():
  """Tiny random CIA net + tiny random association net (with random BN statistics, so that eval-mode BN matters)."""
  net = CIANet(**TINY)
  model = tracker.TrackingModel(net=net, variables=init_variables(net, jax.random.key(0)))
  tcm_net = TargetCandidateMatchingNet(**TINY_TCM)
  variables = keeptrack.init_tcm_variables(tcm_net, tracker.layer3_channels(model), jax.random.key(1))
  rng = np.random.default_rng(0)
  variables["batch_stats"] = jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.asarray(rng.normal(0, 0.1, v.shape) if p[-1].key == "mean" else rng.uniform(0.5, 1.5, v.shape),
                               v.dtype), variables["batch_stats"])
  return model.replace(tcm_net=tcm_net, tcm_variables=variables)


# pytracking's keep_track/default.py, transcribed from keeptrack.md §4.7 (fields TrackerSettings shares).
KEEPTRACK_DEFAULT = dict(
    image_sample_size=480, search_area_scale=8.0, border_mode='inside_major', patch_max_scale_change=1.5,
    sample_memory_size=50, learning_rate=0.01, init_samples_minimum_weight=0.25, train_skipping=20, net_opt_iter=10,
    net_opt_update_iter=2, net_opt_hn_iter=1, hard_negative_learning_rate=0.02, train_sample_interval=1,
    aug_fliplr=True, aug_rotate=(10.0, -10.0, 45.0, -45.0), aug_blur=((3.0, 1.0), (1.0, 3.0), (2.0, 2.0)),
    aug_relativeshift=((0.6, 0.6), (-0.6, 0.6), (0.6, -0.6), (-0.6, -0.6)), aug_dropout_num=2, aug_dropout_prob=0.2,
    augmentation_expansion_factor=2.0, random_shift_factor=0.3333333333333333, window_output=False,
    score_preprocess='none', scale_factors=(1.0,), advanced_localization=True, target_not_found_threshold=0.25,
    distractor_threshold=0.8, hard_negative_threshold=0.5, target_neighborhood_scale=2.2, displacement_scale=0.8,
    target_inside_ratio=0.2, update_scale_when_uncertain=True, output_not_found_box=False,
    box_refinement_space='relative', iounet_augmentation=False, iounet_k=3, num_init_random_boxes=9,
    box_jitter_pos=0.1, box_jitter_sz=0.5, maximal_aspect_ratio=6.0, box_refinement_iter=10,
    box_refinement_step_length=0.0025, box_refinement_step_decay=1.0, use_iounet_pos_for_learning=True,
    use_certainty_for_weight_computation=True, certainty_for_weight_computation_ths=0.5,
    local_max_candidate_score_th=0.05)
# default_fast.py: the differences.
KEEPTRACK_FAST = dict(KEEPTRACK_DEFAULT, image_sample_size=352, search_area_scale=6.0, box_refinement_iter=3,
                      local_max_candidate_score_th=0.1)


def two_textured_objects(num_frames: int, size=(112, 144), target: int = 24, seed: int = 0, dx0: float = 0.0):
  """Two copies of one checker texture on grey noise, the target moving right, the distractor left, 32 px lower.

  Returns (frames `[T, H, W, 3]` uint8, target boxes `[T, 4]` xywh).
  """
  rng = np.random.default_rng(seed)
  tex = np.kron(rng.choice([20.0, 235.0], (4, 4, 3)), np.ones((target // 4, target // 4, 1)))
  frames, boxes = [], []
  for t in range(num_frames):
    img = rng.normal(128, 20, (*size, 3)).clip(0, 255)
    x, y = int(round(20 + dx0 + 3 * t)), 30
    xd = int(round(size[1] - target - 20 - 4 * t))
    img[y + 32:y + 32 + target, xd:xd + target] = tex
    img[y:y + target, x:x + target] = tex
    frames.append(img.astype(np.uint8))
    boxes.append([x, y, target, target])
  return np.stack(frames), np.asarray(boxes, np.float64)


# Random shifts, dropout copies and jittered IoU boxes on (not deterministic); 96 px patches, 7 x 7 score maps.
JIT_SETTINGS = params.get_settings("cia50_tcm", image_sample_size=96, search_area_scale=4.0, box_refinement_iter=2,
                                   train_skipping=2, candidate_capacity=6, target_not_found_threshold=0.0)


def _run(model, settings, frames, box, keys, step=None):
  step = step or (lambda m, st, im, k: tracker.step(m, settings, st, im, k))
  state = tracker.init(model, settings, frames[0], jnp.asarray(box, jnp.float32), keys[0])
  outs = []
  for t in range(1, len(frames)):
    state, out = step(model, state, frames[t], keys[t])
    outs.append(jax.tree.map(np.asarray, out))
  return jax.tree.map(lambda *a: np.stack(a), *outs), state


def test_tcm_step_jitted_and_batched_runner_agree(tcm_model):
  """The tcm step (real association net) jitted on one sequence = the runner's vmapped step on three, with the
  matcher running on some frames (its `lax.cond` becomes a select under vmap)."""
  settings = JIT_SETTINGS
  seqs = [two_textured_objects(6, seed=s, dx0=4.0 * s) for s in range(3)]
  keys = [[jax.random.fold_in(jax.random.key(10 + s), t) for t in range(6)] for s in range(3)]
  fns = runner.tracker_fns(settings)
  frames = np.stack([f for f, _ in seqs])
  boxes0 = np.stack([b[0] for _, b in seqs]).astype(np.float32)
  state = fns["vinit"](tcm_model, jnp.asarray(frames[:, 0]), jnp.asarray(boxes0), jnp.stack([k[0] for k in keys]))
  batched = []
  for t in range(1, 6):
    state, out = fns["vstep"](tcm_model, state, jnp.asarray(frames[:, t]), jnp.stack([k[t] for k in keys]))
    batched.append(jax.tree.map(np.asarray, out))
  batched = jax.tree.map(lambda *a: np.stack(a, axis=1), *batched)  # [3, T - 1, ...]
  matched = 0
  for s in range(3):
    single, single_state = _run(tcm_model, settings, seqs[s][0], seqs[s][1][0], keys[s])
    np.testing.assert_array_equal(single["flag"], batched["flag"][s])
    np.testing.assert_array_equal(single["matched"], batched["matched"][s])
    np.testing.assert_allclose(single["box_xywh"], batched["box_xywh"][s], rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(single["presence_score"], batched["presence_score"][s], rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(single["box_xywh"]))
    matched += int(single["matched"].sum())
    c = single_state.tcm.candidates
    np.testing.assert_array_equal(np.asarray(c.object_ids), np.asarray(state.tcm.candidates.object_ids[s]))
    assert int(c.selected_object_id) == int(state.tcm.candidates.selected_object_id[s])
  assert matched > 0  # the association net really ran


def test_tcm_state_keeps_its_shapes_over_a_long_scan(tcm_model):
  """300 tcm steps in `lax.scan`: fixed state shapes, finite values, certainties / scale history filled."""
  settings = JIT_SETTINGS.replace(deterministic=True)
  frames, gt = two_textured_objects(8)
  state0 = tracker.init(tcm_model, settings, frames[0], jnp.asarray(gt[0], jnp.float32), jax.random.key(0))
  images = jnp.asarray(frames[1:])

  @jax.jit
  def run(state):
    def body(st, i):
      return tracker.step_impl(tcm_model, settings, st, images[i % images.shape[0]], jax.random.key(0))
    return jax.lax.scan(body, state, jnp.arange(300))

  state, out = run(state0)
  leaves0, tree0 = jax.tree.flatten(state0)
  leaves, tree = jax.tree.flatten(state)
  assert tree == tree0
  assert all(a.shape == b.shape and a.dtype == b.dtype for a, b in zip(leaves, leaves0))
  assert all(bool(jnp.all(jnp.isfinite(a))) for a in leaves if jnp.issubdtype(a.dtype, jnp.floating))
  assert np.all(np.isfinite(np.asarray(out["box_xywh"])))
  found = int(np.sum(np.asarray(out["flag"]) != tracker.FLAG_NOT_FOUND))
  assert int(state.tcm.num_scales) == found


# ------------------------------------------------------------------------------------------------
# The crossing distractor (issue #17): CIA50-tcm keeps the target, the base tracker switches.

class MarkerNet(CIANet):
  """A CIA net whose features and scores are a fixed function of the image, so the tracking logic sees known
  score maps (random features cannot be made to rank a target and a distractor on purpose).

  The marker of a pixel is m = clip((G - max(R, B) - 40) / 100, 0, 1) (1 on the green objects, 0 on grey).
  Its mean over each 8 / 16 px cell is channel 0 of layer2 / layer3 and of the classification features (all
  other channels 0), and the score map is the layer3 coverage filtered with the fixed separable kernel
  [1, 3, 2, 1]^2 / 25 (4 x 4, padding 2, like the DiMP filter): ~1 for a fully visible 32 px object, less for a
  partly hidden one. The learned filter is ignored.
  """

  def backbone_features(self, images, train, layers=None):
    feats = dict(super().backbone_features(images, train, layers))
    rgb = (images * jnp.asarray(IMAGENET_STD) + jnp.asarray(IMAGENET_MEAN)) * 255.0
    marker = jnp.clip((rgb[..., 1] - jnp.maximum(rgb[..., 0], rgb[..., 2]) - 40.0) / 100.0, 0.0, 1.0)
    n, h, w = marker.shape
    for name, stride in (("layer2", 8), ("layer3", 16)):
      if name in feats:
        cover = marker.reshape(n, h // stride, stride, w // stride, stride).mean(axis=(2, 4))
        feats[name] = jnp.zeros_like(feats[name]).at[..., 0].set(cover)
    return feats

  def classification_features(self, layer3, train=False, deterministic=True):
    x = super().classification_features(layer3, train, deterministic)
    return jnp.zeros_like(x).at[..., 0].set(layer3[..., 0])

  def classify(self, filt, feat):
    cover = feat[..., 0]
    h, w = cover.shape[-2:]
    k = jnp.asarray([1.0, 3.0, 3.1, 1.0], cover.dtype)
    kernel = (jnp.outer(k, k) / 37.21)[:, :, None, None]
    out = jax.lax.conv_general_dilated(cover.reshape(-1, h, w, 1), kernel, (1, 1), ((2, 2), (2, 2)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return out.reshape(*cover.shape[:-2], h + 1, w + 1)


class NearestCandidateMatcher(nn.Module):
  """Stand-in association net (the `tcm_net` hook of `cia_jax.track.keeptrack`): mutual nearest neighbours by
  position (pixels) + `appearance_weight` x the distance of the L2-normalised descriptors, matched only within
  `radius` pixels, with probability 1. `radius=0` matches nothing: the association result is ignored."""

  descriptor_dim: int = 4
  radius: float = 24.0
  appearance_weight: float = 4.0

  def descriptors(self, layer3, cells, valid):
    f = layer3.shape[1]
    rows, cols = jnp.clip(cells[..., 0], 0, f - 1), jnp.clip(cells[..., 1], 0, f - 1)
    desc = jax.vmap(lambda m, r, c: m[r, c, :self.descriptor_dim])(layer3, rows, cols)
    desc = desc / jnp.maximum(jnp.linalg.norm(desc, axis=-1, keepdims=True), 1e-6)
    return jnp.where(valid[..., None], desc, 0.0)

  def match(self, desc0, set0, desc1, set1):
    pos = jnp.linalg.norm(set0.image_coords[:, :, None] - set1.image_coords[:, None, :], axis=-1)
    pair = set0.valid[:, :, None] & set1.valid[:, None, :]
    cost = jnp.where(pair, pos + self.appearance_weight * jnp.linalg.norm(desc0[:, :, None] - desc1[:, None], axis=-1),
                     jnp.inf)
    near = pair & (pos < self.radius)
    m0, m1 = jnp.argmin(cost, axis=2), jnp.argmin(cost, axis=1)
    mutual0 = jnp.take_along_axis(m1, m0, 1) == jnp.arange(m0.shape[1])
    mutual1 = jnp.take_along_axis(m0, m1, 1) == jnp.arange(m1.shape[1])
    ok0 = mutual0 & jnp.take_along_axis(near, m0[..., None], 2)[..., 0]
    ok1 = mutual1 & jnp.take_along_axis(near, m1[:, None], 1)[:, 0]
    b, m, n = cost.shape
    return MatcherOutput(jnp.zeros((b, m + 1, n + 1)), jnp.where(ok0, m0, -1).astype(jnp.int32),
                         jnp.where(ok1, m1, -1).astype(jnp.int32), ok0.astype(jnp.float32), ok1.astype(jnp.float32),
                         jnp.zeros(()))


def crossing_sequence(num_frames: int = 48, size=(256, 320), target: int = 32, wall_x: int = 80, seed: int = 0):
  """Two identical green squares on grey noise.

  The target walks right (2 px/frame) along y = 96 and, from x = `wall_x` on, behind a wall that hides its top
  80 %. The distractor walks left (4 px/frame) along y = 160, behind a low wall that hides its top half, and
  passes below the target around frame 33. With `MarkerNet` the visible target scores ~0.85-1 before the wall,
  ~0.2 behind it, the distractor ~0.4-0.5 everywhere.

  Returns (frames uint8, target boxes `[T, 4]`, distractor boxes `[T, 4]`), xywh of the whole squares.
  """
  rng = np.random.default_rng(seed)
  square = np.broadcast_to(np.asarray([40.0, 220.0, 40.0]), (target, target, 3))
  t_hidden, d_hidden = round(0.8 * target), target // 2
  frames, tboxes, dboxes = [], [], []
  for t in range(num_frames):
    img = rng.normal(128, 8, (*size, 3))
    x, xd = 40 + 2 * t, 240 - 4 * t
    img[160 + d_hidden:160 + target, xd:xd + target] = square[d_hidden:]
    img[96:96 + target, x:x + target] = square
    wall = slice(max(x, wall_x), max(x + target, wall_x))
    img[96:96 + t_hidden, wall] = rng.normal(128, 8, (t_hidden, wall.stop - wall.start, 3))
    frames.append(img.clip(0, 255).astype(np.uint8))
    tboxes.append([x, 96, target, target])
    dboxes.append([xd, 160, target, target])
  return np.stack(frames), np.asarray(tboxes, np.float64), np.asarray(dboxes, np.float64)


def _centre_errors(boxes, gt):
  centres = lambda b: b[:, :2] + (b[:, 2:] - 1) / 2  # noqa: E731
  return np.linalg.norm(centres(boxes) - centres(gt), axis=1)


def test_tcm_keeps_the_target_where_the_base_tracker_switches_to_the_distractor():
  net = MarkerNet(**TINY)
  variables = init_variables(CIANet(**TINY), jax.random.key(0))
  base = tracker.TrackingModel(net=net, variables=variables)
  overrides = dict(image_sample_size=192, search_area_scale=6.0, deterministic=True, box_refinement_iter=0)
  frames, target, distractor = crossing_sequence()
  keys = [jax.random.key(t) for t in range(len(frames))]

  def boxes(model, settings):
    out, _ = _run(model, settings, frames, target[0], keys)
    return np.concatenate([target[:1], out["box_xywh"]]), out

  dimp, _ = boxes(base, params.get_settings("cia50", **overrides))
  tcm_settings = params.get_settings("cia50_tcm", candidate_capacity=8, **overrides)
  tcm, tcm_out = boxes(base.replace(tcm_net=NearestCandidateMatcher(), tcm_variables={}), tcm_settings)
  ignored, _ = boxes(base.replace(tcm_net=NearestCandidateMatcher(radius=0.0), tcm_variables={}), tcm_settings)

  # Box centres are cell-quantised (16 px cells, no IoU-Net) and the target is mostly hidden behind its wall,
  # so "on" an object means within 24 px of its centre; the two objects are always >= 64 px apart.
  on_target = lambda b: _centre_errors(b, target) < 24  # noqa: E731
  on_distractor = lambda b: _centre_errors(b, distractor) < 24  # noqa: E731
  # The base tracker jumps to the (better visible) distractor and stays there.
  assert on_distractor(dimp)[-10:].all()
  # With candidate matching the target's track continues through the crossing: on the target in every frame.
  assert on_target(tcm).all(), _centre_errors(tcm, target).round(1)
  assert tcm_out["matched"].sum() > 10
  # Control: the same tracker with the association result ignored (no matches) loses the target to the distractor.
  assert on_distractor(ignored)[-10:].all()


# ------------------------------------------------------------------------------------------------
# Search-area rescaling (keeptrack.md §4.5) and certainty-weighted memory (keeptrack.md §4.6).

def reference_rescaled_scale(history: list[float], counter: int, current: float) -> float:
  """Spec 4.5 over a plain list of found-frame scales (oldest first)."""
  if not history:
    return current
  scales = history[-60:]
  kept = [s for s in scales if s >= scales[-1]]
  kept = kept[-min(max(counter, 2), 30):]
  return float(np.mean(kept))


def test_search_area_rescaling_follows_the_spec():
  rng = np.random.default_rng(0)
  state = keeptrack.init_tcm_state(params.get_settings("keeptrack"), TargetCandidateMatchingNet())
  history, counter, current = [], 0, 1.0
  step = jax.jit(keeptrack.track_scales)
  checked = 0
  for t in range(150):
    found = bool(rng.uniform() < 0.6) if t > 3 else t < 3  # not found on frame 3 with a 3-scale history, ...
    current = float(rng.uniform(0.5, 2.0))
    state, lost = step(state, jnp.float32(current), jnp.asarray(found))
    if found:
      history.append(current)
      counter = 0
    else:
      counter += 1
      np.testing.assert_allclose(float(lost), reference_rescaled_scale(history, counter, current), rtol=1e-6)
      checked += 1
    assert int(state.not_found_counter) == counter and int(state.num_scales) == len(history)
  assert checked > 30 and len(history) > 60  # the 60-scale window was exercised
  empty = keeptrack.init_tcm_state(params.get_settings("keeptrack"), TargetCandidateMatchingNet())
  _, lost = step(empty, jnp.float32(1.7), jnp.asarray(False))
  assert float(lost) == pytest.approx(1.7)  # nothing recorded yet: the scale stays


def test_certainty_weighted_eviction_and_in_place_zeroing():
  settings = params.get_settings("keeptrack", sample_memory_size=20)
  n_init, m = settings.num_init_samples, settings.sample_memory_size
  memory = init_memory(jnp.zeros((n_init, 2, 2, 4)), jnp.ones((n_init, 4)), m)
  weights = jnp.asarray(np.r_[np.full(n_init, 0.5 / n_init), np.linspace(0.08, 0.02, m - n_init)], jnp.float32)
  memory = memory.replace(weights=weights, num_stored=jnp.asarray(40, jnp.int32),
                          previous_replace_ind=jnp.asarray(m - 1, jnp.int32))
  certainties = np.ones(m, np.float32)
  certainties[n_init] = 0.1  # the largest weight, the lowest certainty: evicted by certainty * weight
  certainties[3] = 0.0  # an initial sample is never evicted
  _, by_weight = update_sample_weights(memory.weights, memory.previous_replace_ind, memory.num_stored, n_init, 0.01)
  _, by_certainty = update_sample_weights(memory.weights, memory.previous_replace_ind, memory.num_stored, n_init, 0.01,
                                          0.25, jnp.asarray(certainties))
  assert int(by_weight) == m - 1 and int(by_certainty) == n_init

  state = keeptrack.init_tcm_state(settings, TargetCandidateMatchingNet()).replace(certainties=jnp.asarray(certainties))
  written = memory.replace(previous_replace_ind=jnp.asarray(n_init + 1, jnp.int32))
  new, opt = keeptrack.certainty_memory(settings, state, written, jnp.asarray(True), jnp.float32(0.4),
                                        jnp.asarray(False))
  expected = certainties.copy()
  expected[n_init + 1] = 0.4
  np.testing.assert_allclose(np.asarray(new.certainties), expected)  # no optimiser run: nothing zeroed yet
  np.testing.assert_allclose(np.asarray(opt.weights), np.where(expected < 0.5, 0, expected) * np.asarray(weights))
  new, _ = keeptrack.certainty_memory(settings, state, written, jnp.asarray(True), jnp.float32(0.4), jnp.asarray(True))
  np.testing.assert_allclose(np.asarray(new.certainties), np.where(expected < 0.5, 0, expected))  # zeroed in place
  new, opt = keeptrack.certainty_memory(settings, state, written, jnp.asarray(False), jnp.float32(0.4),
                                        jnp.asarray(False))
  np.testing.assert_allclose(np.asarray(new.certainties), certainties)  # nothing stored: nothing recorded
  assert int(keeptrack.hard_negative_iterations(settings, jnp.float32(0.49))) == 0
  assert int(keeptrack.hard_negative_iterations(settings, jnp.float32(0.5))) == settings.net_opt_hn_iter
  plain = settings.replace(use_certainty_for_weight_computation=False)
  assert keeptrack.hard_negative_iterations(plain, jnp.float32(0.1)) == settings.net_opt_hn_iter
  _, opt = keeptrack.certainty_memory(plain, state, written, jnp.asarray(True), jnp.float32(0.4), jnp.asarray(True))
  assert opt is written


# ------------------------------------------------------------------------------------------------
# Settings, the DiMP path, the model loader and the CLI.

def test_keeptrack_presets_are_pytrackings_parameters():
  for name, reference in (("keeptrack", KEEPTRACK_DEFAULT), ("keeptrack_fast", KEEPTRACK_FAST),
                          ("cia50_tcm", KEEPTRACK_DEFAULT)):
    settings = params.get_settings(name)
    differing = {k: (v, getattr(settings, k)) for k, v in reference.items() if getattr(settings, k) != v}
    assert differing == {}, (name, differing)
    assert settings.use_tcm and settings.use_certainty_for_weight_computation
    tcm = keeptrack.tcm_settings(settings)
    assert (tcm.image_sample_size, tcm.local_max_candidate_score_th) == (
        reference["image_sample_size"], reference["local_max_candidate_score_th"])
  assert params.get_settings("keeptrack").crop_rule == "pytracking"
  assert params.get_settings("cia50_tcm").crop_rule == "cia"
  for name in params.PRESETS:
    assert not params.get_settings(name).use_tcm
  assert keeptrack.tcm_settings(params.apply_overrides(params.get_settings("keeptrack"), [
      "local_max_candidate_score_th=0.2", "candidate_capacity=5"])).local_max_candidate_score_th == 0.2
  with pytest.raises(ValueError, match="candidate_capacity"):
    params.get_settings("keeptrack", candidate_capacity=0)


def test_without_tcm_the_state_and_outputs_are_the_dimp_ones(tcm_model):
  settings = JIT_SETTINGS.replace(use_tcm=False, use_certainty_for_weight_computation=False, deterministic=True)
  frames, gt = two_textured_objects(2)
  state = tracker.init(tcm_model, settings, frames[0], jnp.asarray(gt[0], jnp.float32), jax.random.key(0))
  assert state.tcm is None
  state, out = tracker.step(tcm_model, settings, state, frames[1], jax.random.key(1))
  assert state.tcm is None and set(out) == {"box_xywh", "max_score", "flag"}
  base = tracker.TrackingModel(net=tcm_model.net, variables=tcm_model.variables)
  _, plain = tracker.step(base, settings, tracker.init(base, settings, frames[0], jnp.asarray(gt[0], jnp.float32),
                                                       jax.random.key(0)), frames[1], jax.random.key(1))
  np.testing.assert_array_equal(np.asarray(out["box_xywh"]), np.asarray(plain["box_xywh"]))  # the tcm net is unused
  with pytest.raises(ValueError, match="tcm_net"):
    tracker.init(base, JIT_SETTINGS, frames[0], jnp.asarray(gt[0], jnp.float32), jax.random.key(0))


def test_load_model_adds_a_random_association_net_on_the_base_network(monkeypatch):
  asked = []
  monkeypatch.setattr(runner, "model_kwargs", lambda name: asked.append(name) or dict(TINY))
  model = runner.load_model("cia50_tcm", None, True, seed=3)
  assert asked == ["cia50"] and isinstance(model.tcm_net, TargetCandidateMatchingNet)
  conv = model.tcm_variables["params"]["descriptor_extractor"]["conv"]["kernel"]
  assert conv.shape == (4, 4, tracker.layer3_channels(model), 256)
  assert runner.load_model("keeptrack", None, True, tcm=False).tcm_net is None and asked[-1] == "superdimp"
  assert runner.load_model("cia18", None, True).tcm_net is None
  with pytest.raises(ValueError, match="association network"):
    runner.load_model("keeptrack", "/nonexistent", False)


def test_cli_tracks_with_keeptrack(tmp_path, monkeypatch, tcm_model):
  from cia_jax.data.synthetic import generate  # pylint: disable=g-import-not-at-top

  root = tmp_path / "seqs"
  names = generate(str(root), "folder", num_sequences=2, num_frames=4, image_size=(96, 80), seed=3)
  seen = []
  monkeypatch.setattr(runner, "load_model", lambda *args, **kwargs: seen.append((args, kwargs)) or tcm_model)
  common = ["track", "--random-weights", "--dataset", "folder", "--root", str(root), "--no-progress",
            "--set", "image_sample_size=64", "--set", "search_area_scale=4.0", "--set", "box_refinement_iter=1",
            "--set", "candidate_capacity=4"]
  assert cli.main(common + ["--tracker", "keeptrack", "--results", str(tmp_path / "k1")]) == 0
  assert cli.main(common + ["--tracker", "cia50_tcm", "--results", str(tmp_path / "k2"), "--batch-sequences", "2"]) == 0
  assert all(kwargs["tcm"] for _, kwargs in seen)
  for name in names:
    for run in ("k1", "k2"):
      boxes = np.loadtxt(tmp_path / run / f"{name}.txt", delimiter=",")
      assert boxes.shape == (4, 4) and np.all(np.isfinite(boxes))
