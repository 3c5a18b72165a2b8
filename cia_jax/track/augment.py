"""Initial-frame augmentation of the tracker (design.md §5.4 steps 2-5).

The first frame is cropped once into an expanded patch of side E = factor * S (+1 if E - S is odd) around
the rounded target centre. Each transform works on that E patch and then crops an S x S window out of it
whose start is (E - S) / 2 - shift (replicate padding if it leaves the E patch), so the image content and
the target move by +shift = (dy, dx) patch pixels relative to the identity sample. The transforms, in the
reference's order: identity, the relative shifts, horizontal flip, Gaussian blurs, rotations. Every
transform but the identity and the translations gets a random shift trunc((U(0,1) - 0.5) * S *
random_shift_factor) per axis. Target boxes of all samples are the identity box moved by the shift
(flips and rotations do not move or mirror the box: the reference's behaviour).

The two extra "dropout" samples are copies of the identity sample's classification features with
channel dropout (whole channels zeroed with probability p, survivors scaled by 1 / (1 - p)). With
`settings.deterministic` there are no random shifts and the dropout copies are plain copies of sample 0
(shapes stay fixed, so a deterministic tracker has the same memory layout).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from cia_jax.ops.dtypes import default_float
from cia_jax.track.params import TrackerSettings


def expanded_size(settings: TrackerSettings) -> int:
  """E: side of the expanded init patch, S * factor made to differ from S by an even number of pixels."""
  s = settings.image_sample_size
  e = int(s * settings.augmentation_expansion_factor)
  return e + (e - s) % 2


def transform_list(settings: TrackerSettings) -> list[tuple[str, object]]:
  """Static list of (kind, parameter) of the image transforms, in the reference's order.

  Kinds: 'identity' (None), 'translation' (integer shift (dy, dx) in patch pixels), 'fliplr' (None),
  'blur' ((sigma_y, sigma_x) pixels), 'rotate' (degrees, counter-clockwise as cv2 shows it).
  """
  half = settings.image_sample_size / 2
  out: list[tuple[str, object]] = [("identity", None)]
  out += [("translation", (int(dy * half), int(dx * half))) for dy, dx in settings.aug_relativeshift]
  if settings.aug_fliplr:
    out.append(("fliplr", None))
  out += [("blur", tuple(float(v) for v in sig)) for sig in settings.aug_blur]
  out += [("rotate", float(a)) for a in settings.aug_rotate]
  return out


def init_shifts(settings: TrackerSettings, key: jax.Array, global_shift_yx: jax.Array | None = None) -> jax.Array:
  """`[T, 2]` int32 shifts (dy, dx) in patch pixels of the transforms of `transform_list`.

  Identity: trunc(global shift); translations: their fixed shift + trunc(global shift); flips, blurs and
  rotations: trunc(random shift + global shift), the random part zero when deterministic. The global shift
  `[2]` is only non-zero for border_mode 'inside' (it moves the target where the shrunk crop would put it).
  """
  transforms = transform_list(settings)
  s = settings.image_sample_size
  g = jnp.zeros((2,), default_float()) if global_shift_yx is None else jnp.asarray(global_shift_yx, default_float())
  rand = (jax.random.uniform(key, (len(transforms), 2)) - 0.5) * s * settings.random_shift_factor
  if settings.deterministic:
    rand = jnp.zeros_like(rand)
  rows = []
  for i, (kind, param) in enumerate(transforms):
    if kind == "identity":
      rows.append(jnp.trunc(g).astype(jnp.int32))
    elif kind == "translation":
      rows.append(jnp.asarray(param, jnp.int32) + jnp.trunc(g).astype(jnp.int32))
    else:
      rows.append(jnp.trunc(rand[i] + g).astype(jnp.int32))
  return jnp.stack(rows)


def crop_to_output(image: jax.Array, shift_yx: jax.Array, output_sz: int) -> jax.Array:
  """S x S window of `image` `[E, E, C]` starting at (E - S) / 2 - shift, replicate padding outside.

  shift_yx: `[2]` int (dy, dx); the content moves by +shift.
  """
  e_h, e_w = image.shape[:2]
  start_y = -math.floor((output_sz - e_h) / 2) - shift_yx[0]
  start_x = -math.floor((output_sz - e_w) / 2) - shift_yx[1]
  i = jnp.arange(output_sz)
  rows = jnp.clip(start_y + i, 0, e_h - 1)
  cols = jnp.clip(start_x + i, 0, e_w - 1)
  return image[rows][:, cols]


def gaussian_kernel(sigma: float) -> np.ndarray:
  """Normalised 1-D Gaussian taps over [-ceil(2 sigma), ceil(2 sigma)]."""
  r = math.ceil(2 * sigma)
  x = np.arange(-r, r + 1, dtype=np.float64)
  k = np.exp(-x**2 / (2 * sigma**2))
  return k / k.sum()  # float64 taps: multiplied in as Python floats (weak type)


def _conv1d_zero(image: jax.Array, taps: np.ndarray, axis: int) -> jax.Array:
  """Zero-padded 'same' correlation of `image` with symmetric `taps` along `axis`."""
  r = (len(taps) - 1) // 2
  pad = [(0, 0)] * image.ndim
  pad[axis] = (r, r)
  padded = jnp.pad(image, pad)
  n = image.shape[axis]
  return sum(float(t) * jax.lax.slice_in_dim(padded, k, k + n, axis=axis) for k, t in enumerate(taps))


def blur(image: jax.Array, sigma_yx: tuple[float, float]) -> jax.Array:
  """Separable Gaussian blur of `[H, W, C]` with zero padding (the reference's conv2d), sigmas in pixels."""
  out = _conv1d_zero(image, gaussian_kernel(sigma_yx[0]), axis=0)
  return _conv1d_zero(out, gaussian_kernel(sigma_yx[1]), axis=1)


def rotate(image: jax.Array, angle_deg: float) -> jax.Array:
  """Rotation of a square `[E, E, C]` image about its centre ((E - 1) / 2, (E - 1) / 2), like
  `cv2.warpAffine(img, [R | c - R c], borderMode=BORDER_REPLICATE)` with R = [[cos, sin], [-sin, cos]]:
  bilinear, replicated border (cv2 additionally quantises positions to 1/32 pixel).

  Output pixel (x, y) samples the input at R^T ((x, y) - c) + c.
  """
  h, w = image.shape[:2]
  if h != w:
    raise ValueError(f"rotate: the expanded patch must be square, got {image.shape}")
  a = math.radians(angle_deg)
  cos, sin = math.cos(a), math.sin(a)
  c = (h - 1) / 2.0
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=default_float()), jnp.arange(w, dtype=default_float()), indexing="ij")
  src_x = cos * (xx - c) - sin * (yy - c) + c
  src_y = sin * (xx - c) + cos * (yy - c) + c
  x0, y0 = jnp.floor(src_x), jnp.floor(src_y)
  lx, ly = (src_x - x0)[..., None], (src_y - y0)[..., None]
  xi = lambda v: jnp.clip(v, 0, w - 1).astype(jnp.int32)  # noqa: E731
  yi = lambda v: jnp.clip(v, 0, h - 1).astype(jnp.int32)  # noqa: E731
  g = lambda yv, xv: image[yi(yv), xi(xv)]  # noqa: E731
  top = (1 - lx) * g(y0, x0) + lx * g(y0, x0 + 1)
  bottom = (1 - lx) * g(y0 + 1, x0) + lx * g(y0 + 1, x0 + 1)
  return (1 - ly) * top + ly * bottom


def augment_init_patches(expanded: jax.Array, settings: TrackerSettings, key: jax.Array,
                         global_shift_yx: jax.Array | None = None):
  """All image transforms of design.md §5.4 step 3 on the expanded patch.

  Args:
    expanded: `[E, E, 3]` float expanded patch (see `expanded_size`), 0..255.
    settings: tracker settings (transform list, S, deterministic).
    key: PRNG key of the random shifts.
    global_shift_yx: optional `[2]` shift added to every transform (border_mode 'inside' only).

  Returns:
    (patches `[T, S, S, 3]` float32, shifts `[T, 2]` int32 (dy, dx) in patch pixels), T = 13 by default.
  """
  s = settings.image_sample_size
  expanded = jnp.asarray(expanded, default_float())
  shifts = init_shifts(settings, key, global_shift_yx)
  patches = []
  for i, (kind, param) in enumerate(transform_list(settings)):
    if kind in ("identity", "translation"):
      img = expanded
    elif kind == "fliplr":
      img = expanded[:, ::-1]
    elif kind == "blur":
      img = blur(expanded, param)
    else:
      img = rotate(expanded, param)
    patches.append(crop_to_output(img, shifts[i], s))
  return jnp.stack(patches), shifts


def dropout_copies(feat0: jax.Array, settings: TrackerSettings, key: jax.Array) -> jax.Array:
  """`[num, h, w, D]` channel-dropout copies of the identity sample's features `feat0` `[h, w, D]`.

  Each copy zeroes whole channels with probability p and scales the rest by 1 / (1 - p) (dropout2d);
  deterministic settings return plain copies.
  """
  num, p = settings.aug_dropout_num, settings.aug_dropout_prob
  copies = jnp.broadcast_to(feat0, (num, *feat0.shape))
  if settings.deterministic or num == 0:
    return copies
  keep = jax.random.bernoulli(key, 1.0 - p, (num, 1, 1, feat0.shape[-1]))
  return jnp.where(keep, copies / (1.0 - p), 0.0)
