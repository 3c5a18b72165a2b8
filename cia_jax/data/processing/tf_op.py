"""`as_tf_op`: a NumPy processing op as a TensorFlow op, so it runs the same eagerly and in `Dataset.map`.

TensorFlow is imported inside `as_tf_op` on purpose: it takes seconds to import and only the tf.data input
pipeline needs it, while the NumPy ops of this package also serve the tracker-side tools (e.g. the embedding
plots crop with them) and the config tables.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence as SequenceT

import numpy as np


def as_tf_op(fn: Callable[..., Any], out_specs: SequenceT[tuple[tuple, Any]], name: str | None = None):
  """Wrap a NumPy op as a TensorFlow op with static output shapes (`tf.numpy_function`).

  Args:
    fn: NumPy function of array arguments returning one array or a tuple of arrays.
    out_specs: one (shape, dtype) per output of `fn`.
    name: op name.

  Returns:
    A function of tensors that returns a tuple of tensors with the given static shapes; it runs the same
    NumPy code eagerly and inside `tf.data.Dataset.map` / `tf.function`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  dtypes = [tf.as_dtype(np.dtype(d)) for _, d in out_specs]

  def call_np(*args):
    res = fn(*args)
    res = res if isinstance(res, tuple) else (res,)
    if len(res) != len(out_specs):
      raise ValueError(f"{name or fn.__name__}: returned {len(res)} outputs, expected {len(out_specs)}")
    return tuple(np.asarray(r, dtype=np.dtype(d)).reshape(shape) for r, (shape, d) in zip(res, out_specs))

  def op(*tensors):
    outs = tf.numpy_function(call_np, list(tensors), dtypes, stateful=False, name=name)
    if not isinstance(outs, (list, tuple)):  # one output: TF may return the tensor itself
      outs = [outs]
    for t, (shape, _) in zip(outs, out_specs):
      t.set_shape(shape)
    return tuple(outs)

  return op
