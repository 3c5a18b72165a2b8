"""SuperDiMP-simple's filter optimiser: Gauss-Newton steepest descent over a hinge residual (keeptrack.md §0).

The base network of the released KeepTrack (`super_dimp_simple.pth.tar`, pytracking's `dimpnet50_simple`) learns
its online filter with a generic Gauss-Newton steepest descent (`GNSteepestDescent`) over the residual of
`LinearFilterHinge`, with target labels y supplied by the caller (the tracker's Gaussian labels). Per sequence b,
with features x (all images of b), filter f and per-image weights w:
  m = min([y > hinge_threshold] + leak, 1)                         (target mask: 1 on the target, leak elsewhere)
  s = x * f,   a(s, m) = (1 - m)/2 |s| + (1 + m)/2 s,   a'(s, m) = (1 - m)/2 sign(s) + (1 + m)/2
  r = sqrt(w) (a(s, m) - m y),   r_reg = filter_reg f
  g = J^T(sqrt(w) a'(s, m) r) + filter_reg^2 f
  h = sqrt(w) a'(s, m) (x * g)                                       (data part of J g)
  alpha = sum(g^2) / max(sum(h^2) + filter_reg^2 sum(g^2) + steplength_reg sum(g^2), 1e-8)
  f <- f - alpha g
Sums run over sequence b only (the reference's `residual_batch_dim=1`). Unlike `DiMPSteepestDescentGN` there is no
learnt step length, no label / mask / spatial-weight predictor and no lower bound on filter_reg; w defaults to
1 / Nimg for every image. J^T is the exact adjoint of f -> x * f (`jax.vjp`); sign(0) = 0 as torch's.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from cia_jax.models.dimp.filter import apply_filter, check_filter_inputs, score_size
from cia_jax.models.dimp.optimizer import sample_weights, static_num_iter, while_steps
from cia_jax.ops.dtypes import default_float
from cia_jax.ops.sums import blocked_sum


class HingeResidual(nn.Module):
  """Holds the learnt `filter_reg` `(1,)` (torch `classifier.filter_optimizer.residual_module.filter_reg`)."""

  init_filter_reg: float = 0.1

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param("filter_reg", nn.initializers.constant(self.init_filter_reg), (1,), jnp.float32)


def hinge_mask(label: jax.Array, hinge_threshold: float, activation_leak: float) -> jax.Array:
  """Target mask m = min([label > hinge_threshold] + activation_leak, 1), the shape of `label`."""
  return jnp.minimum((label > hinge_threshold).astype(label.dtype) + activation_leak, 1.0)


class HingeSteepestDescentGN(nn.Module):
  """Gauss-Newton steepest descent over the hinge residual (module docstring), the filter optimiser of
  SuperDiMP-simple. Same call contract as `DiMPSteepestDescentGN`, plus the labels.

  Parameters: residual_module/filter_reg `(1,)` (copied as is).

  Attributes:
    num_iter: default number of iterations (5 in training).
    init_filter_reg: initial filter_reg (0.1).
    hinge_threshold: labels above it are target (mask 1), 0.05.
    activation_leak: mask value elsewhere (the slope of the leaky ReLU on background scores), 0.1.
    steplength_reg: added times sum(g^2) to the step-length denominator (0 in the released network).
  """

  num_iter: int = 5
  init_filter_reg: float = 0.1
  hinge_threshold: float = 0.05
  activation_leak: float = 0.1
  steplength_reg: float = 0.0

  @nn.compact
  def __call__(self, filt: jax.Array, feat: jax.Array, label: jax.Array, sample_weight: jax.Array | None = None,
               num_iter: int | None = None, active_iter: jax.Array | None = None, zero_empty_slots: bool = True):
    """Runs `num_iter` (or, traced, `active_iter`) steps from `filt`.

    Args:
      filt: `[B, fh, fw, D]` initial filters.
      feat: `[Nimg, B, H, W, D]` classification features of the training samples.
      label: `[Nimg, B, Ho, Wo]` target labels on the score grid (`score_size((H, W), (fh, fw))`).
      sample_weight: None -> w = 1 / Nimg for every image; or `[Nimg, B]` / `[Nimg]` (shared by all sequences).
        Samples of weight 0 contribute nothing (their features and labels are masked: empty memory slots may
        hold anything, NaN included).
      zero_empty_slots: False: weight-0 features are finite and not masked (saves a copy of the feature
        array; see `DiMPSteepestDescentGN`). Labels are masked either way.
      num_iter: static Python int (None: the module default; 0 returns `filt`); with `active_iter`, the upper
        bound of the traced count.
      active_iter: optional traced int scalar: run min(active_iter, num_iter) iterations in a `lax.while_loop`.

    Returns:
      (final filter, iterates `[num_iter + 1, B, fh, fw, D]` (f0 = filt first), losses `[num_iter + 1]`: the
      reference's mean squared residual (sum r^2 + sum r_reg^2) / (numel r + numel r_reg) at every iterate);
      with `active_iter` (final filter, None, None).
    """
    check_filter_inputs(feat, filt, "HingeSteepestDescentGN")
    nimg, nseq, h, w, _ = feat.shape
    fh, fw = filt.shape[1:3]
    out_hw = score_size((h, w), (fh, fw))
    label = jnp.asarray(label, default_float())
    if label.shape != (nimg, nseq, *out_hw):
      raise ValueError(f"HingeSteepestDescentGN: label must be [Nimg, B, Ho, Wo] = {(nimg, nseq, *out_hw)}, "
                       f"got {label.shape}")
    num_iter = static_num_iter(num_iter, self.num_iter, "HingeSteepestDescentGN")
    if sample_weight is None:
      sqrt_w = jnp.full((nimg, nseq, 1, 1), math.sqrt(1.0 / nimg), default_float())
    else:
      sw = sample_weights(sample_weight, nimg, nseq, "HingeSteepestDescentGN")
      valid = sw > 0
      # Empty (weight-0) memory slots may hold anything; zero them so no 0 * nan/inf reaches the sums.
      if zero_empty_slots:
        feat = jnp.where(valid[:, :, None, None, None], feat, 0.0)
      label = jnp.where(valid[:, :, None, None], label, 0.0)
      sqrt_w = jnp.sqrt(jnp.where(valid, sw, 0.0))[:, :, None, None]

    filter_reg = HingeResidual(self.init_filter_reg, name="residual_module")()[0]
    reg = filter_reg * filter_reg
    mask = hinge_mask(label, self.hinge_threshold, self.activation_leak)
    half_mask, half_one = (1.0 - mask) / 2.0, (1.0 + mask) / 2.0
    target = mask * label
    numel = nimg * nseq * out_hw[0] * out_hw[1] + filt.size

    def loss_of(f):
      s = apply_filter(feat, f)
      r = sqrt_w * (half_mask * jnp.abs(s) + half_one * s - target)
      return (jnp.sum(r * r) + reg * jnp.sum(f * f)) / numel

    def body(f, _):
      s, filt_vjp = jax.vjp(lambda ff: apply_filter(feat, ff), f)
      r = sqrt_w * (half_mask * jnp.abs(s) + half_one * s - target)
      loss = (jnp.sum(r * r) + reg * jnp.sum(f * f)) / numel
      deriv = sqrt_w * (half_mask * jnp.sign(jax.lax.stop_gradient(s)) + half_one)
      (g,) = filt_vjp((deriv * r).astype(s.dtype))
      g = g + reg * f
      q = deriv * apply_filter(feat, g)
      g2 = blocked_sum(g * g, axis=(1, 2, 3))
      den = jnp.maximum(blocked_sum(q * q, axis=(0, 2, 3)) + (reg + self.steplength_reg) * g2, 1e-8)
      f_new = (f - (g2 / den)[:, None, None, None] * g).astype(f.dtype)
      return f_new, (f_new, loss)

    if active_iter is not None:
      return while_steps(lambda f: body(f, None)[0], filt, active_iter, num_iter), None, None
    final, (later, losses) = jax.lax.scan(body, filt, None, length=num_iter)
    iterates = jnp.concatenate([filt[None], later], axis=0)
    losses = jnp.concatenate([losses, loss_of(final)[None]], axis=0)
    return final, iterates, losses
