"""Association-network checkpoints: one variables-checkpoint layout for converted and trained weights.

A tcm checkpoint is a `cia_jax.checkpoints.save_variables` directory whose meta says
`{"role": "tcm", "model": <TargetCandidateMatchingNet fields>, "layer3_channels": C3, ...}`; the variables
are the net's `{'params', 'batch_stats'}` (`descriptor_extractor`, `matcher`). Written by
`cia-jax convert --arch keeptrack` (from pytracking's `keep_track.pth.tar`) and by the keeptrack trainer
(`<workdir>/model`); read by `load_tcm` / `attach_tcm`, which put the net on a `TrackingModel` for
`settings.use_tcm` (keeptrack, keeptrack_fast, cia50_tcm).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax
import numpy as np

from cia_jax import checkpoints
from cia_jax.models.tcm import TargetCandidateMatchingNet
from cia_jax.track.keeptrack import init_tcm_variables
from cia_jax.track.tracker import layer3_channels

ROLE = "tcm"
_FIELDS = tuple(f.name for f in dataclasses.fields(TargetCandidateMatchingNet) if f.name not in ("parent", "name"))


def net_kwargs(net: TargetCandidateMatchingNet) -> dict[str, Any]:
  """The constructor fields of `net` as JSON-able values (tuples as lists)."""
  return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(net, k)) for k in _FIELDS)}


def build_tcm_net(kwargs: Mapping[str, Any]) -> TargetCandidateMatchingNet:
  """`TargetCandidateMatchingNet(**kwargs)` (lists back to tuples); ValueError naming an unknown field."""
  unknown = sorted(set(kwargs) - set(_FIELDS))
  if unknown:
    raise ValueError(f"unknown TargetCandidateMatchingNet field(s) {unknown} (known: {list(_FIELDS)})")
  return TargetCandidateMatchingNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})


def save_tcm(path: str, net: TargetCandidateMatchingNet, variables: Mapping[str, Any], layer3_channels: int,
             **meta: Any) -> str:
  """Writes an association-net checkpoint (see the module docstring); `meta` adds entries. Returns the path."""
  return checkpoints.save_variables(path, variables, dict(meta, role=ROLE, model=net_kwargs(net),
                                                          layer3_channels=int(layer3_channels)))


def load_tcm(path: str) -> tuple[TargetCandidateMatchingNet, dict, dict]:
  """Reads an association-net checkpoint -> (net, variables, meta), checking every shape against the net.

  Raises:
    FileNotFoundError: not a variables checkpoint.
    ValueError: not an association-net checkpoint, or its variables do not fit its own `model` meta.
  """
  variables, meta = checkpoints.load_variables(path)
  if meta.get("role") != ROLE:
    raise ValueError(f"{path}: not an association-network checkpoint (meta role {meta.get('role')!r}; write one "
                     f"with `cia-jax convert --arch keeptrack` or `cia-jax train --config configs/keeptrack.py`)")
  if not isinstance(meta.get("layer3_channels"), int):
    raise ValueError(f"{path}: meta.json has no integer layer3_channels (the descriptor conv's input width)")
  try:
    net = build_tcm_net(meta.get("model", {}))
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: meta.json model: {e}") from None
  template = jax.eval_shape(lambda: init_tcm_variables(net, meta["layer3_channels"], jax.random.key(0)))
  want = {jax.tree_util.keystr(p): tuple(v.shape) for p, v in jax.tree_util.tree_flatten_with_path(template)[0]}
  have = {jax.tree_util.keystr(p): tuple(np.shape(v)) for p, v in jax.tree_util.tree_flatten_with_path(variables)[0]}
  diffs = sorted(set(want) ^ set(have)) + sorted(k for k in set(want) & set(have) if want[k] != have[k])
  if diffs:
    raise ValueError(f"{path}: variables do not fit the association net of its meta: {diffs[:8]}")
  return net, variables, meta


def attach_tcm(model, path: str):
  """`model` (a `cia_jax.track.tracker.TrackingModel`) with the association net of checkpoint `path`.

  ValueError when the association net was made for another layer3 width than `model`'s base network.
  """
  net, variables, meta = load_tcm(os.fspath(path))
  if meta["layer3_channels"] != layer3_channels(model):
    raise ValueError(f"{path}: the association net reads {meta['layer3_channels']} layer3 channels, the base "
                     f"network has {layer3_channels(model)} (keeptrack: superdimp / ResNet-50 -> 1024)")
  return model.replace(tcm_net=net, tcm_variables=jax.tree.map(np.asarray, variables))
