"""Model checkpoints: network variables plus the metadata needed to rebuild the network.

A *variables checkpoint* is a directory holding
  * `variables/`: an orbax checkpoint of `{'params': ..., 'batch_stats': ...}` (NumPy arrays on restore), and
  * `meta.json`: `{"model": {CIANet keyword arguments}, "source": ..., ...}`.
`cia-jax convert` writes one from PyTorch weights, training exports one, and `cia-jax track` reads it.
(Full training state with resume lives in the training loop's orbax CheckpointManager.)
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

META_FILE = "meta.json"
VARIABLES_DIR = "variables"


def save_variables(path: str, variables: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
  """Writes `variables` ({'params', 'batch_stats'}) and JSON `meta` (must contain 'model') to directory `path`.

  Returns the absolute path. An existing checkpoint at `path` is replaced.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  if "model" not in meta:
    raise ValueError("save_variables: meta must contain 'model' (the CIANet keyword arguments)")
  path = os.path.abspath(path)
  os.makedirs(path, exist_ok=True)
  tree = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  tree = _to_numpy(tree)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(path, VARIABLES_DIR), tree, force=True)
  with open(os.path.join(path, META_FILE), "w") as f:
    json.dump(_jsonable(dict(meta)), f, indent=2, sort_keys=True)
  return path


def load_variables(path: str) -> tuple[dict, dict]:
  """Reads a checkpoint written by `save_variables` -> (variables {'params', 'batch_stats'}, meta)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  path = os.path.abspath(path)
  meta_path = os.path.join(path, META_FILE)
  var_path = os.path.join(path, VARIABLES_DIR)
  if not os.path.isfile(meta_path) or not os.path.isdir(var_path):
    raise FileNotFoundError(f"{path}: not a cia_jax variables checkpoint (expected {META_FILE} and "
                            f"{VARIABLES_DIR}/ inside)")
  with open(meta_path) as f:
    try:
      meta = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{meta_path}: invalid JSON ({e})") from e
  with ocp.StandardCheckpointer() as ckptr:
    tree = ckptr.restore(var_path)
  return {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}, meta


def _to_numpy(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.integer, np.floating, np.bool_)):
    return x.item()
  return x


# ----------------------------------------------------------------------------------------------------------
# Training checkpoints (the whole TrainState) and the tracker's loader.

CHECKPOINTS_DIR = "checkpoints"
EXPORT_DIR = "model"
# Fields of `TrainState` saved in a training checkpoint (`tx` is static; `rng` is stored as its key data).
STATE_FIELDS = ("step", "params", "batch_stats", "momentum_params", "momentum_batch_stats", "opt_state", "rng")


def state_to_tree(state: Any) -> dict:
  """A `TrainState` -> a dict of arrays for orbax (the typed PRNG key as its uint32 key data)."""
  import jax  # pylint: disable=g-import-not-at-top

  tree = {k: getattr(state, k) for k in STATE_FIELDS}
  if jax.dtypes.issubdtype(tree["rng"].dtype, jax.dtypes.prng_key):
    tree["rng"] = jax.random.key_data(tree["rng"])
  return tree


def tree_to_state(tree: Mapping[str, Any], template: Any) -> Any:
  """Inverse of `state_to_tree`: the arrays of `tree` in a copy of the `TrainState` `template`."""
  import jax  # pylint: disable=g-import-not-at-top

  fields = dict(tree)
  if jax.dtypes.issubdtype(template.rng.dtype, jax.dtypes.prng_key):
    fields["rng"] = jax.random.wrap_key_data(fields["rng"], impl=jax.random.key_impl(template.rng))
  return template.replace(**fields)


def make_checkpoint_manager(directory: str, keep: int = 3, async_save: bool = True):
  """An orbax `CheckpointManager` for training checkpoints at `directory` (made absolute).

  Each step directory holds the items `state` (the `state_to_tree` arrays) and `meta` (JSON). Orbax writes a
  step into a temporary directory and renames it when complete, so a half-written step is never listed.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  if keep < 1:
    raise ValueError(f"checkpoint.keep must be >= 1, got {keep}")
  options = ocp.CheckpointManagerOptions(max_to_keep=int(keep), enable_async_checkpointing=bool(async_save),
                                         create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save_train_state(manager, state: Any, meta: Mapping[str, Any], force: bool = True) -> bool:
  """Saves `state` (a `TrainState`) and JSON `meta` at step `state.step` (asynchronously if so configured)."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  step = int(jax.device_get(state.step))
  args = ocp.args.Composite(state=ocp.args.StandardSave(state_to_tree(state)),
                            meta=ocp.args.JsonSave(_jsonable(dict(meta))))
  return manager.save(step, args=args, force=force)


def restore_train_state(manager, template: Any, step: int | None = None) -> tuple[Any, dict]:
  """Restores the latest (or `step`) checkpoint into the structure, shapes and shardings of `template`.

  Returns (TrainState, meta).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{manager.directory}: no training checkpoint to restore")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_to_tree(template))
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                           meta=ocp.args.JsonRestore()))
  return tree_to_state(restored["state"], template), dict(restored["meta"])


def _is_variables_checkpoint(path: str) -> bool:
  return os.path.isfile(os.path.join(path, META_FILE)) and os.path.isdir(os.path.join(path, VARIABLES_DIR))


def _latest_training_checkpoint(directory: str) -> tuple[int, str] | None:
  """(step, path) of the newest committed step directory of a CheckpointManager directory, if any."""
  if not os.path.isdir(directory):
    return None
  steps = []
  for name in os.listdir(directory):
    # Orbax's in-progress saves are `<step>.orbax-checkpoint-tmp-<n>`; only plain step names are complete.
    full = os.path.join(directory, name)
    if name.isdigit() and os.path.isdir(os.path.join(full, "state")) and os.path.isdir(os.path.join(full, "meta")):
      steps.append(int(name))
  if not steps:
    return None
  step = max(steps)
  return step, os.path.join(directory, str(step))


def _load_training_checkpoint(step_dir: str) -> tuple[dict, dict]:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  with ocp.StandardCheckpointer() as ckptr:
    tree = ckptr.restore(os.path.join(step_dir, "state"))
  meta_file = os.path.join(step_dir, "meta", "metadata")
  meta = {}
  if os.path.isfile(meta_file):
    with open(meta_file) as f:
      meta = json.load(f)
  model_kwargs = (meta.get("config") or {}).get("model")
  if model_kwargs is None:
    raise ValueError(f"{step_dir}: training checkpoint meta has no config.model (the CIANet arguments)")
  variables = {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}
  return variables, dict(meta, model=model_kwargs, source=step_dir)


def load_for_tracking(path: str):
  """The network for tracking from a training workdir or a variables checkpoint -> (CIANet, variables, meta).

  Accepts:
    * a variables checkpoint directory (`save_variables`; e.g. `<workdir>/model` or a converted one);
    * a training workdir: the newer of `<workdir>/model` and the latest `<workdir>/checkpoints/<step>`
      (by training step; the export wins a tie);
    * a `checkpoints/` directory or one `checkpoints/<step>` directory of a training run.

  Returns:
    (model, variables {'params', 'batch_stats'} as NumPy arrays, meta with at least 'model').

  Raises:
    FileNotFoundError: nothing loadable at `path` (the message says what was looked for).
  """
  from cia_jax.models.cia import build_model  # pylint: disable=g-import-not-at-top

  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"load_for_tracking: {path} does not exist or is not a directory")
  if _is_variables_checkpoint(path):
    variables, meta = load_variables(path)
    return build_model(meta["model"]), variables, meta
  if os.path.isdir(os.path.join(path, "state")) and os.path.isdir(os.path.join(path, "meta")):
    variables, meta = _load_training_checkpoint(path)
    return build_model(meta["model"]), variables, meta
  export = os.path.join(path, EXPORT_DIR)
  candidates = []
  if _is_variables_checkpoint(export):
    with open(os.path.join(export, META_FILE)) as f:
      candidates.append((int(json.load(f).get("step", -1)), 1, "export", export))
  for ckpt_dir in (os.path.join(path, CHECKPOINTS_DIR), path):
    latest = _latest_training_checkpoint(ckpt_dir)
    if latest is not None:
      candidates.append((latest[0], 0, "train", latest[1]))
      break
  if not candidates:
    raise FileNotFoundError(
        f"load_for_tracking: {path} is neither a variables checkpoint ({META_FILE} + {VARIABLES_DIR}/) nor a "
        f"training workdir ({EXPORT_DIR}/ or {CHECKPOINTS_DIR}/<step>/)")
  _, _, kind, where = max(candidates)
  if kind == "export":
    variables, meta = load_variables(where)
  else:
    variables, meta = _load_training_checkpoint(where)
  return build_model(meta["model"]), variables, meta
