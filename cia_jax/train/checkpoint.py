"""Training checkpoints: the whole `TrainState` in an orbax CheckpointManager, and resume from the newest intact step.

Each step directory `checkpoints/<step>/` holds the items `state` (the `state_to_tree` arrays) and `meta` (JSON:
step, config, data position). The network-only format, the readers and the tracker's loader live in
`cia_jax.checkpoints`.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

from cia_jax import checkpoints

# Fields of `TrainState` saved in a training checkpoint (`tx` is static; `rng` is stored as its key data).
STATE_FIELDS = ("step", "params", "batch_stats", "momentum_params", "momentum_batch_stats", "opt_state", "rng")
# A damaged step directory is renamed `<step>.damaged` (kept for inspection, never deleted).
DAMAGED_SUFFIX = ".damaged"

_LOG = logging.getLogger(__name__)


def state_to_tree(state: Any) -> dict:
  """A `TrainState` -> a dict of arrays for orbax (the typed PRNG key as its uint32 key data)."""
  tree = {k: getattr(state, k) for k in STATE_FIELDS}
  if jax.dtypes.issubdtype(tree["rng"].dtype, jax.dtypes.prng_key):
    tree["rng"] = jax.random.key_data(tree["rng"])
  return tree


def tree_to_state(tree: Mapping[str, Any], template: Any) -> Any:
  """Inverse of `state_to_tree`: the arrays of `tree` in a copy of the `TrainState` `template`."""
  fields = dict(tree)
  if jax.dtypes.issubdtype(template.rng.dtype, jax.dtypes.prng_key):
    fields["rng"] = jax.random.wrap_key_data(fields["rng"], impl=jax.random.key_impl(template.rng))
  return template.replace(**fields)


def make_checkpoint_manager(directory: str, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
  """An orbax `CheckpointManager` for training checkpoints at `directory` (made absolute).

  Orbax writes a step into a temporary directory and renames it when complete, so a half-written step is never
  listed.
  """
  if keep < 1:
    raise ValueError(f"checkpoint.keep must be >= 1, got {keep}")
  options = ocp.CheckpointManagerOptions(max_to_keep=int(keep), enable_async_checkpointing=bool(async_save),
                                         create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save_train_state(manager: ocp.CheckpointManager, state: Any, meta: Mapping[str, Any], force: bool = True) -> bool:
  """Saves `state` (a `TrainState`) and JSON `meta` at step `state.step` (asynchronously if so configured)."""
  step = int(jax.device_get(state.step))
  args = ocp.args.Composite(**{checkpoints.STATE_ITEM: ocp.args.StandardSave(state_to_tree(state)),
                               checkpoints.META_ITEM: ocp.args.JsonSave(checkpoints.to_jsonable(dict(meta)))})
  return manager.save(step, args=args, force=force)


def restore_train_state(manager: ocp.CheckpointManager, template: Any, step: int | None = None) -> tuple[Any, dict]:
  """Restores the newest intact (or the given) step into the structure, shapes and shardings of `template`.

  Without `step`, a damaged newest step is logged as a warning, renamed `<step>.damaged` (so that training can
  write that step again; nothing is deleted) and the next older step is tried.

  Returns:
    (TrainState, meta).

  Raises:
    FileNotFoundError: no checkpoint at all.
    CheckpointMismatchError: the newest readable step stores another tree than `template` (another config).
    DamagedCheckpointError: the given step, or every step, is damaged (the message names the files).
  """
  directory = str(manager.directory)
  steps = sorted(manager.all_steps(), reverse=True) if step is None else [int(step)]
  if not steps:
    raise FileNotFoundError(f"{directory}: no training checkpoint to restore")
  damaged: list[str] = []
  for s in steps:
    step_dir = os.path.join(directory, str(s))
    try:
      restored = _restore_step(step_dir, template)
    except checkpoints.DamagedCheckpointError as e:
      if step is not None:
        raise
      _LOG.warning("%s", e)
      damaged.append(str(e))
      continue
    if damaged:
      _set_aside(manager, steps[:len(damaged)])
    return restored
  raise checkpoints.DamagedCheckpointError(f"{directory}: no intact training checkpoint, every step is damaged:\n  "
                               + "\n  ".join(damaged))


def _restore_step(step_dir: str, template: Any) -> tuple[Any, dict]:
  """One step directory into `template` (a `TrainState` whose leaves carry their shardings)."""
  meta = checkpoints.read_training_meta(step_dir)
  target = state_to_tree(template)
  tree = checkpoints.read_tree(os.path.join(step_dir, checkpoints.STATE_ITEM), template=target)

  def place(value, like):
    if isinstance(like, jax.Array):
      return jax.make_array_from_callback(value.shape, like.sharding, lambda index: value[index])
    return value

  return tree_to_state(jax.tree.map(place, tree, target), template), meta


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Renames damaged step directories `<step>.damaged` (process 0) and makes `manager` forget them.

  Orbax would refuse to save these steps again and would count them as the newest when pruning to `keep`.
  """
  directory = str(manager.directory)
  if jax.process_index() == 0:
    for s in steps:
      src = os.path.join(directory, str(s))
      dst, n = src + DAMAGED_SUFFIX, 1
      while os.path.exists(dst):
        n += 1
        dst = f"{src}{DAMAGED_SUFFIX}-{n}"
      os.rename(src, dst)
      _LOG.warning("resuming from an older step; the damaged step %s is kept as %s", src, dst)
  if jax.process_count() > 1:
    ocp.multihost.sync_global_processes(f"cia_jax_set_aside_{'_'.join(map(str, steps))}")
  manager.reload()
