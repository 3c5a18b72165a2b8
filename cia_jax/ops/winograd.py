"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, CVPR 2016).

Each 2x2 block of outputs is computed from a 4x4 tile of the input: the tile and the kernel are moved into a
4x4 transform domain (sums and differences, and halves for the kernel), multiplied there channel by channel as
16 matrix products `[tiles, Cin] @ [Cin, Cout]`, and moved back (sums and differences). That is 16 products per
4 outputs against 36 for the direct convolution, 2.25x fewer multiplications.

Every transform coefficient is 0, +-1 or +-1/2, so the transforms are exact up to the rounding of a few
additions; on float32 ResNet features the result differs from the float64 convolution by as much as XLA's direct
float32 convolution does (tests/ops/test_winograd.py). The tracker uses it for the convolutions with at least
`TrackerSettings.winograd_min_channels` input channels (BENCHMARKS.md "Winograd convolutions"): with fewer
channels the tiles' memory traffic can cost more than the saved multiplications, depending on the CPU.

Transforms, for a 4-sample input tile d, a 3-tap kernel g and a 2-sample output (the 2-D form applies them to
rows, then to columns):
  B^T d = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
  G g   = (g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2)
  A^T m = (m0 + m1 + m2, m1 - m2 - m3)
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

COLLECTION = "winograd"  # variable collection of the transformed kernels (`prepare_variables`)


def _input_1d(d0, d1, d2, d3):
  return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]


def _kernel_1d(g0, g1, g2):
  return [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]


def _output_1d(m0, m1, m2, m3):
  return [m0 + m1 + m2, m1 - m2 - m3]


def kernel_transform(kernel: jax.Array) -> jax.Array:
  """G k G^T per channel pair: `[3, 3, Cin, Cout]` (HWIO) -> `[16, Cin, Cout]`, tile positions row-major."""
  if kernel.ndim != 4 or kernel.shape[:2] != (3, 3):
    raise ValueError(f"winograd.kernel_transform: kernel must be [3, 3, Cin, Cout], got shape {kernel.shape}")
  rows = _kernel_1d(kernel[0], kernel[1], kernel[2])  # 4 x [3, Cin, Cout]
  return jnp.stack([u for r in rows for u in _kernel_1d(r[0], r[1], r[2])])


def conv3x3(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)))` in NHWC / HWIO, by F(2x2, 3x3).

  Args:
    x: `[N, H, W, Cin]`.
    kernel: `[3, 3, Cin, Cout]`.
    padding: zero padding p >= 0 on every side.

  Returns:
    `[N, H + 2p - 2, W + 2p - 2, Cout]`, in the dtype of `x` and `kernel` promoted.
  """
  if kernel.ndim != 4 or kernel.shape[:2] != (3, 3) or x.ndim != 4 or kernel.shape[2] != x.shape[-1]:
    raise ValueError(f"winograd.conv3x3: expected x [N, H, W, C] and kernel [3, 3, C, Cout], got {x.shape} "
                     f"and {kernel.shape}")
  return conv3x3_transformed(x, kernel_transform(kernel), padding)


def conv3x3_transformed(x: jax.Array, u: jax.Array, padding: int) -> jax.Array:
  """`conv3x3` with the kernel already transformed: u = `kernel_transform(kernel)`, `[16, Cin, Cout]`."""
  if x.ndim != 4 or u.ndim != 3 or u.shape[0] != 16 or u.shape[1] != x.shape[-1]:
    raise ValueError(f"winograd.conv3x3: expected x [N, H, W, C] and a transformed kernel [16, C, Cout], got "
                     f"{x.shape} and {u.shape}")
  if padding < 0:
    raise ValueError(f"winograd.conv3x3: padding must be >= 0, got {padding}")
  n, h, w, c = x.shape
  ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
  if ho < 1 or wo < 1:
    raise ValueError(f"winograd.conv3x3: a {h}x{w} input with padding {padding} has no output")
  dtype = jnp.result_type(x.dtype, u.dtype)
  th, tw = -(-ho // 2), -(-wo // 2)  # output tiles; an odd side gets one extra output, cropped at the end
  # Tile (i, j) reads padded rows 2i..2i+3 and columns 2j..2j+3: 2 * th + 2 rows in all.
  xp = jnp.pad(x.astype(dtype), ((0, 0), (padding, 2 * th + 2 - h - padding), (padding, 2 * tw + 2 - w - padding),
                                 (0, 0)))
  rows = _input_1d(*[xp[:, a:a + 2 * th:2] for a in range(4)])  # 4 x [N, th, 2tw + 2, C]
  v = jnp.stack([t for r in rows for t in _input_1d(*[r[:, :, b:b + 2 * tw:2] for b in range(4)])])
  m = jax.lax.dot_general(v.reshape(16, n * th * tw, c), u.astype(dtype), (((2,), (1,)), ((0,), (0,))))
  m = m.reshape(4, 4, n, th, tw, -1)
  cols = _output_1d(m[0], m[1], m[2], m[3])  # 2 (output row) x [4, N, th, tw, Cout]
  y = jnp.stack([jnp.stack(_output_1d(t[0], t[1], t[2], t[3]), axis=-2) for t in cols], axis=2)
  return y.reshape(n, 2 * th, 2 * tw, -1)[:, :ho, :wo]  # [N, th, 2, tw, 2, Cout] -> interleaved


def prepare_variables(variables: dict, modules: Sequence[str] | None = None) -> dict:
  """`variables` plus a `COLLECTION` tree holding `kernel_transform` of every 3x3 'kernel' parameter, at the
  parameter's module path (whatever the channel threshold `Conv2d.winograd` is set to later).

  A `Conv2d(winograd=n)` reads its transformed kernel from there instead of transforming its kernel at
  every call (for a tracker, at every frame). `modules`: only these top-level parameter subtrees (None: all).
  A stride-2 kernel gets one too and never reads it. Idempotent; the variables of a network without such
  kernels come back unchanged.
  """

  def eligible(name, value):
    return name == "kernel" and getattr(value, "ndim", 0) == 4 and tuple(value.shape[:2]) == (3, 3)

  def select(tree):
    out = {}
    for name, value in tree.items():
      if hasattr(value, "items"):
        sub = select(value)
        if sub:
          out[name] = sub
      elif eligible(name, value):
        out[name] = value
    return out

  if COLLECTION in variables:  # already prepared (the weights of a model never change in place)
    return variables
  params = variables.get("params", {})
  kernels = select({k: v for k, v in params.items() if modules is None or k in modules})
  if not kernels:
    return variables
  return {**variables, COLLECTION: _transform_tree(kernels)}


_transform_tree = jax.jit(lambda tree: jax.tree.map(kernel_transform, tree))  # one compilation per tree shape
