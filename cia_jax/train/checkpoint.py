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
