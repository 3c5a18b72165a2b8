"""Initial-frame transforms (design.md §5.4) against NumPy / SciPy / OpenCV references."""

from __future__ import annotations

import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from cia_jax.track import augment, params

SETTINGS = params.get_settings("cia18", image_sample_size=64)


def _smooth_image(n: int, seed: int = 0) -> np.ndarray:
  """A smooth 0..255 RGB image (bounded gradient, so interpolation schemes can be compared closely)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
  chans = []
  for _ in range(3):
    a = rng.uniform(0.05, 0.25, 4)
    p = rng.uniform(0, 2 * np.pi, 2)
    chans.append(127.5 + 60 * np.sin(a[0] * xx + a[1] * yy + p[0]) + 60 * np.cos(a[2] * xx - a[3] * yy + p[1]))
  return np.stack(chans, -1).astype(np.float32)


@pytest.mark.parametrize("angle", [10.0, -10.0, 45.0, -45.0])
def test_rotate_matches_cv2_warp_affine(angle):
  img = _smooth_image(41)
  # The reference's Rotate: H = [R | c - R c], c = (n - 1) / 2, R = [[cos, sin], [-sin, cos]].
  a = math.radians(angle)
  r = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
  c = np.full((2, 1), (img.shape[0] - 1) / 2)
  h = np.concatenate([r, c - r @ c], 1)
  ref = cv2.warpAffine(img, h, img.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
  out = np.asarray(augment.rotate(jnp.asarray(img), angle))
  # cv2 quantises sample positions to 1/32 px; with gradients <= ~30 / px that is < 1 grey level.
  err = np.abs(out - ref)
  assert err.max() < 1.0 and err.mean() < 0.15, (err.max(), err.mean())
  # The opposite rotation is far off (the sign convention is really checked).
  wrong = np.asarray(augment.rotate(jnp.asarray(img), -angle))
  assert np.abs(wrong - ref).mean() > 5.0


@pytest.mark.parametrize("sigma", [(3.0, 1.0), (1.0, 3.0), (2.0, 2.0)])
def test_blur_matches_zero_padded_separable_gaussian(sigma):
  img = np.random.default_rng(1).uniform(0, 255, (30, 34, 3))
  ref = img.astype(np.float64)
  for axis, s in enumerate(sigma):
    rad = math.ceil(2 * s)
    k = np.exp(-np.arange(-rad, rad + 1) ** 2 / (2 * s * s))
    ref = ndimage.correlate1d(ref, k / k.sum(), axis=axis, mode="constant", cval=0.0)
  out = np.asarray(augment.blur(jnp.asarray(img, jnp.float32), sigma))
  np.testing.assert_allclose(out, ref, atol=2e-3)
  assert np.abs(out[0] - img[0]).mean() > 10  # zero padding darkens the border


def _crop_ref(e_img: np.ndarray, shift, s: int) -> np.ndarray:
  """S x S window starting at (E - S) / 2 - shift of an edge-padded E image."""
  e = e_img.shape[0]
  pad = e
  padded = np.pad(e_img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
  y0, x0 = (e - s) // 2 - shift[0] + pad, (e - s) // 2 - shift[1] + pad
  return padded[y0:y0 + s, x0:x0 + s]


def test_patches_translations_and_flip():
  s = SETTINGS.image_sample_size
  e = augment.expanded_size(SETTINGS)
  assert e == 128
  img = np.random.default_rng(2).uniform(0, 255, (e, e, 3)).astype(np.float32)
  patches, shifts = augment.augment_init_patches(jnp.asarray(img), SETTINGS, jax.random.key(0))
  patches, shifts = np.asarray(patches), np.asarray(shifts)
  kinds = [k for k, _ in augment.transform_list(SETTINGS)]
  assert kinds == ["identity"] + ["translation"] * 4 + ["fliplr"] + ["blur"] * 3 + ["rotate"] * 4
  assert patches.shape == (13, s, s, 3) and shifts.shape == (13, 2)
  t = int(0.6 * s / 2)
  np.testing.assert_array_equal(shifts[:5], [[0, 0], [t, t], [-t, t], [t, -t], [-t, -t]])
  assert np.all(np.abs(shifts[5:]) < s / 6) and np.any(shifts[5:] != 0)
  np.testing.assert_array_equal(patches[0], img[32:96, 32:96])
  for i in range(1, 5):  # Content moves by +shift; replicate outside the expanded patch.
    np.testing.assert_array_equal(patches[i], _crop_ref(img, shifts[i], s))
  np.testing.assert_array_equal(patches[5], _crop_ref(img[:, ::-1], shifts[5], s))
  # Blur / rotate samples are their transform of the E patch, cropped with their shift.
  np.testing.assert_allclose(patches[6], _crop_ref(np.asarray(augment.blur(jnp.asarray(img), (3.0, 1.0))),
                                                   shifts[6], s), atol=1e-4)
  np.testing.assert_allclose(patches[9], _crop_ref(np.asarray(augment.rotate(jnp.asarray(img), 10.0)),
                                                   shifts[9], s), atol=1e-4)


def test_deterministic_has_no_random_shift_and_plain_dropout_copies():
  det = SETTINGS.replace(deterministic=True)
  shifts = np.asarray(augment.init_shifts(det, jax.random.key(3)))
  assert np.all(shifts[5:] == 0) and np.any(shifts[1:5] != 0)
  feat = jnp.asarray(np.random.default_rng(3).normal(size=(4, 4, 64)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(augment.dropout_copies(feat, det, jax.random.key(0))),
                                np.broadcast_to(np.asarray(feat), (2, 4, 4, 64)))


def test_channel_dropout():
  feat = jnp.asarray(np.random.default_rng(4).uniform(1, 2, size=(3, 3, 400)), jnp.float32)
  out = np.asarray(augment.dropout_copies(feat, SETTINGS, jax.random.key(5)))
  assert out.shape == (2, 3, 3, 400)
  zero = np.all(out == 0, axis=(1, 2))  # [2, 400]: whole channels dropped
  kept = np.all(np.isclose(out, 1.25 * np.asarray(feat)[None]), axis=(1, 2))
  assert np.all(zero ^ kept)
  assert 0.1 < zero.mean() < 0.3  # p = 0.2
  assert np.any(zero[0] != zero[1])  # independent masks


def test_global_shift_moves_every_sample():
  """border_mode 'inside': every shift gets trunc(global shift) added (random ones before truncation)."""
  key = jax.random.key(7)
  g = jnp.asarray([5.7, -3.2])
  plain = np.asarray(augment.init_shifts(SETTINGS, key))
  shifted = np.asarray(augment.init_shifts(SETTINGS, key, g))
  np.testing.assert_array_equal(shifted[:5], plain[:5] + np.array([5, -3]))
  rand = (np.asarray(jax.random.uniform(key, (13, 2))) - 0.5) * 64 / 3
  np.testing.assert_array_equal(shifted[5:], np.trunc(rand[5:] + np.asarray(g)).astype(int))
  np.testing.assert_array_equal(plain[5:], np.trunc(rand[5:]).astype(int))
