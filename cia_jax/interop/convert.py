"""PyTorch checkpoints <-> variables checkpoints (what `cia-jax convert` does).

`convert_file` maps a pytracking / CIA / torchvision file onto our variables; `write_converted` saves them (and
CIA's key encoder) as variables checkpoints; `export_file` writes a variables checkpoint back as a torch file
`{'net': reference state dict}` after checking that it holds the network named by `arch`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from cia_jax import checkpoints
from cia_jax.interop import keeptrack, mapping
from cia_jax.interop.archs import ARCH_CONFIGS, BACKBONE_ONLY, TCM_ARCHS
from cia_jax.interop.torch_pickle import load_torch_file, save_torch_file, state_dict_from_checkpoint
from cia_jax.models.cia import build_model
from cia_jax.models.tcm import TargetCandidateMatchingNet
from cia_jax.tcm.weights import load_tcm, save_tcm

# `CIANet` fields that decide which modules (hence which parameters) a network has; widths may differ (tiny
# test networks), these may not.
STRUCTURE_FIELDS = ("backbone_arch", "clf_arch", "clf_optimizer", "category_classification", "category_encoder",
                    "contrastive", "instance_encoder")


def convert_file(path: str, arch: str) -> tuple[dict, dict, dict]:
  """Reads a PyTorch checkpoint of `arch` and maps it to our variables.

  Returns:
    (variables {'params', 'batch_stats'}, momentum {'params', 'batch_stats'} of the key encoder (empty
    unless CIA), meta {'model': CIANet kwargs, 'source': path, 'arch': arch}).
  """
  state = state_dict_from_checkpoint(load_torch_file(path), where=path)
  try:
    variables, momentum = mapping.torch_to_flax(state, arch)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e
  meta = {"model": dict(ARCH_CONFIGS[arch]), "source": os.path.abspath(path), "arch": arch}
  if arch in BACKBONE_ONLY:
    meta["backbone_only"] = True
  return variables, momentum, meta


def write_converted(path: str, arch: str, out: str, momentum_out: str | None = None) -> list[str]:
  """Converts the PyTorch checkpoint `path` (network `arch`) into the variables checkpoint `out`.

  With `momentum_out`, CIA's key encoder (encoder_k) goes to that second variables checkpoint. Nothing is written
  when the file does not hold `arch` (or holds no key encoder although `momentum_out` asks for one).

  Returns:
    The absolute paths written.
  """
  if arch in TCM_ARCHS:
    if momentum_out:
      raise ValueError(f"--momentum-out: arch {arch} has no key encoder")
    return [write_converted_tcm(path, out)]
  variables, momentum, meta = convert_file(path, arch)
  if momentum_out and not momentum.get("params"):
    raise ValueError(f"--momentum-out: {path} has no key encoder (arch {arch})")
  written = [checkpoints.save_variables(out, variables, meta)]
  if momentum_out:
    written.append(checkpoints.save_variables(momentum_out, momentum, dict(meta, role="momentum (encoder_k)")))
  return written


def write_converted_tcm(path: str, out: str) -> str:
  """pytracking's `keep_track.pth.tar` (or any file whose `net` has its keys) -> the association-net checkpoint
  `out` (`cia_jax.tcm.weights`; the file's own ResNet-50 is ignored). Returns the absolute path."""
  state = state_dict_from_checkpoint(load_torch_file(path), where=path)
  try:
    variables = keeptrack.torch_to_tcm(state)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e
  return save_tcm(out, TargetCandidateMatchingNet(), variables, keeptrack.LAYER3_CHANNELS,
                  source=os.path.abspath(path), arch="keeptrack")


def export_file(path: str, arch: str, out: str) -> None:
  """Writes the variables checkpoint `path` (network `arch`) as a torch file `{'net': reference state dict}`.

  Raises:
    ValueError: the checkpoint holds another network than `arch` (both are named), or its variables do not
      have the layout of `arch`.
  """
  if arch in TCM_ARCHS:
    net, variables, _ = load_tcm(path)
    save_torch_file(out, {"net": keeptrack.tcm_to_torch(variables, net), "arch": arch,
                          "source": os.path.abspath(path)})
    return
  variables, meta = checkpoints.load_variables(path)
  model = meta.get("model", {})
  check_arch(path, meta, arch)
  try:
    state = mapping.complete_reference_state(mapping.flax_to_torch(variables, arch, **model), arch, **model)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: variables do not have the layout of arch {arch!r} with model {model} "
                     f"({type(e).__name__}: {e})") from e
  save_torch_file(out, {"net": state, "arch": arch, "source": os.path.abspath(path)})


def check_arch(path: str, meta: Mapping[str, Any], arch: str) -> None:
  """Refuses a checkpoint whose `meta['model']` has other modules than `arch` (ValueError naming both)."""
  held = _structure(meta.get("model", {}), path)
  wanted = _structure(ARCH_CONFIGS[arch], arch)
  diffs = [f"{k}={held[k]!r} (arch {arch!r}: {wanted[k]!r})" for k in STRUCTURE_FIELDS if held[k] != wanted[k]]
  if not diffs:
    return
  name = meta.get("arch") or next((a for a in ARCH_CONFIGS if _structure(ARCH_CONFIGS[a], a) == held), None)
  what = f"a {name!r} network" if name else "another network"
  hint = f" (use --arch {name})" if name else ""
  raise ValueError(f"{path} holds {what}, not {arch!r}{hint}: model {', '.join(diffs)}")


def _structure(model_kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
  try:
    net = build_model(model_kwargs)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: {e}") from e
  return {k: getattr(net, k) for k in STRUCTURE_FIELDS}
