"""The tracker's sample memory: static capacity, explicit weights (design.md §5.4 step 7, 5.7).

Slots 0..num_init-1 hold the initial (augmented) samples and are never replaced. Empty slots have weight
0, so the filter optimizer can always run on all `capacity` slots (weight-0 samples contribute nothing):
this equals the reference's "first min(num_stored, capacity) slots".
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from cia_jax.ops.dtypes import default_float


@flax.struct.dataclass
class SampleMemory:
  """Fixed-shape training-sample memory.

  Attributes:
    features: `[M, h, w, D]` classification features of the stored samples.
    boxes_xywh: `[M, 4]` target boxes in patch pixels (x, y, w, h) of each sample's own patch.
    weights: `[M]` sample weights (0 for empty slots).
    num_stored: int32 scalar, samples ever stored (keeps growing past M, as in the reference).
    previous_replace_ind: int32 scalar, slot of the last update; -1 = none yet.
    labels: `[M, Ho, Wo]` each sample's Gaussian target label on the score grid, kept only for a network whose
      filter optimiser takes labels (SuperDiMP-simple's hinge optimiser, keeptrack.md §0: the reference's
      `target_labels` memory); None otherwise (no leaves).
  """

  features: jax.Array
  boxes_xywh: jax.Array
  weights: jax.Array
  num_stored: jax.Array
  previous_replace_ind: jax.Array
  labels: jax.Array | None = None


def init_memory(init_features: jax.Array, init_boxes_xywh: jax.Array, capacity: int,
                init_labels: jax.Array | None = None) -> SampleMemory:
  """Memory with the N initial samples in slots 0..N-1, weight 1/N each (design.md §5.4 step 7).

  init_features: `[N, h, w, D]`; init_boxes_xywh: `[N, 4]`; capacity: static M > N; init_labels: optional
  `[N, Ho, Wo]` labels (empty slots: 0).
  """
  n = init_features.shape[0]
  if capacity <= n:
    raise ValueError(f"init_memory: capacity {capacity} must exceed the {n} initial samples")
  feats = jnp.zeros((capacity, *init_features.shape[1:]), init_features.dtype).at[:n].set(init_features)
  boxes = jnp.zeros((capacity, 4), default_float()).at[:n].set(jnp.asarray(init_boxes_xywh, default_float()))
  weights = jnp.zeros((capacity,), default_float()).at[:n].set(1.0 / n)
  labels = None
  if init_labels is not None:
    if init_labels.ndim != 3 or init_labels.shape[0] != n:
      raise ValueError(f"init_memory: init_labels must be [{n}, Ho, Wo], got shape {init_labels.shape}")
    labels = jnp.zeros((capacity, *init_labels.shape[1:]), default_float()).at[:n].set(init_labels)
  return SampleMemory(feats, boxes, weights, jnp.asarray(n, jnp.int32), jnp.asarray(-1, jnp.int32), labels)


def update_sample_weights(weights: jax.Array, previous_replace_ind: jax.Array, num_stored: jax.Array,
                          num_init: int, learning_rate, init_samples_minimum_weight: float = 0.25,
                          certainties: jax.Array | None = None):
  """The exact weight rule of design.md §5.7 (reference `update_sample_weights`), jittable and vmappable.

  Args:
    weights: `[M]` current weights.
    previous_replace_ind: int scalar, -1 = None (first update after initialisation).
    num_stored: int scalar, samples stored so far (> 0: the memory is initialised).
    num_init: static number of initial samples (never replaced while the minimum weight is > 0).
    learning_rate: scalar (may be traced, e.g. 0.01 or the hard-negative 0.02).
    init_samples_minimum_weight: static floor on the initial samples' total weight (0 or None: no floor,
      and then the initial samples may be replaced too).
    certainties: optional `[M]` sample certainties (KeepTrack, keeptrack.md §4.6): a full memory then evicts
      the argmin of certainty * weight instead of the argmin of the weight (first index on ties).

  Returns:
    (new weights `[M]`, replace index int32).
  """
  m = weights.shape[0]
  lr = jnp.asarray(learning_rate, weights.dtype)
  floor = init_samples_minimum_weight or None
  s_ind = num_init if floor is not None else 0
  idx = jnp.arange(m)
  evict_by = weights if certainties is None else weights * certainties
  candidates = jnp.where(idx >= s_ind, evict_by, jnp.inf)
  r = jnp.where(num_stored < m, num_stored, jnp.argmin(candidates)).astype(jnp.int32)
  first = previous_replace_ind < 0
  p = jnp.maximum(previous_replace_ind, 0)
  w_first = (weights / (1.0 - lr)).at[r].set(lr)
  w_later = weights.at[r].set(weights[p] / (1.0 - lr))
  w = jnp.where(first, w_first, w_later)
  w = w / jnp.sum(w)
  if floor is not None:
    init_mask = idx < num_init
    init_sum = jnp.sum(jnp.where(init_mask, w, 0.0))
    rest_sum = jnp.sum(jnp.where(init_mask, 0.0, w))
    floored = jnp.where(init_mask, floor / num_init, w / (floor + rest_sum))  # Not exactly normalised: as is.
    w = jnp.where(init_sum < floor, floored, w)
  return w, r


def update_memory(memory: SampleMemory, feature: jax.Array, box_xywh: jax.Array, num_init: int,
                  learning_rate, init_samples_minimum_weight: float = 0.25,
                  certainties: jax.Array | None = None, store=True, label: jax.Array | None = None) -> SampleMemory:
  """Stores one training sample (design.md §5.7): new weights, feature `[h, w, D]` and box `[4]` at the replace slot.

  `label` `[Ho, Wo]`: the sample's target label, required exactly when the memory keeps labels.

  `certainties` `[M]` (optional): evict by certainty * weight (see `update_sample_weights`); the new slot is
  `previous_replace_ind` of the result. `store` (traced bool): False returns the memory unchanged. Only the
  replace slot is touched (no select over the whole `[M, h, w, D]` feature array).
  """
  w, r = update_sample_weights(memory.weights, memory.previous_replace_ind, memory.num_stored, num_init,
                               learning_rate, init_samples_minimum_weight, certainties)
  store = jnp.asarray(store)
  feature = jnp.where(store, feature.astype(memory.features.dtype), memory.features[r])
  box = jnp.where(store, jnp.asarray(box_xywh, default_float()), memory.boxes_xywh[r])
  if (label is None) != (memory.labels is None):
    raise ValueError("update_memory: pass a label exactly when the memory keeps labels "
                     f"(memory labels: {'yes' if memory.labels is not None else 'no'})")
  labels = None
  if label is not None:
    labels = memory.labels.at[r].set(jnp.where(store, jnp.asarray(label, default_float()), memory.labels[r]))
  return SampleMemory(
      features=memory.features.at[r].set(feature),
      boxes_xywh=memory.boxes_xywh.at[r].set(box),
      weights=jnp.where(store, w, memory.weights),
      num_stored=memory.num_stored + store.astype(memory.num_stored.dtype),
      previous_replace_ind=jnp.where(store, r, memory.previous_replace_ind),
      labels=labels)
