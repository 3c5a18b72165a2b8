"""Tracker patch extraction (`sample_patch`, design.md §5.3) as one jittable gather.

The reference crops a variable-sized window out of an (optionally integer-decimated) image with replicate
padding and resizes it bilinearly to the network's input size. Every size in that pipeline depends on the
data (target scale, decimation factor df), so a literal port would recompile per frame. Here the whole
chain is folded into index arithmetic instead: output pixel j -> bilinear source position u in the crop
(align_corners=False, no antialias) -> crop index i -> decimated-image index clamp(tl + i) (= replicate
padding) -> full-image index o + df * that. Only the image array's shape and the output size are static.

Padded frames: the array may be larger than the true frame (padded at the bottom / right, e.g. to a size
bucket); `image_sz_yx` (traced) is the true size, and every clamp, shrink and decimation uses it, so the
padding is never read and the result equals that of the unpadded frame. The frame stays in its dtype (uint8
in the tracker) until the gather: only the 4 * S_y * S_x source pixels of the bilinear taps are converted to
float, so the cost does not grow with the frame size.

Coordinates: 0-based full-image pixels, (y, x) order for positions and sizes. `patch_coord` is
(T_y, T_x, E_y, E_x) = df * (tl, br): the crop window [T, E) in full-image pixels (E exclusive).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from cia_jax.ops.dtypes import default_float

MODES = ("replicate", "inside", "inside_major")
CROP_RULES = ("cia", "pytracking")


def _as_pair(v) -> jax.Array:
  """Scalar or `[2]` -> `[2]` float array."""
  return jnp.broadcast_to(jnp.asarray(v, default_float()), (2,))


def crop_window(image_hw, pos_yx, sample_sz_yx, output_sz_yx: Sequence[int],
                mode: str = "replicate", max_scale_change: float | None = None, rule: str = "cia"):
  """The integer crop geometry of design.md §5.3 (steps 1-5), without touching pixels.

  Args:
    image_hw: (H, W) of the true image: static ints or a traced `[2]` int / float array (integer values).
    pos_yx: `[2]` crop centre (y, x) in full-image pixels (any real value).
    sample_sz_yx: `[2]` (or scalar) requested crop size in full-image pixels (target_scale * S).
    output_sz_yx: static (S_y, S_x) output patch size.
    mode: 'replicate', 'inside' or 'inside_major'.
    max_scale_change: upper clamp of the inside-mode shrink factor (None: unclamped).
    rule: 'cia' (the CIA fork: tl = posl - (szl - 1) // 2, br = posl + szl // 2 + 1, integer) or 'pytracking'
      (upstream: the same with true division, so tl or br falls on a half pixel; the pixels cropped are
      [trunc(tl), trunc(br)) while `patch_coord` keeps the half pixels). The two differ by one pixel of
      crop (even szl) or half a pixel of `patch_coord` (odd szl); DiMP18 / SuperDiMP use upstream's.

  Returns:
    dict with int32 `df` (decimation factor, scalar), `offset` `[2]` (decimation start o), `size` `[2]`
    (int32 crop side szl in decimated pixels, before any shift into the image), `tl` `[2]`, `br` `[2]` (int32
    crop window in decimated pixels, br exclusive) and float `patch_coord` `[4]` = df * (tl, br) (with
    upstream's half pixels under rule='pytracking').
  """
  if mode not in MODES:
    raise ValueError(f"sample_patch: mode must be one of {MODES}, got {mode!r}")
  if rule not in CROP_RULES:
    raise ValueError(f"sample_patch: rule must be one of {CROP_RULES}, got {rule!r}")
  f = default_float()
  im_sz = jnp.broadcast_to(jnp.asarray(image_hw, f), (2,))
  im_int = jnp.round(im_sz).astype(jnp.int32)
  out_sz = jnp.asarray([float(output_sz_yx[0]), float(output_sz_yx[1])], f)
  pos = _as_pair(pos_yx)
  sz = _as_pair(sample_sz_yx)
  posl = jnp.trunc(pos).astype(jnp.int32)  # torch .long(): toward zero.
  if mode != "replicate":
    ratio = sz / im_sz
    shrink = jnp.max(ratio) if mode == "inside" else jnp.min(ratio)
    shrink = jnp.maximum(shrink, 1.0)
    if max_scale_change is not None:
      shrink = jnp.minimum(shrink, float(max_scale_change))
    # .long() in the reference. Under jit XLA may turn `sz / im_sz` into a reciprocal product, so the
    # quotient can land a few ulp below an exact integer (the common case here: sz / (sz / image_size) =
    # image_size) and would truncate one pixel short; quotients within 4 ulp of an integer are snapped to it.
    q = sz / shrink
    r = jnp.round(q)
    q = jnp.where(jnp.abs(q - r) <= 4.0 * jnp.finfo(f).eps * jnp.maximum(r, 1.0), r, q)
    sz = jnp.trunc(q)
  # Integer pre-decimation (nearest subsampling) when the crop is much larger than the output.
  df = jnp.maximum(jnp.trunc(jnp.min(sz / out_sz) - 0.1), 1.0).astype(jnp.int32)
  offset = posl % df  # Python-style remainder, like torch's `%` on integer tensors.
  posl = (posl - offset) // df
  szl = jnp.maximum(jnp.round(sz / df.astype(f)), 2.0).astype(jnp.int32)  # Half to even, as torch.
  if rule == "cia":
    tl = posl - (szl - 1) // 2
    br = posl + szl // 2 + 1  # Floor division (CIA fork).
  else:  # Upstream: true division of integer tensors -> half pixels.
    tl = posl.astype(f) - (szl - 1).astype(f) / 2.0
    br = posl.astype(f) + szl.astype(f) / 2.0 + 1.0
  if mode != "replicate":
    im2_sz = ((im_int - offset + df - 1) // df).astype(tl.dtype)  # Decimated size.
    shift = jnp.maximum(-tl, 0) - jnp.maximum(br - im2_sz, 0)
    tl, br = tl + shift, br + shift
    # Still larger than the image: centre it (equal overflow on both sides).
    outside = (jnp.maximum(-tl, 0) + jnp.maximum(br - im2_sz, 0)) // 2
    shift = (-tl - outside) * (outside > 0).astype(tl.dtype)
    tl, br = tl + shift, br + shift
  patch_coord = (df * jnp.concatenate([tl, br])).astype(f)
  if rule == "pytracking":  # F.pad with `.int()` pads: the crop is [trunc(tl), trunc(br)).
    tl, br = jnp.trunc(tl).astype(jnp.int32), jnp.trunc(br).astype(jnp.int32)
  return {"df": df, "offset": offset, "size": szl, "tl": tl, "br": br, "patch_coord": patch_coord}


def _axis_taps(tl, br, offset, df, size_full, out_len: int):
  """Bilinear taps along one axis: full-image indices (i0, i1) `[out_len]` int32 and weight of i1.

  Source position in the crop of length n = br - tl (align_corners=False, negative positions clamped to 0
  as PyTorch does); crop index -> decimated index clamped into the decimated image (replicate padding)
  -> full-image index offset + df * index. size_full: int32 scalar (may be traced), the true image length.
  """
  n = br - tl
  size_dec = (size_full - offset + df - 1) // df
  j = jnp.arange(out_len, dtype=default_float())
  u = jnp.maximum((j + 0.5) * (n.astype(default_float()) / out_len) - 0.5, 0.0)
  i0 = jnp.minimum(jnp.floor(u).astype(jnp.int32), n - 1)
  lam = u - i0.astype(default_float())
  i1 = jnp.minimum(i0 + 1, n - 1)
  to_full = lambda i: offset + df * jnp.clip(tl + i, 0, size_dec - 1)  # noqa: E731
  return to_full(i0), to_full(i1), lam


def sample_patch(image: jax.Array, pos_yx, sample_sz_yx, output_sz_yx: Sequence[int],
                 mode: str = "replicate", max_scale_change: float | None = None, rule: str = "cia",
                 image_sz_yx=None):
  """Crops and resizes one tracker patch (design.md §5.3), jittable for a fixed image shape and output size.

  Args:
    image: `[Hp, Wp, C]` uint8 or float image, values kept as they are (0..255 in the tracker); may be padded
      at the bottom / right beyond the true frame (see `image_sz_yx`). Only the gathered source pixels are
      converted to float.
    pos_yx: `[2]` crop centre (y, x) in full-image pixels; dynamic.
    sample_sz_yx: `[2]` or scalar requested crop size (y, x) in full-image pixels; dynamic.
    output_sz_yx: static (S_y, S_x).
    mode: 'replicate' (pad by edge replication), 'inside' / 'inside_major' (shrink by at most
      `max_scale_change` and shift the window into the image; what still sticks out is replicated).
    max_scale_change, rule: see `crop_window`.
    image_sz_yx: true (H, W) <= (Hp, Wp), `[2]` int or float, may be traced; None: the array's (Hp, Wp).
      Pixels at or beyond it are never read.

  Returns:
    (patch `[S_y, S_x, C]`, patch_coord `[4]` = (T_y, T_x, E_y, E_x) in full-image pixels), float32 (float64
    under `jax_enable_x64`: `cia_jax.ops.dtypes.default_float`).
  """
  image = jnp.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"sample_patch: image must be [H, W, C], got shape {image.shape}")
  hw = image.shape[:2] if image_sz_yx is None else image_sz_yx
  out_h, out_w = int(output_sz_yx[0]), int(output_sz_yx[1])
  geo = crop_window(hw, pos_yx, sample_sz_yx, (out_h, out_w), mode, max_scale_change, rule)
  df, o, tl, br = geo["df"], geo["offset"], geo["tl"], geo["br"]
  size = jnp.round(jnp.broadcast_to(jnp.asarray(hw, default_float()), (2,))).astype(jnp.int32)
  y0, y1, ly = _axis_taps(tl[0], br[0], o[0], df, size[0], out_h)
  x0, x1, lx = _axis_taps(tl[1], br[1], o[1], df, size[1], out_w)
  # Gather the four taps from the frame in its own dtype, then convert only those S_y x S_x x 4 pixels. The
  # arithmetic (rows first, then columns) is that of resizing the whole float frame row-wise then column-wise.
  f = default_float()
  px = lambda yi, xi: image[yi[:, None], xi[None, :]].astype(f)  # noqa: E731  [S_y, S_x, C]
  ly, lx = ly[:, None, None], lx[None, :, None]
  col0 = (1.0 - ly) * px(y0, x0) + ly * px(y1, x0)
  col1 = (1.0 - ly) * px(y0, x1) + ly * px(y1, x1)
  patch = (1.0 - lx) * col0 + lx * col1
  return patch, geo["patch_coord"]


def sample_pos_scale(patch_coord: jax.Array, output_sz: float):
  """Where a patch really sits (design.md §5.3, last lines): (sample_pos `[2]` (y, x), sample_scale scalar).

  patch_coord: `[..., 4]` (T_y, T_x, E_y, E_x) full-image pixels; output_sz: the patch side S.
  sample_pos = (T + E - 1) / 2; sample_scale = sqrt(prod((E - T) / S)) (full-image pixels per patch pixel).
  """
  c = jnp.asarray(patch_coord, default_float())
  t, e = c[..., :2], c[..., 2:]
  return 0.5 * (t + e - 1.0), jnp.sqrt(jnp.prod((e - t) / output_sz, axis=-1))
