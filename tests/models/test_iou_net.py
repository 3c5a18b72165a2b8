"""Tests of the IoU-Net head (`cia_jax.models.iou_net`, design.md §3.1-3.2, 6.2).

Numerics are checked against an independent float64 NumPy forward written from the spec's equations: convs as
sums of shifted matmuls, PyTorch BatchNorm (biased variance to normalise, unbiased for the running
estimate), and Precise RoI Pooling as the *mean of the bilinear interpolant sampled densely* over each bin
(midpoint rule, not the closed-form antiderivative the implementation uses). Compiled tests use full channel
widths on tiny maps (64-px crops: layer2 8x8, layer3 4x4); the full-size shapes are checked with
`jax.eval_shape`.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.iou_net import AtomIoUNet, LinearBlock

_EPS = 1e-5
_NTR, _B, _NTE, _P = 2, 3, 2, 3
_H2, _H3 = 8, 4  # 64-px crop: stride 8 and 16
_CONV_BLOCKS = ("conv3_1r", "conv3_1t", "conv3_2t", "fc3_1r", "conv4_1r", "conv4_1t", "conv4_2t", "fc34_3r",
                "fc34_4r")


# ----------------------------------------------------------------------------- float64 NumPy reference


def _np_conv(x, kernel, bias, pad):
  """x [N, H, W, Ci], kernel [k, k, Ci, Co] (HWIO), zero padding `pad`, stride 1."""
  k = kernel.shape[0]
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = xp.shape[1] - k + 1, xp.shape[2] - k + 1
  out = np.zeros(x.shape[:1] + (ho, wo, kernel.shape[-1]))
  for dy in range(k):
    for dx in range(k):
      out += xp[:, dy:dy + ho, dx:dx + wo, :] @ kernel[dy, dx]
  return out + bias


def _np_bn(x, p, s, train, new_stats, name):
  """torch BatchNorm over all axes but the last; in training records the running-statistics update."""
  if train:
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    n = x.size // x.shape[-1]
    new_stats[name] = {"mean": 0.9 * s["mean"] + 0.1 * mean, "var": 0.9 * s["var"] + 0.1 * var * n / (n - 1)}
  else:
    mean, var = s["mean"], s["var"]
  return (x - mean) / np.sqrt(var + _EPS) * p["scale"] + p["bias"]


def _np_convblock(x, params, stats, name, pad, train, new_stats):
  y = _np_conv(x, params[name]["0"]["kernel"], params[name]["0"]["bias"], pad)
  return np.maximum(_np_bn(y, params[name]["1"], stats[name]["1"], train, new_stats, name), 0.0)


def _hat(t):
  return np.maximum(0.0, 1.0 - np.abs(t))


def _np_bin_weights(start, size, bins, length, samples=4096):
  """[bins, length]: mean over `samples` midpoints of each bin of the hat h(t - i) (dense quadrature)."""
  bin_size = size / bins
  t = start + bin_size * (np.arange(bins)[:, None] + (np.arange(samples) + 0.5) / samples)  # [bins, S]
  return _hat(t[:, :, None] - np.arange(length)).mean(axis=1)


def _np_prroi(feat, box_xyxy, bins, scale):
  """feat [H, W, C]; box (x1, y1, x2, y2) in pixels -> [bins, bins, C] bin means of the interpolant."""
  x1, y1, x2, y2 = np.asarray(box_xyxy, np.float64) * scale
  w, h = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
  if w * h == 0:  # empty bins output 0 (design.md §3.3)
    return np.zeros((bins, bins, feat.shape[-1]))
  wy = _np_bin_weights(y1, h, bins, feat.shape[0])
  wx = _np_bin_weights(x1, w, bins, feat.shape[1])
  return np.einsum("pi,qj,ijc->pqc", wy, wx, feat)


def _np_linear_block(x_nhwc, params, stats, name, train, new_stats):
  flat = np.transpose(x_nhwc, (0, 3, 1, 2)).reshape(x_nhwc.shape[0], -1)  # torch (C, H, W) flatten
  y = flat @ params[name]["linear"]["kernel"] + params[name]["linear"]["bias"]
  return np.maximum(_np_bn(y, params[name]["bn"], stats[name]["bn"], train, new_stats, name), 0.0)


def _np_forward(variables, tr2, tr3, te2, te3, tr_box, props, train):
  """AtomIoUNet training forward (design.md §3.2) in float64. Returns ([Nte, B, P], updated running stats)."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  stats = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["batch_stats"])
  new = {}
  blk = functools.partial(_np_convblock, params=params, stats=stats, train=train, new_stats=new)
  # Reference branch on the first train frame only.
  f2, f3 = tr2[0], tr3[0]
  box_xyxy = np.concatenate([tr_box[0, :, :2], tr_box[0, :, :2] + tr_box[0, :, 2:]], axis=-1)
  c3r = blk(f2, name="conv3_1r", pad=1)
  roi3r = np.stack([_np_prroi(c3r[b], box_xyxy[b], 3, 1 / 8) for b in range(f2.shape[0])])
  fc3r = blk(roi3r, name="fc3_1r", pad=0)
  c4r = blk(f3, name="conv4_1r", pad=1)
  roi4r = np.stack([_np_prroi(c4r[b], box_xyxy[b], 1, 1 / 16) for b in range(f3.shape[0])])
  cat = np.concatenate([fc3r, roi4r], axis=-1)
  mod3 = blk(cat, name="fc34_3r", pad=0)[:, 0, 0]
  mod4 = blk(cat, name="fc34_4r", pad=0)[:, 0, 0]
  # Test branch on all test frames (frame-major batch).
  nte, b = te2.shape[:2]
  c3t = blk(blk(te2.reshape((-1,) + te2.shape[2:]), name="conv3_1t", pad=1), name="conv3_2t", pad=1)
  c4t = blk(blk(te3.reshape((-1,) + te3.shape[2:]), name="conv4_1t", pad=1), name="conv4_2t", pad=1)
  roi3t, roi4t = [], []
  for i in range(nte * b):
    m3, m4 = mod3[i % b], mod4[i % b]
    for box in props.reshape(nte * b, -1, 4)[i]:
      xyxy = np.concatenate([box[:2], box[:2] + box[2:]])
      roi3t.append(_np_prroi(c3t[i] * m3, xyxy, 5, 1 / 8))
      roi4t.append(_np_prroi(c4t[i] * m4, xyxy, 3, 1 / 16))
  lin = functools.partial(_np_linear_block, params=params, stats=stats, train=train, new_stats=new)
  fc34 = np.concatenate([lin(np.stack(roi3t), name="fc3_rt"), lin(np.stack(roi4t), name="fc4_rt")], axis=-1)
  iou = fc34 @ params["iou_predictor"]["kernel"] + params["iou_predictor"]["bias"]
  return iou.reshape(nte, b, -1), new


def test_numpy_prroi_reference_matches_direct_2d_sampling():
  """Self-check of the reference pooling: separable dense weights == 2-D sampling of floor/frac bilinear."""
  rng = np.random.default_rng(0)
  feat = rng.normal(size=(5, 6, 2))
  box = np.array([-3.0, 4.0, 30.0, 37.0])  # pixels at scale 1/8: x in [-0.375, 3.75], y in [0.5, 4.625]
  got = _np_prroi(feat, box, 2, 1 / 8)
  s = 300
  fp = np.pad(feat, ((1, 2), (1, 2), (0, 0)))  # zero outside the map

  def bilinear(y, x):
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    dy, dx = (y - y0)[..., None], (x - x0)[..., None]
    g = lambda i, j: fp[i + 1, j + 1]  # noqa: E731
    return ((1 - dy) * (1 - dx) * g(y0, x0) + (1 - dy) * dx * g(y0, x0 + 1) + dy * (1 - dx) * g(y0 + 1, x0)
            + dy * dx * g(y0 + 1, x0 + 1))

  x1, y1, x2, y2 = box / 8
  for p in range(2):
    for q in range(2):
      ys = y1 + (y2 - y1) / 2 * (p + (np.arange(s) + 0.5) / s)
      xs = x1 + (x2 - x1) / 2 * (q + (np.arange(s) + 0.5) / s)
      yy, xx = np.meshgrid(ys, xs, indexing="ij")
      np.testing.assert_allclose(got[p, q], bilinear(yy, xx).mean(axis=(0, 1)), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- fixtures


def _inputs(seed=0, p=_P):
  rng = np.random.default_rng(seed)
  f = lambda *s: np.abs(rng.normal(size=s)).astype(np.float32)  # noqa: E731  (post-ReLU features)
  tr2, tr3 = f(_NTR, _B, _H2, _H2, 128), f(_NTR, _B, _H3, _H3, 256)
  te2, te3 = f(_NTE, _B, _H2, _H2, 128), f(_NTE, _B, _H3, _H3, 256)
  xy = rng.uniform(4, 30, size=(_NTR, _B, 2))
  tr_box = np.concatenate([xy, rng.uniform(12, 30, size=(_NTR, _B, 2))], -1).astype(np.float32)
  xy = rng.uniform(-6, 40, size=(_NTE, _B, p, 2))
  props = np.concatenate([xy, rng.uniform(6, 34, size=(_NTE, _B, p, 2))], -1).astype(np.float32)
  props[0, 0, 0] = [-10.0, 50.0, 30.0, 30.0]  # partly outside the 64-px crop
  props[1, 2, -1, 2] = 0.0  # zero width: empty bins pool to 0
  return tr2, tr3, te2, te3, tr_box, props


@pytest.fixture(scope="module")
def model_and_vars():
  """R18 widths; BN affine parameters and running statistics randomised so eval mode is not trivial."""
  model = AtomIoUNet()
  tr2, tr3, te2, te3, tr_box, props = _inputs()
  variables = flax.core.unfreeze(jax.jit(functools.partial(model.init, train=False))(
      jax.random.PRNGKey(0), tr2, tr3, te2, te3, tr_box, props))
  rng = np.random.default_rng(1)
  for name in _CONV_BLOCKS + ("fc3_rt", "fc4_rt"):
    bn = "bn" if name.endswith("_rt") else "1"
    c = variables["params"][name][bn]["bias"].shape[0]
    variables["params"][name][bn]["bias"] = jnp.asarray(rng.normal(0.0, 0.2, c), jnp.float32)
    variables["batch_stats"][name][bn]["mean"] = jnp.asarray(rng.normal(0.0, 0.3, c), jnp.float32)
    variables["batch_stats"][name][bn]["var"] = jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32)
  return model, variables


@functools.lru_cache(maxsize=None)
def _jitted(model, train):
  if train:
    return jax.jit(lambda v, *a: model.apply(v, *a, train=True, mutable=["batch_stats"]))
  return jax.jit(lambda v, *a: model.apply(v, *a, train=False))


# ----------------------------------------------------------------------------- shapes and init


def _torch_shapes(cl2, cl3):
  """Spec 6.2 bb_regressor shapes (torch layout) for the parameters."""
  conv = {"conv3_1r": (128, cl2, 3), "conv3_1t": (256, cl2, 3), "conv3_2t": (256, 256, 3),
          "fc3_1r": (256, 128, 3),
          "conv4_1r": (256, cl3, 3), "conv4_1t": (256, cl3, 3), "conv4_2t": (256, 256, 3),
          "fc34_3r": (256, 512, 1), "fc34_4r": (256, 512, 1)}
  shapes = {}
  for name, (o, i, k) in conv.items():
    shapes[f"{name}.0.weight"], shapes[f"{name}.0.bias"] = (o, i, k, k), (o,)
    shapes[f"{name}.1.weight"] = shapes[f"{name}.1.bias"] = (o,)
  for name, fan_in in (("fc3_rt", 6400), ("fc4_rt", 2304)):
    shapes[f"{name}.linear.weight"], shapes[f"{name}.linear.bias"] = (256, fan_in), (256,)
    shapes[f"{name}.bn.weight"] = shapes[f"{name}.bn.bias"] = (256,)
  shapes["iou_predictor.weight"], shapes["iou_predictor.bias"] = (1, 512), (1,)
  return shapes


@pytest.mark.parametrize("input_dim", [(128, 256), (512, 1024)], ids=["r18", "r50"])
def test_full_size_shapes_and_reference_layout(input_dim):
  """288-px crops (layer2 36x36, layer3 18x18) via eval_shape: parameter tree == design.md §6.2, stage outputs."""
  model = AtomIoUNet(input_dim=input_dim)
  ntr, b, nte, p = 3, 4, 3, 8
  sd = jax.ShapeDtypeStruct
  tr2, tr3 = sd((ntr, b, 36, 36, input_dim[0]), jnp.float32), sd((ntr, b, 18, 18, input_dim[1]), jnp.float32)
  te2, te3 = sd((nte, b, 36, 36, input_dim[0]), jnp.float32), sd((nte, b, 18, 18, input_dim[1]), jnp.float32)
  tr_box, props = sd((ntr, b, 4), jnp.float32), sd((nte, b, p, 4), jnp.float32)
  v = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), tr2, tr3, te2, te3,
                     tr_box, props)

  flat = {"/".join(k): x.shape for k, x in flax.traverse_util.flatten_dict(v["params"]).items()}
  got = {}
  for path, shape in flat.items():
    key = path.replace("/", ".").replace("kernel", "weight").replace("scale", "weight")
    # Flax HWIO conv / (in, out) Dense kernels hold the transposed torch weight.
    got[key] = shape[::-1]
  assert got == _torch_shapes(*input_dim)
  stats = flax.traverse_util.flatten_dict(v["batch_stats"])
  assert {k[0] for k in stats} == set(_CONV_BLOCKS) | {"fc3_rt", "fc4_rt"}

  out, _ = jax.eval_shape(lambda v_, *a: model.apply(v_, *a, train=True, mutable=["batch_stats"]),
                          v, tr2, tr3, te2, te3, tr_box, props)
  assert out.shape == (nte, b, p) and out.dtype == jnp.float32

  mods = jax.eval_shape(lambda v_, *a: model.apply(v_, *a, method=AtomIoUNet.get_modulation), v,
                        sd(tr2.shape[1:], jnp.float32), sd(tr3.shape[1:], jnp.float32),
                        sd((b, 4), jnp.float32))
  assert [m.shape for m in mods] == [(b, 256), (b, 256)]
  n = nte * b
  feats = jax.eval_shape(lambda v_, *a: model.apply(v_, *a, method=AtomIoUNet.get_iou_feat),
                         v, sd((n,) + te2.shape[2:], jnp.float32), sd((n,) + te3.shape[2:], jnp.float32))
  assert [f.shape for f in feats] == [(n, 36, 36, 256), (n, 18, 18, 256)]
  mod = sd((n, 256), jnp.float32)
  iou = jax.eval_shape(lambda v_, *a: model.apply(v_, *a, method=AtomIoUNet.predict_iou),
                       v, mod, mod, *feats, sd((n, 128, 4), jnp.float32))
  assert iou.shape == (n, 128)


def test_init_follows_reference(model_and_vars):
  """Spec 3.1: kaiming-normal fan_in kernels, zero biases, BN scale ~ U(0, 1), running stats (0, 1)."""
  model = model_and_vars[0]
  v = jax.jit(functools.partial(model.init, train=False))(jax.random.PRNGKey(3), *_inputs())
  for path, x in flax.traverse_util.flatten_dict(v["params"]).items():
    x = np.asarray(x)
    if path[-1] == "kernel":
      fan_in = int(np.prod(x.shape[:-1]))
      assert abs(x.std() / np.sqrt(2.0 / fan_in) - 1) < (0.3 if x.size < 1000 else 0.05), path
      assert abs(x.mean()) < 4 * np.sqrt(2.0 / fan_in / x.size) + 1e-6, path
    elif path[-1] == "bias":
      np.testing.assert_array_equal(x, 0.0, err_msg=str(path))
    else:
      assert path[-1] == "scale" and x.min() >= 0.0 and x.max() < 1.0 and 0.35 < x.mean() < 0.65, path
  for path, x in flax.traverse_util.flatten_dict(v["batch_stats"]).items():
    np.testing.assert_array_equal(x, 0.0 if path[-1] == "mean" else 1.0, err_msg=str(path))


# ----------------------------------------------------------------------------- numerics


def test_linear_block_flattens_in_torch_chw_order():
  """A torch-layout Linear weight W (out, C*H*W) works unchanged as kernel = W.T on NHWC input."""
  rng = np.random.default_rng(0)
  k, h, w, c, out = 4, 3, 3, 5, 7
  x = rng.normal(size=(k, h, w, c)).astype(np.float32)
  w_torch = rng.normal(size=(out, c * h * w)).astype(np.float32) / np.sqrt(c * h * w)
  b_torch = rng.normal(size=out).astype(np.float32)
  mean, var = rng.normal(size=out), rng.uniform(0.5, 2.0, size=out)
  scale, bias = rng.uniform(size=out), rng.normal(size=out)
  variables = {"params": {"linear": {"kernel": w_torch.T, "bias": b_torch},
                          "bn": {"scale": scale, "bias": bias}},
               "batch_stats": {"bn": {"mean": mean, "var": var}}}
  got = LinearBlock(out).apply(variables, jnp.asarray(x), train=False)

  x_nchw_flat = np.transpose(x, (0, 3, 1, 2)).astype(np.float64).reshape(k, -1)
  lin = x_nchw_flat @ w_torch.T.astype(np.float64) + b_torch
  want = np.maximum((lin - mean) / np.sqrt(var + _EPS) * scale + bias, 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The test discriminates: an NHWC flatten would give a different answer.
  wrong = np.maximum((x.reshape(k, -1) @ w_torch.T + b_torch - mean) / np.sqrt(var + _EPS) * scale + bias, 0)
  assert np.abs(wrong - want).max() > 0.1


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_forward_matches_float64_reference(model_and_vars, train):
  """Whole training forward vs the NumPy float64 reference; in training also the running-statistics update."""
  model, variables = model_and_vars
  inputs = _inputs(seed=2)
  want, want_stats = _np_forward(variables, *[np.asarray(a, np.float64) for a in inputs], train=train)
  if train:
    got, updates = _jitted(model, True)(variables, *inputs)
    got_stats = flax.traverse_util.flatten_dict(updates["batch_stats"])
    assert {k[0] for k in got_stats} == set(want_stats)
    for path, x in got_stats.items():
      np.testing.assert_allclose(x, want_stats[path[0]][path[-1]], rtol=2e-4, atol=2e-5, err_msg=str(path))
  else:
    got = _jitted(model, False)(variables, *inputs)
  assert got.shape == (_NTE, _B, _P)
  # float32 vs float64 through ~6 layers; the scores spread by > 100x the tolerance (a discriminating check).
  assert np.std(want) > 1e-3
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_modulation_uses_first_train_frame_only(model_and_vars):
  model, variables = model_and_vars
  tr2, tr3, te2, te3, tr_box, props = _inputs(seed=4)
  base = _jitted(model, False)(variables, tr2, tr3, te2, te3, tr_box, props)
  tr2b, tr3b, tr_boxb = tr2.copy(), tr3.copy(), tr_box.copy()
  tr2b[1:] *= 3.0
  tr3b[1:] = 0.0
  tr_boxb[1:] += 5.0
  np.testing.assert_array_equal(_jitted(model, False)(variables, tr2b, tr3b, te2, te3, tr_boxb, props), base)
  tr_boxb[0] += 5.0
  assert np.abs(_jitted(model, False)(variables, tr2b, tr3b, te2, te3, tr_boxb, props) - base).max() > 1e-4


def test_stage_methods_compose_to_call(model_and_vars):
  """Tracker path (get_modulation -> get_iou_feat -> predict_iou, frame-major tiling) == __call__."""
  model, variables = model_and_vars
  tr2, tr3, te2, te3, tr_box, props = _inputs(seed=5)

  @jax.jit
  def staged(v):
    mod3, mod4 = model.apply(v, tr2[0], tr3[0], tr_box[0], method=AtomIoUNet.get_modulation)
    c3t, c4t = model.apply(v, te2.reshape((-1,) + te2.shape[2:]), te3.reshape((-1,) + te3.shape[2:]),
                           method=AtomIoUNet.get_iou_feat)
    mod3, mod4 = jnp.tile(mod3, (_NTE, 1)), jnp.tile(mod4, (_NTE, 1))
    return model.apply(v, mod3, mod4, c3t, c4t, props.reshape(_NTE * _B, _P, 4),
                       method=AtomIoUNet.predict_iou)

  want = _jitted(model, False)(variables, tr2, tr3, te2, te3, tr_box, props)
  np.testing.assert_allclose(staged(variables).reshape(_NTE, _B, _P), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("corner3, corner4", [((0, 0), (0, 0)), ((3, 7), (1, 3)), ((7, 2), (3, 0))])
def test_window_features_equal_the_whole_maps_there(model_and_vars, corner3, corner4):
  """get_iou_feat_window == get_iou_feat cut to the window: inside, at the map's corner (the convs' own zero
  padding) and at its far edges (design.md §5.6); predict_iou on the windows with their origins == on the maps."""
  model, variables = model_and_vars
  rng = np.random.default_rng(7)
  feat2 = jnp.asarray(rng.normal(size=(2, 12, 12, 128)), jnp.float32)
  feat3 = jnp.asarray(rng.normal(size=(2, 6, 6, 256)), jnp.float32)
  c3 = jnp.asarray([corner3, corner3[::-1]], jnp.int32)  # per image
  c4 = jnp.asarray([corner4, corner4[::-1]], jnp.int32)
  whole = jax.jit(lambda v: model.apply(v, feat2, feat3, method=AtomIoUNet.get_iou_feat))(variables)
  win = jax.jit(lambda v: model.apply(v, feat2, feat3, c3, c4, 5, 3, method=AtomIoUNet.get_iou_feat_window))(
      variables)
  for full, part, corners, n in ((whole[0], win[0], c3, 5), (whole[1], win[1], c4, 3)):
    for i, (y, x) in enumerate(np.asarray(corners)):
      np.testing.assert_allclose(np.asarray(part[i]), np.asarray(full[i, y:y + n, x:x + n]), rtol=1e-6, atol=1e-6)
  # One box per image well inside both windows (stride 8: cells corner3 + 1 .. + 3; stride 16: corner4 + 1 .. + 1.8).
  boxes = []
  for i in range(2):
    (y3, x3), (y4, x4) = np.asarray(c3[i]), np.asarray(c4[i])
    lo = np.maximum([x3 * 8 + 8, y3 * 8 + 8], [x4 * 16 + 16, y4 * 16 + 16]) + 0.5
    hi = np.minimum([x3 * 8 + 24, y3 * 8 + 24], [x4 * 16 + 28, y4 * 16 + 28])
    boxes.append([[lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]])
  boxes = jnp.asarray(boxes, jnp.float32)
  assert np.all(np.asarray(boxes)[..., 2:] > 1.0)
  mod3 = jnp.asarray(rng.normal(size=(2, 256)), jnp.float32)
  mod4 = jnp.asarray(rng.normal(size=(2, 256)), jnp.float32)
  predict = jax.jit(lambda v, a, b, o3, o4: model.apply(v, mod3, mod4, a, b, boxes, False, o3, o4,
                                                         method=AtomIoUNet.predict_iou))
  np.testing.assert_allclose(np.asarray(predict(variables, *win, c3, c4)),
                             np.asarray(predict(variables, *whole, None, None)), rtol=1e-5, atol=1e-6)


def test_window_larger_than_the_map_raises(model_and_vars):
  model, variables = model_and_vars
  with pytest.raises(ValueError, match="window size 13 must be in 1..12"):
    model.apply(variables, jnp.zeros((1, 12, 12, 128)), jnp.zeros((1, 6, 6, 256)), jnp.zeros((1, 2), jnp.int32),
                jnp.zeros((1, 2), jnp.int32), 13, 3, method=AtomIoUNet.get_iou_feat_window)


# ----------------------------------------------------------------------------- gradients and BN modes


@pytest.fixture(scope="module")
def score_fn(model_and_vars):
  """Eval-mode per-proposal scores `[N, P]` as a function of the proposals, and its gradient of the sum."""
  model, variables = model_and_vars
  tr2, tr3, te2, te3, tr_box, _ = _inputs(seed=6)

  @jax.jit
  def features(v):
    mods = model.apply(v, tr2[0], tr3[0], tr_box[0], method=AtomIoUNet.get_modulation)
    return mods + model.apply(v, te2[0], te3[0], method=AtomIoUNet.get_iou_feat)

  mod3, mod4, c3t, c4t = features(variables)
  f = jax.jit(lambda pr: model.apply(variables, mod3, mod4, c3t, c4t, pr, method=AtomIoUNet.predict_iou))
  return f, jax.jit(jax.grad(lambda pr: f(pr).sum()))


def _smooth_proposals(n=_B, p=4, seed=7):
  rng = np.random.default_rng(seed)
  xy = rng.uniform(5, 30, size=(n, p, 2))
  return np.concatenate([xy, rng.uniform(12, 28, size=(n, p, 2))], -1).astype(np.float32)


def test_proposal_gradients_finite_and_match_finite_differences(score_fn):
  f, grad = score_fn
  props = _smooth_proposals()
  g = np.asarray(grad(props))
  assert g.shape == props.shape and np.all(np.isfinite(g))
  assert np.all(np.abs(g).sum(-1) > 0)  # every proposal's score depends on its box
  # Eval mode: each proposal's score depends on its own box only, so d/dt f(p + t d) = <grad of sum, d>.
  d = np.random.default_rng(8).normal(size=props.shape).astype(np.float32)
  d /= np.linalg.norm(d, axis=-1, keepdims=True)
  h = 0.05  # pixels
  fd = (np.asarray(f(props + h * d), np.float64) - np.asarray(f(props - h * d), np.float64)) / (2 * h)
  directional = (g * d).sum(-1)
  np.testing.assert_allclose(fd, directional, rtol=0.03, atol=0.03 * np.abs(directional).max())


def test_prediction_changes_smoothly_with_the_proposal(score_fn):
  """Differences f(p + t d) - f(p) shrink about linearly with the step t (C1 in the box coordinates)."""
  f, grad = score_fn
  props = _smooth_proposals(seed=9)
  d = np.zeros_like(props)
  d[..., 0], d[..., 3] = 1.0, -0.5  # move right while shrinking the height
  base = np.asarray(f(props), np.float64)
  steps = [0.8, 0.4, 0.2, 0.1]
  diffs = np.stack([np.asarray(f(props + t * d), np.float64) - base for t in steps])  # [4, N, P]
  directional = (np.asarray(grad(props)) * d).sum(-1)
  big = np.abs(directional) > 0.1 * np.abs(directional).max()  # skip near-stationary proposals
  assert big.sum() >= 3
  # Continuity: every difference shrinks as the step shrinks.
  assert np.all(np.abs(diffs[-1]) <= np.abs(diffs[0]) + 1e-6)
  # Differentiability: halving the step halves the difference. The network is piecewise smooth (ReLU
  # kinks in the heads), so a step may straddle a kink: require it for 90% of the pairs at the two
  # largest steps and for every proposal at the smallest pair of steps.
  ratios = diffs[:-1][:, big] / diffs[1:][:, big]
  close = np.abs(ratios - 2.0) <= 0.3
  assert close.mean() >= 0.9, ratios
  np.testing.assert_allclose(ratios[-1], 2.0, rtol=0.15)
  np.testing.assert_allclose(diffs[-1][big] / steps[-1], directional[big], rtol=0.1)


def test_bn_train_vs_eval_modes(model_and_vars):
  """Eval: running stats, independent scores, no state change. Train: batch stats over all proposals."""
  model, variables = model_and_vars
  inputs = list(_inputs(seed=10))
  ev = _jitted(model, False)(variables, *inputs)
  tr, updates = _jitted(model, True)(variables, *inputs)
  assert np.abs(np.asarray(tr) - np.asarray(ev)).max() > 1e-3
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         updates["batch_stats"], variables["batch_stats"])
  assert all(jax.tree.leaves(changed))
  # Move one proposal: in eval mode only its own score changes; in train mode (BN over all proposals) all do.
  inputs[5] = inputs[5].copy()
  inputs[5][0, 0, 0, :2] += 6.0
  ev2 = _jitted(model, False)(variables, *inputs)
  tr2, _ = _jitted(model, True)(variables, *inputs)
  mask = np.ones(ev.shape, bool)
  mask[0, 0, 0] = False
  np.testing.assert_array_equal(np.asarray(ev2)[mask], np.asarray(ev)[mask])
  assert abs(ev2[0, 0, 0] - ev[0, 0, 0]) > 1e-5
  assert np.all(np.abs(np.asarray(tr2) - np.asarray(tr))[mask] > 0)


# ----------------------------------------------------------------------------- bad input


def _abstract(shapes):
  return [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]


_GOOD = [(_NTR, _B, _H2, _H2, 128), (_NTR, _B, _H3, _H3, 256), (_NTE, _B, _H2, _H2, 128),
         (_NTE, _B, _H3, _H3, 256), (_NTR, _B, 4), (_NTE, _B, _P, 4)]


def _with(i, shape):
  s = list(_GOOD)
  s[i] = shape
  return s


@pytest.mark.parametrize("shapes, match", [
    (_with(0, (_B, _H2, _H2, 128)), "train_feat2 must have rank 5"),
    (_with(1, (_NTR, _B, _H3, _H3, 512)), "train_feat3 has 512 channels, expected 256"),
    (_with(2, (_NTE, _B, _H2, _H2, 64)), "test_feat2 has 64 channels"),
    (_with(3, (_NTE, _B + 1, _H3, _H3, 256)), "test_feat3 leading axes"),
    (_with(4, (_NTR, _B, 5)), "train_box_xywh must have shape"),
    (_with(5, (_NTE, _B, _P, 5)), "proposals_xywh must have shape"),
    (_with(5, (_NTE, _B, 4)), "proposals_xywh must have shape"),
])
def test_bad_call_inputs_raise(model_and_vars, shapes, match):
  model, variables = model_and_vars
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda v, *a: model.apply(v, *a, train=False), variables, *_abstract(shapes))


@pytest.mark.parametrize("method, shapes, match", [
    ("get_modulation", [(2, 8, 8, 128), (2, 4, 4, 256), (2, 5)], "box_xywh must have shape"),
    ("get_modulation", [(2, 8, 8, 128), (3, 4, 4, 256), (2, 4)], "batch sizes differ"),
    ("get_iou_feat", [(2, 8, 8, 256), (2, 4, 4, 256)], "feat2 has 256 channels, expected 128"),
    ("get_iou_feat", [(8, 8, 128), (2, 4, 4, 256)], "feat2 must have rank 4"),
    ("predict_iou", [(2, 256), (2, 256), (2, 8, 8, 256), (2, 4, 4, 256), (2, 3, 3)], "proposals_xywh"),
    ("predict_iou", [(2, 256), (2, 256), (2, 8, 8, 256), (2, 4, 4, 256), (6, 4)], "proposals_xywh"),
    ("predict_iou", [(1, 256), (2, 256), (2, 8, 8, 256), (2, 4, 4, 256), (2, 3, 4)], "mod3 must have shape"),
])
def test_bad_stage_inputs_raise(model_and_vars, method, shapes, match):
  model, variables = model_and_vars
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda v, *a: model.apply(v, *a, method=getattr(AtomIoUNet, method)), variables,
                   *_abstract(shapes))
