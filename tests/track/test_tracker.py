"""The jitted online tracker: jit vs eager, vmap vs sequential, localisation rules, a synthetic sequence,
long runs with a fixed-shape state. Tiny random-weight CIA network (width-8 ResNet-18), 64-128 px images."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.cia import CIANet
from cia_jax.models.cia import init_variables
from cia_jax.ops.boxes import iou_xywh
from cia_jax.track import augment, params, tracker

TINY = dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)  # the full CIA path (IE + CE on)


@pytest.fixture(scope="module")
def model():
  net = CIANet(**TINY)
  return tracker.TrackingModel(net=net, variables=init_variables(net, jax.random.key(0)))


def textured_sequence(num_frames: int, size: int = 128, target: int = 32, seed: int = 0, start=(20.0, 30.0)):
  """A 4x4 black/white checker target moving on a known trajectory over grey noise.

  Returns (frames `[T, size, size, 3]` uint8, boxes `[T, 4]` xywh).
  """
  rng = np.random.default_rng(seed)
  tex = np.kron(rng.choice([20.0, 235.0], (4, 4, 3)), np.ones((target // 4, target // 4, 1)))
  frames, boxes = [], []
  for t in range(num_frames):
    img = rng.normal(128, 20, (size, size, 3)).clip(0, 255)
    x = int(round(start[0] + 3.5 * t))
    y = int(round(start[1] + 2.0 * t + 10 * math.sin(t / 3)))
    img[y:y + target, x:x + target] = tex
    frames.append(img.astype(np.uint8))
    boxes.append([x, y, target, target])
  return np.stack(frames), np.asarray(boxes, np.float64)


# Few settings, so few compilations: SMALL (random shifts, dropout and IoU boxes; train_skipping=2 makes every
# other frame run the 2-iteration filter update, the `lax.switch` branch) and SYNTH (deterministic, 96 px).
SMALL = params.get_settings("cia18", image_sample_size=64, search_area_scale=4.0, box_refinement_iter=2,
                            train_skipping=2)
# 96 px patches, search area 3 x the 32 px target -> 16 image px per score cell; the random IoU-Net is left
# out (0 refinement steps + deterministic = only the unjittered box, so refinement is the identity).
SYNTH = params.get_settings("cia50", image_sample_size=96, search_area_scale=3.0, deterministic=True,
                            target_not_found_threshold=0.0, box_refinement_iter=0)


def _run(model, settings, frames, box, seed=0, init_fn=None, step_fn=None):
  init_fn = init_fn or tracker.init
  step_fn = step_fn or tracker.step
  key = jax.random.key(seed)
  state = init_fn(model, settings, frames[0], jnp.asarray(box, jnp.float32), jax.random.fold_in(key, 0))
  boxes, flags = [np.asarray(box)], []
  for t in range(1, len(frames)):
    state, out = step_fn(model, settings, state, frames[t], jax.random.fold_in(key, t))
    boxes.append(np.asarray(out["box_xywh"]))
    flags.append(int(out["flag"]))
  return np.stack(boxes), flags, state


def test_init_state_layout(model):
  frames, gt = textured_sequence(1, size=96, target=16)
  key = jax.random.key(3)
  state = tracker.init(model, SMALL, frames[0], jnp.asarray(gt[0], jnp.float32), key)
  assert state.filter.shape == (4, 4, 16) and state.memory.features.shape == (50, 4, 4, 16)
  np.testing.assert_allclose(np.asarray(state.memory.weights[:15]), 1 / 15, rtol=1e-6)
  assert int(state.memory.num_stored) == 15 and int(state.frame_num) == 1
  # Sample boxes = identity box + (dx, dy) of each transform; dropout copies reuse the identity box.
  shifts = np.asarray(augment.init_shifts(SMALL, jax.random.split(key)[0]))
  boxes = np.asarray(state.memory.boxes_xywh)
  np.testing.assert_allclose(boxes[1:13, :2] - boxes[0, :2], shifts[1:, ::-1], atol=1e-4)
  np.testing.assert_allclose(boxes[13:15], boxes[[0, 0]])
  # Identity box: target (16 px) at the centre of the 64 px patch at scale sqrt(16*16*16)/64 = 1.
  np.testing.assert_allclose(float(state.target_scale), 1.0, rtol=1e-6)
  pos = gt[0, 1::-1] + (gt[0, :1:-1] - 1) / 2
  np.testing.assert_allclose(boxes[0], [*(31.5 - 7.5 + pos[::-1] - np.round(pos[::-1])), 16, 16], atol=1e-4)


def test_step_jit_matches_eager(model):
  """Four frames with random IoU boxes and refinement: jitted `step` and `step` under `disable_jit` give the
  same boxes (from the same jitted `init` state).

  With SMALL's train_skipping=2, frame 3 runs the 2-iteration filter update as well (frames 1-2: memory only).
  """
  settings = SMALL
  frames, gt = textured_sequence(4, size=96, target=16)
  state0 = tracker.init(model, settings, frames[0], jnp.asarray(gt[0], jnp.float32), jax.random.key(0))

  def run():
    st, boxes, flags = state0, [], []
    for t in range(1, len(frames)):
      st, out = tracker.step(model, settings, st, frames[t], jax.random.key(t))
      boxes.append(np.asarray(out["box_xywh"]))
      flags.append(int(out["flag"]))
    return np.stack(boxes), flags, st

  jit_boxes, jit_flags, jit_state = run()
  with jax.disable_jit():
    eager_boxes, eager_flags, eager_state = run()
  assert jit_flags == eager_flags
  np.testing.assert_allclose(jit_boxes, eager_boxes, rtol=1e-4, atol=2e-3)
  np.testing.assert_allclose(np.asarray(jit_state.filter), np.asarray(eager_state.filter), rtol=1e-3, atol=1e-4)
  assert int(jit_state.memory.num_stored) == int(eager_state.memory.num_stored)


def test_filter_update_runs_the_frames_iteration_count(model):
  """The per-frame filter update (one traced count, no `lax.switch`) = the frame's count of separate
  single-iteration optimizer calls on the memory after the write: 0 (memory only), 1 (hard negative) or 2
  (every train_skipping-th frame), by the rule of design.md §5.5 step 4."""
  settings = dataclasses.replace(SMALL, hard_sample_threshold=0.62)  # max scores 0.59-0.74: some hard negatives
  frames, gt = textured_sequence(7, size=96, target=16)
  state = tracker.init(model, settings, frames[0], jnp.asarray(gt[0], jnp.float32), jax.random.key(0))
  one_iter = jax.jit(lambda f, m: model.net.apply(model.variables, f[None], m.features[:, None],
                                                  m.boxes_xywh[:, None], m.weights, 1,
                                                  method=CIANet.optimize_filter)[0][0])
  counts = []
  for t in range(1, len(frames)):
    new, out = tracker.step(model, settings, state, frames[t], jax.random.key(t))
    flag, frame_num = int(out["flag"]), int(new.frame_num)
    n = {tracker.FLAG_HARD_NEGATIVE: settings.net_opt_hn_iter,
         tracker.FLAG_NORMAL: settings.net_opt_update_iter if (frame_num - 1) % settings.train_skipping == 0 else 0
         }.get(flag, 0)
    expected = state.filter
    for _ in range(n):
      expected = one_iter(expected, new.memory)
    np.testing.assert_allclose(np.asarray(new.filter), np.asarray(expected), rtol=1e-5, atol=1e-6)
    if n == 0:
      np.testing.assert_array_equal(np.asarray(new.filter), np.asarray(state.filter))
    counts.append(n)
    state = new
  assert {0, 1, 2} <= set(counts), counts  # every count was exercised


def test_float64_run_under_x64(model):
  """`jax_enable_x64` + float64 parameters: the whole tracker state is float64 (what the float64 parity runs
  of scripts/compare_pytorch.py rely on) and the boxes agree with the float32 run to float32 noise."""
  settings = SYNTH
  frames, gt = textured_sequence(4, size=96, target=16)
  boxes32, _, _ = _run(model, settings, frames, gt[0])
  with jax.enable_x64(True):
    variables = jax.tree.map(lambda a: np.asarray(a, np.float64) if np.issubdtype(a.dtype, np.floating) else a,
                             model.variables)
    model64 = tracker.TrackingModel(net=model.net, variables=variables)
    state = tracker.init(model64, settings, frames[0], np.asarray(gt[0], np.float64), jax.random.key(0))
    boxes64 = [gt[0]]
    for t in range(1, len(frames)):
      state, out = tracker.step(model64, settings, state, frames[t], jax.random.key(t))
      assert out["box_xywh"].dtype == jnp.float64 and out["max_score"].dtype == jnp.float64
      boxes64.append(np.asarray(out["box_xywh"]))
    floats = [leaf for leaf in jax.tree.leaves(state) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert floats and all(leaf.dtype == jnp.float64 for leaf in floats), {leaf.dtype for leaf in floats}
  np.testing.assert_allclose(np.stack(boxes64), boxes32, rtol=0, atol=1e-2)


@pytest.mark.parametrize("form", ["sequential", "vmap"])
def test_vmap_over_sequences_matches_sequential_runs(model, form):
  """Three different sequences of one image size, batched with vmap = three separate runs (the runner), for
  both forms of the batched filter update, with the sequences at different points of the update cycle (as
  lanes that started at different times), so their iteration counts differ."""
  settings = SMALL.replace(batched_filter_update=form)
  seqs = [textured_sequence(4, size=96, target=16, seed=s, start=(20.0 + 8 * s, 25.0 + 5 * s)) for s in range(3)]
  frames = np.stack([f for f, _ in seqs])  # [3, T, H, W, 3]
  boxes0 = np.stack([g[0] for _, g in seqs]).astype(np.float32)
  keys = [jax.random.key(10 + s) for s in range(3)]
  vinit = jax.jit(jax.vmap(lambda m, im, b, k: tracker.init_impl(m, settings, im, b, k), in_axes=(None, 0, 0, 0)))
  vstep = jax.jit(jax.vmap(lambda m, st, im, k: tracker.step_impl(m, settings, st, im, k), in_axes=(None, 0, 0, 0)))
  fold = lambda t: jnp.stack([jax.random.fold_in(k, t) for k in keys])  # noqa: E731
  cycle = np.array([0, 1, 0], np.int32)  # frame-number offsets: train_skipping=2 -> 2 or 0 iterations
  state = vinit(model, jnp.asarray(frames[:, 0]), jnp.asarray(boxes0), fold(0))
  state = state.replace(frame_num=state.frame_num + cycle)
  batched, counts = [boxes0], []
  for t in range(1, frames.shape[1]):
    frame_num = np.asarray(state.frame_num) + 1
    state, out = vstep(model, state, jnp.asarray(frames[:, t]), fold(t))
    batched.append(np.asarray(out["box_xywh"]))
    flag = np.asarray(out["flag"])  # §5.5 step 4's iteration count
    count = np.where(flag == tracker.FLAG_HARD_NEGATIVE, 1, np.where((frame_num - 1) % 2 == 0, 2, 0))
    counts.append(np.where((flag == tracker.FLAG_NORMAL) | (flag == tracker.FLAG_HARD_NEGATIVE), count, 0))
  batched = np.stack(batched, axis=1)  # [3, T, 4]
  assert any(len(set(c.tolist())) > 1 for c in counts), counts
  for s in range(3):
    key = keys[s]
    st = tracker.init(model, settings, frames[s, 0], jnp.asarray(boxes0[s]), jax.random.fold_in(key, 0))
    st = st.replace(frame_num=st.frame_num + cycle[s])
    seq_boxes = [boxes0[s]]
    for t in range(1, frames.shape[1]):
      st, out = tracker.step(model, settings, st, frames[s, t], jax.random.fold_in(key, t))
      seq_boxes.append(np.asarray(out["box_xywh"]))
    np.testing.assert_allclose(batched[s], np.stack(seq_boxes), rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(np.asarray(state.filter[s]), np.asarray(st.filter), rtol=1e-4, atol=1e-5)
  assert not np.allclose(batched[0], batched[1])  # really different sequences


def test_follows_a_synthetic_target(model):
  """Random weights still localise: the filter is fit online to the template's features.

  Settings SYNTH: 16 image px per score cell, no IoU-Net. A peak off by half a cell in both axes still gives
  IoU 0.39, so a tracker that localises gets a mean IoU around 0.4-0.9; one that stays at the first box
  scores 0.08 on this trajectory.
  """
  settings = SYNTH
  frames, gt = textured_sequence(20)
  boxes, flags, _ = _run(model, settings, frames, gt[0])
  iou = np.asarray(iou_xywh(boxes[1:], gt[1:]))
  static = np.asarray(iou_xywh(np.broadcast_to(gt[0], gt[1:].shape), gt[1:]))
  assert static.mean() < 0.15
  assert iou.mean() > 0.45, iou.round(2)
  assert iou.min() > 0.2, iou.round(2)  # never lost
  assert all(f != tracker.FLAG_NOT_FOUND for f in flags)
  # Deterministic: a second run is identical.
  boxes2, _, _ = _run(model, settings, frames, gt[0], seed=123)
  np.testing.assert_array_equal(boxes, boxes2)


def test_long_run_keeps_state_shapes_and_compiles_once(model):
  """2000 steps inside `lax.scan` (carry type fixed by construction; values finite) + a Python loop that
  never recompiles `step`."""
  settings = SMALL
  frames, gt = textured_sequence(8, size=96, target=16)
  state0 = tracker.init(model, settings, frames[0], jnp.asarray(gt[0], jnp.float32), jax.random.key(0))
  images = jnp.asarray(frames[1:])

  @jax.jit
  def run(state):
    def body(st, i):
      st, out = tracker.step_impl(model, settings, st, images[i % images.shape[0]], jax.random.fold_in(
          jax.random.key(1), i))
      return st, (out["box_xywh"], out["flag"])
    return jax.lax.scan(body, state, jnp.arange(2000))

  state, (boxes, flags) = run(state0)
  leaves0, tree0 = jax.tree.flatten(state0)
  leaves, tree = jax.tree.flatten(state)
  assert tree == tree0
  for a, b in zip(leaves, leaves0):
    assert a.shape == b.shape and a.dtype == b.dtype and a.nbytes == b.nbytes
  assert all(bool(jnp.all(jnp.isfinite(a))) for a in leaves if jnp.issubdtype(a.dtype, jnp.floating))
  assert np.all(np.isfinite(np.asarray(boxes)))
  assert int(state.frame_num) == 2001
  learned = int(np.sum(np.isin(np.asarray(flags), [tracker.FLAG_NORMAL, tracker.FLAG_HARD_NEGATIVE])))
  assert int(state.memory.num_stored) == 15 + learned
  w = np.asarray(state.memory.weights)
  assert np.all(w > 0) and abs(w.sum() - 1) < 0.01  # memory full, weights ~normalised

  # A Python loop over the jitted step (the runner's way) compiles once for all frames.
  frames, gt = textured_sequence(12, size=96, target=16)
  st = tracker.init(model, SMALL, frames[0], jnp.asarray(gt[0], jnp.float32), jax.random.key(0))
  st, _ = tracker.step(model, SMALL, st, frames[1], jax.random.key(1))
  size = tracker.step._cache_size()
  for t in range(2, 12):
    st, _ = tracker.step(model, SMALL, st, frames[t], jax.random.key(t))
  assert tracker.step._cache_size() == size


# ------------------------------------------------------------------------------------------------
# Localisation (design.md §5.5 a-f) against a NumPy transcription.

def reference_localize(scores, s, pos, target_sz, sample_pos, sample_scale, st):
  g = np.array(scores.shape, np.float64)
  out_sz, center = g - 1, (g - 1) / 2
  step = (s / out_sz) * sample_scale
  d1 = np.array(np.unravel_index(np.argmax(scores), scores.shape), np.float64)
  m1 = scores.max()
  t1 = (d1 - center) * step
  if m1 < st.target_not_found_threshold:
    return t1, "not_found"
  nh = st.target_neighborhood_scale * (target_sz / sample_scale) * (out_sz / s)
  top, bottom = max(round(d1[0] - nh[0] / 2), 0), min(round(d1[0] + nh[0] / 2 + 1), scores.shape[0])
  left, right = max(round(d1[1] - nh[1] / 2), 0), min(round(d1[1] + nh[1] / 2 + 1), scores.shape[1])
  masked = scores.copy()
  masked[top:bottom, left:right] = 0
  d2 = np.array(np.unravel_index(np.argmax(masked), scores.shape), np.float64)
  m2 = masked.max()
  t2 = (d2 - center) * step
  prev = (pos - sample_pos) / step
  if m2 > st.distractor_threshold * m1:
    n1, n2 = np.linalg.norm(d1 - center - prev), np.linalg.norm(d2 - center - prev)
    thr = st.displacement_scale * math.sqrt(g[0] * g[1]) / 2
    if n2 > thr and n1 < thr:
      return t1, "hard_negative"
    if n2 < thr and n1 > thr:
      return t2, "hard_negative"
    return t1, "uncertain"
  if m2 > st.hard_negative_threshold * m1 and m2 > st.target_not_found_threshold:
    return t1, "hard_negative"
  return t1, "normal"


def _peaks(g, peaks, rng):
  s = rng.uniform(-0.05, 0.05, (g, g))
  for (y, x), v in peaks:
    s[y, x] = v
  return s


CASES = ["normal", "not_found", "far_distractor", "near_distractor_prev_far", "both_far", "weak_second", "random"]


@pytest.mark.parametrize("case", CASES)
def test_localize_matches_reference(case):
  rng = np.random.default_rng(CASES.index(case))
  st = params.PRESETS["cia18"]
  g, s = 23, 352
  pos, sample_pos, scale = np.array([200.0, 300.0]), np.array([204.0, 290.0]), 1.3
  target_sz = np.array([60.0, 40.0])
  peaks = {
      "normal": [((11, 12), 0.9)],
      "not_found": [((11, 12), 0.2)],
      "far_distractor": [((11, 11), 0.9), ((2, 20), 0.85)],          # prev near peak 1 -> hard negative, t1
      "near_distractor_prev_far": [((1, 1), 0.9), ((11, 11), 0.8)],  # peak 2 near prev -> hard negative, t2
      "both_far": [((1, 1), 0.9), ((21, 21), 0.8)],
      "weak_second": [((11, 11), 0.9), ((3, 3), 0.6)],
      "random": [],
  }[case]
  scores = _peaks(g, peaks, rng) if case != "random" else rng.uniform(0, 1, (g, g))
  ref_t, ref_flag = reference_localize(scores, s, pos, target_sz, sample_pos, scale, st)
  t, flag = jax.jit(lambda sc: tracker.localize(sc, st, jnp.asarray(pos, jnp.float32), jnp.asarray(target_sz),
                                                jnp.asarray(sample_pos, jnp.float32), jnp.float32(scale)))(
                                                    jnp.asarray(scores, jnp.float32))
  assert tracker.FLAG_NAMES[int(flag)] == ref_flag
  np.testing.assert_allclose(np.asarray(t), ref_t, rtol=1e-5, atol=1e-4)
  expected = {"normal": "normal", "not_found": "not_found", "far_distractor": "hard_negative",
              "near_distractor_prev_far": "hard_negative", "both_far": "uncertain", "weak_second": "hard_negative"}
  if case in expected:
    assert ref_flag == expected[case]


def test_tracker_adapter(model):
  """got10k-style adapter = the functional API."""
  settings = SYNTH
  frames, gt = textured_sequence(3)
  trk = tracker.Tracker(model, settings, seed=0)
  with pytest.raises(ValueError, match="before Tracker.init"):
    trk.update(frames[1])
  with pytest.raises(ValueError, match="w, h > 0"):
    trk.init(frames[0], [10, 10, 0, 5])
  with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
    trk.init(frames[0][..., 0], gt[0])
  trk.init(frames[0], gt[0])
  box = trk.update(frames[1])
  assert box.shape == (4,) and np.all(np.isfinite(box))
  ref, _, _ = _run(model, settings, frames, gt[0])
  np.testing.assert_allclose(box, ref[1], rtol=1e-5, atol=1e-4)
  assert trk.is_deterministic
  np.testing.assert_allclose(tracker.Tracker(model, settings, seed=5).track(list(frames), gt[0]), ref,
                             rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# IoU-Net refinement (design.md §5.6).

_IOU_CACHE: dict = {}


def _iou_arrays(model):
  """Jitted: layer2/layer3 of a random 64 px patch, modulation of one box, test-branch IoU features."""
  def f(m):
    patch = jnp.asarray(np.random.default_rng(5).uniform(0, 255, (1, 64, 64, 3)), jnp.float32)
    layer2, layer3, _ = tracker.extract_features(m, patch)
    apply = lambda name, *a: m.net.apply(m.variables, *a, method=getattr(CIANet, name))  # noqa: E731
    mod3, mod4 = apply("iou_modulation", layer2, layer3, jnp.asarray([[20.0, 22.0, 18.0, 14.0]]))
    return (layer2, layer3, mod3, mod4) + tuple(apply("iou_features", layer2, layer3))
  if id(model) not in _IOU_CACHE:
    _IOU_CACHE[id(model)] = jax.jit(f)(model)
  return _IOU_CACHE[id(model)]


def _iou_inputs(model):
  layer2, layer3, mod3, mod4, c3t, c4t = _iou_arrays(model)
  apply = lambda name, *a: model.net.apply(model.variables, *a, method=getattr(CIANet, name))  # noqa: E731
  predict = lambda b: apply("predict_iou", mod3, mod4, c3t, c4t, b[None])[0]  # noqa: E731
  return layer2, layer3, mod3[0], mod4[0], c3t, c4t, predict


@pytest.mark.parametrize("space", ["default", "relative"])
def test_refine_boxes_follow_the_update_rule(model, space):
  settings = params.get_settings("cia18" if space == "default" else "cia50", image_sample_size=64,
                                 box_refinement_iter=3, box_refinement_step_length=0.5 if space == "default" else 0.1,
                                 box_refinement_step_decay=0.8)
  _, _, mod3, mod4, c3t, c4t, predict = _iou_inputs(model)
  boxes = jnp.asarray([[20.0, 22.0, 18.0, 14.0], [18.0, 25.0, 22.0, 12.0], [25.0, 20.0, 12.0, 16.0]])
  out, scores, inside = jax.jit(lambda *a: tracker.refine_boxes(model, settings, *a))(mod3, mod4, c3t, c4t, boxes)
  assert bool(inside)  # no window: always
  # Spec 5.6 step 3 written out: gradient of the summed predictions, step decayed every iteration.
  grad = jax.jit(jax.grad(lambda b: jnp.sum(predict(b))))
  predict = jax.jit(predict)
  b, step, last = np.asarray(boxes, np.float64), settings.box_refinement_step_length, None
  sz_norm = b[:1, 2:].copy()
  for _ in range(settings.box_refinement_iter):
    last = np.asarray(predict(jnp.asarray(b, jnp.float32)))
    g = np.asarray(grad(jnp.asarray(b, jnp.float32)), np.float64)
    if space == "default":
      b = b + step * g * np.concatenate([b[:, 2:], b[:, 2:]], axis=1)
    else:  # r = (cx / w0, cy / h0, log w, log h); dr = J^T g with J = d rect / d r.
      r = np.concatenate([(b[:, :2] + b[:, 2:] / 2) / sz_norm, np.log(b[:, 2:])], axis=1)
      sz = b[:, 2:]
      g_r = np.concatenate([g[:, :2] * sz_norm, (g[:, 2:] - g[:, :2] / 2) * sz], axis=1)
      r = r + step * g_r
      sz = np.exp(r[:, 2:])
      b = np.concatenate([r[:, :2] * sz_norm - sz / 2, sz], axis=1)
    step *= settings.box_refinement_step_decay
  assert not np.allclose(b, np.asarray(boxes), atol=1e-3)  # the boxes did move
  np.testing.assert_allclose(np.asarray(out), b, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(np.asarray(scores), last, rtol=1e-4, atol=1e-5)


def test_refine_target_filters_aspect_and_averages_top_k(model, monkeypatch):
  layer2, layer3, mod3, mod4, *_ = _iou_inputs(model)
  settings = SYNTH  # (its jitted init is shared with other tests)
  frames, gt = textured_sequence(1)
  state = tracker.init(model, settings, frames[0], jnp.asarray(gt[0], jnp.float32), jax.random.key(0))
  cand = np.array([[10, 10, 70, 10],    # aspect 7: dropped although best
                   [10, 10, 20, 20], [12, 14, 16, 18], [8, 9, 10, 30], [0, 0, 5, 5]], np.float32)
  iou = np.array([0.99, 0.9, 0.8, 0.7, 0.1], np.float32)
  fake = lambda *a: (jnp.asarray(cand), jnp.asarray(iou))  # noqa: E731
  monkeypatch.setattr(tracker, "_refine", fake)
  pos, sz, spos, scale = jnp.asarray([40.0, 50.0]), jnp.asarray([16.0, 16.0]), jnp.asarray([41.0, 48.0]), 1.25
  ref = tracker.refine_target(model, settings, state, layer2, layer3, pos, sz, spos, jnp.float32(scale), None)
  pred = cand[1:4].mean(0)
  center = (pred[:2] + pred[2:] / 2)[::-1]
  assert bool(ref["ok"])
  np.testing.assert_allclose(np.asarray(ref["pos_yx"]), (center - 47.5) * scale + np.asarray(spos), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(ref["target_sz_yx"]), pred[2:][::-1] * scale, rtol=1e-5)
  base = np.asarray(state.base_target_sz_yx)
  np.testing.assert_allclose(float(ref["target_scale"]), np.sqrt(np.prod(pred[2:] * scale) / np.prod(base)), rtol=1e-5)
  cand[:, 2] = 7.0 * cand[:, 3]  # every aspect ratio out of (1/6, 6): no change
  ref = tracker.refine_target(model, settings, state, layer2, layer3, pos, sz, spos, jnp.float32(scale), None)
  assert not bool(ref["ok"])
