"""KeepTrack's association network (keeptrack.md §2.2, 3, 6): padding invariance, heads, names, shapes, init."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.tcm import (CandidateSet, MultiHeadedAttention, TargetCandidateMatchingNet,
                                masked_softmax, normalize_keypoints, reference_key)

DIM, HEADS, KENC, C3, F = 16, 4, (4, 8), 12, 5  # tiny widths; the grid is (F + 1) x (F + 1)
IMAGE_HW = (360.0, 640.0)


def tiny_net(**kwargs):
  return TargetCandidateMatchingNet(descriptor_dim=DIM, keypoint_encoder=KENC, num_heads=HEADS, **kwargs)


def random_frame(rng, k):
  """layer3 [1, F, F, C3], cells [1, k, 2], and a full CandidateSet of k real candidates."""
  layer3 = rng.normal(size=(1, F, F, C3)).astype(np.float32)
  cells = rng.integers(0, F + 1, size=(1, k, 2)).astype(np.int32)
  coords = (rng.uniform(0, 1, size=(1, k, 2)) * np.array(IMAGE_HW)).astype(np.float32)
  scores = np.sort(rng.uniform(0.05, 1.0, size=(1, k)))[:, ::-1].astype(np.float32)
  return layer3, cells, CandidateSet(coords, scores, np.ones((1, k), bool), np.array([IMAGE_HW], np.float32))


def pad_frame(frame, cap, slots):
  """The first len(slots) candidates of `frame` in `slots` of a `cap` buffer; the rest is NaN / out-of-range junk."""
  layer3, cells, cs = frame
  out_cells = np.full((1, cap, 2), 99, np.int32)
  out_coords = np.full((1, cap, 2), np.nan, np.float32)
  out_scores = np.full((1, cap), np.nan, np.float32)
  valid = np.zeros((1, cap), bool)
  k = len(slots)  # the first k candidates of the frame
  out_cells[0, slots], out_coords[0, slots], out_scores[0, slots], valid[0, slots] = (
      cells[0, :k], cs.image_coords[0, :k], cs.scores[0, :k], True)
  return layer3, out_cells, CandidateSet(out_coords, out_scores, valid, cs.image_hw)


def randomised_variables(net, rng, frame0, frame1):
  """Initialised variables with random BN statistics (eval-mode BN matters) and a negative dustbin score (so that
  some pairs match)."""
  variables = jax.jit(net.init)(jax.random.key(0), *frame0, *frame1)
  def stat(path, v):  # means near 0 so that the ReLUs stay active, variances around 1
    value = rng.normal(0.0, 0.1, v.shape) if path[-1].key == "mean" else rng.uniform(0.5, 1.5, v.shape)
    return jnp.asarray(value, v.dtype)

  stats = jax.tree_util.tree_map_with_path(stat, variables["batch_stats"])
  params = dict(variables["params"])
  params["matcher"] = {**params["matcher"], "bin_score": jnp.float32(-2.0)}
  return {"params": params, "batch_stats": stats}


@functools.partial(jax.jit, static_argnums=0)
def apply(net, variables, frame0, frame1):
  return net.apply(variables, *frame0, *frame1)


def test_padded_inputs_give_the_unpadded_output_for_the_real_candidates():
  rng = np.random.default_rng(0)
  net = tiny_net()
  frame0, frame1 = random_frame(rng, 3), random_frame(rng, 4)
  variables = randomised_variables(net, rng, frame0, frame1)
  ref = apply(net, variables, frame0, frame1)
  assert np.all(np.isfinite(ref.log_assignment))
  assert (np.asarray(ref.matches1) >= 0).sum() >= 2  # the readout comparison below is not vacuous
  slots0, slots1 = np.array([0, 2, 5]), np.array([1, 3, 4, 6])  # not a prefix: masks, not positions, count
  out = apply(net, variables, pad_frame(frame0, 6, slots0), pad_frame(frame1, 8, slots1))
  assert out.log_assignment.shape == (1, 7, 9)
  rows, cols = np.r_[slots0, 6], np.r_[slots1, 8]
  np.testing.assert_allclose(out.log_assignment[0][np.ix_(rows, cols)], ref.log_assignment[0], rtol=1e-5,
                             atol=1e-5)
  pad = np.ones((7, 9), bool)
  pad[np.ix_(rows, cols)] = False
  assert np.all(np.asarray(out.log_assignment[0])[pad] == -np.inf)
  to_real1 = {int(s): j for j, s in enumerate(slots1)}
  to_real0 = {int(s): i for i, s in enumerate(slots0)}
  np.testing.assert_array_equal([to_real1.get(int(j), -1) for j in out.matches0[0, slots0]], ref.matches0[0])
  np.testing.assert_array_equal([to_real0.get(int(i), -1) for i in out.matches1[0, slots1]], ref.matches1[0])
  np.testing.assert_allclose(out.match_scores1[0, slots1], ref.match_scores1[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.delete(np.asarray(out.matches1[0]), slots1), -1)
  # The matcher alone, on stored descriptors with NaN in the padded slots (the tracker's path).
  descs = []
  for (layer3, cells, cs), slots, cap in ((frame0, slots0, 6), (frame1, slots1, 8)):
    desc = np.full((1, cap, DIM), np.nan, np.float32)
    desc[0, slots] = net.apply(variables, layer3, cells, cs.valid, method=net.descriptors)[0]
    descs.append(desc)
  (_, _, set0), (_, _, set1) = pad_frame(frame0, 6, slots0), pad_frame(frame1, 8, slots1)
  matched = jax.jit(functools.partial(net.apply, method=net.match))(variables, descs[0], set0, descs[1], set1)
  np.testing.assert_allclose(matched.log_assignment, out.log_assignment, rtol=1e-5, atol=1e-5)


def test_an_empty_set_gives_no_matches_and_finite_outputs():
  rng = np.random.default_rng(1)
  net = tiny_net()
  frame0, frame1 = random_frame(rng, 3), random_frame(rng, 4)
  variables = randomised_variables(net, rng, frame0, frame1)
  empty0 = pad_frame(frame0, 3, np.array([], int))
  out = apply(net, variables, empty0, frame1)
  np.testing.assert_array_equal(out.matches0, -1)
  np.testing.assert_array_equal(out.matches1, -1)
  assert not np.asarray(out.match_scores1).any()
  la = np.asarray(out.log_assignment[0])
  np.testing.assert_array_equal(la[-1, :-1], 0.0)  # every current candidate goes to the dustbin
  assert np.all(la[:-1] == -np.inf) and la[-1, -1] == -np.inf


def np_attention(x, src, valid, p, heads, interleaved=True):
  """Spec 3.4 in float64: head h owns channels h, h + heads, ... (interleaved) or a contiguous block."""
  def dense(a, name):
    return a @ np.asarray(p[name]["kernel"], np.float64) + np.asarray(p[name]["bias"], np.float64)

  q, k, v = dense(x, "proj_0"), dense(src[valid], "proj_1"), dense(src[valid], "proj_2")
  d = x.shape[-1]
  message = np.zeros_like(q)
  for h in range(heads):
    idx = np.arange(h, d, heads) if interleaved else np.arange(h * d // heads, (h + 1) * d // heads)
    logits = q[:, idx] @ k[:, idx].T / math.sqrt(d // heads)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    message[:, idx] = (w / w.sum(-1, keepdims=True)) @ v[:, idx]
  return dense(message, "merge")


def test_interleaved_head_split_matches_numpy_attention():
  rng = np.random.default_rng(2)
  mha = MultiHeadedAttention(HEADS)
  x, src = rng.normal(size=(1, 5, DIM)), rng.normal(size=(1, 7, DIM))
  valid = np.array([[True, False, True, True, False, True, True]])
  params = jax.jit(mha.init)(jax.random.key(1), x, src, valid)["params"]
  params = jax.tree.map(lambda v: jnp.asarray(rng.normal(size=v.shape), jnp.float32), params)  # distinct q/k/v
  out = np.asarray(jax.jit(mha.apply)({"params": params}, x, src, valid), np.float64)[0]
  expected = np_attention(x[0], src[0], valid[0], params, HEADS)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  contiguous = np_attention(x[0], src[0], valid[0], params, HEADS, interleaved=False)
  assert np.abs(contiguous - expected).max() > 1e-2  # the test can tell the two splits apart
  # No valid source: zero message, so the output is the merge bias.
  none = jax.jit(mha.apply)({"params": params}, x, src, np.zeros_like(valid))
  np.testing.assert_allclose(none[0], np.broadcast_to(params["merge"]["bias"], (5, DIM)), atol=1e-6)


def test_masked_softmax_equals_softmax_on_the_valid_entries():
  logits = jnp.array([[1.0, 50.0, -3.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
  mask = jnp.array([True, False, True, True])
  w = masked_softmax(logits, mask)
  np.testing.assert_allclose(w[:, mask], jax.nn.softmax(logits[:, mask], axis=-1), rtol=1e-6)
  assert np.all(w[:, 1] == 0)
  assert not np.asarray(masked_softmax(logits, jnp.zeros(4, bool))).any()


def expected_reference_shapes():
  """Spec 6: torch key -> our shape (Conv1d [O, I, 1] -> (I, O); Conv2d [O, I, 4, 4] -> (4, 4, I, O))."""
  keys = {"descriptor_extractor.conv.weight": (4, 4, 1024, 256), "descriptor_extractor.conv.bias": (256,),
          "matcher.bin_score": (), "matcher.final_proj.weight": (256, 256), "matcher.final_proj.bias": (256,)}
  widths = [3, 32, 64, 128, 256, 256]
  for i in range(5):
    keys[f"matcher.kenc.encoder.{3 * i}.weight"] = (widths[i], widths[i + 1])
    keys[f"matcher.kenc.encoder.{3 * i}.bias"] = (widths[i + 1],)
    if i < 4:
      for leaf in ("weight", "bias", "running_mean", "running_var"):
        keys[f"matcher.kenc.encoder.{3 * i + 1}.{leaf}"] = (widths[i + 1],)
  for layer in range(4):
    base = f"matcher.gnn.layers.{layer}.update"
    for name in ("attn.proj.0", "attn.proj.1", "attn.proj.2", "attn.merge"):
      keys[f"{base}.{name}.weight"], keys[f"{base}.{name}.bias"] = (256, 256), (256,)
    keys[f"{base}.mlp.0.weight"], keys[f"{base}.mlp.0.bias"] = (512, 512), (512,)
    for leaf in ("weight", "bias", "running_mean", "running_var"):
      keys[f"{base}.mlp.1.{leaf}"] = (512,)
    keys[f"{base}.mlp.3.weight"], keys[f"{base}.mlp.3.bias"] = (512, 256), (256,)
  return keys


def test_full_size_shapes_and_reference_names_via_eval_shape():
  net = TargetCandidateMatchingNet()  # the paper's widths
  b, m, n = 2, 8, 9

  def frame(k):
    return (jax.ShapeDtypeStruct((b, 30, 30, 1024), jnp.float32), jax.ShapeDtypeStruct((b, k, 2), jnp.int32),
            CandidateSet(jax.ShapeDtypeStruct((b, k, 2), jnp.float32), jax.ShapeDtypeStruct((b, k), jnp.float32),
                         jax.ShapeDtypeStruct((b, k), bool), jax.ShapeDtypeStruct((b, 2), jnp.float32)))
  variables = jax.eval_shape(net.init, jax.random.key(0), *frame(m), *frame(n))
  out = jax.eval_shape(net.apply, variables, *frame(m), *frame(n))
  assert out.log_assignment.shape == (b, m + 1, n + 1) and out.bin_score.shape == ()
  assert out.matches0.shape == (b, m) and out.matches0.dtype == jnp.int32 and out.match_scores1.shape == (b, n)
  descriptor_map = jax.eval_shape(functools.partial(net.apply, method=lambda mdl, x: mdl.descriptor_extractor(x)),
                                  variables, frame(m)[0])
  assert descriptor_map.shape == (b, 31, 31, 256)  # (F + 1)^2: the DiMP score-map grid
  ours = {reference_key([k.key for k in path[1:]]): leaf.shape
          for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]}
  assert ours == expected_reference_shapes()
  matcher = sum(math.prod(s) for k, s in ours.items() if k.startswith("matcher.") and "running" not in k)
  assert matcher == 2_808_833  # keeptrack.md §5.5: about 2.81 M
  assert math.prod(ours["descriptor_extractor.conv.weight"]) + 256 == 4_194_560  # about 4.19 M


def test_initialisation_follows_the_reference():
  rng = np.random.default_rng(3)
  net = tiny_net()
  frame0, frame1 = random_frame(rng, 2), random_frame(rng, 3)
  params = jax.jit(net.init)(jax.random.key(4), *frame0, *frame1)["params"]["matcher"]
  assert float(params["bin_score"]) == 0.0
  assert not np.asarray(params["kenc"]["encoder_6"]["bias"]).any()  # last keypoint-encoder conv
  kernel = np.asarray(params["final_proj"]["kernel"])
  np.testing.assert_allclose(kernel.T @ kernel, np.eye(DIM), atol=1e-5)
  assert not np.asarray(params["final_proj"]["bias"]).any()
  attn_kernels = []
  for layer in range(4):
    update = params["gnn"][f"layers_{layer}"]["update"]
    assert not np.asarray(update["mlp_3"]["bias"]).any()
    attn = update["attn"]
    for name in ("proj_0", "proj_1", "proj_2"):  # identical copies of `merge`
      for leaf in ("kernel", "bias"):
        np.testing.assert_array_equal(attn[name][leaf], attn["merge"][leaf])
    bound = 1 / math.sqrt(DIM)  # PyTorch's default Conv1d init
    assert np.abs(attn["merge"]["kernel"]).max() <= bound and np.abs(attn["merge"]["bias"]).max() <= bound
    attn_kernels.append(np.asarray(attn["merge"]["kernel"]))
  assert not np.array_equal(attn_kernels[0], attn_kernels[1])  # but every layer draws its own


def test_keypoint_normalisation_conventions():
  kpts = np.array([[[100.0, 300.0], [0.0, 0.0]]])
  hw = np.array([[360.0, 640.0]])
  scale = 0.7 * 640
  tracker = normalize_keypoints(kpts, hw, "tracker")  # the released tracker: y - W/2, x - H/2 (keeptrack.md §7.1)
  np.testing.assert_allclose(tracker[0], (kpts[0] - [320.0, 180.0]) / scale, rtol=1e-6)
  training = normalize_keypoints(kpts, hw, "training")  # y - H/2, x - W/2
  np.testing.assert_allclose(training[0], (kpts[0] - [180.0, 320.0]) / scale, rtol=1e-6)
  square = np.array([[480.0, 480.0]])
  np.testing.assert_array_equal(normalize_keypoints(kpts, square, "tracker"),
                                normalize_keypoints(kpts, square, "training"))
  with pytest.raises(ValueError, match="center"):
    normalize_keypoints(kpts, hw, "xy")


def test_training_mode_updates_batch_statistics():
  rng = np.random.default_rng(5)
  net = tiny_net(gnn_layers=("self", "cross"))
  frame0, frame1 = random_frame(rng, 3), random_frame(rng, 3)
  variables = jax.jit(net.init)(jax.random.key(0), *frame0, *frame1)
  out, updates = jax.jit(functools.partial(net.apply, use_running_average=False, mutable=["batch_stats"]))(
      variables, *frame0, *frame1)
  assert np.all(np.isfinite(out.log_assignment))
  before = variables["batch_stats"]["matcher"]["kenc"]["encoder_1"]["mean"]
  assert not np.array_equal(updates["batch_stats"]["matcher"]["kenc"]["encoder_1"]["mean"], before)
