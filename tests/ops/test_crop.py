"""`sample_patch` against a float64 NumPy transcription of design.md §5.3 (literal crop, pad, resize)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.ops import crop


def _resize_bilinear(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """Bilinear resize, align_corners=False, negative source positions clamped to 0, no antialias."""
  def taps(n, m):
    u = np.maximum((np.arange(m) + 0.5) * (n / m) - 0.5, 0.0)
    i0 = np.minimum(np.floor(u).astype(int), n - 1)
    return i0, np.minimum(i0 + 1, n - 1), u - i0
  r0, r1, ly = taps(a.shape[0], out_h)
  c0, c1, lx = taps(a.shape[1], out_w)
  rows = (1 - ly)[:, None, None] * a[r0] + ly[:, None, None] * a[r1]
  return (1 - lx)[None, :, None] * rows[:, c0] + lx[None, :, None] * rows[:, c1]


def reference_sample_patch(im, pos, sample_sz, out_sz, mode, max_scale_change=None, rule="cia"):
  """Spec 5.3 step by step in float64 NumPy: decimate, slice + edge pad, then resize.

  rule 'pytracking' = upstream's arithmetic: tl / br by true division (half pixels), the inside shifts in
  floats, the pixels [int(tl), int(br)) cropped (`.int()` truncates toward zero), patch_coord with the halves.
  """
  im = np.asarray(im, np.float64)
  pos = np.asarray(pos, np.float64)
  sz = np.broadcast_to(np.asarray(sample_sz, np.float64), (2,)).copy()
  out = np.asarray(out_sz, np.float64)
  posl = np.array([int(p) for p in pos])  # int() = integer part
  if mode in ("inside", "inside_major"):
    # The reference does this part on float32 tensors (`sample_sz.float()`), and the truncation below is
    # sensitive to it: 70 / (70 / 60) is 59.99999999999999 in float64 but 60.000004 in float32.
    sz32 = sz.astype(np.float32)
    ratio = sz32 / np.array(im.shape[:2], np.float32)
    shrink = ratio.max() if mode == "inside" else ratio.min()
    shrink = max(shrink, np.float32(1.0))
    if max_scale_change is not None:
      shrink = min(shrink, np.float32(max_scale_change))
    sz = np.array([int(s) for s in (sz32 / np.float32(shrink)).astype(np.float32)], np.float64)
  df = max(int(min(sz / out) - 0.1), 1)
  im2 = im
  if df > 1:
    o = posl % df
    posl = (posl - o) // df
    im2 = im[o[0]::df, o[1]::df]
  szl = np.maximum(np.round(sz / df), 2).astype(int)
  if rule == "cia":
    tl = posl - (szl - 1) // 2
    br = posl + szl // 2 + 1
  else:
    tl = posl - (szl - 1) / 2
    br = posl + szl / 2 + 1
  if mode in ("inside", "inside_major"):
    im2_sz = np.array(im2.shape[:2])
    shift = np.maximum(-tl, 0) - np.maximum(br - im2_sz, 0)
    tl, br = tl + shift, br + shift
    outside = (np.maximum(-tl, 0) + np.maximum(br - im2_sz, 0)) // 2
    shift = (-tl - outside) * (outside > 0)
    tl, br = tl + shift, br + shift
  coord = df * np.concatenate([tl, br])
  if rule == "pytracking":
    tl, br = np.trunc(tl).astype(int), np.trunc(br).astype(int)
  pad_lo = np.maximum(-tl, 0)
  pad_hi = np.maximum(br - np.array(im2.shape[:2]), 0)
  padded = np.pad(im2, ((pad_lo[0], pad_hi[0]), (pad_lo[1], pad_hi[1]), (0, 0)), mode="edge")
  window = padded[tl[0] + pad_lo[0]:br[0] + pad_lo[0], tl[1] + pad_lo[1]:br[1] + pad_lo[1]]
  return _resize_bilinear(window, int(out[0]), int(out[1])), coord


# (image hw, pos, sample size, output, mode, max_scale_change): inside the image, partly and far outside,
# pre-decimation df = 2 and 3, non-integer and negative positions, non-square image, shrinking.
CASES = [
    ((60, 80), (30.3, 41.7), 40.0, (32, 32), "replicate", None),
    ((60, 80), (5.5, -3.2), 50.0, (32, 32), "replicate", None),          # partly outside
    ((60, 80), (-40.0, 130.9), 30.0, (24, 24), "replicate", None),       # far outside
    ((60, 80), (31.6, 22.4), 77.0, (32, 32), "replicate", None),         # df = 2
    ((60, 80), (17.2, 60.8), (110.0, 120.0), (32, 32), "replicate", None),  # df = 3, rectangular request
    ((60, 80), (-7.3, 90.2), 80.0, (32, 32), "replicate", None),         # df = 2, negative pos (offset 1)
    ((60, 80), (31.6, 22.4), 77.0, (32, 32), "inside_major", 1.5),       # shrink + shift inside
    ((60, 80), (3.0, 75.0), 40.0, (32, 32), "inside_major", 1.5),        # shifted into the image
    ((60, 80), (30.0, 40.0), 200.0, (32, 32), "inside_major", 1.5),      # still too big: centred, df = 2
    ((60, 80), (10.9, 12.1), 90.0, (32, 32), "inside_major", None),      # unclamped shrink
    ((60, 80), (50.5, 70.5), 70.0, (32, 32), "inside", 1.5),
    ((41, 37), (20.4, 18.6), 64.0, (16, 16), "inside_major", 1.5),       # odd image sizes, df = 2
]


@pytest.mark.parametrize("rule", crop.CROP_RULES)
@pytest.mark.parametrize("hw,pos,sz,out,mode,msc", CASES)
def test_sample_patch_matches_reference(hw, pos, sz, out, mode, msc, rule):
  rng = np.random.default_rng(CASES.index((hw, pos, sz, out, mode, msc)))
  im = rng.uniform(0, 255, (*hw, 3))
  ref_patch, ref_coord = reference_sample_patch(im, pos, sz, out, mode, msc, rule)
  fn = jax.jit(lambda i, p, s: crop.sample_patch(i, p, s, out, mode, msc, rule))
  patch, coord = fn(jnp.asarray(im, jnp.float32), jnp.asarray(pos, jnp.float32), jnp.asarray(sz, jnp.float32))
  np.testing.assert_array_equal(np.asarray(coord), ref_coord)
  np.testing.assert_allclose(np.asarray(patch), ref_patch, rtol=0, atol=2e-3)


@pytest.mark.parametrize("rule", crop.CROP_RULES)
def test_sample_patch_is_float64_under_x64(rule):
  """With `jax_enable_x64` the crop computes in float64 (for float64 parity runs): 1e-9 of the NumPy reference,
  where float32 is held to 2e-3 above."""
  rng = np.random.default_rng(7)
  with jax.enable_x64(True):
    for hw, pos, sz, out, mode, msc in CASES[::3]:
      im = rng.uniform(0, 255, (*hw, 3))
      ref_patch, ref_coord = reference_sample_patch(im, pos, sz, out, mode, msc, rule)
      fn = jax.jit(lambda i, p, s: crop.sample_patch(i, p, s, out, mode, msc, rule))  # noqa: B023
      patch, coord = fn(jnp.asarray(im), jnp.asarray(pos, jnp.float64), jnp.asarray(sz, jnp.float64))
      assert patch.dtype == jnp.float64 and coord.dtype == jnp.float64
      np.testing.assert_array_equal(np.asarray(coord), ref_coord)
      np.testing.assert_allclose(np.asarray(patch), ref_patch, rtol=0, atol=1e-9)


def test_sample_patch_dynamic_sizes_share_one_compilation():
  """df and the crop size are data: one compiled function serves df = 1, 2, 3 (no retrace)."""
  traces = []

  def f(i, p, s):
    traces.append(1)
    return crop.sample_patch(i, p, s, (16, 16), "replicate")

  fn = jax.jit(f)
  im = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (50, 50, 3)), jnp.float32)
  for s in (20.0, 40.0, 60.0):
    patch, coord = fn(im, jnp.array([25.0, 25.0]), jnp.float32(s))
    ref, ref_coord = reference_sample_patch(np.asarray(im), (25.0, 25.0), s, (16, 16), "replicate")
    np.testing.assert_allclose(np.asarray(patch), ref, atol=2e-3)
    np.testing.assert_array_equal(np.asarray(coord), ref_coord)
  assert len(traces) == 1


def test_sample_pos_scale():
  coord = np.array([10, 20, 74, 84])  # a 64 x 64 window at (10, 20)
  pos, scale = crop.sample_pos_scale(coord, 32)
  np.testing.assert_allclose(np.asarray(pos), [(10 + 74 - 1) / 2, (20 + 84 - 1) / 2])
  np.testing.assert_allclose(float(scale), 2.0)
  _, scale = crop.sample_pos_scale(np.array([0, 0, 32, 128]), 32)
  np.testing.assert_allclose(float(scale), math.sqrt(4.0), rtol=1e-6)


def test_sample_patch_rejects_bad_mode():
  with pytest.raises(ValueError, match="mode"):
    crop.sample_patch(jnp.zeros((8, 8, 3)), (4.0, 4.0), 8.0, (8, 8), mode="reflect")


def test_crop_rules_differ_where_upstream_has_half_pixels():
  """Even crop size: upstream crops one more pixel on the top/left; odd: its patch_coord ends half a pixel later."""
  even = [crop.crop_window((100, 100), (50.0, 50.0), 10.0, (10, 10), rule=r) for r in crop.CROP_RULES]
  np.testing.assert_array_equal(np.asarray(even[0]["tl"]), [46, 46])
  np.testing.assert_array_equal(np.asarray(even[1]["tl"]), [45, 45])  # trunc(50 - 4.5)
  np.testing.assert_array_equal(np.asarray(even[1]["patch_coord"]), [45.5, 45.5, 56, 56])
  odd = [crop.crop_window((100, 100), (50.0, 50.0), 11.0, (11, 11), rule=r) for r in crop.CROP_RULES]
  np.testing.assert_array_equal(np.asarray(odd[0]["br"]), np.asarray(odd[1]["br"]))
  np.testing.assert_array_equal(np.asarray(odd[1]["patch_coord"]), [45, 45, 56.5, 56.5])
  with pytest.raises(ValueError, match="rule"):
    crop.crop_window((10, 10), (5.0, 5.0), 4.0, (4, 4), rule="floor")


@pytest.mark.parametrize("rule", crop.CROP_RULES)
def test_inside_major_shrink_to_the_image_width_is_exact_under_jit(rule):
  """A crop wider than the image shrinks to exactly the image width, jitted as eagerly (XLA's reciprocal
  multiply used to give 639.99994 -> 639; found by scripts/compare_pytorch.py on OTB_MotorRolling)."""
  args = ((360, 640), jnp.asarray([130.0, 177.5]), jnp.float32(740.9453), (352, 352), "inside_major", 1.5, rule)
  eager = crop.crop_window(*args)
  jitted = jax.jit(lambda p, s: crop.crop_window(args[0], p, s, *args[3:]))(args[1], args[2])
  for k in ("tl", "br", "patch_coord"):
    np.testing.assert_array_equal(np.asarray(jitted[k]), np.asarray(eager[k]), err_msg=k)
  assert int(jitted["br"][1]) - int(jitted["tl"][1]) == 640


def test_crop_size_takes_the_exact_integer_where_the_reference_truncates():
  """VOT_bag frame 27 (scripts/compare_pytorch.py, CIA18 trained weights): the reference's float32 sample size
  599.16095 (bits 0x4415CA4D) gives the quotient 479.99997 and a 479 px crop; exact arithmetic, and ours, give
  the image width 480 for it and for our own sample size two ulp lower."""
  for bits in (0x4415CA4B, 0x4415CA4D):
    sz = np.asarray(bits, np.uint32).view(np.float32)
    geo = crop.crop_window((360, 480), jnp.asarray([159.36774, 278.77774]), jnp.float32(sz), (352, 352),
                           "inside_major", 1.5)
    np.testing.assert_array_equal(np.asarray(geo["size"]), [480, 480])
    assert int(geo["df"]) == 1
