"""DiMP's distance-bin map (design.md §2.4), the input of the steepest-descent optimizer's label predictors.

It lives on the score-map grid: for features of `H x W` cells and an even (4x4) filter the scores have
`(H + 1) x (W + 1)` cells, and cell (i, j) measures the distance to the target centre `box_centre_px / 16`
(continuous corner convention, centre = x + w / 2) in feature cells; the Gaussian training label
(`cia_jax.ops.image.gaussian_label`) uses the same grid.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp

from cia_jax.ops.dtypes import default_float

Array = Any


def _bin_coordinate(center_yx: Array, output_hw: Sequence[int], num_bins: int, bin_displacement: float,
                    where: str) -> jnp.ndarray:
  """t = d / bin_displacement `[..., Ho, Wo]` (d: distance of every cell to the centre), arguments checked."""
  center_yx = jnp.asarray(center_yx, default_float())
  if center_yx.ndim < 1 or center_yx.shape[-1] != 2:
    raise ValueError(f"{where}: center_yx must have shape [..., 2] (row, col), got {center_yx.shape}")
  if len(output_hw) != 2 or min(int(s) for s in output_hw) < 1:
    raise ValueError(f"{where}: output_hw must be two positive sizes (Ho, Wo), got {tuple(output_hw)}")
  if num_bins < 2 or bin_displacement <= 0:
    raise ValueError(f"{where}: need num_bins >= 2 and bin_displacement > 0, got {num_bins}, {bin_displacement}")
  ho, wo = int(output_hw[0]), int(output_hw[1])
  dy = jnp.arange(ho, dtype=default_float())[:, None] - center_yx[..., 0, None, None]
  dx = jnp.arange(wo, dtype=default_float())[None, :] - center_yx[..., 1, None, None]
  d2 = dy * dy + dx * dx
  # Exact value at d = 0 with a finite (zero) gradient w.r.t. the centre there.
  pos = d2 > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, d2, 1.0)), 0.0) / bin_displacement


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
  t = _bin_coordinate(center_yx, output_hw, num_bins, bin_displacement, "distance_map")
  diff = t[..., None] - jnp.arange(num_bins, dtype=default_float())
  return jnp.concatenate([jnp.maximum(1.0 - jnp.abs(diff[..., :-1]), 0.0),
                          jnp.clip(1.0 + diff[..., -1:], 0.0, 1.0)], axis=-1)


def distance_bin_readout(center_yx: Array, output_hw: Sequence[int], weights: Array,
                         bin_displacement: float = 0.1) -> jnp.ndarray:
  """`distance_map(center_yx, output_hw, K, bin_displacement) @ weights` without building the `[..., K]` map.

  At most two bins are non-zero in a cell (k0 = floor(t) and k0 + 1; from t >= K - 1 on the last bin alone), so
  the read-out interpolates between two weights, the two bins' values computed by `distance_map`'s formulas.
  The filter update predicts its label, target mask and spatial weight this way: on the tracker's 50-slot
  memory the `[50, 23, 23, 100]` map and its three read-outs cost about 10 ms per update (BENCHMARKS.md).

  Args:
    center_yx: `[..., 2]` centre (row, col) in feature cells.
    output_hw: grid size (Ho, Wo) in cells.
    weights: `[K]` one weight per bin, K >= 2 bins.
    bin_displacement: bin spacing in feature cells.

  Returns:
    `[..., Ho, Wo]`, the dtype of the centre's float type and `weights` promoted.
  """
  weights = jnp.asarray(weights)
  if weights.ndim != 1:
    raise ValueError(f"distance_bin_readout: weights must be [K] (one per bin), got shape {weights.shape}")
  num_bins = weights.shape[0]
  t = _bin_coordinate(center_yx, output_hw, num_bins, bin_displacement, "distance_bin_readout")
  k0 = jnp.clip(jnp.floor(t), 0, num_bins - 2)
  lo = jnp.maximum(1.0 - jnp.abs(t - k0), 0.0)
  hi = jnp.where(k0 + 1 == num_bins - 1, jnp.clip(1.0 + (t - (num_bins - 1)), 0.0, 1.0),
                 jnp.maximum(1.0 - jnp.abs(t - (k0 + 1)), 0.0))
  i0 = k0.astype(jnp.int32)
  return weights[i0] * lo + weights[i0 + 1] * hi
