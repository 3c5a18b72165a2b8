"""The initial training state of a config: random variables, an optional init checkpoint, the optimiser.

`initial_state(config, net)` initialises the network (`models.cia.init_variables`, seed `config.seed`;
BatchNorm statistics at their initial 0 / 1), copies the params of `config.init_checkpoint` (a variables
checkpoint) where the names match, and builds the reference optimiser and the `TrainState` (host arrays; the
trainer replicates them over the mesh).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cia_jax.models.cia import CIANet, init_variables
from cia_jax.checkpoints import load_variables
from cia_jax.train.state import TrainState, create_train_state, make_optimizer, param_labels

_LOG = logging.getLogger(__name__)


def learning_rates(config) -> dict[str, float]:
  """Per-group learning rates of the config times `optim.lr_scale`."""
  scale = float(config.optim.lr_scale)
  return {k: float(v) * scale for k, v in config.optim.learning_rates.items()}


def optimizer(config, params: Any, frozen_layers: Sequence[str] = ()) -> optax.GradientTransformation:
  """The reference optimiser of the config for a parameter tree (`state.make_optimizer`)."""
  return make_optimizer(params, learning_rates(config), int(config.optim.steps_per_epoch),
                        int(config.optim.decay_every_epochs) or None, float(config.optim.decay_factor),
                        frozen_layers=tuple(frozen_layers))


def used_learning_rates(config, params: Any, frozen_layers: Sequence[str] = ()) -> dict[str, float]:
  """The learning rates of the groups that hold parameters of this network (the ones worth logging)."""
  used = set(jax.tree.leaves(param_labels(params, tuple(frozen_layers))))
  return {g: lr for g, lr in sorted(learning_rates(config).items()) if g in used}


def load_init_checkpoint(variables: Mapping[str, Any], path: str) -> tuple[dict, dict]:
  """Copies the params/BN statistics of a variables checkpoint into `variables` where the names match.

  Returns (new variables, report {'loaded', 'missing', 'unexpected'} of '/'-joined names). Raises a
  ValueError listing every name whose shape differs, and when nothing matches at all.
  """
  loaded, _ = load_variables(path)
  out, report = {}, {"loaded": [], "missing": [], "unexpected": []}
  mismatched = []
  for col in ("params", "batch_stats"):
    mine = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables.get(col, {})), sep="/")
    theirs = flax.traverse_util.flatten_dict(flax.core.unfreeze(loaded.get(col, {})), sep="/")
    merged = {}
    for k, v in mine.items():
      if k in theirs:
        if tuple(np.shape(theirs[k])) != tuple(np.shape(v)):
          mismatched.append(f"{col}/{k}: model {tuple(np.shape(v))} vs checkpoint {tuple(np.shape(theirs[k]))}")
          continue
        merged[k] = jnp.asarray(theirs[k], dtype=v.dtype)
        report["loaded"].append(f"{col}/{k}")
      else:
        merged[k] = v
        report["missing"].append(f"{col}/{k}")
    report["unexpected"] += [f"{col}/{k}" for k in theirs if k not in mine]
    out[col] = flax.traverse_util.unflatten_dict(merged, sep="/")
  if mismatched:
    raise ValueError(f"init_checkpoint {path}: {len(mismatched)} shape mismatch(es):\n  " + "\n  ".join(mismatched))
  if not any(k.startswith("params/") for k in report["loaded"]):
    raise ValueError(f"init_checkpoint {path}: no parameter name matches the model "
                     f"(checkpoint has e.g. {report['unexpected'][:5]})")
  return out, report


def initial_state(config, net: CIANet, use_key_encoder: bool) -> tuple[TrainState, optax.GradientTransformation]:
  """(the step-0 `TrainState` of host arrays, the optimiser `tx` the training step closes over).

  `use_key_encoder`: the state carries the EMA key encoder (contrastive network with momentum keys).
  """
  key = jax.random.key(int(config.seed))
  variables = init_variables(net, key)
  if config.init_checkpoint:
    variables, report = load_init_checkpoint(variables, config.init_checkpoint)
    _LOG.info("init_checkpoint %s: loaded %d arrays, %d missing (kept initial): %s", config.init_checkpoint,
              len(report["loaded"]), len(report["missing"]), report["missing"][:20])
  tx = optimizer(config, variables["params"], net.frozen_layers)
  return create_train_state(variables, tx, key, use_momentum_encoder=use_key_encoder), tx
