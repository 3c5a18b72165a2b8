"""The float dtype of the tracker's and the DiMP heads' arithmetic.

JAX's default float: float32, or float64 when `jax_enable_x64` is on. Code that builds float arrays from Python
numbers, boxes or uint8 images asks for this dtype instead of hard-coding float32, so that a float64 run (e.g.
`scripts/compare_pytorch.py --float64` against the reference in double precision) is float64 end to end while
the default run is unchanged. Parameters keep the dtype they were created or loaded with; layers compute in
the promoted dtype of their inputs and parameters.
"""

from __future__ import annotations

import jax
import numpy as np


def default_float() -> np.dtype:
  """float32, or float64 under `jax_enable_x64` (read at call time: set the flag before tracing)."""
  return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))
