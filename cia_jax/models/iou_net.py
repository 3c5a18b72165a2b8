"""IoU-Net box-quality head (`bb_regressor`, the ATOM/DiMP `AtomIoUNet`), NHWC Flax Linen. Spec 3.1-3.2.

The head predicts the IoU of box proposals on test frames with the target given by a reference box on a
train frame:

* `get_modulation(feat2, feat3, box_xywh)`: reference branch. layer2 (stride 8) -> `conv3_1r` -> PrRoIPool
  3x3 -> `fc3_1r` (3x3 conv, no padding -> 1x1); layer3 (stride 16) -> `conv4_1r` -> PrRoIPool 1x1; the two
  256-vectors are concatenated and mapped by the 1x1 conv blocks `fc34_3r` / `fc34_4r` to the two channel
  modulation vectors `mod3`, `mod4`.
* `get_iou_feat(feat2, feat3)`: test branch, two conv blocks per level (`conv3_1t`, `conv3_2t` at stride 8;
  `conv4_1t`, `conv4_2t` at stride 16). `get_iou_feat_window` computes the same values on a square window of
  each output map only (the tracker's box ascent, design.md §5.6).
* `predict_iou(mod3, mod4, c3t, c4t, proposals_xywh)`: channel-wise modulation of the test features (whole
  maps, or windows with their corners as origins), PrRoIPool 5x5 (stride 8) and 3x3 (stride 16) of every
  proposal, `fc3_rt` / `fc4_rt` (Dense -> BN -> ReLU),
  concatenation and `iou_predictor` (Dense -> 1).

Boxes are `[x, y, w, h]` in image (crop) pixels; the pooling uses the continuous corners (x, y, x + w, y + h)
(`ops/boxes.py`). A "convblock" is Conv2d(bias) -> BN -> ReLU with children named '0' (conv) and '1' (BN),
so the torch keys `X.0.weight` / `X.1.running_mean` map to `X/0/kernel` / `X/1/mean` (design.md §6.2).

The Dense kernels of `fc3_rt` / `fc4_rt` read the pooled RoI flattened in (C, H, W) order, as the PyTorch
Linear does on NCHW tensors, so a converted kernel is just the torch weight transposed: `kernel = W.T`.

BatchNorm: every stage method takes `train`; with `train=True` BN normalises with batch statistics (over
the images of the call, or over all proposals of the call for `fc3_rt` / `fc4_rt`) and updates the running
statistics (apply with `mutable=['batch_stats']`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cia_jax.models.layers import BatchNorm, Conv2d, at_least_float32
from cia_jax.ops.boxes import xywh_to_xyxy
from cia_jax.ops.dtypes import default_float
from cia_jax.ops.prroi_pool import prroi_pool_grouped

_BN_MOMENTUM = 0.9  # Flax convention: PyTorch momentum 0.1.
_BN_EPS = 1e-5
# Reference init (design.md §3.1): kaiming_normal_(mode='fan_in') = N(0, sqrt(2 / fan_in)), bias 0,
# BN scale U(0, 1).
_KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
_BN_SCALE_INIT = nn.initializers.uniform(scale=1.0)

# Pooling sizes (cells) and scales (feature cells per image pixel) of the four PrRoIPool layers.
_POOL3R = (3, 1.0 / 8)
_POOL4R = (1, 1.0 / 16)
_POOL3T = (5, 1.0 / 8)
_POOL4T = (3, 1.0 / 16)


def _bn(name: str, dtype: Any = None) -> BatchNorm:
  return BatchNorm(momentum=_BN_MOMENTUM, epsilon=_BN_EPS, scale_init=_BN_SCALE_INIT, name=name, dtype=dtype)


class ConvBlock(nn.Module):
  """Conv2d with bias ('0') -> BatchNorm ('1') -> ReLU, the reference's `conv(...)` Sequential.

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    padding: zero padding on every side (cells).
    dtype: compute dtype (None: float32).
  """

  features: int
  kernel_size: int = 3
  padding: int = 1
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, padding: int | None = None) -> jax.Array:
    """x: `[N, H, W, Cin]` -> `[N, H + 2 * padding - kernel_size + 1, ..., features]` (`padding`: this call's
    padding instead of the attribute)."""
    x = Conv2d(self.features, self.kernel_size, stride=1, padding=self.padding, use_bias=True,
               kernel_init=_KERNEL_INIT, bias_init=nn.initializers.zeros, name="0", dtype=self.dtype)(x, padding)
    x = _bn("1", self.dtype)(x, use_running_average=not train)
    return nn.relu(x)


class LinearBlock(nn.Module):
  """Flatten in (C, H, W) order -> Dense with bias ('linear') -> BN over the batch ('bn') -> ReLU.

  Attributes:
    features: output width.
  """

  features: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: `[K, H, W, C]` (NHWC pooled RoIs) -> `[K, features]`."""
    # NHWC -> NCHW before flattening, so the kernel is the transposed torch Linear weight (C*H*W order).
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = nn.Dense(self.features, kernel_init=_KERNEL_INIT, bias_init=nn.initializers.zeros, name="linear")(x)
    x = _bn("bn")(x, use_running_average=not train)
    return nn.relu(x)


def _check_feat(name: str, x: jax.Array, channels: int, rank: int = 4) -> None:
  layout = "[N, H, W, C]" if rank == 4 else "[frames, B, H, W, C]"
  if x.ndim != rank:
    raise ValueError(f"AtomIoUNet: {name} must have rank {rank} {layout}, got shape {tuple(x.shape)}")
  if x.shape[-1] != channels:
    raise ValueError(f"AtomIoUNet: {name} has {x.shape[-1]} channels, expected {channels} (input_dim)")


def _check_boxes(name: str, box: jax.Array, lead_shape: Sequence[int]) -> None:
  want = tuple(lead_shape) + (4,)
  if box.ndim != len(want) or box.shape[-1] != 4 or tuple(box.shape[:-1]) != tuple(lead_shape):
    raise ValueError(f"AtomIoUNet: {name} must have shape {want} (last axis = x, y, w, h in pixels), "
                     f"got {tuple(box.shape)}")


def _pool(features: jax.Array, box_xywh: jax.Array, size_and_scale: tuple[int, float],
          origin_yx: jax.Array | None = None) -> jax.Array:
  """PrRoIPool of P boxes per image: `[N, H, W, C]`, `[N, P, 4]` xywh pixels -> `[N * P, ph, ph, C]`.

  The grouped form pools each image's own boxes without gathering a feature map per RoI (memory).
  origin_yx: `[N, 2]` cell of the full map where a window `features` starts (None: the whole map).
  """
  size, scale = size_and_scale
  box_xyxy = xywh_to_xyxy(jnp.asarray(box_xywh, default_float()))  # x2 = x + w, no half-pixel shift
  pooled = prroi_pool_grouped(at_least_float32(features), box_xyxy, size, scale, origin_yx)  # [N, P, ph, ph, C]
  return pooled.reshape((-1,) + pooled.shape[2:])


def _window_blocks(first: ConvBlock, second: ConvBlock, feat: jax.Array, start_yx: jax.Array,
                   size: int) -> jax.Array:
  """Two 3x3 'same' conv blocks (eval mode) evaluated on a `size` x `size` window of their output only.

  feat: `[N, H, W, C]`; start_yx: `[N, 2]` int window corner, 0 <= start <= H - size (W - size).
  Returns `[N, size, size, C']`, equal to `second(first(feat))[:, y0:y0 + size, x0:x0 + size]`: the input is
  cut with a 2-cell border (zeros beyond the map, as the convs' own padding), both convs run unpadded, and the
  first block's outputs beyond the map are zeroed, since the second conv pads the full map with zeros there.
  """
  n, h, w, c = feat.shape
  if not 0 < size <= min(h, w):
    raise ValueError(f"AtomIoUNet: window size {size} must be in 1..{min(h, w)} for {h} x {w} maps")
  padded = jnp.pad(feat, ((0, 0), (2, 2), (2, 2), (0, 0)))
  cut = jax.vmap(lambda f, s: jax.lax.dynamic_slice(f, (s[0], s[1], 0), (size + 4, size + 4, c)))(padded, start_yx)
  a = first(cut, False, padding=0)  # [N, size + 2, size + 2, C']: cells start - 1 .. start + size
  ys = start_yx[:, :1] - 1 + jnp.arange(size + 2)
  xs = start_yx[:, 1:] - 1 + jnp.arange(size + 2)
  inside = (((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :])[..., None]
  return second(jnp.where(inside, a, 0.0).astype(a.dtype), False, padding=0)


class AtomIoUNet(nn.Module):
  """IoU predictor of ATOM / DiMP / CIA (`bb_regressor`). Spec 3.1-3.2.

  Attributes:
    input_dim: channels of the (layer2, layer3) backbone features: (128, 256) for ResNet-18, (512, 1024) for
      ResNet-50.
    pred_input_dim: channels of the modulated test features (and of `mod3`, `mod4`) at stride 8 and 16.
    pred_inter_dim: widths of `fc3_rt` and `fc4_rt`.
    dtype: compute dtype of the conv blocks of `get_modulation` and `get_iou_feat` (None: float32); their
      outputs, the RoI pooling and all of `predict_iou` (whose box gradient drives the tracker's box ascent,
      design.md §9.1) are float32.
  """

  input_dim: tuple[int, int] = (128, 256)
  pred_input_dim: tuple[int, int] = (256, 256)
  pred_inter_dim: tuple[int, int] = (256, 256)
  dtype: Any = None

  def setup(self):
    # Reference branch.
    self.conv3_1r = ConvBlock(128, 3, padding=1, dtype=self.dtype)
    self.conv4_1r = ConvBlock(256, 3, padding=1, dtype=self.dtype)
    self.fc3_1r = ConvBlock(256, 3, padding=0, dtype=self.dtype)  # 3x3 RoI -> 1x1
    self.fc34_3r = ConvBlock(self.pred_input_dim[0], 1, padding=0, dtype=self.dtype)
    self.fc34_4r = ConvBlock(self.pred_input_dim[1], 1, padding=0, dtype=self.dtype)
    # Test branch.
    self.conv3_1t = ConvBlock(256, 3, padding=1, dtype=self.dtype)
    self.conv3_2t = ConvBlock(self.pred_input_dim[0], 3, padding=1, dtype=self.dtype)
    self.conv4_1t = ConvBlock(256, 3, padding=1, dtype=self.dtype)
    self.conv4_2t = ConvBlock(self.pred_input_dim[1], 3, padding=1, dtype=self.dtype)
    # Predictor (float32 whatever `dtype` is).
    self.fc3_rt = LinearBlock(self.pred_inter_dim[0])
    self.fc4_rt = LinearBlock(self.pred_inter_dim[1])
    self.iou_predictor = nn.Dense(1, kernel_init=_KERNEL_INIT, bias_init=nn.initializers.zeros)

  def get_modulation(self, feat2: jax.Array, feat3: jax.Array, box_xywh: jax.Array,
                     train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Modulation vectors from the reference frame.

    Args:
      feat2: `[B, H2, W2, input_dim[0]]` layer2 features (stride 8).
      feat3: `[B, H3, W3, input_dim[1]]` layer3 features (stride 16).
      box_xywh: `[B, 4]` reference box (x, y, w, h) in image pixels.
      train: BN with batch statistics (over the B images) and running-statistics update.

    Returns:
      (mod3 `[B, pred_input_dim[0]]`, mod4 `[B, pred_input_dim[1]]`).
    """
    _check_feat("feat2", feat2, self.input_dim[0])
    _check_feat("feat3", feat3, self.input_dim[1])
    b = feat2.shape[0]
    if feat3.shape[0] != b:
      raise ValueError(f"AtomIoUNet: feat2 and feat3 batch sizes differ: {feat2.shape[0]} vs "
                       f"{feat3.shape[0]}")
    _check_boxes("box_xywh", box_xywh, (b,))
    c3r = self.conv3_1r(feat2, train)
    roi3r = _pool(c3r, box_xywh[:, None, :], _POOL3R)  # [B, 3, 3, 128]
    fc3r = self.fc3_1r(roi3r, train)  # [B, 1, 1, 256]
    c4r = self.conv4_1r(feat3, train)
    roi4r = _pool(c4r, box_xywh[:, None, :], _POOL4R)  # [B, 1, 1, 256]
    fc34r = jnp.concatenate([fc3r, roi4r.astype(fc3r.dtype)], axis=-1)
    mod3 = self.fc34_3r(fc34r, train).reshape(b, -1)
    mod4 = self.fc34_4r(fc34r, train).reshape(b, -1)
    return at_least_float32(mod3), at_least_float32(mod4)

  def get_iou_feat(self, feat2: jax.Array, feat3: jax.Array,
                   train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Test-branch features.

    Args:
      feat2: `[N, H2, W2, input_dim[0]]` layer2 features (stride 8).
      feat3: `[N, H3, W3, input_dim[1]]` layer3 features (stride 16).
      train: BN with batch statistics (over the N images) and running-statistics update.

    Returns:
      (c3t `[N, H2, W2, pred_input_dim[0]]`, c4t `[N, H3, W3, pred_input_dim[1]]`).
    """
    _check_feat("feat2", feat2, self.input_dim[0])
    _check_feat("feat3", feat3, self.input_dim[1])
    if feat3.shape[0] != feat2.shape[0]:
      raise ValueError(f"AtomIoUNet: feat2 and feat3 batch sizes differ: {feat2.shape[0]} vs "
                       f"{feat3.shape[0]}")
    c3t = self.conv3_2t(self.conv3_1t(feat2, train), train)
    c4t = self.conv4_2t(self.conv4_1t(feat3, train), train)
    return at_least_float32(c3t), at_least_float32(c4t)

  def get_iou_feat_window(self, feat2: jax.Array, feat3: jax.Array, start3_yx: jax.Array, start4_yx: jax.Array,
                          size3: int, size4: int) -> tuple[jax.Array, jax.Array]:
    """Test-branch features (eval mode) on a square window of each level's output map.

    The tracker's box ascent only reads the cells around its boxes (design.md §5.6); this computes the
    convolutions there only, with the values `get_iou_feat` has on those cells.

    Args:
      feat2: `[N, H2, W2, input_dim[0]]` layer2 features (stride 8).
      feat3: `[N, H3, W3, input_dim[1]]` layer3 features (stride 16).
      start3_yx / start4_yx: `[N, 2]` int window corners, in `[0, H - size]` x `[0, W - size]`.
      size3 / size4: static window sides (cells).

    Returns:
      (c3t `[N, size3, size3, pred_input_dim[0]]`, c4t `[N, size4, size4, pred_input_dim[1]]`); pass the
      corners to `predict_iou` as its origins.
    """
    _check_feat("feat2", feat2, self.input_dim[0])
    _check_feat("feat3", feat3, self.input_dim[1])
    c3t = _window_blocks(self.conv3_1t, self.conv3_2t, feat2, start3_yx, size3)
    c4t = _window_blocks(self.conv4_1t, self.conv4_2t, feat3, start4_yx, size4)
    return at_least_float32(c3t), at_least_float32(c4t)

  def predict_iou(self, mod3: jax.Array, mod4: jax.Array, c3t: jax.Array, c4t: jax.Array,
                  proposals_xywh: jax.Array, train: bool = False, origin3_yx: jax.Array | None = None,
                  origin4_yx: jax.Array | None = None) -> jax.Array:
    """IoU prediction for proposals on test frames.

    Args:
      mod3: `[N, pred_input_dim[0]]` modulation of the stride-8 features (one row per test image; repeat a
        sequence's modulation over its test frames).
      mod4: `[N, pred_input_dim[1]]` modulation of the stride-16 features.
      c3t: `[N, H2, W2, pred_input_dim[0]]` from `get_iou_feat` (or a window from `get_iou_feat_window`).
      c4t: `[N, H3, W3, pred_input_dim[1]]` from `get_iou_feat` (or a window).
      proposals_xywh: `[N, P, 4]` boxes (x, y, w, h) in image pixels.
      train: BN of `fc3_rt` / `fc4_rt` with batch statistics over all N * P proposals.
      origin3_yx / origin4_yx: `[N, 2]` corners of windowed c3t / c4t in the full maps (None: whole maps).
        A proposal must then lie where its pooling weights vanish outside the window; the caller checks.

    Returns:
      `[N, P]` predicted scores (IoU-like; the DiMP18 target is 2 * IoU - 1).
    """
    _check_feat("c3t", c3t, self.pred_input_dim[0])
    _check_feat("c4t", c4t, self.pred_input_dim[1])
    n = c3t.shape[0]
    if c4t.shape[0] != n:
      raise ValueError(f"AtomIoUNet: c3t and c4t batch sizes differ: {c3t.shape[0]} vs {c4t.shape[0]}")
    for name, mod, dim in (("mod3", mod3, self.pred_input_dim[0]), ("mod4", mod4, self.pred_input_dim[1])):
      if mod.shape != (n, dim):
        raise ValueError(f"AtomIoUNet: {name} must have shape {(n, dim)}, got {tuple(mod.shape)}")
    if proposals_xywh.ndim != 3 or proposals_xywh.shape[0] != n or proposals_xywh.shape[-1] != 4:
      raise ValueError(f"AtomIoUNet: proposals_xywh must have shape ({n}, P, 4) (x, y, w, h in pixels), "
                       f"got {tuple(proposals_xywh.shape)}")
    p = proposals_xywh.shape[1]
    c3t_att = c3t * mod3[:, None, None, :]
    c4t_att = c4t * mod4[:, None, None, :]
    roi3t = _pool(c3t_att, proposals_xywh, _POOL3T, origin3_yx)  # [N * P, 5, 5, C], proposal-major per image
    roi4t = _pool(c4t_att, proposals_xywh, _POOL4T, origin4_yx)  # [N * P, 3, 3, C]
    fc34 = jnp.concatenate([self.fc3_rt(roi3t, train), self.fc4_rt(roi4t, train)], axis=-1)
    return self.iou_predictor(fc34).reshape(n, p)

  def __call__(self, train_feat2: jax.Array, train_feat3: jax.Array, test_feat2: jax.Array,
               test_feat3: jax.Array, train_box_xywh: jax.Array, proposals_xywh: jax.Array,
               train: bool = True) -> jax.Array:
    """Training forward: modulation from the first train frame, IoU of the proposals on every test frame.

    Args:
      train_feat2: `[Ntr, B, H2, W2, input_dim[0]]` layer2 features of the train (template) frames.
      train_feat3: `[Ntr, B, H3, W3, input_dim[1]]` layer3 features of the train frames.
      test_feat2: `[Nte, B, H2', W2', input_dim[0]]` layer2 features of the test (search) frames.
      test_feat3: `[Nte, B, H3', W3', input_dim[1]]` layer3 features of the test frames.
      train_box_xywh: `[Ntr, B, 4]` target boxes (x, y, w, h) in train-crop pixels; only frame 0 is used.
      proposals_xywh: `[Nte, B, P, 4]` proposals (x, y, w, h) in test-crop pixels.
      train: BN mode (batch statistics per stage call, as the reference).

    Returns:
      `[Nte, B, P]` predicted scores.
    """
    _check_feat("train_feat2", train_feat2, self.input_dim[0], rank=5)
    _check_feat("train_feat3", train_feat3, self.input_dim[1], rank=5)
    _check_feat("test_feat2", test_feat2, self.input_dim[0], rank=5)
    _check_feat("test_feat3", test_feat3, self.input_dim[1], rank=5)
    n_tr, b = train_feat2.shape[:2]
    n_te = test_feat2.shape[0]
    if train_feat3.shape[:2] != (n_tr, b):
      raise ValueError(f"AtomIoUNet: train_feat3 leading axes {tuple(train_feat3.shape[:2])} != "
                       f"train_feat2's {(n_tr, b)}")
    for name, x in (("test_feat2", test_feat2), ("test_feat3", test_feat3)):
      if x.shape[:2] != (n_te, b):
        raise ValueError(f"AtomIoUNet: {name} leading axes {tuple(x.shape[:2])} != (Nte, B) = {(n_te, b)}")
    _check_boxes("train_box_xywh", train_box_xywh, (n_tr, b))
    if proposals_xywh.ndim != 4 or proposals_xywh.shape[:2] != (n_te, b) or proposals_xywh.shape[-1] != 4:
      raise ValueError(f"AtomIoUNet: proposals_xywh must have shape ({n_te}, {b}, P, 4) (x, y, w, h in "
                       f"pixels), got {tuple(proposals_xywh.shape)}")
    p = proposals_xywh.shape[2]

    mod3, mod4 = self.get_modulation(train_feat2[0], train_feat3[0], train_box_xywh[0], train)
    c3t, c4t = self.get_iou_feat(test_feat2.reshape((n_te * b,) + test_feat2.shape[2:]),
                                 test_feat3.reshape((n_te * b,) + test_feat3.shape[2:]), train)
    # Frame-major flattening (index = frame * B + sequence): tile each sequence's modulation over frames.
    mod3 = jnp.tile(mod3, (n_te, 1))
    mod4 = jnp.tile(mod4, (n_te, 1))
    iou = self.predict_iou(mod3, mod4, c3t, c4t, proposals_xywh.reshape(n_te * b, p, 4), train)
    return iou.reshape(n_te, b, p)
