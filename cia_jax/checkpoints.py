"""Saved networks: the variables-checkpoint format, reading orbax checkpoints, and the tracker's loader.

A *variables checkpoint* is a directory holding
  * `variables/`: an orbax checkpoint of `{'params': ..., 'batch_stats': ...}`, and
  * `meta.json`: `{"model": {CIANet keyword arguments}, "source": ..., ...}`.
`cia-jax convert` writes one from PyTorch weights, training exports one (`<workdir>/model`), `cia-jax track`
reads it. A *training workdir* also holds `checkpoints/<step>/` (the training loop's orbax CheckpointManager,
see `cia_jax.train.checkpoint`): the item `state/` (the whole TrainState as a tree of arrays) and the item
`meta/metadata` (JSON with `config.model`).

Reading goes through `read_tree`, not orbax's restore: it opens and reads every array with blocking
TensorStore calls and waits for all of them, so a damaged file raises one `DamagedCheckpointError` naming the
directory, the array and the file TensorStore names (orbax's asyncio restore leaves reads pending on a closed
event loop when one fails, which prints "Event loop is closed" tracebacks after the error). It compares the
stored tree with a template before reading any data (`CheckpointMismatchError`), and can read only some
subtrees (the tracker reads params and batch_stats out of a training state, never the optimiser state).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from etils import epath

from cia_jax.models.cia import CIANet, build_model

META_FILE = "meta.json"
VARIABLES_DIR = "variables"
CHECKPOINTS_DIR = "checkpoints"
EXPORT_DIR = "model"
# Items of a training step directory (`checkpoints/<step>/`) and the file orbax's JsonSave writes in an item.
STATE_ITEM = "state"
META_ITEM = "meta"
JSON_ITEM_FILE = "metadata"
# The collections a network needs (inference, export); a training state also holds momentum and optimiser trees.
NETWORK_COLLECTIONS = ("params", "batch_stats")
# orbax's per-item tree description: every leaf's key path and value type.
_TREE_METADATA_FILE = "_METADATA"
# Leaf value types orbax stores as TensorStore arrays ('None' marks an empty node: no data).
_ARRAY_TYPES = ("np.ndarray", "jax.Array", "scalar")
_MAX_LISTED = 8

_LOG = logging.getLogger(__name__)


class DamagedCheckpointError(ValueError):
  """A checkpoint file is missing, truncated or unreadable (the message names the file or directory)."""


class CheckpointMismatchError(ValueError):
  """A readable checkpoint whose stored tree (keys, shapes, dtypes) differs from the one asked for."""


# ----------------------------------------------------------------------------------------------------------
# Variables checkpoints.


def save_variables(path: str, variables: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
  """Writes `variables` ({'params', 'batch_stats'}) and JSON `meta` (must contain 'model') to directory `path`.

  Returns the absolute path. An existing checkpoint at `path` is replaced.
  """
  if "model" not in meta:
    raise ValueError("save_variables: meta must contain 'model' (the CIANet keyword arguments)")
  path = os.path.abspath(path)
  os.makedirs(path, exist_ok=True)
  tree = _plain_numpy({"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(path, VARIABLES_DIR), tree, force=True)
  with open(os.path.join(path, META_FILE), "w") as f:
    json.dump(to_jsonable(dict(meta)), f, indent=2, sort_keys=True)
  return path


def load_variables(path: str) -> tuple[dict, dict]:
  """Reads a checkpoint written by `save_variables` -> (variables {'params', 'batch_stats'} of NumPy arrays, meta).

  Raises:
    FileNotFoundError: `path` is not a variables checkpoint.
    DamagedCheckpointError: `meta.json` or a file under `variables/` is unreadable (named in the message).
  """
  path = os.path.abspath(path)
  if not is_variables_checkpoint(path):
    raise FileNotFoundError(f"{path}: not a cia_jax variables checkpoint (expected {META_FILE} and "
                            f"{VARIABLES_DIR}/ inside)")
  meta = read_json(os.path.join(path, META_FILE))
  tree = read_tree(os.path.join(path, VARIABLES_DIR))
  if "params" not in tree:
    raise DamagedCheckpointError(f"damaged checkpoint {path}: {VARIABLES_DIR}/ holds no params")
  return {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}, meta


def is_variables_checkpoint(path: str) -> bool:
  """Whether `path` looks like a `save_variables` directory (its files are not read)."""
  return os.path.isfile(os.path.join(path, META_FILE)) and os.path.isdir(os.path.join(path, VARIABLES_DIR))


def _plain_numpy(tree: Any) -> Any:
  # Plain dicts of NumPy arrays (also from FrozenDicts / device arrays): what `read_tree` gives back.
  if isinstance(tree, Mapping):
    return {k: _plain_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def to_jsonable(x: Any) -> Any:
  """Nested mappings / sequences with NumPy scalars -> plain JSON types (string keys)."""
  if isinstance(x, Mapping):
    return {str(k): to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v) for v in x]
  if isinstance(x, (np.integer, np.floating, np.bool_)):
    return x.item()
  return x


def read_json(path: str) -> dict:
  """A JSON object file of a checkpoint; DamagedCheckpointError naming `path` if missing, truncated or invalid."""
  try:
    with open(path) as f:
      value = json.load(f)
  except FileNotFoundError:
    raise DamagedCheckpointError(f"damaged checkpoint: {path} is missing") from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DamagedCheckpointError(f"damaged checkpoint file {path}: not valid JSON ({e})") from None
  if not isinstance(value, dict):
    raise DamagedCheckpointError(f"damaged checkpoint file {path}: expected a JSON object, got "
                                 f"{type(value).__name__}")
  return value


# ----------------------------------------------------------------------------------------------------------
# Reading an orbax item directory.


def read_tree(directory: str, template: Any = None, subtrees: Sequence[str] | None = None) -> Any:
  """Reads the arrays of an orbax PyTree item directory (one holding `_METADATA`) as NumPy arrays.

  Args:
    directory: e.g. `<variables checkpoint>/variables` or `checkpoints/<step>/state`.
    template: optional pytree whose leaves have `.shape` and `.dtype` (arrays, `jax.ShapeDtypeStruct`s): the
      stored arrays must have exactly its leaf paths, shapes and dtypes, checked before any data is read.
    subtrees: without a template, the top-level keys to read (e.g. `NETWORK_COLLECTIONS`); other arrays are
      never opened.

  Returns:
    The template's structure with NumPy leaves, or (no template) nested dicts keyed by the stored keys.

  Raises:
    DamagedCheckpointError: `_METADATA`, an array's metadata or its data is missing or unreadable.
    CheckpointMismatchError: the stored tree differs from `template` (the first differences are listed).
  """
  if template is not None and subtrees is not None:
    raise ValueError("read_tree: pass a template or subtrees, not both (the template names what to read)")
  directory = os.path.abspath(directory)
  stored, use_zarr3, use_ocdbt = _stored_arrays(directory)
  if subtrees is not None:
    stored = [name for name in stored if name[0] in subtrees]
  expected, treedef = None, None
  if template is not None:
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = {tuple(_key_str(k) for k in path): leaf for path, leaf in paths}
    _check_names(directory, stored, expected)
  context = ocp.type_handlers.get_ts_context(use_ocdbt=use_ocdbt)
  opened = _wait_all(directory, "cannot open", {
      name: ts.open(_read_spec(directory, name, use_zarr3, use_ocdbt, context), open=True, context=context)
      for name in stored})
  if expected is not None:
    _check_shapes(directory, opened, expected)
  arrays = _wait_all(directory, "cannot read", {name: store.read() for name, store in opened.items()})
  if treedef is not None:
    return jax.tree_util.tree_unflatten(treedef, [arrays[name] for name in expected])
  tree: dict = {}
  for name, value in arrays.items():
    node = tree
    for key in name[:-1]:
      node = node.setdefault(key, {})
    node[name[-1]] = value
  return tree


def _stored_arrays(directory: str) -> tuple[list[tuple[str, ...]], bool, bool]:
  """The key paths of the arrays stored in an item directory, and its (use_zarr3, use_ocdbt) layout flags."""
  if not os.path.isdir(directory):
    raise DamagedCheckpointError(f"damaged checkpoint: {directory} is missing")
  metadata = read_json(os.path.join(directory, _TREE_METADATA_FILE))
  tree = metadata.get("tree_metadata")
  if not isinstance(tree, dict):
    raise DamagedCheckpointError(f"damaged checkpoint file {os.path.join(directory, _TREE_METADATA_FILE)}: "
                                 "no tree_metadata")
  names = []
  try:
    for entry in tree.values():
      value = entry["value_metadata"]
      if value["value_type"] in _ARRAY_TYPES and not value.get("skip_deserialize", False):
        names.append(tuple(str(k["key"]) for k in entry["key_metadata"]))
  except (KeyError, TypeError) as e:
    raise DamagedCheckpointError(f"damaged checkpoint file {os.path.join(directory, _TREE_METADATA_FILE)}: "
                                 f"malformed entry ({type(e).__name__}: {e})") from None
  return names, bool(metadata.get("use_zarr3", False)), bool(metadata.get("use_ocdbt", True))


def _key_str(key: Any) -> str:
  """One step of a JAX key path as orbax names it (dict key, attribute name or sequence index)."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _read_spec(directory: str, name: tuple[str, ...], use_zarr3: bool, use_ocdbt: bool, context) -> dict:
  # orbax's own spec builder, so the layout (OCDBT database, zarr version, array key) is the one it wrote.
  info = ocp.type_handlers.ParamInfo(name=".".join(name), parent_dir=epath.Path(directory), use_zarr3=use_zarr3,
                                     ts_context=context)
  return ocp.type_handlers.get_json_tspec_read(info, use_ocdbt=use_ocdbt)


def _wait_all(directory: str, what: str, futures: Mapping[tuple[str, ...], Any]) -> dict:
  """Waits for every TensorStore future (none is left pending); DamagedCheckpointError naming the failures."""
  results, failures = {}, []
  for name, future in futures.items():
    try:
      results[name] = future.result()
    except Exception as e:  # pylint: disable=broad-except  (any TensorStore failure here is an unreadable file)
      failures.append(f"{'/'.join(name)}: {_short(e)}")
  if failures:
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    raise DamagedCheckpointError(f"damaged checkpoint {directory}: {what} {failures[0]}{more}")
  return results


def _short(error: Exception) -> str:
  # TensorStore appends the whole JSON spec and C++ source locations; the first part names the file.
  text = str(error)
  for marker in (" [tensorstore_spec=", " [source locations="):
    text = text.split(marker)[0]
  return text.strip()


def _check_names(directory: str, stored: Sequence[tuple[str, ...]], expected: Mapping[tuple[str, ...], Any]):
  stored_set = set(stored)
  diffs = [f"{'/'.join(n)}: missing from the checkpoint" for n in expected if n not in stored_set]
  diffs += [f"{'/'.join(n)}: in the checkpoint only" for n in stored if n not in expected]
  if diffs:
    raise _mismatch(directory, diffs)


def _check_shapes(directory: str, opened: Mapping[tuple[str, ...], Any], expected: Mapping[tuple[str, ...], Any]):
  diffs = []
  for name, leaf in expected.items():
    store = opened[name]
    have = (tuple(store.shape), np.dtype(store.dtype.numpy_dtype))
    want = (tuple(np.shape(leaf)), np.dtype(leaf.dtype))
    if have != want:
      diffs.append(f"{'/'.join(name)}: checkpoint {have[0]} {have[1]}, expected {want[0]} {want[1]}")
  if diffs:
    raise _mismatch(directory, diffs)


def _mismatch(directory: str, diffs: Sequence[str]) -> CheckpointMismatchError:
  listed = "; ".join(diffs[:_MAX_LISTED]) + (f"; ... {len(diffs) - _MAX_LISTED} more" if len(diffs) > _MAX_LISTED
                                              else "")
  return CheckpointMismatchError(
      f"{directory} does not match the expected tree ({len(diffs)} difference(s): {listed}). Use a new "
      "--workdir, or the config the checkpoint was written with")


# ----------------------------------------------------------------------------------------------------------
# Training checkpoints (read side) and the tracker's loader.


def checkpoint_steps(directory: str) -> list[int]:
  """The complete step directories of a training `checkpoints/` directory, newest first."""
  if not os.path.isdir(directory):
    return []
  steps = []
  for name in os.listdir(directory):
    # Orbax's in-progress saves are `<step>.orbax-checkpoint-tmp-<n>`; only plain step names are complete.
    if name.isdigit() and is_training_step(os.path.join(directory, name)):
      steps.append(int(name))
  return sorted(steps, reverse=True)


def is_training_step(path: str) -> bool:
  """Whether `path` looks like a training step directory `checkpoints/<step>` (its files are not read)."""
  return os.path.isdir(os.path.join(path, STATE_ITEM)) and os.path.isdir(os.path.join(path, META_ITEM))


def read_training_meta(step_dir: str) -> dict:
  """The JSON meta of a training step directory (`{'step', 'config', 'data'}`)."""
  return read_json(os.path.join(step_dir, META_ITEM, JSON_ITEM_FILE))


def read_training_network(step_dir: str) -> tuple[dict, dict]:
  """Params and batch statistics of a training step directory -> (variables, meta with 'model' and 'source').

  Only those two subtrees are opened: the momentum encoder and optimiser state are never read.
  """
  meta = read_training_meta(step_dir)
  model_kwargs = (meta.get("config") or {}).get("model")
  if model_kwargs is None:
    raise ValueError(f"{step_dir}: training checkpoint meta has no config.model (the CIANet arguments)")
  tree = read_tree(os.path.join(step_dir, STATE_ITEM), subtrees=NETWORK_COLLECTIONS)
  if "params" not in tree:
    raise DamagedCheckpointError(f"damaged checkpoint {step_dir}: {STATE_ITEM}/ holds no params")
  variables = {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}
  return variables, dict(meta, model=model_kwargs, source=step_dir)


def load_for_tracking(path: str) -> tuple[CIANet, dict, dict]:
  """The network for tracking from a training workdir or a variables checkpoint -> (CIANet, variables, meta).

  Accepts:
    * a variables checkpoint directory (`save_variables`; e.g. `<workdir>/model` or a converted one);
    * a training workdir: the newest intact one of `<workdir>/model` and `<workdir>/checkpoints/<step>`
      (by training step; the export wins a tie). A damaged one is skipped with a warning naming it;
    * a `checkpoints/` directory or one `checkpoints/<step>` directory of a training run.

  Returns:
    (model, variables {'params', 'batch_stats'} as NumPy arrays, meta with at least 'model').

  Raises:
    FileNotFoundError: nothing loadable at `path` (the message says what was looked for).
    DamagedCheckpointError: the checkpoint named by `path` (or every one in the workdir) is damaged.
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"load_for_tracking: {path} does not exist or is not a directory")
  if is_variables_checkpoint(path) or is_training_step(path):
    variables, meta = _load_network(path)
  else:
    variables, meta = _load_newest_intact(path)
  return build_model(meta["model"]), variables, meta


def _load_network(path: str) -> tuple[dict, dict]:
  if not is_variables_checkpoint(path):
    return read_training_network(path)
  variables, meta = load_variables(path)
  if "model" not in meta:
    raise ValueError(f"{os.path.join(path, META_FILE)}: no 'model' entry (the CIANet keyword arguments)")
  return variables, meta


def _load_newest_intact(workdir: str) -> tuple[dict, dict]:
  """The newest checkpoint of a workdir (or `checkpoints/` directory) that reads without damage."""
  candidates, damaged = [], []
  export = os.path.join(workdir, EXPORT_DIR)
  if is_variables_checkpoint(export):
    try:
      candidates.append((int(read_json(os.path.join(export, META_FILE)).get("step", -1)), 1, export))
    except DamagedCheckpointError as e:
      _LOG.warning("%s; skipping it", e)
      damaged.append(str(e))
  for ckpt_dir in (os.path.join(workdir, CHECKPOINTS_DIR), workdir):
    steps = checkpoint_steps(ckpt_dir)
    candidates += [(step, 0, os.path.join(ckpt_dir, str(step))) for step in steps]
    if steps:
      break
  if not candidates and not damaged:
    raise FileNotFoundError(
        f"load_for_tracking: {workdir} is neither a variables checkpoint ({META_FILE} + {VARIABLES_DIR}/) nor a "
        f"training workdir ({EXPORT_DIR}/ or {CHECKPOINTS_DIR}/<step>/)")
  for _, _, where in sorted(candidates, reverse=True):
    try:
      return _load_network(where)
    except DamagedCheckpointError as e:
      _LOG.warning("%s; trying the next older checkpoint", e)
      damaged.append(str(e))
  raise DamagedCheckpointError(f"{workdir}: no intact checkpoint, every one is damaged:\n  " + "\n  ".join(damaged))
