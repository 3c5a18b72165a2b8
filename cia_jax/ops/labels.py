"""Target-classifier labels: DiMP's distance-bin map (spec 2.4) and the Gaussian training label (spec 2.5).

Both live on the score-map grid: for features of `H x W` cells and an even (4x4) filter the scores have
`(H + 1) x (W + 1)` cells, and cell (i, j) of either map measures the distance to the target centre
`box_centre_px / 16` (continuous corner convention, centre = x + w / 2) in feature cells.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from cia_jax.ops.dtypes import default_float

Array = Any


def distance_map(center_yx: Array, output_hw: Sequence[int], num_bins: int = 100,
                 bin_displacement: float = 0.1) -> jnp.ndarray:
  """Soft one-hot encoding of the distance from every grid cell to a centre (DiMP's `DistanceMap`).

  For cell (i, j), d = sqrt((i - c_y)^2 + (j - c_x)^2) (feature cells) and t = d / bin_displacement.
  Bin k < K - 1 holds max(0, 1 - |t - k|); the last bin holds clip(1 + t - (K - 1), 0, 1), so it saturates to
  1 for every d >= (K - 1) * bin_displacement (9.9 cells with the defaults). The bins sum to 1 everywhere.

  Args:
    center_yx: `[..., 2]` centre (row, col) in feature cells (cell (i, j) sits at coordinate (i, j)).
    output_hw: grid size (Ho, Wo) in cells.
    num_bins: K, number of distance bins (>= 2).
    bin_displacement: bin spacing in feature cells.

  Returns:
    `[..., Ho, Wo, K]` float32 bin activations.
  """
  center_yx = jnp.asarray(center_yx, default_float())
  if center_yx.ndim < 1 or center_yx.shape[-1] != 2:
    raise ValueError(f"distance_map: center_yx must have shape [..., 2] (row, col), got {center_yx.shape}")
  if len(output_hw) != 2 or min(int(s) for s in output_hw) < 1:
    raise ValueError(f"distance_map: output_hw must be two positive sizes (Ho, Wo), got {tuple(output_hw)}")
  if num_bins < 2 or bin_displacement <= 0:
    raise ValueError(f"distance_map: need num_bins >= 2 and bin_displacement > 0, got {num_bins}, "
                     f"{bin_displacement}")
  ho, wo = int(output_hw[0]), int(output_hw[1])
  dy = jnp.arange(ho, dtype=default_float())[:, None] - center_yx[..., 0, None, None]
  dx = jnp.arange(wo, dtype=default_float())[None, :] - center_yx[..., 1, None, None]
  d2 = dy * dy + dx * dx
  # Exact value at d = 0 with a finite (zero) gradient w.r.t. the centre there.
  pos = d2 > 0
  dist = jnp.where(pos, jnp.sqrt(jnp.where(pos, d2, 1.0)), 0.0)
  diff = dist[..., None] / bin_displacement - jnp.arange(num_bins, dtype=default_float())
  return jnp.concatenate([jnp.maximum(1.0 - jnp.abs(diff[..., :-1]), 0.0),
                          jnp.clip(1.0 + diff[..., -1:], 0.0, 1.0)], axis=-1)


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
  """Gaussian classification label on the score-map grid (pytracking's `gaussian_label_function`, spec 2.5).

  The grid coordinate along an axis of `sz` feature cells is k = -(sz - 1) / 2, ..., (sz + 1) / 2 (step 1;
  the last element only with `end_pad` and an even kernel, giving `sz + 1` values). The centre in the same
  coordinates is `sz * (c_px - img / 2) / img + ((kernel_sz + 1) % 2) / 2` with c_px = x + w / 2 (the +0.5
  shift for even kernels), and sigma = sigma_factor * sqrt(feat_h * feat_w) cells.
  label = exp(-(k_row - c_y)^2 / (2 sigma^2)) * exp(-(k_col - c_x)^2 / (2 sigma^2)) (peak 1 when the centre
  falls on a grid point). For an even kernel the peak sits at grid index c_px / (img / sz) (= c_px / 16 at
  stride 16): the same grid as `distance_map`.

  Works on NumPy input (returns NumPy, float32) and on JAX arrays (returns jax.numpy).

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
  xp = np if isinstance(box_xywh, (np.ndarray, np.generic, list, tuple)) else jnp
  box = xp.asarray(box_xywh, dtype=xp.float32)
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
    k = np.arange(-(sz - 1) / 2.0, (sz + 1) / 2.0 + extra, dtype=np.float64)
    k = xp.asarray(k.astype(np.float32))
    return xp.exp(-0.5 / sigma**2 * (k - centre[..., None]) ** 2)

  gy = gauss_1d(fh, ih, box[..., 1] + 0.5 * box[..., 3])
  gx = gauss_1d(fw, iw, box[..., 0] + 0.5 * box[..., 2])
  return gy[..., :, None] * gx[..., None, :]
