"""Per-sequence filter application of the DiMP classifier (design.md §2.2).

Every sequence b correlates its own filter `filt[b]` with the features of all its images. The scores are a
plain cross-correlation (no flip, no bias) with zero padding `fh // 2`, so a 4x4 filter on `H x W` features
gives `(H + 1) x (W + 1)` scores (19x19 on 18x18, 23x23 on 22x22).

Two implementations, equal up to float32 rounding:
* 'taps' (default): one batched matmul projects every feature vector on the fh*fw filter taps
  (`[Nimg, B, H, W, fh*fw]`), then `sum_taps` adds each tap from its shifted cell. The features are read once
  and the heavy work is a GEMM. For B = 1 (the tracker's sample memory, also when vmapped over lanes) it is a
  plain 2-D GEMM on the features' own layout: as a dot with a batch axis in the middle, XLA's CPU backend
  transposed the whole memory first (filter update 4x slower, BENCHMARKS.md). The tap sum is shifted slices
  with a hand-written VJP: as a convolution with a one-hot kernel (what it equals) it took a third of a
  steepest-descent iteration on the 50-slot memory (BENCHMARKS.md, "The filter update's own costs").
* 'grouped': one grouped convolution (`feature_group_count = B`) over `[Nimg, H, W, B * D]`. `vmap` of a plain
  conv over the sequences lowers to the same grouped conv and times the same.
CPU timings (this project's 2-core machine, jitted forward + filter VJP + forward, medians): 'taps' 4.7 ms vs
35.8 ms grouped / 35.1 ms vmap at DiMP18 training size (3 x 8 x 18 x 18 x 256); 3.7 vs 22.4 / 21.9 ms at
tracker-init size (15 x 1 x 22 x 22 x 256); 42 vs 173 / 173 ms on a full 50-sample SuperDiMP memory
(50 x 1 x 22 x 22 x 512). 'taps' also compiles faster under double differentiation (training).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

IMPLS = ("taps", "grouped")


def check_filter_inputs(feat: jax.Array, filt: jax.Array, where: str = "apply_filter") -> None:
  """ValueError unless feat is `[Nimg, B, H, W, D]` and filt is `[B, fh, fw, D]` with matching B and D."""
  if feat.ndim != 5:
    raise ValueError(f"{where}: feat must be [Nimg, B, H, W, D] (rank 5), got shape {feat.shape}")
  if filt.ndim != 4:
    raise ValueError(f"{where}: filt must be [B, fh, fw, D] (rank 4), got shape {filt.shape}")
  if feat.shape[1] != filt.shape[0] or feat.shape[-1] != filt.shape[-1]:
    raise ValueError(f"{where}: feat {feat.shape} and filt {filt.shape} disagree on the number of sequences "
                     "(feat axis 1 vs filt axis 0) or on the channels D (last axis)")


def score_size(feat_hw: tuple[int, int], filter_hw: tuple[int, int]) -> tuple[int, int]:
  """Score-map size for `H x W` features and an `fh x fw` filter: H + 1 - fh % 2 (H + 1 for even filters)."""
  return tuple(int(s) + 1 - int(k) % 2 for s, k in zip(feat_hw, filter_hw))


def _pairwise_sum(terms: list[jax.Array]) -> jax.Array:
  while len(terms) > 1:
    terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
  return terms[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def sum_taps(taps: jax.Array, fh: int, fw: int) -> jax.Array:
  """Scores from per-cell filter taps: `[N, H, W, fh*fw]` -> `[N, Ho, Wo]` (`score_size`), with

    y[n, i, j] = sum_{u, v} tapspad[n, i + u, j + v, u * fw + v],  tapspad = taps zero-padded by fh//2, fw//2,

  the convolution of the taps with a one-hot `[fh, fw, fh*fw, 1]` kernel, as fh*fw shifted slices added in a
  pairwise tree. XLA's CPU convolution with one output channel (and its transpose, one input channel) ran at
  ~4x the time of the slices on the sample memory; the VJP is the fh*fw shifted slices of the padded scores'
  cotangent, stacked (differentiating the slices would pad and add fh*fw full-size arrays).
  """
  ph, pw = fh // 2, fw // 2
  ho, wo = score_size(taps.shape[1:3], (fh, fw))
  tp = jnp.pad(taps, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  return _pairwise_sum([tp[:, u:u + ho, v:v + wo, u * fw + v] for u in range(fh) for v in range(fw)])


def _sum_taps_fwd(taps, fh, fw):
  return sum_taps(taps, fh, fw), taps.shape[1:3]


def _sum_taps_bwd(fh, fw, hw, dy):
  # d taps[n, a, b, (u, v)] = dy[n, a + fh//2 - u, b + fw//2 - v] (0 outside): dy padded by fh-1, fw-1.
  h, w = hw
  ph, pw = fh // 2, fw // 2
  dp = jnp.pad(dy, ((0, 0), (fh - 1, fh - 1), (fw - 1, fw - 1)))
  cols = [dp[:, ph - u + fh - 1:ph - u + fh - 1 + h, pw - v + fw - 1:pw - v + fw - 1 + w]
          for u in range(fh) for v in range(fw)]
  return (jnp.stack(cols, axis=-1),)


sum_taps.defvjp(_sum_taps_fwd, _sum_taps_bwd)


def apply_filter(feat: jax.Array, filt: jax.Array, impl: str = "taps") -> jax.Array:
  """Correlates each sequence's filter with the features of its images.

  scores[n, b, i, j] = sum_{u, v, d} featpad[n, b, i + u, j + v, d] * filt[b, u, v, d], with featpad = feat
  zero-padded by (fh // 2, fw // 2) on every side.

  Args:
    feat: `[Nimg, B, H, W, D]` classification features (feature cells).
    filt: `[B, fh, fw, D]` one filter per sequence.
    impl: 'taps' (GEMM + one-hot conv, fastest on CPU) or 'grouped' (grouped convolution); see the module doc.

  Returns:
    `[Nimg, B, H + 1 - fh % 2, W + 1 - fw % 2]` scores.
  """
  if impl not in IMPLS:
    raise ValueError(f"apply_filter: impl must be one of {IMPLS}, got {impl!r}")
  check_filter_inputs(feat, filt)
  nimg, b, h, w, d = feat.shape
  _, fh, fw, _ = filt.shape
  pad = ((fh // 2, fh // 2), (fw // 2, fw // 2))
  dims = ("NHWC", "HWIO", "NHWC")
  filt = filt.astype(feat.dtype)
  if impl == "taps":
    # Tap (u, v) of score (i, j) comes from cell (i + u - fh//2, j + v - fw//2): a one-hot conv gathers and
    # sums them in one op (not fh*fw slices), which compiles and transposes quickly.
    if b == 1:
      # One sequence (the tracker, also under vmap): a plain [Nimg*H*W, D] x [D, fh*fw] GEMM on the features'
      # own layout. With b as a dot batch dimension XLA's CPU backend first transposes the whole feature
      # array (the 50-slot memory: 33 MB) and that copy costs several times the GEMM.
      taps = (feat.reshape(nimg * h * w, d) @ filt.reshape(fh * fw, d).T).reshape(nimg, 1, h, w, fh * fw)
    else:
      taps = jnp.einsum("nbhwd,bkd->nbhwk", feat, filt.reshape(b, fh * fw, d))
    y = sum_taps(taps.reshape(nimg * b, h, w, fh * fw), fh, fw)
    return y.reshape(nimg, b, y.shape[1], y.shape[2])
  x = jnp.transpose(feat, (0, 2, 3, 1, 4)).reshape(nimg, h, w, b * d)  # channel = b * D + d (group-major)
  k = jnp.transpose(filt, (1, 2, 3, 0))  # HWIO [fh, fw, D, B]: output channel b belongs to group b
  y = jax.lax.conv_general_dilated(x, k, (1, 1), pad, dimension_numbers=dims, feature_group_count=b)
  return jnp.transpose(y, (0, 3, 1, 2))
