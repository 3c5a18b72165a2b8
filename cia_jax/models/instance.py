"""CIA's instance-aware module (design.md §4.1, 4.3, 4.4): the contrastive projector and the angle modulation.

* `ContrastiveProjector` ("mlp_q" of the paper, reference name `proj` inside each encoder): 3x3 conv
  + ReLU + 1x1 conv, C3 -> C3. One module serves two inputs: the 3x3 PrRoI-pooled target RoI with
  padding 0 (a "valid" conv down to 1x1, the InfoNCE-V embedding) and the dense layer3 map with
  padding 1 (the input of the angle modulation).
* `AngleModulator` (reference name `modulator`, Modulator_v2): rotates every layer3 vector towards
  the projected instance embedding while keeping its norm.

Parameter names follow the reference state dict (design.md §6.3; conv weight (O, I, kh, kw) -> kernel
(kh, kw, I, O)):
  feature_extractor.encoder_q.proj.conv{1,2}.{weight,bias} -> <ContrastiveProjector>/conv{1,2}/{kernel,bias}
  feature_extractor.modulator.alpha_factor (0-dim)         -> <AngleModulator>/alpha_factor (shape ())
  feature_extractor.modulator.proj.{0,2}.{weight,bias}     -> <AngleModulator>/proj_{0,2}/{kernel,bias}
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cia_jax.models.layers import Conv2d, at_least_float32, normal_fan_out_init
from cia_jax.ops.boxes import xywh_to_xyxy
from cia_jax.ops.prroi_pool import prroi_pool_grouped

NORM_EPS = 1e-12
ROI_SIZE = 3  # PrRoI bins of the contrastive embedding.
LAYER3_STRIDE = 16


def safe_norm(x: jax.Array, eps: float = NORM_EPS, axis: int = -1) -> jax.Array:
  """max(||x||, eps) over `axis` (keepdims), with a finite gradient at x = 0."""
  return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=axis, keepdims=True), eps * eps))


def l2_normalize(x: jax.Array, eps: float = NORM_EPS, axis: int = -1) -> jax.Array:
  """x / max(||x||, eps) over `axis` (torch.nn.functional.normalize)."""
  return x / safe_norm(x, eps, axis)


class ContrastiveProjector(nn.Module):
  """The contrastive MLP "mlp_q": Conv3x3(C3 -> C3, bias) + ReLU + Conv1x1(C3 -> C3, bias).

  PyTorch default init (kaiming-uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))). The key encoder uses
  the same module with the EMA parameters.

  Attributes:
    dtype: compute dtype of the convs (None: input and parameters promoted). `embed_target` pools the RoI and
      L2-normalises in float32 whatever it is (InfoNCE-V's logits are dot products of these embeddings).
  """

  dtype: Any = None
  winograd: int = 0  # 3x3 stride-1 convs of >= this many input channels by Winograd (`layers.Conv2d`)

  @nn.compact
  def __call__(self, x: jax.Array, padding: int) -> jax.Array:
    """Projects a feature map.

    Args:
      x: `[N, H, W, C3]` layer3 features (dense map, or 3x3 pooled RoIs).
      padding: zero padding of the 3x3 conv (feature cells): 1 on dense maps, 0 on pooled RoIs.

    Returns:
      `[N, H + 2 * padding - 2, W + 2 * padding - 2, C3]`.
    """
    if x.ndim != 4:
      raise ValueError(f"ContrastiveProjector: x must be [N, H, W, C], got shape {x.shape}")
    if padding not in (0, 1):
      raise ValueError(
          f"ContrastiveProjector: padding must be 0 (pooled RoI) or 1 (dense map), got {padding}")
    c = x.shape[-1]
    y = Conv2d(c, kernel_size=3, padding=padding, use_bias=True, name="conv1", dtype=self.dtype,
               winograd=self.winograd)(x)
    return Conv2d(c, kernel_size=1, use_bias=True, name="conv2", dtype=self.dtype)(nn.relu(y))

  def embed_target(self, layer3: jax.Array, box_xywh: jax.Array) -> jax.Array:
    """InfoNCE-V embedding of the target: PrRoIPool 3x3 @1/16 on the box, projector (padding 0), L2 norm.

    Args:
      layer3: `[N, H, W, C3]` layer3 features (stride 16).
      box_xywh: `[N, 4]` target box (x, y, w, h) in input-image pixels, one per image (x2 = x + w).

    Returns:
      `[N, C3]` embeddings, L2-normalised over channels (eps 1e-12).
    """
    if layer3.ndim != 4 or box_xywh.shape != (layer3.shape[0], 4):
      raise ValueError(f"embed_target: layer3 must be [N, H, W, C] and box_xywh [N, 4], got {layer3.shape} "
                       f"and {box_xywh.shape}")
    layer3 = at_least_float32(layer3)
    pooled = prroi_pool_grouped(layer3, xywh_to_xyxy(box_xywh)[:, None], ROI_SIZE, 1.0 / LAYER3_STRIDE)[:, 0]
    y = at_least_float32(self(pooled, padding=0))  # [N, 1, 1, C3]
    return l2_normalize(y.reshape(y.shape[0], -1))


class AngleModulator(nn.Module):
  """Angle modulation (design.md §4.4): z = |x| * normalize(alpha * x / |x| + P(normalize(y))).

  alpha = exp(alpha_factor) > 0 (alpha_factor init 0, so alpha = 1), P = 1x1 conv + ReLU + 1x1 conv
  (C3 -> C3, weights N(0, sqrt(2 / C3)), bias 0; its output is not renormalised), y = the dense
  projector output, stop-gradient'ed (tracking losses never reach the projector through this path).
  Norms are per pixel over channels with max(., 1e-12).

  Attributes:
    dtype: compute dtype of the two 1x1 convs (None: input and parameters promoted); the norms and the
      rotation are computed in float32 whatever it is (the output's norm must equal the input's).
  """

  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, y_dense: jax.Array) -> jax.Array:
    """Modulates layer3.

    Args:
      x: `[N, H, W, C3]` layer3 of the query encoder.
      y_dense: `[N, H, W, C3]` `ContrastiveProjector(x, padding=1)`.

    Returns:
      `[N, H, W, C3]` instance-aware features ("layer3_ins"), same per-pixel norm as x.
    """
    if x.ndim != 4 or y_dense.shape != x.shape:
      raise ValueError(
          f"AngleModulator: x and y_dense must both be [N, H, W, C], got {x.shape} and {y_dense.shape}")
    c = x.shape[-1]
    alpha_factor = self.param("alpha_factor", nn.initializers.zeros, (), jnp.float32)
    x, y_dense = at_least_float32(x), at_least_float32(y_dense)
    y_hat = l2_normalize(jax.lax.stop_gradient(y_dense))
    conv = lambda name: Conv2d(c, kernel_size=1, use_bias=True, kernel_init=normal_fan_out_init(),
                               bias_init=nn.initializers.zeros, name=name, dtype=self.dtype)
    y_mod = at_least_float32(conv("proj_2")(nn.relu(conv("proj_0")(y_hat))))
    n = safe_norm(x)
    s = jnp.exp(alpha_factor) * x / n + y_mod
    return n * l2_normalize(s)
