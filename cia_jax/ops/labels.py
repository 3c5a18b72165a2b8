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
