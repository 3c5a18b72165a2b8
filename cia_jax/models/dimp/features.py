"""Classification feature extractor of the DiMP classifier (`classifier.feature_extractor`, design.md §2.1).

R18 (DiMP18 / CIA18): BasicBlock(C) '0' -> conv3x3 C->D, no bias '1' -> InstanceL2Norm(sqrt(1/(D*4*4))),
  scale 1/64 for D = 256.
R50 (SuperDiMP / CIA50): conv3x3 C->D, no bias '0' -> InstanceL2Norm(sqrt(1/(D*4*4))).
Flax names are the torch Sequential indices: torch `classifier.feature_extractor.0.conv1.weight` ->
`feature_extractor/0/conv1/kernel`, `...1.weight` -> `feature_extractor/1/kernel` (R18), `...0.weight` ->
`feature_extractor/0/kernel` (R50). The L2 norm has no parameters.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cia_jax.models.layers import Conv2d, at_least_float32, normal_fan_out_init
from cia_jax.models.resnet import BasicBlock
from cia_jax.ops.sums import blocked_sum

# Backbone (layer3) channels of the real networks.
DEFAULT_IN_DIM = {"r18": 256, "r50": 1024}


def instance_l2_norm(x: jax.Array, scale: float, eps: float = 1e-5) -> jax.Array:
  """y = x * scale * sqrt(H*W*C / (sum_{h,w,c} x^2 + eps)) per sample; `[N, H, W, C]` -> same shape.

  Afterwards sum(y^2) = scale^2 * H*W*C * S / (S + eps) (S = sum x^2), i.e. H*W/16 for scale sqrt(1/(16 C)).
  """
  if x.ndim != 4:
    raise ValueError(f"InstanceL2Norm: expected NHWC input of rank 4, got shape {x.shape}")
  n = x.shape[1] * x.shape[2] * x.shape[3]
  ss = blocked_sum(jnp.square(x), axis=(1, 2, 3))[:, None, None, None]
  return x * (scale * jnp.sqrt(n / (ss + eps)))


class InstanceL2Norm(nn.Module):
  """Per-sample L2 normalisation over H, W and C (no parameters); see `instance_l2_norm`.

  Attributes:
    scale: target root-mean-square value per element.
    eps: added to the sum of squares.
  """

  scale: float
  eps: float = 1e-5

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: `[N, H, W, C]` -> same shape."""
    return instance_l2_norm(x, self.scale, self.eps)


def feat_norm_scale(out_dim: int, filter_size: int = 4) -> float:
  """sqrt(1 / (D * fs * fs)): 1/64 for D = 256, sqrt(1/8192) ~= 0.011049 for D = 512."""
  return math.sqrt(1.0 / (out_dim * filter_size * filter_size))


class ClassificationFeatures(nn.Module):
  """Maps backbone layer3 features to the classifier's D-dim, L2-normalised features.

  Attributes:
    arch: 'r18' (residual block + conv + norm) or 'r50' (conv + norm).
    out_dim: D (256 for DiMP18/CIA18, 512 for SuperDiMP/CIA50).
    in_dim: expected input channels C (None: the real network's, 256 for r18 and 1024 for r50). Tests with
      tiny widths set it explicitly; a mismatch raises ValueError instead of a parameter-shape error.
    filter_size: classifier filter size, used only in the norm scale sqrt(1 / (D * fs * fs)).
    dtype: compute dtype of the block and conv (None: float32); the L2 norm and the output are float32 (the
      steepest-descent optimiser's input, design.md §9.1).
  """

  arch: str
  out_dim: int
  in_dim: int | None = None
  filter_size: int = 4
  dtype: Any = None
  winograd: int = 0  # 3x3 stride-1 convs of >= this many input channels by Winograd (`layers.Conv2d`)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: `[N, H, W, C]` layer3 features -> `[N, H, W, out_dim]`.

    train: BN of the R18 block uses batch statistics (apply with mutable=['batch_stats']); else running ones.
    """
    if self.arch not in DEFAULT_IN_DIM:
      raise ValueError(f"ClassificationFeatures: arch must be one of {sorted(DEFAULT_IN_DIM)}, "
                       f"got {self.arch!r}")
    in_dim = DEFAULT_IN_DIM[self.arch] if self.in_dim is None else self.in_dim
    if x.ndim != 4 or x.shape[-1] != in_dim:
      raise ValueError(f"ClassificationFeatures({self.arch}): expected [N, H, W, {in_dim}] features, "
                       f"got shape {x.shape}")
    conv_init = normal_fan_out_init()  # N(0, sqrt(2 / (9 * out_channels)))
    if self.arch == "r18":
      x = BasicBlock(in_dim, dtype=self.dtype, winograd=self.winograd, name="0")(x, use_running_average=not train)
      x = Conv2d(self.out_dim, 3, padding=1, use_bias=False, kernel_init=conv_init, name="1", dtype=self.dtype,
                 winograd=self.winograd)(x)
    else:
      x = Conv2d(self.out_dim, 3, padding=1, use_bias=False, kernel_init=conv_init, name="0", dtype=self.dtype,
                 winograd=self.winograd)(x)
    return InstanceL2Norm(feat_norm_scale(self.out_dim, self.filter_size))(at_least_float32(x))
