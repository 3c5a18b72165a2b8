"""ResNet-18/50 backbones (torchvision v1.5 layout), NHWC Flax Linen, PyTorch-exact padding and BN.

Structure (design.md §1.1): stem conv 7x7/2 pad 3 -> BN -> ReLU ('conv1') -> max-pool 3x3/2 pad 1 (-inf fill) ->
`layer1`..`layer4`. ResNet-18 uses `BasicBlock` x[2, 2, 2, 2]; ResNet-50 uses `Bottleneck` x[3, 4, 6, 3] with
the stride on the 3x3 conv (`conv2`). Every conv and the pool use explicit symmetric padding, so features line
up pixel for pixel with PyTorch (`padding='SAME'` would pad stride-2 layers asymmetrically on even inputs).

Variables and the PyTorch -> Flax name rule
-------------------------------------------
The Flax path of every parameter is the PyTorch state-dict key with '.' replaced by '/', except for the leaf:

  torch key                                   flax collection   flax path
  conv1.weight            (O, I, kh, kw)      params            conv1/kernel        (kh, kw, I, O)
  bn1.weight / bn1.bias                       params            bn1/scale / bn1/bias
  bn1.running_mean / bn1.running_var          batch_stats       bn1/mean / bn1/var
  bn1.num_batches_tracked                     (dropped)
  layer2.0.conv1.weight                       params            layer2/0/conv1/kernel
  layer2.0.downsample.0.weight                params            layer2/0/downsample/0/kernel
  layer2.0.downsample.1.running_var           batch_stats       layer2/0/downsample/1/var
  fc.weight / fc.bias                         (no fc here: unused by the trackers)

i.e. `flax_path = torch_key.replace('.', '/')` with the leaf renamed weight->kernel (conv, transposed
(2, 3, 1, 0)) or weight->scale (BN), running_mean->mean, running_var->var.

Lazy parameters: Flax compact modules create parameters only for the code that runs, and `ResNet.__call__`
stops after the deepest requested layer. `net.init(key, x)` with the default `output_layers=('layer3',)`
therefore has no `layer4`. Initialise with every layer you will ever request — `init_variables(net, key)`
does that — before applying with deeper outputs.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cia_jax.models.layers import BatchNorm, Conv2d, normal_fan_out_init

LAYER_NAMES = ("conv1", "layer1", "layer2", "layer3", "layer4")
# Total stride of each output w.r.t. the input image (pixels per feature cell).
LAYER_STRIDES = {"conv1": 2, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
BLOCK_EXPANSION = {"basic": 1, "bottleneck": 4}
_BN_MOMENTUM = 0.9  # Flax convention: PyTorch momentum 0.1.
_BN_EPS = 1e-5


def _conv(features: int, kernel_size: int, stride: int = 1, name: str | None = None, dtype: Any = None,
          winograd: int = 0) -> Conv2d:
  """Bias-free conv with 'same-size' symmetric padding (k // 2) and the ResNet He-normal fan-out init."""
  return Conv2d(features, kernel_size, stride=stride, padding=kernel_size // 2, use_bias=False,
                kernel_init=normal_fan_out_init(), name=name, dtype=dtype, winograd=winograd)


def _bn(name: str, dtype: Any = None) -> BatchNorm:
  """BatchNorm (statistics in float32 whatever `dtype` is; `dtype` is only its output's)."""
  return BatchNorm(momentum=_BN_MOMENTUM, epsilon=_BN_EPS, name=name, dtype=dtype)


class Downsample(nn.Module):
  """Shortcut projection: conv 1x1 (stride s, no bias, pad 0) named '0' + BN named '1' (torch Sequential).

  Attributes:
    features: output channels.
    stride: spatial stride.
  """

  features: int
  stride: int = 1
  dtype: Any = None  # compute dtype (None: that of the input and the float32 parameters promoted)

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    """x: `[N, H, W, Cin]` -> `[N, ceil(H / stride), ceil(W / stride), features]`."""
    x = _conv(self.features, 1, self.stride, name="0", dtype=self.dtype)(x)
    return _bn("1", self.dtype)(x, use_running_average=use_running_average)


class BasicBlock(nn.Module):
  """ResNet-18/34 block: 3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> BN, + shortcut, ReLU. Expansion 1.

  Attributes:
    planes: output channels.
    stride: stride of the first 3x3 conv (and of the downsample conv).
    use_downsample: whether the shortcut is a conv1x1 + BN projection (needed when stride != 1 or the
      channel count changes); otherwise the identity.
  """

  planes: int
  stride: int = 1
  use_downsample: bool = False
  dtype: Any = None  # compute dtype (None: that of the input and the float32 parameters promoted)
  winograd: int = 0  # 3x3 stride-1 convs of >= this many input channels by Winograd (`layers.Conv2d`)

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    """x: `[N, H, W, Cin]` -> `[N, ceil(H / stride), ceil(W / stride), planes]`."""
    _check_shortcut(self, x, self.planes)
    out = _conv(self.planes, 3, self.stride, name="conv1", dtype=self.dtype, winograd=self.winograd)(x)
    out = nn.relu(_bn("bn1", self.dtype)(out, use_running_average=use_running_average))
    out = _conv(self.planes, 3, 1, name="conv2", dtype=self.dtype, winograd=self.winograd)(out)
    out = _bn("bn2", self.dtype)(out, use_running_average=use_running_average)
    shortcut = x
    if self.use_downsample:
      shortcut = Downsample(self.planes, self.stride, self.dtype, name="downsample")(x, use_running_average)
    return nn.relu(out + shortcut)


class Bottleneck(nn.Module):
  """ResNet-50 block (torchvision v1.5: stride on the 3x3 conv), expansion 4.

  1x1 conv -> BN -> ReLU -> 3x3 conv (stride) -> BN -> ReLU -> 1x1 conv (4 * planes) -> BN, + shortcut, ReLU.

  Attributes:
    planes: width of the inner convs; the block outputs `4 * planes` channels.
    stride: stride of the 3x3 conv (and of the downsample conv).
    use_downsample: whether the shortcut is a conv1x1 + BN projection; otherwise the identity.
  """

  planes: int
  stride: int = 1
  use_downsample: bool = False
  dtype: Any = None  # compute dtype (None: that of the input and the float32 parameters promoted)
  winograd: int = 0  # 3x3 stride-1 convs of >= this many input channels by Winograd (`layers.Conv2d`)

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    """x: `[N, H, W, Cin]` -> `[N, ceil(H / stride), ceil(W / stride), 4 * planes]`."""
    out_ch = self.planes * BLOCK_EXPANSION["bottleneck"]
    _check_shortcut(self, x, out_ch)
    out = _conv(self.planes, 1, 1, name="conv1", dtype=self.dtype)(x)
    out = nn.relu(_bn("bn1", self.dtype)(out, use_running_average=use_running_average))
    out = _conv(self.planes, 3, self.stride, name="conv2", dtype=self.dtype, winograd=self.winograd)(out)
    out = nn.relu(_bn("bn2", self.dtype)(out, use_running_average=use_running_average))
    out = _conv(out_ch, 1, 1, name="conv3", dtype=self.dtype)(out)
    out = _bn("bn3", self.dtype)(out, use_running_average=use_running_average)
    shortcut = x
    if self.use_downsample:
      shortcut = Downsample(out_ch, self.stride, self.dtype, name="downsample")(x, use_running_average)
    return nn.relu(out + shortcut)


def _check_shortcut(block: nn.Module, x: jax.Array, out_ch: int) -> None:
  """An identity shortcut needs matching shapes; say so at trace time rather than failing in the add."""
  if x.ndim != 4:
    raise ValueError(f"{type(block).__name__}: expected NHWC input of rank 4, got shape {x.shape}")
  if not block.use_downsample and (block.stride != 1 or x.shape[-1] != out_ch):
    raise ValueError(
        f"{type(block).__name__}(planes={block.planes}, stride={block.stride}): an identity shortcut needs "
        f"stride 1 and {out_ch} input channels, got {x.shape[-1]}; set use_downsample=True")


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """Stem max-pool, kernel 3, stride 2, symmetric padding 1 filled with -inf (torch MaxPool2d(3, 2, 1)).

  x: `[N, H, W, C]` -> `[N, floor((H - 1) / 2) + 1, floor((W - 1) / 2) + 1, C]`.
  """
  return jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                               ((0, 0), (1, 1), (1, 1), (0, 0)))


def layer_channels(block: str, width: int = 64) -> dict[str, int]:
  """Channels of every output layer, e.g. ('basic', 64) -> conv1 64, layer1..4 64/128/256/512."""
  if block not in BLOCK_EXPANSION:
    raise ValueError(f"block must be one of {sorted(BLOCK_EXPANSION)}, got {block!r}")
  e = BLOCK_EXPANSION[block]
  return {"conv1": width, **{f"layer{i + 1}": width * 2**i * e for i in range(4)}}


class ResLayer(nn.Module):
  """One ResNet stage (`layerK`): `num_blocks` blocks named '0', '1', ...; the first one strides/projects.

  Attributes:
    block: 'basic' or 'bottleneck'.
    planes: block width (output channels = planes * expansion).
    num_blocks: number of blocks.
    stride: stride of the first block.
  """

  block: str
  planes: int
  num_blocks: int
  stride: int = 1
  dtype: Any = None  # compute dtype (None: that of the input and the float32 parameters promoted)
  winograd: int = 0  # 3x3 stride-1 convs of >= this many input channels by Winograd (`layers.Conv2d`)

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    """x: `[N, H, W, Cin]` -> `[N, ceil(H / stride), ceil(W / stride), planes * expansion]`."""
    cls = BasicBlock if self.block == "basic" else Bottleneck
    out_ch = self.planes * BLOCK_EXPANSION[self.block]
    for i in range(self.num_blocks):
      stride = self.stride if i == 0 else 1
      use_downsample = i == 0 and (stride != 1 or x.shape[-1] != out_ch)
      x = cls(self.planes, stride, use_downsample, self.dtype, self.winograd, name=str(i))(x, use_running_average)
    return x


class ResNet(nn.Module):
  """ResNet backbone returning intermediate feature maps (pytracking `ResNet`, no fc / avgpool).

  Attributes:
    block: 'basic' (ResNet-18/34) or 'bottleneck' (ResNet-50/101).
    stage_sizes: number of blocks in layer1..layer4, e.g. (2, 2, 2, 2) or (3, 4, 6, 3).
    width: stem channels and base planes (64 = the real network; tests use tiny widths such as 4).
    frozen_layers: a prefix of `LAYER_NAMES` (e.g. ('conv1', 'layer1', 'layer2') for SuperDiMP/CIA50;
      'conv1' covers conv1 + bn1). Their BN layers always use running statistics, and `stop_gradient` on
      their outputs keeps any gradient from reaching their parameters. (Weight decay in the optimiser must
      still be masked separately, see `frozen_mask`.)

  Call `init` with every layer needed later (`init_variables`); see the module docstring.
  """

  block: str
  stage_sizes: Sequence[int]
  width: int = 64
  frozen_layers: Sequence[str] = ()
  dtype: Any = None  # compute dtype, e.g. jnp.bfloat16 (parameters and BN statistics stay float32)
  winograd: int = 0  # 3x3 stride-1 convs of >= this many input channels by Winograd (`layers.Conv2d`; inference)

  @nn.compact
  def __call__(self, x: jax.Array, output_layers: Sequence[str] = ("layer3",),
               train: bool = False) -> dict[str, jax.Array]:
    """Runs the backbone up to the deepest requested layer.

    Args:
      x: normalised RGB images `[N, H, W, 3]` (design.md §1.4 normalisation already applied).
      output_layers: names from `LAYER_NAMES` (or one name); layers deeper than the deepest requested one
        are not computed.
      train: batch statistics in the (non-frozen) BN layers, running averages updated — apply with
        `mutable=['batch_stats']`. False: running statistics everywhere.

    Returns:
      dict layer name -> `[N, ceil(H / s), ceil(W / s), C]` for each requested layer (in `LAYER_NAMES` order),
      with s = `LAYER_STRIDES[name]` and C = `layer_channels(block, width)[name]`.
    """
    _validate_config(self.block, self.stage_sizes, self.frozen_layers)
    if isinstance(output_layers, str):
      output_layers = (output_layers,)
    unknown = [n for n in output_layers if n not in LAYER_NAMES]
    if unknown or not output_layers:
      raise ValueError(
          f"ResNet: output_layers must be a non-empty subset of {LAYER_NAMES}, got {tuple(output_layers)}")
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"ResNet: expected images [N, H, W, 3] (NHWC RGB), got shape {x.shape}")
    last = max(LAYER_NAMES.index(n) for n in output_layers)
    frozen = set(self.frozen_layers)

    def finish(name: str, y: jax.Array) -> jax.Array:
      # The frozen layers are a prefix, so cutting the gradient after each of them cuts it for all.
      return jax.lax.stop_gradient(y) if name in frozen else y

    outputs = {}
    y = _conv(self.width, 7, 2, name="conv1", dtype=self.dtype)(x)
    y = _bn("bn1", self.dtype)(y, use_running_average=not train or "conv1" in frozen)
    y = finish("conv1", nn.relu(y))
    if "conv1" in output_layers:
      outputs["conv1"] = y
    y = max_pool_3x3_s2(y)
    for i in range(4):
      name = LAYER_NAMES[i + 1]
      if i + 1 > last:
        break
      y = ResLayer(self.block, self.width * 2**i, self.stage_sizes[i], 1 if i == 0 else 2, self.dtype,
                   self.winograd, name=name)(y, not train or name in frozen)
      y = finish(name, y)
      if name in output_layers:
        outputs[name] = y
    return outputs


def _validate_config(block: str, stage_sizes: Sequence[int], frozen_layers: Sequence[str]) -> None:
  if block not in BLOCK_EXPANSION:
    raise ValueError(f"ResNet: block must be one of {sorted(BLOCK_EXPANSION)}, got {block!r}")
  if len(stage_sizes) != 4 or any(int(s) < 1 for s in stage_sizes):
    raise ValueError(f"ResNet: stage_sizes must be 4 positive block counts, got {tuple(stage_sizes)}")
  if isinstance(frozen_layers, str) or tuple(frozen_layers) != LAYER_NAMES[:len(frozen_layers)]:
    raise ValueError(f"ResNet: frozen_layers must be a prefix of {LAYER_NAMES}, got {frozen_layers!r}")


def resnet18(**kwargs) -> ResNet:
  """ResNet-18: BasicBlock x [2, 2, 2, 2]; channels conv1..layer4 = 64/64/128/256/512 (at width 64)."""
  return ResNet(block="basic", stage_sizes=(2, 2, 2, 2), **kwargs)


def resnet50(**kwargs) -> ResNet:
  """ResNet-50: Bottleneck x [3, 4, 6, 3]; channels conv1..layer4 = 64/256/512/1024/2048 (at width 64)."""
  return ResNet(block="bottleneck", stage_sizes=(3, 4, 6, 3), **kwargs)


def init_variables(net: ResNet, key: jax.Array, image_size: int = 64) -> dict:
  """Initialises every layer of `net` (params + batch_stats) from a `[1, S, S, 3]` dummy input.

  Jitted (one compilation); under `jax.eval_shape` it gives the abstract tree. image_size must be >= 1 (the
  variable shapes do not depend on it; 64 keeps layer4 at 2x2).
  """
  if image_size < 1:
    raise ValueError(f"init_variables: image_size must be >= 1, got {image_size}")
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  return jax.jit(lambda k, x: net.init(k, x, output_layers=LAYER_NAMES))(key, x)


def frozen_mask(params: dict, frozen_layers: Sequence[str]) -> dict:
  """Boolean tree like `params` (the ResNet's 'params' collection): True on leaves of frozen layers.

  'conv1' in frozen_layers covers both `conv1` and `bn1`. Use it to mask the optimiser
  (e.g. `optax.masked(optax.set_to_zero(), mask)`), so weight decay leaves frozen weights alone.
  """
  _validate_config("basic", (1, 1, 1, 1), frozen_layers)
  tops = set(frozen_layers) | ({"bn1"} if "conv1" in frozen_layers else set())
  # tree.map runs inside each iteration, so the closure sees the current k.
  return {k: jax.tree.map(lambda _: k in tops, v) for k, v in params.items()}
