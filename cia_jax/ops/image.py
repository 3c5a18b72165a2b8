"""The image normalisation constants and the Gaussian training label, one definition each.

Used by the data pipeline (`cia_jax.data.processing`, NumPy inside `tf.numpy_function`), the tracker
(`cia_jax.track.tracker`, jax.numpy under `jit`), `cia_jax.train.batch` and the tests.

`gaussian_label` is one array-API function: the same arithmetic runs on NumPy (the data pipeline; float64
math, float32 result) and on jax.numpy (JAX arrays and tracers; `default_float()` math), so the two can only
differ by the floating-point width, never by formula (`tests/ops/test_image.py` checks they agree to 1e-12 in
float64). The data pipeline needs no TensorFlow version: its ops are NumPy run through `tf.numpy_function`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from cia_jax.ops.boxes import array_namespace
from cia_jax.ops.dtypes import default_float, to_float32_ftz

Array = Any

# ImageNet statistics of RGB in [0, 1] (design.md §1.4): the backbone's input is (x - mean) / std per channel.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pair(v: Any, name: str) -> tuple[float, float]:
  """A positive scalar or (h, w) pair -> (h, w) floats."""
  try:
    vals = tuple(np.broadcast_to(np.asarray(v, np.float64), (2,)).tolist())
  except (TypeError, ValueError):
    vals = ()
  if len(vals) != 2 or not min(vals) > 0:
    raise ValueError(f"gaussian_label: {name} must be a positive number or a (h, w) pair, got {v!r}")
  return vals


def gaussian_label(box_xywh: Array, sigma_factor: float, feat_sz: int | Sequence[int],
                   image_sz: int | Sequence[int], kernel_sz: int = 4, end_pad: bool = True) -> Array:
  """Gaussian classification label on the score-map grid (pytracking's `gaussian_label_function`, design.md §2.5).

  The grid coordinate along an axis of `sz` feature cells is k = -(sz - 1) / 2, ..., (sz + 1) / 2 (step 1;
  the last element only with `end_pad` and an even kernel, giving `sz + 1` values). The centre in the same
  coordinates is `sz * (c_px - img / 2) / img + ((kernel_sz + 1) % 2) / 2` with c_px = x + w / 2 (the +0.5
  shift for even kernels), and sigma = sigma_factor * sqrt(feat_h * feat_w) cells.
  label = exp(-(k_row - c_y)^2 / (2 sigma^2)) * exp(-(k_col - c_x)^2 / (2 sigma^2)) (peak 1 when the centre
  falls on a grid point). For an even kernel the peak sits at grid index c_px / (img / sz) (= c_px / 16 at
  stride 16): the same grid as `cia_jax.ops.labels.distance_map`.

  NumPy input (arrays, lists, tuples; the data pipeline): float64 arithmetic and a float32 NumPy result whose
  float32-subnormal values are 0 (`to_float32_ftz`: the same value eagerly and in tf.data worker threads).
  JAX input (arrays, tracers): jax.numpy arithmetic and result in `default_float()` (float32, or float64
  under `jax_enable_x64`).

  Args:
    box_xywh: `[..., 4]` boxes (x, y, w, h) in crop pixels.
    sigma_factor: output_sigma_factor / search_area_factor, e.g. 0.25 / 5 (sigma = 0.9 cells for 18 cells).
    feat_sz: feature size in cells, int or (h, w) (18 for 288 px crops at stride 16).
    image_sz: crop size in pixels, int or (h, w).
    kernel_sz: classifier filter size (4); an even size adds the +0.5 shift and (with end_pad) one extra
      element.
    end_pad: pad the grid with one extra row/col at the end for even kernels.

  Returns:
    `[..., feat_h + e, feat_w + e]` labels, e = 1 for an even kernel with end_pad, else 0.
  """
  xp = array_namespace(box_xywh)
  dtype = np.float64 if xp is np else default_float()
  box = xp.asarray(box_xywh, dtype=dtype)
  if box.ndim < 1 or box.shape[-1] != 4:
    raise ValueError(f"gaussian_label: box_xywh must have shape [..., 4] (x, y, w, h), got {box.shape}")
  if not sigma_factor > 0:
    raise ValueError(f"gaussian_label: sigma_factor must be > 0, got {sigma_factor}")
  if int(kernel_sz) < 1:
    raise ValueError(f"gaussian_label: kernel_sz must be >= 1, got {kernel_sz}")
  fh, fw = _pair(feat_sz, "feat_sz")
  ih, iw = _pair(image_sz, "image_sz")
  shift = ((int(kernel_sz) + 1) % 2) / 2.0
  extra = int(end_pad and int(kernel_sz) % 2 == 0)
  sigma = sigma_factor * float(np.sqrt(fh * fw))

  def gauss_1d(sz: float, img: float, centre_px):
    centre = sz * (centre_px - img / 2.0) / img + shift
    k = xp.asarray(np.arange(-(sz - 1) / 2.0, (sz + 1) / 2.0 + extra, dtype=np.float64), dtype=dtype)
    return xp.exp(-0.5 * ((k - centre[..., None]) / sigma) ** 2)

  gy = gauss_1d(fh, ih, box[..., 1] + 0.5 * box[..., 3])
  gx = gauss_1d(fw, iw, box[..., 0] + 0.5 * box[..., 2])
  label = gy[..., :, None] * gx[..., None, :]
  return to_float32_ftz(label) if xp is np else label


def gaussian_label_at(offset_yx: Array, sigma: Array, feat_hw: Sequence[int], kernel_sz: int = 4) -> Array:
  """The tracker's Gaussian label (pytracking's `label_function_spatial`; jax.numpy, traced inputs allowed).

  Same grid and centre rule as `gaussian_label` (k = -(sz - 1) / 2, ..., one extra element for an even kernel;
  centre sz * offset + ((kernel_sz + 1) % 2) / 2), but from the target's offset from the patch centre as a
  fraction of the patch side, offset_yx = (pos - sample_pos) / (sample_scale * S), and a sigma given in cells.

  Args:
    offset_yx: `[..., 2]` normalised (y, x) offsets.
    sigma: scalar (or broadcastable to `[...]`) sigma in feature cells.
    feat_hw: (h, w) feature size in cells.
    kernel_sz: classifier filter size (4).

  Returns:
    `[..., h + e, w + e]` labels in `default_float()`, e = 1 for an even kernel.
  """
  offset = jnp.asarray(offset_yx, default_float())
  sigma = jnp.asarray(sigma, default_float())[..., None]
  extra = int(int(kernel_sz) % 2 == 0)
  shift = ((int(kernel_sz) + 1) % 2) / 2.0

  def gauss_1d(sz: int, off):
    k = jnp.asarray(np.arange(-(sz - 1) / 2.0, (sz + 1) / 2.0 + extra, dtype=np.float64), default_float())
    return jnp.exp(-0.5 * ((k - (sz * off + shift)[..., None]) / sigma) ** 2)

  gy = gauss_1d(int(feat_hw[0]), offset[..., 0])
  gx = gauss_1d(int(feat_hw[1]), offset[..., 1])
  return gy[..., :, None] * gx[..., None, :]
