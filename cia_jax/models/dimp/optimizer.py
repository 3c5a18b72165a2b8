"""DiMP's steepest-descent filter optimizer with Gauss-Newton step lengths (DiMPSteepestDescentGN, design.md §2.4).

Per sequence b, with features x (all images of b), filter f, label y, target mask m and residual weight v
(all on the score grid, predicted from a distance-bin map of the target centre):
  s = x * f,   r = v (a(s, m) - y),   a(s, m) = (1 - m)/2 |s| + (1 + m)/2 s      (LeakyReluPar)
  g = J^T(a'(s, m) v r) + lambda f,   a'(s, m) = (1 - m)/2 sign(stop_grad(s)) + (1 + m)/2
  q = v a'(s, m) (x * g),   alpha = sum(g^2) / max(sum(q^2) + (lambda + alpha_eps) sum(g^2), 1e-8)
  f <- f - exp(log_step_length) alpha g,   lambda = max(filter_reg^2, min_filter_reg^2)
J^T is the exact adjoint of f -> x * f (`jax.vjp`), so the unrolled loop is differentiable end to end.

The iteration count is static (`num_iter`: a `lax.scan` that also returns every iterate and loss, for training
and the tracker's initialisation) or traced (`active_iter`: a `lax.while_loop` of at most `num_iter` steps
that returns only the final filter). The traced form is the tracker's per-frame update: one compiled program
runs 0, 1 or 2 iterations as the frame needs, and under `vmap` a batch runs max(active_iter) iterations
once (the while loop's batched predicate) instead of every branch of a `lax.switch`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cia_jax.models.dimp.filter import apply_filter, check_filter_inputs, score_size
from cia_jax.models.layers import Initializer
from cia_jax.ops.dtypes import default_float
from cia_jax.ops.labels import distance_bin_readout
from cia_jax.ops.sums import blocked_sum


def _const_init(value: np.ndarray):
  """Initialiser returning a fixed array (the reference's hand-set predictor weights)."""

  def init(key, shape, dtype=jnp.float32):
    del key
    if tuple(shape) != value.shape:
      raise ValueError(f"constant initialiser: expected shape {value.shape}, got {tuple(shape)}")
    return jnp.asarray(value, dtype)

  return init


def bin_distances(num_bins: int, bin_displacement: float) -> np.ndarray:
  """Distance (feature cells) at the centre of each bin, d_k = k * bin_displacement, `[K]` float64."""
  return np.arange(num_bins, dtype=np.float64) * bin_displacement


class _BinReadout(nn.Module):
  """The 1x1 conv K -> 1 (no bias) on the distance-bin map around a centre, read out by interpolation
  (`distance_bin_readout`: the map itself is never built). Parameter 'kernel' `(1, 1, K, 1)` as the conv's."""

  kernel_init: Initializer
  num_bins: int
  bin_displacement: float

  @nn.compact
  def __call__(self, center_yx: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (1, 1, self.num_bins, 1), jnp.float32)
    return distance_bin_readout(center_yx, out_hw, kernel[0, 0, :, 0], self.bin_displacement)


class _MaskPredictor(nn.Module):
  """1x1 conv K->1 (no bias) named '0' followed by a sigmoid (torch Sequential `target_mask_predictor`)."""

  kernel_init: Initializer
  num_bins: int
  bin_displacement: float

  @nn.compact
  def __call__(self, center_yx: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    return nn.sigmoid(_BinReadout(self.kernel_init, self.num_bins, self.bin_displacement, name="0")(center_yx,
                                                                                                     out_hw))


class DiMPSteepestDescentGN(nn.Module):
  """Learned steepest-descent optimizer of the per-sequence classifier filter.

  Parameters (Flax path <- torch key `classifier.filter_optimizer.*`):
    log_step_length `(1,)`, filter_reg `(1,)` (copied as is);
    label_map_predictor/kernel, target_mask_predictor/0/kernel, spatial_weight_predictor/kernel `(1, 1, K, 1)`
    <- `*.weight` `(1, K, 1, 1)` transposed (2, 3, 1, 0) (the usual conv rule).

  Attributes:
    num_iter: default number of iterations (5 in training).
    feat_stride: pixels per feature cell (16), to map boxes to cells.
    init_step_length: initial beta = exp(log_step_length).
    init_filter_reg: initial filter_reg.
    init_gauss_sigma: sigma0 (cells) of the initial label-map predictor (0.9 for DiMP18/CIA18, 22/24 for R50).
    num_dist_bins: K, number of distance bins.
    bin_displacement: bin spacing in cells.
    mask_init_factor: amplitude of the initial target-mask predictor (3 tanh(2 - d_k)).
    min_filter_reg: lower bound of |filter_reg| (lambda >= min_filter_reg^2).
    alpha_eps: added to lambda in the step-length denominator.
  """

  num_iter: int = 5
  feat_stride: int = 16
  init_step_length: float = 0.9
  init_filter_reg: float = 0.1
  init_gauss_sigma: float = 1.0
  num_dist_bins: int = 100
  bin_displacement: float = 0.1
  mask_init_factor: float = 3.0
  min_filter_reg: float = 1e-3
  alpha_eps: float = 0.0

  def _predictor_inits(self):
    d = bin_distances(self.num_dist_bins, self.bin_displacement)
    if self.init_gauss_sigma == 0:
      gauss = np.zeros_like(d)
      gauss[0] = 1.0
    else:
      gauss = np.exp(-0.5 * (d / self.init_gauss_sigma) ** 2)
    shape = (1, 1, self.num_dist_bins, 1)
    label = (gauss - gauss.min()).reshape(shape).astype(np.float32)
    mask = (self.mask_init_factor * np.tanh(2.0 - d)).reshape(shape).astype(np.float32)  # +0: sigmoid mask
    return _const_init(label), _const_init(mask), nn.initializers.ones

  def _score_targets(self, box_xywh: jax.Array, out_hw: tuple[int, int], filter_hw: tuple[int, int],
                     label_init, mask_init, weight_init) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Label y, target mask m and spatial weight, each `[Nimg, B, Ho, Wo]`, predicted by the three 1x1 convs
    from the distance-bin map around each target centre (score-grid cells; read out by interpolation)."""
    offset = jnp.array([filter_hw[0] % 2, filter_hw[1] % 2], default_float()) / 2.0
    center_yx = (box_xywh[..., 1::-1] + 0.5 * box_xywh[..., :1:-1]) / self.feat_stride - offset
    bins = (self.num_dist_bins, self.bin_displacement)
    label = _BinReadout(label_init, *bins, name="label_map_predictor")(center_yx, out_hw)
    mask = _MaskPredictor(mask_init, *bins, name="target_mask_predictor")(center_yx, out_hw)
    spatial_weight = _BinReadout(weight_init, *bins, name="spatial_weight_predictor")(center_yx, out_hw)
    return label, mask, spatial_weight

  @nn.compact
  def __call__(self, filt: jax.Array, feat: jax.Array, box_xywh: jax.Array, sample_weight: jax.Array | None = None,
               num_iter: int | None = None, active_iter: jax.Array | None = None, zero_empty_slots: bool = True):
    """Runs `num_iter` (or, traced, `active_iter`) steepest-descent steps from `filt`.

    Args:
      filt: `[B, fh, fw, D]` initial filters.
      feat: `[Nimg, B, H, W, D]` classification features of the training samples.
      box_xywh: `[Nimg, B, 4]` target boxes (x, y, w, h) in crop pixels; the centre (x + w / 2) / feat_stride
        is the target position in cells.
      sample_weight: None -> v = sqrt(1 / Nimg) * spatial weight (training, tracker initialisation); or
        per-sample weights `[Nimg, B]` or `[Nimg]` (shared by all sequences) -> v = sqrt(w) * spatial weight.
        Samples of weight 0 contribute nothing (their features are masked: empty memory slots may hold
        anything, NaN included).
      zero_empty_slots: False skips that masking (a copy of `feat`, 3 ms per update on the 50-slot memory) for
        a caller whose weight-0 samples are finite: the tracker's memory keeps zeros in its empty slots.
      num_iter: static Python int overriding the default number of iterations (0 returns `filt` unchanged);
        with `active_iter`, the upper bound of the traced count.
      active_iter: optional traced int scalar: run min(active_iter, num_iter) iterations (0 or less: none) in a
        `lax.while_loop`. The iterates are the same numbers as the first active_iter of the static loop.

    Returns:
      (final filter `[B, fh, fw, D]`, iterates `[num_iter + 1, B, fh, fw, D]` (f0 = filt first),
       losses `[num_iter + 1]`: (sum r^2 + lambda ||f||^2) / B at every iterate); with `active_iter`
      (final filter, None, None): the number of iterates is data-dependent, so none are kept.
    """
    check_filter_inputs(feat, filt, "DiMPSteepestDescentGN")
    nimg, nseq, h, w, _ = feat.shape
    fh, fw = filt.shape[1:3]
    box_xywh = jnp.asarray(box_xywh, default_float())
    if box_xywh.shape != (nimg, nseq, 4):
      raise ValueError(f"DiMPSteepestDescentGN: box_xywh must be [Nimg, B, 4] = {(nimg, nseq, 4)}, "
                       f"got {box_xywh.shape}")
    num_iter = static_num_iter(num_iter, self.num_iter, "DiMPSteepestDescentGN")
    sw = None if sample_weight is None else sample_weights(sample_weight, nimg, nseq, "DiMPSteepestDescentGN")
    if sw is not None:
      # Empty (weight-0) memory slots may hold anything; zero them so no 0 * nan/inf reaches the sums.
      box_xywh = jnp.where((sw > 0)[:, :, None], box_xywh, 0.0)
      if zero_empty_slots:
        feat = jnp.where((sw > 0)[:, :, None, None, None], feat, 0.0)

    label_init, mask_init, weight_init = self._predictor_inits()
    log_step_length = self.param("log_step_length", nn.initializers.constant(math.log(self.init_step_length)),
                                 (1,), jnp.float32)
    filter_reg = self.param("filter_reg", nn.initializers.constant(self.init_filter_reg), (1,), jnp.float32)
    label, mask, spatial_weight = self._score_targets(box_xywh, score_size((h, w), (fh, fw)), (fh, fw),
                                                      label_init, mask_init, weight_init)
    if sw is None:
      v = math.sqrt(1.0 / nimg) * spatial_weight
    else:
      v = jnp.sqrt(sw)[:, :, None, None] * spatial_weight

    step = jnp.exp(log_step_length[0])
    reg = jnp.maximum(filter_reg[0] ** 2, self.min_filter_reg**2)
    half_mask, half_one = (1.0 - mask) / 2.0, (1.0 + mask) / 2.0

    def loss_of(f):
      s = apply_filter(feat, f)
      r = v * (half_mask * jnp.abs(s) + half_one * s - label)
      return (jnp.sum(r * r) + reg * jnp.sum(f * f)) / nseq

    def body(f, _):
      s, filt_vjp = jax.vjp(lambda ff: apply_filter(feat, ff), f)
      act = half_mask * jnp.abs(s) + half_one * s
      deriv = half_mask * jnp.sign(jax.lax.stop_gradient(s)) + half_one
      r = v * (act - label)
      loss = (jnp.sum(r * r) + reg * jnp.sum(f * f)) / nseq
      (g,) = filt_vjp((deriv * v * r).astype(s.dtype))  # float64 labels with float32 params under x64
      g = g + reg * f
      q = v * deriv * apply_filter(feat, g)
      g2 = blocked_sum(g * g, axis=(1, 2, 3))
      den = jnp.maximum(blocked_sum(q * q, axis=(0, 2, 3)) + (reg + self.alpha_eps) * g2, 1e-8)
      f_new = (f - (step * g2 / den)[:, None, None, None] * g).astype(f.dtype)
      return f_new, (f_new, loss)

    if active_iter is not None:
      return while_steps(lambda f: body(f, None)[0], filt, active_iter, num_iter), None, None
    final, (later, losses) = jax.lax.scan(body, filt, None, length=num_iter)
    iterates = jnp.concatenate([filt[None], later], axis=0)
    losses = jnp.concatenate([losses, loss_of(final)[None]], axis=0)
    return final, iterates, losses


def while_steps(step, filt: jax.Array, count, max_count: int) -> jax.Array:
  """`step` applied min(count, max_count) times (count traced; 0 or less: `filt`) in a `lax.while_loop`."""
  stop = jnp.minimum(jnp.asarray(count, jnp.int32), max_count)
  _, final = jax.lax.while_loop(lambda c: c[0] < stop, lambda c: (c[0] + 1, step(c[1])),
                                (jnp.asarray(0, jnp.int32), filt))
  return final


def static_num_iter(num_iter, default: int, where: str) -> int:
  """`num_iter` (None: `default`) as a Python int >= 0 (ValueError naming `where` otherwise)."""
  num_iter = default if num_iter is None else num_iter
  if not isinstance(num_iter, (int, np.integer)) or num_iter < 0:
    raise ValueError(f"{where}: num_iter must be a static int >= 0, got {num_iter!r}")
  return int(num_iter)


def sample_weights(sample_weight: jax.Array, nimg: int, nseq: int, where: str) -> jax.Array:
  """`[Nimg, B]` or `[Nimg]` weights -> `[Nimg, B]` (ValueError naming `where` on any other shape)."""
  sw = jnp.asarray(sample_weight, default_float())
  if sw.shape == (nimg,):
    sw = jnp.broadcast_to(sw[:, None], (nimg, nseq))
  if sw.shape != (nimg, nseq):
    raise ValueError(f"{where}: sample_weight must be [Nimg, B] = {(nimg, nseq)} or [Nimg] = ({nimg},), "
                     f"got {sw.shape}")
  return sw
