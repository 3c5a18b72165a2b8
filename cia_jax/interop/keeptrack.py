"""pytracking's KeepTrack checkpoint (`keep_track.pth.tar`) <-> our association-net variables (keeptrack.md §6).

The file's `net` state dict holds `feature_extractor.*` (a ResNet-50 the tracker never runs, keeptrack.md §0),
`descriptor_extractor.conv.*` and `matcher.*`. Only the last two are converted; the backbone keys are
accepted and ignored (the base tracker's backbone is SuperDiMP's: `cia-jax convert --arch superdimp`).
Names follow `cia_jax.models.tcm.reference_key`; layouts: a 1x1 Conv1d weight `[out, in, 1]` <-> a Dense
kernel `[in, out]`, the Conv2d weight OIHW <-> HWIO, BatchNorm weight / bias / running stats as they are,
`num_batches_tracked` dropped. Every key of the network must be present with its exact shape.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from cia_jax.models.tcm import TargetCandidateMatchingNet, reference_key
from cia_jax.track.keeptrack import init_tcm_variables

LAYER3_CHANNELS = 1024  # ResNet-50 layer3, the descriptor conv's input
IGNORED_PREFIXES = ("feature_extractor.",)
_MAX_LISTED = 12


def _template(net: TargetCandidateMatchingNet, layer3_channels: int) -> dict:
  return jax.eval_shape(lambda: init_tcm_variables(net, layer3_channels, jax.random.key(0)))


def _entries(template: Mapping[str, Any]):
  """(collection, flax path tuple, torch key, flax shape) of every leaf."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]:
    names = tuple(p.key for p in path)
    yield names[0], names[1:], reference_key(names[1:]), tuple(leaf.shape)


def _to_flax(value: np.ndarray, shape: tuple) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if len(shape) == 2 and value.ndim == 3:  # Conv1d [out, in, 1] -> Dense [in, out]
    return value[..., 0].T
  if len(shape) == 4:  # Conv2d OIHW -> HWIO
    return value.transpose(2, 3, 1, 0)
  return value


def _to_torch(value: Any, shape: tuple) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if len(shape) == 2:
    return value.T[..., None]
  if len(shape) == 4:
    return value.transpose(3, 2, 0, 1)
  return value


def _set(tree: dict, path: tuple, value) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def torch_to_tcm(state_dict: Mapping[str, Any], net: TargetCandidateMatchingNet | None = None,
                 layer3_channels: int = LAYER3_CHANNELS) -> dict:
  """KeepTrack's state dict -> `{'params', 'batch_stats'}` of `net` (default: the paper's widths).

  Raises:
    ValueError: listing the missing keys, the unknown keys (other than the ignored backbone and
      `num_batches_tracked`) and the keys whose shape differs.
  """
  net = net or TargetCandidateMatchingNet()
  variables: dict = {"params": {}, "batch_stats": {}}
  missing, mismatched, used = [], [], set()
  for collection, path, key, shape in _entries(_template(net, layer3_channels)):
    if key not in state_dict:
      missing.append(key)
      continue
    used.add(key)
    value = _to_flax(state_dict[key], shape)
    if value.shape != shape:
      mismatched.append(f"{key} {list(np.shape(state_dict[key]))}")
      continue
    _set(variables[collection], path, value)
  unknown = sorted(k for k in state_dict if k not in used and not k.startswith(IGNORED_PREFIXES)
                   and not k.endswith("num_batches_tracked"))
  if missing or unknown or mismatched:
    parts = [f"{what} ({len(keys)}): {', '.join(keys[:_MAX_LISTED])}{' ...' if len(keys) > _MAX_LISTED else ''}"
             for what, keys in (("missing", missing), ("unknown", unknown), ("wrong shape", mismatched)) if keys]
    raise ValueError("not a KeepTrack (target candidate matching) state dict: " + "; ".join(parts))
  return variables


def tcm_to_torch(variables: Mapping[str, Any], net: TargetCandidateMatchingNet | None = None,
                 layer3_channels: int = LAYER3_CHANNELS) -> dict[str, np.ndarray]:
  """The reverse of `torch_to_tcm`: our variables -> the reference's `descriptor_extractor.*` / `matcher.*` keys."""
  net = net or TargetCandidateMatchingNet()
  out = {}
  for collection, path, key, shape in _entries(_template(net, layer3_channels)):
    value = variables[collection]
    for p in path:
      value = value[p]
    out[key] = _to_torch(value, shape)
    if key.endswith("running_var"):  # the reference loads strictly: BatchNorm's counter must be there
      out[key[:-len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
  return out
