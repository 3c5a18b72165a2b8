"""Small layers shared by every network, with PyTorch's exact semantics.

* `BatchNorm`: batch statistics in training (biased variance for normalising,
  *unbiased* variance for the running estimate, as torch.nn.BatchNorm2d),
  running statistics in inference. Flax's own BatchNorm updates the running
  variance with the biased estimate, which drifts from converted PyTorch
  checkpoints; variable names (`scale`, `bias`, `mean`, `var`) match Flax's.
* `Conv2d`: NHWC convolution with explicit symmetric padding. `padding='SAME'`
  pads asymmetrically for stride 2 on even inputs and shifts features by half
  a pixel relative to PyTorch.
* Initialisers used by the reference code.
* Mixed precision (design.md §9.1): every layer takes a compute `dtype` (None = float32) and keeps float32
  parameters; `at_least_float32` marks the float32 islands.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cia_jax.ops import winograd

Initializer = Callable[..., jax.Array]


def at_least_float32(x: jax.Array) -> jax.Array:
  """bfloat16 / float16 -> float32; float32 and float64 unchanged: the float32 islands of mixed precision."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def compute_dtype(name: str | None) -> Any:
  """A model config's `dtype` string -> the Flax `dtype=` of its layers: 'float32' (or None) -> None (inputs
  and float32 parameters promoted, i.e. float32, float64 under `jax_enable_x64`), 'bfloat16' -> jnp.bfloat16."""
  if name in (None, "float32"):
    return None
  if name == "bfloat16":
    return jnp.bfloat16
  raise ValueError(f"model config: dtype must be 'float32' or 'bfloat16', got {name!r}")


def torch_default_kernel_init() -> Initializer:
  """PyTorch's default Conv/Linear weight init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> Initializer:
  """PyTorch's default bias init U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def normal_fan_out_init() -> Initializer:
  """N(0, sqrt(2 / (k*k*out_channels))): the ResNet / DiMP random init ("fan_out" He normal)."""
  return nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, matching torch.nn.BatchNorm2d/1d.

  Attributes:
    momentum: weight of the old running statistic (Flax convention; PyTorch 0.1 == 0.9 here).
    epsilon: added to the variance.
    scale_init: initialiser of the affine scale (ones by default).
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  scale_init: Initializer = nn.initializers.ones
  dtype: Any = None  # output dtype; None: that of x and the parameters promoted (float64 in float64 runs)

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    """x: `[..., C]` -> same shape."""
    x = jnp.asarray(x)
    c = x.shape[-1]
    scale = self.param("scale", self.scale_init, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      xf = x.astype(jnp.result_type(x.dtype, jnp.float32))  # statistics in at least float32
      mean = jnp.mean(xf, axis=axes)
      var = jnp.mean(jnp.square(xf - mean), axis=axes)  # biased, used to normalise
      n = math.prod(x.shape[:-1])
      if not self.is_initializing():
        unbiased = var * (n / max(n - 1, 1))
        ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * unbiased
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(self.dtype or y.dtype)


class Conv2d(nn.Module):
  """NHWC 2-D convolution with explicit symmetric padding (PyTorch Conv2d semantics).

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    stride: stride in both axes.
    padding: zero padding on every side (pixels).
    use_bias: whether to add a bias.
    kernel_init / bias_init: initialisers (default: PyTorch's defaults).
    winograd: compute a 3x3 stride-1 convolution with at least this many input channels by Winograd's
      F(2x2, 3x3) (`ops/winograd.py`; float32 / float64 only, bfloat16 stays direct); 0: never. Same
      parameters, same results up to float rounding; the tracker's `winograd_convs` and
      `winograd_min_channels` settings choose it.
  """

  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: int = 0
  use_bias: bool = False
  kernel_init: Initializer | None = None
  bias_init: Initializer | None = None
  dtype: Any = None  # computation dtype; None: that of x and the kernel promoted
  winograd: int = 0  # min input channels (0: direct)

  @nn.compact
  def __call__(self, x: jax.Array, padding: int | None = None) -> jax.Array:
    """x: `[N, H, W, Cin]` -> `[N, H', W', features]`; `padding` overrides the attribute for this call."""
    if x.ndim != 4:
      raise ValueError(f"{self.name or 'Conv2d'}: expected NHWC input of rank 4, got shape {x.shape}")
    pad = self.padding if padding is None else padding
    k = self.kernel_size
    fan_in = x.shape[-1] * k * k
    kernel = self.param("kernel", self.kernel_init or torch_default_kernel_init(),
                        (k, k, x.shape[-1], self.features), jnp.float32)
    x = jnp.asarray(x)  # NumPy float64 -> JAX's default float
    dtype = self.dtype or jnp.result_type(x.dtype, kernel.dtype)
    if (self.winograd and k == 3 and self.stride == 1 and x.shape[-1] >= self.winograd
        and jnp.dtype(dtype) in (jnp.float32, jnp.float64)):
      # A tracker transforms its kernels once per model (`winograd.prepare_variables`), not once per frame.
      if self.has_variable(winograd.COLLECTION, "kernel"):
        u = self.get_variable(winograd.COLLECTION, "kernel")
      else:
        u = winograd.kernel_transform(kernel)
      y = winograd.conv3x3_transformed(x.astype(dtype), u.astype(dtype), pad)
    else:
      y = jax.lax.conv_general_dilated(
          x.astype(dtype), kernel.astype(dtype), (self.stride, self.stride), ((pad, pad), (pad, pad)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bias = self.param("bias", self.bias_init or torch_default_bias_init(fan_in), (self.features,),
                        jnp.float32)
      y = y + bias.astype(dtype)
    return y
