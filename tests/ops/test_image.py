"""The one ImageNet mean/std and the one Gaussian label: the data pipeline and the tracker use these objects, and
the label's NumPy path (data pipeline) and JAX path (jit) are the same formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.data import processing
from cia_jax.ops import image
from cia_jax.track import tracker


def test_data_pipeline_and_tracker_share_the_definitions():
  assert processing.gaussian_label is image.gaussian_label
  assert processing.IMAGENET_MEAN is image.IMAGENET_MEAN and processing.IMAGENET_STD is image.IMAGENET_STD
  assert tracker.IMAGE_MEAN is image.IMAGENET_MEAN and tracker.IMAGE_STD is image.IMAGENET_STD
  np.testing.assert_array_equal(image.IMAGENET_MEAN, [0.485, 0.456, 0.406])  # design.md §1.4
  np.testing.assert_array_equal(image.IMAGENET_STD, [0.229, 0.224, 0.225])


@pytest.mark.parametrize("feat, img, sigma_factor, kernel_sz, end_pad", [
    (18, 288, 0.25 / 5, 4, True), (22, 352, 0.25 / 6, 4, True), (18, 288, 0.05, 4, False),
    (18, 288, 0.05, 3, True), ((10, 12), (160, 192), 0.05, 4, True)])
def test_numpy_and_jax_paths_agree(feat, img, sigma_factor, kernel_sz, end_pad):
  rng = np.random.default_rng(0)
  boxes = np.concatenate([rng.uniform(-20, 250, (2, 3, 2)), rng.uniform(2, 90, (2, 3, 2))], axis=-1)
  got_np = image.gaussian_label(boxes, sigma_factor, feat, img, kernel_sz, end_pad)
  assert isinstance(got_np, np.ndarray) and got_np.dtype == np.float32
  # The NumPy path computes in float64 and rounds once: the float64 JAX path rounded to float32 is the same.
  with jax.enable_x64(True):
    got_64 = image.gaussian_label(jnp.asarray(boxes, jnp.float64), sigma_factor, feat, img, kernel_sz, end_pad)
    assert got_64.dtype == jnp.float64
    got_64 = np.asarray(got_64)
  np.testing.assert_allclose(got_np, got_64.astype(np.float32), rtol=0, atol=1e-6)
  np.testing.assert_allclose(image.gaussian_label(boxes.astype(np.float64), sigma_factor, feat, img, kernel_sz,
                                                  end_pad), got_64, rtol=0, atol=1e-7)
  # float64 agreement of the formula itself: the NumPy arithmetic before its float32 rounding.
  exact = _float64_numpy_label(boxes, sigma_factor, feat, img, kernel_sz, end_pad)
  np.testing.assert_allclose(got_64, exact, rtol=0, atol=1e-12)
  got_32 = jax.jit(lambda b: image.gaussian_label(b, sigma_factor, feat, img, kernel_sz, end_pad))(
      jnp.asarray(boxes, jnp.float32))
  assert got_32.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got_32), exact, rtol=0, atol=1e-6)


def _float64_numpy_label(boxes, sigma_factor, feat, img, kernel_sz, end_pad):
  """The NumPy path without its final float32 rounding (same code, float64 NumPy arrays throughout)."""
  fh, fw = np.broadcast_to(np.asarray(feat, np.float64), (2,))
  ih, iw = np.broadcast_to(np.asarray(img, np.float64), (2,))
  extra = int(end_pad and kernel_sz % 2 == 0)
  shift = 0.5 if kernel_sz % 2 == 0 else 0.0
  sigma = sigma_factor * np.sqrt(fh * fw)

  def g(sz, im, c):
    k = -(sz - 1) / 2 + np.arange(int(sz) + extra)
    return np.exp(-((k - (sz * (c[..., None] - im / 2) / im + shift)) ** 2) / (2 * sigma**2))

  gy = g(fh, ih, boxes[..., 1] + boxes[..., 3] / 2)
  gx = g(fw, iw, boxes[..., 0] + boxes[..., 2] / 2)
  return gy[..., :, None] * gx[..., None, :]


def test_numpy_path_flushes_float32_subnormals():
  # Far from the centre the label underflows float32's normal range: exactly 0, as in tf.data worker threads.
  lab = image.gaussian_label(np.array([0.0, 0.0, 2.0, 2.0]), 0.05, 18, 288)
  tiny = np.finfo(np.float32).tiny
  assert np.all((lab == 0) | (np.abs(lab) >= tiny))
  assert (lab == 0).any()
