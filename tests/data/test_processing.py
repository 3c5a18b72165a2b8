"""Tests of the DiMP processing ops against float64 NumPy references written from design.md §4.9, 2.5 and 3.4."""

import dataclasses
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from cia_jax.data import processing as P


def _iou_ref(a, b):
  """Independent float64 IoU with continuous corners (x2 = x + w)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  lo = np.maximum(a[..., :2], b[..., :2])
  hi = np.minimum(a[..., :2] + a[..., 2:], b[..., :2] + b[..., 2:])
  inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
  return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def _resize_ref(image, crop_xywh, out_sz):
  """Float64 reference of 'replicate-pad the crop, then bilinear resize with half-pixel centres'.

  Source coordinate of output pixel u: s = (u + 0.5) * c / S - 0.5, clamped to [0, c - 1] inside the crop
  (OpenCV's edge rule); crop pixel j reads image pixel clip(x1 + j, 0, W - 1) (replicate padding).
  """
  x1, y1, cw, ch = crop_xywh
  h, w = image.shape[:2]

  def taps(start, c, limit):
    s = np.clip((np.arange(out_sz) + 0.5) * c / out_sz - 0.5, 0, c - 1)
    j0 = np.floor(s).astype(int)
    j1 = np.minimum(j0 + 1, c - 1)
    return np.clip(start + j0, 0, limit - 1), np.clip(start + j1, 0, limit - 1), s - j0

  r0, r1, fy = taps(y1, ch, h)
  c0, c1, fx = taps(x1, cw, w)
  im = image.astype(np.float64)
  rows = im[r0] * (1 - fy)[:, None, None] + im[r1] * fy[:, None, None]
  return rows[:, c0] * (1 - fx)[None, :, None] + rows[:, c1] * fx[None, :, None]


def _box_image(h, w, box_xywh, value=255):
  img = np.zeros((h, w, 3), np.uint8)
  x, y, bw, bh = box_xywh
  img[y:y + bh, x:x + bw] = value
  return img


# ---------------------------------------------------------------------------------------------------------
# Geometry.


def test_box_to_crop_and_back_is_identity():
  rng = np.random.default_rng(0)
  for _ in range(20):
    box = np.concatenate([rng.uniform(-50, 300, 2), rng.uniform(1, 200, 2)])
    crop = np.concatenate([rng.integers(-100, 200, 2), rng.integers(5, 900, 2)])
    out_sz = int(rng.integers(16, 400))
    there = P.box_to_crop(box, crop, out_sz)
    np.testing.assert_allclose(P.box_from_crop(there, crop, out_sz), box, rtol=0, atol=1e-9)
    # Spec 4.9: offset by the crop origin, scaled by output / crop size.
    np.testing.assert_allclose(there[:2], (box[:2] - crop[:2]) * out_sz / crop[2:], atol=1e-9)
    np.testing.assert_allclose(there[2:], box[2:] * out_sz / crop[2:], atol=1e-9)


@pytest.mark.parametrize("box, hw, factor, mode, msc, expected", [
    # side = ceil(sqrt(20 * 30) * 5) = 123; x1 = round(60 - 61.5) = -2 -> shifted to 0; y1 = round(53.5) = 54.
    ((50, 100, 20, 30), (400, 500), 5.0, "replicate", None, (0, 54, 123, 123)),
    # inside the image: centre (210, 215), x1 = round(148.5) = 148 (half to even), y1 = round(153.5) = 154.
    ((200, 200, 20, 30), (400, 500), 5.0, "replicate", None, (148, 154, 123, 123)),
    # near the bottom-right corner: shifted inside.
    ((480, 380, 20, 30), (400, 500), 5.0, "replicate", None, (377, 277, 123, 123)),
    # larger than the image in both axes (replicate): centred, equal overflow.
    ((40, 30, 40, 40), (100, 150), 5.0, "replicate", None, (-25, -50, 200, 200)),
    # one pixel too large (overflow // 2 = 0): stays where the shift put it, flush left or flush right.
    ((0, 20, 2, 2), (50, 10), 5.5, "replicate", None, (0, 16, 11, 11)),
    ((8, 20, 2, 2), (50, 10), 5.5, "replicate", None, (-1, 16, 11, 11)),
    # inside_major: side 200, shrink = clamp(min(200/150, 200/100), 1, 1.5) = 4/3 -> floor(150) = 150.
    ((40, 30, 40, 40), (100, 150), 5.0, "inside_major", 1.5, (0, -25, 150, 150)),
    # inside_major capped by max_scale_change: side 400 / 1.5 -> 266.
    ((40, 30, 80, 80), (100, 150), 5.0, "inside_major", 1.5, (-58, -83, 266, 266)),
    # inside: shrink by the max ratio 4 -> 100, fits exactly in height.
    ((40, 30, 80, 80), (100, 150), 5.0, "inside", None, (30, 0, 100, 100)),
])
def test_crop_box_rules(box, hw, factor, mode, msc, expected):
  np.testing.assert_array_equal(P.crop_box_xywh(box, hw, factor, mode, msc), expected)


def test_crop_box_bad_input():
  with pytest.raises(ValueError, match="crop_type"):
    P.crop_box_xywh((0, 0, 5, 5), (10, 10), 5.0, "nearest")
  with pytest.raises(ValueError, match="box_xywh"):
    P.crop_box_xywh((0, 0, 0, 5), (10, 10), 5.0)
  with pytest.raises(ValueError, match="box_xywh"):
    P.crop_box_xywh((0, np.nan, 3, 5), (10, 10), 5.0)


@pytest.mark.parametrize("crop", [(10, 5, 40, 30), (-20, -10, 90, 70), (60, 40, 30, 30), (-50, 5, 20, 10)])
@pytest.mark.parametrize("out_sz", [24, 64])
def test_crop_and_resize_matches_float64_reference(crop, out_sz):
  rng = np.random.default_rng(1)
  image = rng.uniform(0, 255, (48, 72, 3)).astype(np.float32)  # float input: cv2 resizes in float
  got = P.crop_and_resize(image, crop, out_sz)
  assert got.shape == (out_sz, out_sz, 3) and got.dtype == np.float32
  np.testing.assert_allclose(got, _resize_ref(image, crop, out_sz), rtol=0, atol=2e-3)
  # uint8 frames (the pipeline's case): OpenCV's fixed-point bilinear is within one grey level.
  got8 = P.crop_and_resize(image.astype(np.uint8), crop, out_sz)
  assert got8.dtype == np.uint8
  assert np.abs(got8.astype(np.float64) - _resize_ref(image.astype(np.uint8), crop, out_sz)).max() <= 1.0


def _inner(img, box_xywh, margin=1.0):
  """Pixels of `img` at least `margin` pixels inside the box (bilinear edge blends excluded)."""
  x, y, w, h = box_xywh
  m = margin
  rows = slice(max(int(math.ceil(y + m)), 0), max(int(y + h - m), 0))
  cols = slice(max(int(math.ceil(x + m)), 0), max(int(x + w - m), 0))
  return img[rows, cols]


@pytest.mark.parametrize("mode, factor", [("replicate", 4.0), ("replicate", 8.0), ("inside_major", 8.0)])
def test_crop_with_jitter_maps_the_target_into_the_crop(mode, factor):
  """The box mapped into crop coordinates lies on the target's pixels in the crop."""
  box = (70, 30, 24, 16)
  image = _box_image(96, 128, box)
  rng = np.random.default_rng(3)
  for _ in range(10):
    crop, box_c, rect = P.crop_with_jitter(image, box, rng, search_area_factor=factor, output_sz=96,
                                           center_jitter=3.0, scale_jitter=0.25, crop_type=mode,
                                           max_scale_change=1.5)
    np.testing.assert_allclose(P.box_from_crop(box_c, rect, 96), box, atol=1e-9)
    inner = _inner(crop, box_c)
    assert inner.size and inner.min() >= 250
    x, y, w, h = box_c
    outer = np.ones(crop.shape[:2], bool)
    outer[max(int(y - 1), 0):int(math.ceil(y + h + 1)), max(int(x - 1), 0):int(math.ceil(x + w + 1))] = False
    assert crop[outer].max() <= 5


def test_jitter_box_rule():
  box = np.array([40.0, 20.0, 30.0, 10.0])
  np.testing.assert_allclose(P.jitter_box(box, 0.0, 0.0, np.random.default_rng(0)), box, atol=1e-12)
  rng = np.random.default_rng(0)
  for _ in range(200):
    jb = P.jitter_box(box, 3.0, 0.25, rng)
    max_offset = np.sqrt(jb[2] * jb[3]) * 3.0
    offset = jb[:2] + jb[2:] / 2 - (box[:2] + box[2:] / 2)
    assert np.all(np.abs(offset) <= 0.5 * max_offset + 1e-9)
  # Same generator state -> same box; the draw is 2 normals (size) then 2 uniforms (centre).
  r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
  n, u = r2.standard_normal(2), r2.random(2)
  size = box[2:] * np.exp(n * 0.5)
  expect = np.concatenate([box[:2] + box[2:] / 2 + np.sqrt(size.prod()) * 4.5 * (u - 0.5) - size / 2, size])
  np.testing.assert_allclose(P.jitter_box(box, 4.5, 0.5, r1), expect, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Photometric ops.


def test_normalize_matches_formula():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (17, 9, 3), dtype=np.uint8)
  for b in (0.8, 1.0, 1.19):
    ref = np.minimum(img.astype(np.float64) * b / 255.0, 1.0)
    ref = (ref - np.array(P.IMAGENET_MEAN)) / np.array(P.IMAGENET_STD)
    got = P.normalize(img, b)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    out = np.zeros((2, 17, 9, 3), np.float32)
    P.normalize(img, b, out=out[1])
    np.testing.assert_array_equal(out[1], got)
    assert not out[0].any()


def test_grayscale_and_flip():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (8, 11, 3), dtype=np.uint8)
  g = P.grayscale(img)
  assert g.shape == img.shape and np.all(g[..., 0] == g[..., 1]) and np.all(g[..., 1] == g[..., 2])
  ref = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  assert np.abs(g[..., 0] - ref).max() <= 1.0
  # Flip: pixel u -> W - 1 - u; a box's x -> W - 1 - x - w; twice = identity.
  box = np.array([2.0, 1.0, 4.0, 3.0])
  img = _box_image(8, 11, (2, 1, 4, 3))
  f = P.hflip_image(img)
  np.testing.assert_array_equal(f, img[:, ::-1])
  np.testing.assert_allclose(P.hflip_box_xywh(P.hflip_box_xywh(box, 11), 11), box)
  np.testing.assert_allclose(P.hflip_box_xywh(box, 11), [11 - 1 - 2 - 4, 1, 4, 3])


# ---------------------------------------------------------------------------------------------------------
# Labels and proposals.


@pytest.mark.parametrize("feat, img, sigma_factor", [(18, 288, 0.25 / 5), (22, 352, 0.25 / 6)])
def test_gaussian_label_reference_and_peak(feat, img, sigma_factor):
  rng = np.random.default_rng(0)
  boxes = np.concatenate([rng.uniform(20, img - 80, (6, 2)), rng.uniform(10, 60, (6, 2))], axis=1)
  got = P.gaussian_label(boxes, sigma_factor, feat, img)
  assert got.shape == (6, feat + 1, feat + 1) and got.dtype == np.float32
  sigma = sigma_factor * feat  # cells: 0.9 and 0.9167
  stride = img / feat
  for b, lab in zip(boxes, got):
    cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2
    # Spec 2.5: k = -(f-1)/2 .. (f+1)/2, centre = f (c - img/2) / img + 0.5 (index i sits at i - c/stride).
    k = np.arange(feat + 1) - (feat - 1) / 2
    ccx, ccy = feat * (cx - img / 2) / img + 0.5, feat * (cy - img / 2) / img + 0.5
    ref = np.exp(-((k[:, None] - ccy) ** 2 + (k[None, :] - ccx) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(lab, ref, rtol=1e-5, atol=1e-7)
    i, j = np.unravel_index(np.argmax(lab), lab.shape)
    assert (i, j) == (round(cy / stride), round(cx / stride))
  # A centre exactly on a grid point gives a peak of 1.
  on_grid = P.gaussian_label(np.array([160.0 - 5, 96.0 - 5, 10, 10]), sigma_factor, feat, img)
  assert stride == 16
  assert on_grid[96 // 16, 160 // 16] == pytest.approx(1.0, abs=1e-6)


def test_gaussian_label_agrees_with_jax_version():
  import jax.numpy as jnp
  from cia_jax.ops import image as labels
  rng = np.random.default_rng(1)
  boxes = np.concatenate([rng.uniform(0, 250, (5, 2)), rng.uniform(5, 90, (5, 2))], axis=1)
  for feat, img, sf in [(18, 288, 0.05), (22, 352, 0.25 / 6)]:
    mine = P.gaussian_label(boxes, sf, feat, img)
    theirs = np.asarray(labels.gaussian_label(jnp.asarray(boxes, jnp.float32), sf, feat, img))
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5)


def test_mse_proposals_meet_min_iou_and_targets_are_recomputed_iou():
  rng = np.random.default_rng(0)
  for box in ([100.0, 80.0, 40.0, 60.0], [10.5, 20.25, 7.0, 3.5], [0.0, 0.0, 200.0, 150.0]):
    props, iou = P.mse_proposals(box, rng, num_proposals=64)
    assert props.shape == (64, 4) and iou.shape == (64,)
    np.testing.assert_allclose(iou, _iou_ref(np.asarray(box)[None], props), rtol=1e-12, atol=1e-12)
    assert np.all(iou > 0.1)
    # Boxes are rounded to integers; only a size replaced after rounding (<= 1) may be fractional.
    np.testing.assert_array_equal(props[:, :2], np.round(props[:, :2]))
    assert np.all(props[:, 2:] > 0)
  # The sigma choice spans small and large perturbations: IoUs near 1 and well below.
  _, iou = P.mse_proposals([100.0, 80.0, 40.0, 60.0], np.random.default_rng(1), num_proposals=400)
  assert iou.max() > 0.9 and iou.min() < 0.6


def test_kl_proposal_densities():
  box = np.array([60.0, 40.0, 30.0, 50.0])
  rng = np.random.default_rng(0)
  props, q, p = P.kl_proposals(box, rng, num_proposals=4096)
  assert props.shape == (4096, 4) and q.shape == p.shape == (4096,)
  # Recompute both densities from the proposals alone (relative coordinates of design.md §3.4).
  w0, h0 = box[2:]
  rel = np.stack([(props[:, 0] + props[:, 2] / 2) / w0, (props[:, 1] + props[:, 3] / 2) / h0,
                  np.log(props[:, 2]), np.log(props[:, 3])], 1)
  off = rel - np.array([(box[0] + w0 / 2) / w0, (box[1] + h0 / 2) / h0, np.log(w0), np.log(h0)])

  def normal(x, s):
    return np.exp(-0.5 * (x / s) ** 2) / (np.sqrt(2 * np.pi) * s)

  q_ref = 0.5 * (normal(off, 0.05).prod(1) + normal(off, 0.5).prod(1))
  p_ref = normal(off, 0.05).prod(1)
  np.testing.assert_allclose(q, q_ref, rtol=1e-9)
  np.testing.assert_allclose(p, p_ref, rtol=1e-9)
  # q is the density the proposals are drawn from: E_q[p / q] = integral of p = 1 (p / q <= 2 here).
  assert abs(np.mean(p / q) - 1.0) < 0.06


# ---------------------------------------------------------------------------------------------------------
# Composition and TF wrapping.


def _frames(n, h=64, w=96, box=(40, 20, 16, 20), seed=0):
  rng = np.random.default_rng(seed)
  imgs = []
  for _ in range(n):
    img = (rng.uniform(0, 1, (h, w, 3)) * np.array([40, 200, 90])).astype(np.uint8)  # coloured background
    x, y, bw, bh = box
    img[y:y + bh, x:x + bw] = (250, 30, 30)
    imgs.append(img)
  return imgs, np.tile(np.asarray(box, np.float64), (n, 1))


@pytest.mark.parametrize("preset", ["cia18", "cia50"])
def test_process_sample_fields_and_consistency(preset):
  cfg = P.PROCESSING_PRESETS[preset]
  imgs, boxes = _frames(6)
  out = P.process_sample(imgs[:3], boxes[:3], imgs[3:], boxes[3:], np.random.default_rng(5), cfg)
  specs = P.output_specs(cfg)
  assert set(out) == set(specs)
  for k, (shape, dtype) in specs.items():
    assert out[k].shape == shape and out[k].dtype == dtype, k
  s, f = cfg.output_sz, cfg.feature_sz
  assert out["test_label"].shape[-1] == f + 1
  # Labels peak at the test boxes' centres / stride.
  for b, lab in zip(out["test_box_xywh"], out["test_label"]):
    i, j = np.unravel_index(np.argmax(lab), lab.shape)
    assert abs(i - (b[1] + b[3] / 2) / (s / f)) <= 0.5 + 1e-4
    assert abs(j - (b[0] + b[2] / 2) / (s / f)) <= 0.5 + 1e-4
  if cfg.proposal_mode == "mse":
    iou = _iou_ref(out["test_box_xywh"][:, None].astype(np.float64),
                   out["test_proposals_xywh"].astype(np.float64))
    np.testing.assert_allclose(out["proposal_iou"], 2 * iou - 1, atol=2e-5)
    assert np.all(out["proposal_iou"] > 2 * 0.1 - 1)
  else:
    assert np.all(out["proposal_density"] > 0) and np.all(out["gt_density"] >= 0)
  # Same generator state -> identical sample; another state -> different.
  again = P.process_sample(imgs[:3], boxes[:3], imgs[3:], boxes[3:], np.random.default_rng(5), cfg)
  for k in out:
    np.testing.assert_array_equal(out[k], again[k])
  other = P.process_sample(imgs[:3], boxes[:3], imgs[3:], boxes[3:], np.random.default_rng(6), cfg)
  assert not np.array_equal(out["test_box_xywh"], other["test_box_xywh"])


def _denorm(x):
  return np.asarray(x, np.float64) * np.array(P.IMAGENET_STD) + np.array(P.IMAGENET_MEAN)


@pytest.mark.parametrize("joint_flip, flip", [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_process_sample_boxes_follow_flips(joint_flip, flip):
  """Whatever flips happen, the output box sits on the (red) target in the output crop.

  A flip maps x -> W - 1 - x - w (the reference's rule, design.md §4.9), one pixel left of the exact mirror of the
  pixels x..x+w-1, so flipped boxes may be off by about one crop pixel: the inner margin is 2 px with flips.
  A wrong flip would put the box ~60 px away, on background.
  """
  cfg = dataclasses.replace(P.PROCESSING_PRESETS["cia50"], output_sz=96, feature_sz=6,
                            joint_hflip_prob=joint_flip, hflip_prob=flip, brightness_jitter=0.0,
                            grayscale_prob=0.0)
  imgs, boxes = _frames(6, box=(10, 20, 16, 20))  # target off-centre so a wrong flip is caught
  out = P.process_sample(imgs[:3], boxes[:3], imgs[3:], boxes[3:], np.random.default_rng(2), cfg)
  for key in ("train", "test"):
    for img, b in zip(out[f"{key}_images"], out[f"{key}_box_xywh"]):
      inner = _inner(_denorm(img), b, 2.0 if (joint_flip or flip) else 1.0)
      assert inner.size and np.all(inner[..., 0] > 0.9) and np.all(inner[..., 1] < 0.2)


def test_process_sample_joint_grayscale():
  imgs, boxes = _frames(6)
  for p, expect_gray in ((1.0, True), (0.0, False)):
    cfg = dataclasses.replace(P.PROCESSING_PRESETS["cia18"], output_sz=64, feature_sz=4, grayscale_prob=p)
    out = P.process_sample(imgs[:3], boxes[:3], imgs[3:], boxes[3:], np.random.default_rng(0), cfg)
    for x in np.concatenate([out["train_images"], out["test_images"]]):
      rgb = _denorm(x)
      is_gray = (np.allclose(rgb[..., 0], rgb[..., 1], atol=1e-5)
                 and np.allclose(rgb[..., 1], rgb[..., 2], atol=1e-5))
      assert is_gray == expect_gray


def test_config_validation():
  with pytest.raises(ValueError, match="crop_type"):
    P.ProcessingConfig(crop_type="zeros")
  with pytest.raises(ValueError, match="proposal_mode"):
    P.ProcessingConfig(proposal_mode="l1")
  with pytest.raises(ValueError, match="grayscale_prob"):
    P.ProcessingConfig(grayscale_prob=1.5)
  cia18, cia50 = P.PROCESSING_PRESETS["cia18"], P.PROCESSING_PRESETS["cia50"]
  assert (cia18.search_area_factor, cia18.output_sz, cia18.center_jitter_test,
          cia18.crop_type) == (5.0, 288, 4.5, "replicate")
  assert (cia50.search_area_factor, cia50.output_sz, cia50.center_jitter_test, cia50.crop_type,
          cia50.max_scale_change, cia50.proposals_per_frame) == (6.0, 352, 5.5, "inside_major", 1.5, 128)
  assert cia18.label_sigma_factor * cia18.feature_sz == pytest.approx(0.9)
  assert cia50.label_sigma_factor * cia50.feature_sz == pytest.approx(0.25 / 6 * 22)


def test_ops_eager_and_inside_dataset_map_agree():
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
  boxes = np.array([[10, 8, 12, 9], [30, 20, 20, 15], [0, 0, 6, 6], [50, 35, 14, 13]], np.float64)
  seeds = np.arange(4, dtype=np.int64)
  kw = dict(search_area_factor=5.0, output_sz=40, center_jitter=3.0, scale_jitter=0.25,
            crop_type="inside_major", max_scale_change=1.5)

  def crop_np(image, box, seed):
    return P.crop_with_jitter(image, box, np.random.default_rng(int(seed)), **kw)

  crop_tf = P.as_tf_op(crop_np, [((40, 40, 3), np.uint8), ((4,), np.float64), ((4,), np.int64)], name="crop")
  label_tf = P.as_tf_op(lambda b: P.gaussian_label(b, 0.05, 18, 288), [((19, 19), np.float32)], name="label")
  prop_tf = P.as_tf_op(lambda b, s: P.mse_proposals(b, np.random.default_rng(int(s))),
                       [((8, 4), np.float64), ((8,), np.float64)], name="props")

  def fn(image, box, seed):
    crop, box_c, rect = crop_tf(image, box, seed)
    (label,) = label_tf(box_c)
    props, iou = prop_tf(box_c, seed)
    return crop, box_c, rect, label, props, iou

  eager = [[t.numpy() for t in fn(tf.constant(i), tf.constant(b), tf.constant(s))]
           for i, b, s in zip(images, boxes, seeds)]
  ds = tf.data.Dataset.from_tensor_slices((images, boxes, seeds)).map(fn, num_parallel_calls=2)
  mapped = list(ds.as_numpy_iterator())
  assert ds.element_spec[0].shape == (40, 40, 3)  # static shapes survive the wrapping
  for e, m, i, b, s in zip(eager, mapped, images, boxes, seeds):
    for a, c in zip(e, m):
      np.testing.assert_array_equal(a, c)
    direct = crop_np(i, b, s)
    np.testing.assert_array_equal(e[0], direct[0])
    np.testing.assert_array_equal(e[1], direct[1])
