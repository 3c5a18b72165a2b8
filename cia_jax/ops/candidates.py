"""Target candidates of KeepTrack's candidate matching (keeptrack.md §2): local maxima of a score map.

Static shapes: the reference keeps every local maximum above the threshold (no cap at inference), we keep
the best `capacity` of them in a fixed-size buffer with a validity mask, so the tracker step is jitted once
per image size. `LocalMaxima.num_maxima` says whether the buffer was too small.

Conventions (keeptrack.md §2.1-2.3): score-map cells are (row, col) = (y, x); image coordinates are full-frame pixels,
ordered (y, x); feature maps are NHWC (a single map here: `[S, S, C]`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from cia_jax.ops.dtypes import default_float

Array = Any

POOL_SIZE = 5  # the reference's max-pool window (stride 1, padding 2)


class LocalMaxima(NamedTuple):
  """A fixed-capacity candidate set, best first.

  Attributes:
    coords: `[K, 2]` int32 score-map cells (row, col); padded slots hold (0, 0).
    scores: `[K]` score-map values; padded slots hold 0.
    valid: `[K]` bool, True for real candidates (a prefix: slots 0 .. count - 1).
    count: `[]` int32 number of real candidates in the buffer, min(num_maxima, K).
    num_maxima: `[]` int32 number of local maxima above the threshold in the whole map (> count means the
      buffer dropped the lowest-scoring ones).
  """

  coords: jax.Array
  scores: jax.Array
  valid: jax.Array
  count: jax.Array
  num_maxima: jax.Array


def local_maximum_mask(scores: Array, threshold: Array, pool_size: int = POOL_SIZE) -> jax.Array:
  """Cells that are local maxima of a `pool_size` x `pool_size` window and strictly above `threshold`.

  The window is a stride-1 max-pool padded with -inf (PyTorch's max-pool padding), so a border cell
  competes only with the real cells of its clipped window. Equal neighbours are all maxima (plateaus give
  several candidates, as in the reference). NaN scores are never maxima.

  Args:
    scores: `[S, S]` (or `[H, W]`) raw score map.
    threshold: scalar; a maximum must satisfy `score > threshold`.
    pool_size: odd window side (5 in the reference).

  Returns:
    `[S, S]` bool.
  """
  if pool_size < 1 or pool_size % 2 != 1:
    raise ValueError(f"local_maximum_mask: pool_size must be odd and positive, got {pool_size}")
  scores = jnp.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(f"local_maximum_mask: scores must be a [S, S] map, got shape {scores.shape}")
  pad = pool_size // 2
  pooled = jax.lax.reduce_window(scores, jnp.array(-jnp.inf, scores.dtype), jax.lax.max, (pool_size, pool_size),
                                 (1, 1), ((pad, pad), (pad, pad)))
  return (scores == pooled) & (scores > threshold)


def find_local_maxima(scores: Array, threshold: Array, capacity: int, pool_size: int = POOL_SIZE) -> LocalMaxima:
  """The local maxima of a score map above a threshold, sorted by descending score, in a static buffer.

  Order: descending score; equal scores (plateaus) in row-major cell order (row * W + col ascending). The
  reference's order among equal scores is unspecified (a non-stable sort); this one is deterministic.
  Slot 0 is always the highest-scoring candidate. Candidates beyond `capacity` (the lowest-scoring ones)
  are dropped; missing ones are padding with `valid` False.

  Args:
    scores: `[S, S]` raw score map (one scale).
    threshold: scalar, may be traced; a candidate needs `score > threshold` (strict).
    capacity: K, static buffer size (may exceed S * S).
    pool_size: odd max-pool window side (5).

  Returns:
    `LocalMaxima` with `coords [K, 2]` int32, `scores [K]`, `valid [K]`, `count`, `num_maxima`.
  """
  if capacity < 0:
    raise ValueError(f"find_local_maxima: capacity must be >= 0, got {capacity}")
  scores = jnp.asarray(scores)
  is_max = local_maximum_mask(scores, threshold, pool_size).reshape(-1)
  flat = scores.reshape(-1)
  cells = flat.shape[0]
  # Sort key: -score for candidates (+inf otherwise, so they come last); -0.0 -> 0.0 so that the second key,
  # the row-major index, decides ties deterministically.
  neg = jnp.where(is_max, -flat, jnp.inf)
  neg = jnp.where(neg == 0, jnp.zeros_like(neg), neg)
  index = jnp.arange(cells, dtype=jnp.int32)
  _, order = jax.lax.sort((neg, index), num_keys=2)
  if capacity > cells:
    order = jnp.concatenate([order, jnp.zeros((capacity - cells,), jnp.int32)])
  order = order[:capacity]
  num_maxima = jnp.sum(is_max, dtype=jnp.int32)
  valid = jnp.arange(capacity) < num_maxima
  width = scores.shape[1]
  coords = jnp.where(valid[:, None], jnp.stack([order // width, order % width], axis=-1), 0).astype(jnp.int32)
  values = jnp.where(valid, flat[order], jnp.zeros((), scores.dtype))
  return LocalMaxima(coords, values, valid, jnp.minimum(num_maxima, capacity).astype(jnp.int32), num_maxima)


def candidate_image_coords(coords: Array, search_box_xywh: Array, score_size: int) -> jax.Array:
  """Score-map cells -> full-frame pixel coordinates (keeptrack.md §2.3, 'full' reference system).

  `y_img = h * row / (S - 1) + y` and `x_img = w * col / (S - 1) + x`, with the search-area box
  `[x, y, w, h] = [x1, y1, x2 - x1 - 1, y2 - y1 - 1]` of the crop (end-exclusive sample coords).

  Args:
    coords: `[..., K, 2]` (row, col) cells (integer or float).
    search_box_xywh: `[..., 4]` search-area box (x, y, w, h), full-frame pixels.
    score_size: S, the score map side (cells); needs S >= 2.

  Returns:
    `[..., K, 2]` (y, x) pixels in the default float dtype.
  """
  if score_size < 2:
    raise ValueError(f"candidate_image_coords: score_size must be >= 2, got {score_size}")
  coords = jnp.asarray(coords, default_float())
  box = jnp.asarray(search_box_xywh, default_float())
  if coords.shape[-1] != 2 or box.shape[-1] != 4:
    raise ValueError(f"candidate_image_coords: coords must be [..., K, 2] and the box [..., 4], got "
                     f"{coords.shape} and {box.shape}")
  offset_yx = jnp.stack([box[..., 1], box[..., 0]], axis=-1)[..., None, :]
  size_hw = jnp.stack([box[..., 3], box[..., 2]], axis=-1)[..., None, :]
  return size_hw * coords / (score_size - 1) + offset_yx


def gather_descriptors(feature_map: Array, coords: Array, valid: Array | None = None) -> jax.Array:
  """The descriptor of each candidate: the feature vector at its integer cell (no interpolation, keeptrack.md §2.2).

  Args:
    feature_map: `[S, S, C]` descriptor map on the score-map grid (the tcm descriptor conv output).
    coords: `[K, 2]` int (row, col) cells; out-of-range cells are clamped (padding slots hold (0, 0)).
    valid: optional `[K]` bool; invalid slots get zero descriptors.

  Returns:
    `[K, C]` descriptors.
  """
  feature_map = jnp.asarray(feature_map)
  coords = jnp.asarray(coords)
  if feature_map.ndim != 3 or coords.ndim != 2 or coords.shape[-1] != 2:
    raise ValueError(f"gather_descriptors: need feature_map [S, S, C] and coords [K, 2], got "
                     f"{feature_map.shape} and {coords.shape}")
  rows = jnp.clip(coords[:, 0], 0, feature_map.shape[0] - 1)
  cols = jnp.clip(coords[:, 1], 0, feature_map.shape[1] - 1)
  desc = feature_map[rows, cols]
  if valid is not None:
    desc = jnp.where(jnp.asarray(valid)[:, None], desc, jnp.zeros((), desc.dtype))
  return desc
