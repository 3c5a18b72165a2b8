"""Initial classifier filter from the target box (`FilterInitializerLinear`, design.md §2.3).

conv3x3 D->D with bias ('filter_conv') on the classification features of every training image, Precise
RoI Pooling of the target box (x, y, x + w, y + h) into filter_size x filter_size cells at 1 / feature_stride,
then the mean over the images of each sequence.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cia_jax.models.layers import Conv2d, at_least_float32, normal_fan_out_init
from cia_jax.ops.boxes import xywh_to_xyxy
from cia_jax.ops.dtypes import default_float
from cia_jax.ops.prroi_pool import prroi_pool_grouped


class FilterInitializerLinear(nn.Module):
  """Pools the initial filter from the features inside the target box.

  Parameters: filter_conv/kernel `(3, 3, D, D)`, filter_conv/bias `(D,)` (torch
  `classifier.filter_initializer.filter_conv.{weight,bias}`).

  Attributes:
    filter_size: side of the square filter in cells (4).
    feature_stride: pixels per feature cell (16).
    dtype: compute dtype of `filter_conv` (None: float32); the box pooling and the filter are float32.
  """

  filter_size: int = 4
  feature_stride: int = 16
  dtype: Any = None

  @nn.compact
  def __call__(self, feat: jax.Array, box_xywh: jax.Array) -> jax.Array:
    """Initial filters.

    Args:
      feat: `[Nimg, B, H, W, D]` classification features.
      box_xywh: `[Nimg, B, 4]` target boxes (x, y, w, h) in crop pixels.

    Returns:
      `[B, filter_size, filter_size, D]` filters (the mean over the Nimg pooled ones).
    """
    if feat.ndim != 5:
      raise ValueError(f"FilterInitializerLinear: feat must be [Nimg, B, H, W, D] (rank 5), got {feat.shape}")
    nimg, nseq, h, w, d = feat.shape
    box_xywh = jnp.asarray(box_xywh, default_float())
    if box_xywh.shape != (nimg, nseq, 4):
      raise ValueError(f"FilterInitializerLinear: box_xywh must be [Nimg, B, 4] = {(nimg, nseq, 4)}, "
                       f"got {box_xywh.shape}")
    x = Conv2d(d, 3, padding=1, use_bias=True, kernel_init=normal_fan_out_init(), bias_init=nn.initializers.zeros,
               name="filter_conv", dtype=self.dtype)(feat.reshape(nimg * nseq, h, w, d))
    x = at_least_float32(x)  # pooled and averaged into the filter in float32
    # One box per feature map: the grouped PrRoIPool never gathers per-RoI copies of the maps.
    boxes = xywh_to_xyxy(box_xywh).reshape(nimg * nseq, 1, 4)
    pooled = prroi_pool_grouped(x, boxes, self.filter_size, 1.0 / self.feature_stride)
    return jnp.mean(pooled.reshape(nimg, nseq, self.filter_size, self.filter_size, d), axis=0)
