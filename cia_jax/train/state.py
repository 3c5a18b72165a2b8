"""Training state, the reference optimiser (per-module Adam learning rates, step decay) and the EMA.

`TrainState` holds everything a step changes: params, BatchNorm statistics, the momentum (EMA) copy
of the backbone and contrastive projector with its own BN statistics (the key encoder, design.md §4.1-4.2),
the optax state and the base rng -- arrays only, so the state is a plain pytree (checkpointed, replicated,
donated). The optax transformation itself is not state: `make_optimizer` builds it from the config and the
training step closes over it. The key encoder is the *same* Flax network applied to `momentum_params` --
there is no second network object.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax
import flax.struct
import jax
import jax.numpy as jnp
import optax

# Top-level modules of `CIANet` whose EMA copy forms the key encoder (reference `encoder_k` + its `proj`).
MOMENTUM_MODULES = ("backbone", "proj")

# The optimiser group of parameters that get no update (frozen backbone layers). The other groups of the
# reference optimiser (design.md §4.9; learning rates in `configs/*.py`): feature_extractor (backbone, contrastive
# projector, modulator), upper_classifier (category classifier and encoder), filter_initializer,
# filter_optimizer, clf_feature_extractor, bb_regressor.
FROZEN = "frozen"


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes.

  Attributes:
    step: scalar int32, number of completed steps.
    params: the trainable parameter tree of `CIANet`.
    batch_stats: BatchNorm running statistics of the query network.
    momentum_params: EMA copy `{'backbone': ..., 'proj': ...}` of the key encoder ({} without CL/momentum).
    momentum_batch_stats: the key encoder's own BN running statistics (not EMA'd, design.md §4.2).
    opt_state: optax state.
    rng: base PRNG key; step t uses `fold_in(rng, t)`.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  momentum_params: Any
  momentum_batch_stats: Any
  opt_state: Any
  rng: jax.Array


def param_group(path: Sequence[str], frozen_layers: Sequence[str] = ()) -> str:
  """Reference parameter group of one parameter, from its path in the `CIANet` tree."""
  top = path[0]
  if top == "backbone":
    layer = path[1]
    frozen = set(frozen_layers) | ({"bn1"} if "conv1" in frozen_layers else set())
    return FROZEN if layer in frozen else "feature_extractor"
  if top in ("proj", "modulator"):
    return "feature_extractor"
  if top in ("upper_classifier", "category_encoder"):
    return "upper_classifier"
  if top == "classifier":
    return {"feature_extractor": "clf_feature_extractor"}.get(path[1], path[1])
  if top == "bb_regressor":
    return "bb_regressor"
  raise ValueError(f"param_group: no optimiser group for parameter {'/'.join(path)}")


def param_labels(params: Any, frozen_layers: Sequence[str] = ()) -> Any:
  """Tree like `params` whose leaves are the group names of `param_group`."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  return flax.traverse_util.unflatten_dict({k: param_group(k, frozen_layers) for k in flat})


def learning_rate_schedules(learning_rates: Mapping[str, float], steps_per_epoch: int,
                            decay_every_epochs: int | None = 15, decay_factor: float = 0.2) -> dict:
  """Per-group StepLR schedules: lr * decay_factor ** floor(epoch / decay_every_epochs) (None: constant)."""
  if steps_per_epoch < 1:
    raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
  out = {}
  for group, lr in learning_rates.items():
    if decay_every_epochs:
      out[group] = optax.exponential_decay(lr, transition_steps=decay_every_epochs * steps_per_epoch,
                                           decay_rate=decay_factor, staircase=True)
    else:
      out[group] = optax.constant_schedule(lr)
  return out


def make_optimizer(params: Any, learning_rates: Mapping[str, float], steps_per_epoch: int,
                   decay_every_epochs: int | None = 15, decay_factor: float = 0.2,
                   frozen_layers: Sequence[str] = ()) -> optax.GradientTransformation:
  """The reference optimiser: Adam(0.9, 0.999, eps 1e-8) per group, frozen layers get zero updates."""
  labels = param_labels(params, frozen_layers)
  used = set(jax.tree.leaves(labels))
  missing = sorted(used - set(learning_rates) - {FROZEN})
  if missing:
    raise ValueError(f"make_optimizer: no learning rate for parameter group(s) {missing}; "
                     f"known groups: {sorted(learning_rates)}")
  schedules = learning_rate_schedules(learning_rates, steps_per_epoch, decay_every_epochs, decay_factor)
  # Sorted: set order changes with the hash seed, and with it the HLO (no compilation-cache hits, and
  # processes of a multi-host run would compile different programs).
  transforms = {g: optax.adam(schedules[g], b1=0.9, b2=0.999, eps=1e-8) for g in sorted(used) if g != FROZEN}
  transforms[FROZEN] = optax.set_to_zero()
  return optax.multi_transform(transforms, labels)


def momentum_subtree(params: Any) -> dict:
  """The part of `params` that the key encoder mirrors (backbone + contrastive projector)."""
  return {k: params[k] for k in MOMENTUM_MODULES if k in params}


def ema_update(momentum_params: Any, params: Any, decay: float) -> Any:
  """theta_k <- decay * theta_k + (1 - decay) * theta_q over the momentum subtree (design.md §4.2)."""
  return jax.tree.map(lambda k, q: decay * k + (1.0 - decay) * q, momentum_params, momentum_subtree(params))


def create_train_state(variables: Mapping[str, Any], tx: optax.GradientTransformation, rng: jax.Array,
                       use_momentum_encoder: bool) -> TrainState:
  """Builds the initial state from `net.init` variables; the key encoder starts as a copy (design.md §4.1).

  `tx` only initialises the optimiser state; the training step closes over the same `tx`.
  """
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  if use_momentum_encoder:
    momentum_params = jax.tree.map(jnp.copy, momentum_subtree(params))
    momentum_batch_stats = jax.tree.map(jnp.copy, {k: batch_stats[k] for k in MOMENTUM_MODULES
                                                   if k in batch_stats})
  else:
    momentum_params, momentum_batch_stats = {}, {}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    momentum_params=momentum_params, momentum_batch_stats=momentum_batch_stats,
                    opt_state=tx.init(params), rng=rng)
