"""The float dtype of the tracker's and the DiMP heads' arithmetic.

JAX's default float: float32, or float64 when `jax_enable_x64` is on. Code that builds float arrays from Python
numbers, boxes or uint8 images asks for this dtype instead of hard-coding float32, so that a float64 run (e.g.
`scripts/compare_pytorch.py --float64` against the reference in double precision) is float64 end to end while
the default run is unchanged. Parameters keep the dtype they were created or loaded with; layers compute in
the promoted dtype of their inputs and parameters.

`to_float32_ftz` is the float32 rounding of the data pipeline's NumPy ops (float64 math, float32 outputs).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def default_float() -> np.dtype:
  """float32, or float64 under `jax_enable_x64` (read at call time: set the flag before tracing)."""
  return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def to_float32_ftz(x: Any) -> np.ndarray:
  """NumPy float64 -> float32 with results in float32's subnormal range set to 0 (flush to zero).

  tf.data worker threads run with flush-to-zero on, the main thread does not, so without this a NumPy op's
  value that lands in float32's subnormal range would differ between eager calls and `Dataset.map`.
  """
  x = np.asarray(x, np.float64)
  return np.where(np.abs(x) < np.finfo(np.float32).tiny, 0.0, x).astype(np.float32)
