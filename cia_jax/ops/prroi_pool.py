"""Precise RoI Pooling (Jiang et al., ECCV 2018) in closed form.

Semantics (design.md §3.3, the reference CUDA kernel):
* Feature element `F[i, j]` sits at the continuous point (y=i, x=j) after the
  box is scaled by `spatial_scale`; there is **no** half-pixel shift.
* The map is the zero-padded bilinear interpolant
  `f(y, x) = sum_ij F[i, j] h(y - i) h(x - j)`, `h(t) = max(0, 1 - |t|)`, so it
  decays linearly to 0 one cell outside the map.
* A bin's output is the integral of `f` over the bin divided by the bin area;
  an empty bin (zero width or height) outputs 0.

Because `f` is separable, the integral over `[a, b]` along one axis is a
weight per index, `G(b - i) - G(a - i)` with `G` the antiderivative of the hat,
and a bin is `wy^T F wx`. Everything is plain jnp, so it is jit/vmap-able and
differentiable w.r.t. both the features and the box coordinates (this
reproduces the CUDA op's coordinate gradient, which the tracker's IoU-Net box
refinement needs).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def _pair(output_size: int | Sequence[int]) -> tuple[int, int]:
  if isinstance(output_size, int):
    return output_size, output_size
  ph, pw = output_size
  return int(ph), int(pw)


def _hat_antiderivative(u: jax.Array) -> jax.Array:
  """G(u) = integral of max(0, 1 - |t|) from -inf to u (continuously differentiable)."""
  v = jnp.clip(u, -1.0, 1.0)
  return jnp.where(v <= 0.0, 0.5 * jnp.square(1.0 + v), 1.0 - 0.5 * jnp.square(1.0 - v))


def _axis_weights(start: jax.Array, size: jax.Array, num_bins: int, length: int,
                  origin: jax.Array | None = None) -> jax.Array:
  """Integration weights of one axis.

  Args:
    start: `[N, R]` bin-grid start in feature cells.
    size: `[N, R]` total extent in feature cells (>= 0).
    num_bins: number of bins along the axis.
    length: number of feature cells along the axis.
    origin: `[N]` integer index of the first cell in the full map (None: 0).

  Returns:
    `[N, R, num_bins, length]`: integral of the hat at each index over each bin.
  """
  bins = jnp.arange(num_bins + 1, dtype=start.dtype)
  edges = start[..., None] + size[..., None] * bins / num_bins  # [..., num_bins + 1]
  idx = jnp.arange(length, dtype=start.dtype)
  if origin is not None:  # whole numbers, so the weights of a cell are those of the full map, bit for bit
    idx = origin.astype(start.dtype)[:, None, None, None] + idx  # [N, 1, 1, length]
  g = _hat_antiderivative(edges[..., :, None] - idx)  # [..., num_bins + 1, length]
  return g[..., 1:, :] - g[..., :-1, :]


def prroi_pool_grouped(features: jax.Array, boxes_xyxy: jax.Array, output_size: int | Sequence[int],
                       spatial_scale: float, origin_yx: jax.Array | None = None) -> jax.Array:
  """Precise RoI Pooling of R boxes per image, without gathering feature maps.

  Use this when every image has the same number of boxes (IoU-Net proposals):
  it never materialises one feature map per RoI.

  Args:
    features: `[N, H, W, C]` feature maps.
    boxes_xyxy: `[N, R, 4]` boxes (x1, y1, x2, y2) in input-image pixels (x2 = x + w).
    output_size: `ph` or `(ph, pw)` bins.
    spatial_scale: feature cells per input pixel (1 / stride).
    origin_yx: `[N, 2]` integer (row, column) of `features`' first cell in a larger map whose pixel frame the
      boxes use (None: 0, the map is the whole image). With a window of the larger map, a box whose weights
      vanish outside the window pools exactly what it pools on the whole map.

  Returns:
    `[N, R, ph, pw, C]` pooled features.
  """
  if features.ndim != 4:
    raise ValueError(f"prroi_pool: features must be [N, H, W, C], got shape {features.shape}")
  if boxes_xyxy.ndim != 3 or boxes_xyxy.shape[-1] != 4 or boxes_xyxy.shape[0] != features.shape[0]:
    raise ValueError(
        f"prroi_pool_grouped: boxes must be [N={features.shape[0]}, R, 4], got shape {boxes_xyxy.shape}")
  ph, pw = _pair(output_size)
  _, h, w, _ = features.shape
  dtype = jnp.result_type(features.dtype, boxes_xyxy.dtype, jnp.float32)
  b = boxes_xyxy.astype(dtype) * spatial_scale
  x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
  width = jnp.maximum(x2 - x1, 0.0)
  height = jnp.maximum(y2 - y1, 0.0)
  oy = ox = None
  if origin_yx is not None:
    if origin_yx.shape != (features.shape[0], 2):
      raise ValueError(f"prroi_pool_grouped: origin_yx must be [N={features.shape[0]}, 2], got {origin_yx.shape}")
    oy, ox = origin_yx[:, 0], origin_yx[:, 1]
  wy = _axis_weights(y1, height, ph, h, oy)  # [N, R, ph, H]
  wx = _axis_weights(x1, width, pw, w, ox)  # [N, R, pw, W]
  f = features.astype(dtype)
  # Contract the larger spatial axis first with the map, then the other one.
  rows = jnp.einsum("nrpi,nijc->nrpjc", wy, f)
  pooled = jnp.einsum("nrqj,nrpjc->nrpqc", wx, rows)
  area = (height / ph) * (width / pw)
  safe = jnp.where(area > 0, area, 1.0)
  out = jnp.where((area > 0)[..., None, None, None], pooled / safe[..., None, None, None], 0.0)
  return out.astype(features.dtype)


def prroi_pool(features: jax.Array, rois: jax.Array, output_size: int | Sequence[int],
               spatial_scale: float) -> jax.Array:
  """Precise RoI Pooling of arbitrary RoIs with a batch index (the reference op's interface).

  Args:
    features: `[N, H, W, C]` feature maps.
    rois: `[K, 5]` rows (batch_index, x1, y1, x2, y2), boxes in input-image pixels
      (x2 = x + w). The batch index is rounded to the nearest integer.
    output_size: `ph` or `(ph, pw)` bins.
    spatial_scale: feature cells per input pixel (1 / stride).

  Returns:
    `[K, ph, pw, C]` pooled features; 0 for zero-area RoIs.

  Memory: gathers one `[H, W, C]` map per RoI. For many RoIs per image use
  `prroi_pool_grouped`.
  """
  if features.ndim != 4:
    raise ValueError(f"prroi_pool: features must be [N, H, W, C], got shape {features.shape}")
  if rois.ndim != 2 or rois.shape[-1] != 5:
    raise ValueError(f"prroi_pool: rois must be [K, 5] = (batch_index, x1, y1, x2, y2), got {rois.shape}")
  batch_index = jnp.clip(jnp.round(rois[:, 0]).astype(jnp.int32), 0, features.shape[0] - 1)
  per_roi = jnp.take(features, batch_index, axis=0)  # [K, H, W, C]
  return prroi_pool_grouped(per_roi, rois[:, None, 1:], output_size, spatial_scale)[:, 0]
