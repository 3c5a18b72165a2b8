"""Long float32 sums whose rounding does not depend on the backend's reduction kernel.

A reduction of n elements summed one after the other carries a rounding error that grows like n * eps (worst
case) or sqrt(n) * eps (typical); a pairwise or blocked sum grows like log(n) or sqrt(block) + sqrt(n / block).
Which one a `jnp.sum` gets is up to the XLA backend and its fusion decisions: on CPU the steepest-descent
optimiser's step-length sums (~18k terms on a full sample memory) lost an order of magnitude of digits against
the reference when XLA's own kernels ran them instead of YNNPACK's (BENCHMARKS.md, "YNN fusions off").
`blocked_sum` fixes the order: blocks of `block` terms first, then the block sums, with an optimisation
barrier between so no compiler pass can merge the two stages back into one long reduction.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

BLOCK = 128


def blocked_sum(x: jax.Array, axis: int | Sequence[int] | None = None, block: int = BLOCK) -> jax.Array:
  """`jnp.sum(x, axis)` summed in two stages: blocks of `block` terms, then the block sums.

  Args:
    x: any-shape array.
    axis: axis or axes to sum over (None: all), negative axes allowed.
    block: terms per first-stage block (the last block is zero-padded; adding zeros is exact).

  Returns:
    `x` with the `axis` dimensions removed, as `jnp.sum` returns it.
  """
  if block < 1:
    raise ValueError(f"blocked_sum: block must be >= 1, got {block}")
  axes = tuple(range(x.ndim)) if axis is None else (axis,) if isinstance(axis, int) else tuple(axis)
  axes = tuple(sorted({a % x.ndim for a in axes}))
  keep = [a for a in range(x.ndim) if a not in axes]
  n = 1
  for a in axes:
    n *= x.shape[a]
  if n <= block:
    return jnp.sum(x, axis=axes)
  lead = tuple(x.shape[a] for a in keep)
  flat = jnp.transpose(x, keep + list(axes)).reshape(lead + (n,))
  nblocks = -(-n // block)
  flat = jnp.pad(flat, [(0, 0)] * len(lead) + [(0, nblocks * block - n)])
  partial = jnp.sum(flat.reshape(lead + (nblocks, block)), axis=-1)
  return jnp.sum(jax.lax.optimization_barrier(partial), axis=-1)
