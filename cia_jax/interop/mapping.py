"""PyTorch state dict <-> our `{'params', 'batch_stats'}` for DiMP18, SuperDiMP, CIA18, CIA50 and ResNets.

The key table is generated from our own parameter tree (so it can never drift from `CIANet`): every Flax
module path is renamed to the reference's module name (design.md §6), and every leaf by these rules

  torch                                    ours
  conv weight (O, I, kh, kw)               params .../kernel (kh, kw, I, O)
  linear weight (out, in)                  params .../kernel (in, out)   (also fc3_rt / fc4_rt, whose Dense
                                                                          reads the RoI in C, H, W order)
  BN / LayerNorm weight, bias              params .../scale, .../bias
  BN running_mean, running_var             batch_stats .../mean, .../var
  BN num_batches_tracked                   (dropped)
  MHA in_proj_weight (3C, C) rows q, k, v  self_attn/{query,key,value}/kernel (C, heads, C / heads)
      in_proj_bias (3C,), out_proj.*       .../bias (heads, C / heads); self_attn/out/kernel (heads, hd, C)
  scalars / vectors (alpha_factor, filter_reg, log_step_length)  unchanged

Module renames (ours -> reference):

  backbone/...            feature_extractor.... (DiMP), feature_extractor.encoder_q.... (CIA), bare (torchvision)
  proj/...                feature_extractor.encoder_q.proj....
  modulator/proj_{0,2}    feature_extractor.modulator.proj.{0,2}
  upper_classifier/proj_fc, clf_fc    upper_classifier.proj_fc.0, upper_classifier.clf_fc
  category_encoder/proj_post          upper_classifier.proj_post
  category_encoder/layers_{i}/...     upper_classifier.transformer_encoder.layers.{i}....
  classifier/..., bb_regressor/...    same names ('/' -> '.')

The category encoder's dictionary is not a parameter: our network reads `clf_fc`'s kernel rows C4:2C4
(the reference's `clf_fc.weight[:, C4:]`), so the reference's stale `cls_vectors` attribute (not in the state
dict, design.md §4.6) needs nothing. `feature_extractor.encoder_k.*` (the MoCo key encoder) maps onto the momentum
tree (`{'params': {'backbone', 'proj'}, 'batch_stats': {'backbone'}}`, `TrainState.momentum_*`); the unused
`queue` / `queue_ptr` buffers, the ResNet `fc` and, for DiMP18 / SuperDiMP, the unused `layer4` are dropped.
`complete_reference_state` puts them back (zeros; the key encoder as a copy of the query encoder) for the
reference's strict `load_state_dict`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from cia_jax.interop.archs import ARCH_CONFIGS, BACKBONE_ONLY
from cia_jax.models.category import attention_params_from_torch
from cia_jax.models.cia import build_model
from cia_jax.models.resnet import LAYER_NAMES

MOMENTUM_PREFIX = "feature_extractor.encoder_k"
# Buffers of the reference's MoCo wrapper that no code path reads: its constructor's default queue (dim x K) and
# the torchvision ResNet's ImageNet head width.
_REFERENCE_QUEUE_SHAPE = (128, 65536)
_IMAGENET_CLASSES = 1000
_BN_STATS = {"mean": "running_mean", "var": "running_var"}
_MAX_LISTED = 25


@dataclasses.dataclass(frozen=True)
class KeyEntry:
  """One torch tensor <-> one Flax leaf.

  Attributes:
    torch_key: reference state-dict key.
    collection: 'params' or 'batch_stats'.
    path: Flax path inside the collection.
    kind: 'conv' (transpose (2, 3, 1, 0)), 'linear' (transpose) or 'copy'.
    shape: Flax shape.
  """

  torch_key: str
  collection: str
  path: tuple[str, ...]
  kind: str
  shape: tuple[int, ...]

  @property
  def torch_shape(self) -> tuple[int, ...]:
    if self.kind == "conv":
      kh, kw, i, o = self.shape
      return (o, i, kh, kw)
    if self.kind == "linear":
      return tuple(reversed(self.shape))
    return self.shape


@dataclasses.dataclass(frozen=True)
class AttentionEntry:
  """One torch.nn.MultiheadAttention (packed q/k/v) <-> our `self_attn` {query, key, value, out}.

  Attributes:
    torch_prefix: e.g. 'upper_classifier.transformer_encoder.layers.0.self_attn'.
    path: Flax path of the `self_attn` module in 'params'.
    dim: C (model width).
    num_heads: heads (C / head_dim).
  """

  torch_prefix: str
  path: tuple[str, ...]
  dim: int
  num_heads: int

  @property
  def torch_shapes(self) -> dict[str, tuple[int, ...]]:
    c = self.dim
    return {f"{self.torch_prefix}.in_proj_weight": (3 * c, c), f"{self.torch_prefix}.in_proj_bias": (3 * c,),
            f"{self.torch_prefix}.out_proj.weight": (c, c), f"{self.torch_prefix}.out_proj.bias": (c,)}


def model_kwargs(arch: str, **overrides) -> dict[str, Any]:
  """`CIANet` keyword arguments of `arch` (see `ARCH_CONFIGS`) with `overrides` (e.g. tiny test widths)."""
  if arch not in ARCH_CONFIGS:
    raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCH_CONFIGS)}")
  return {**ARCH_CONFIGS[arch], **overrides}


@functools.lru_cache(maxsize=32)
def _template_cached(arch: str, overrides: tuple) -> dict:
  net = build_model(model_kwargs(arch, **dict(overrides)))
  s = 64
  if arch in BACKBONE_ONLY:
    x = jnp.zeros((1, s, s, 3), jnp.float32)
    v = jax.eval_shape(lambda: net.init(jax.random.key(0), x, train=False, layers=LAYER_NAMES,
                                        method=net.backbone_features))
    return {"params": {"backbone": v["params"]["backbone"]}, "batch_stats": {"backbone": v["batch_stats"]["backbone"]}}
  imgs = jnp.zeros((3, 1, s, s, 3), jnp.float32)
  box = jnp.broadcast_to(jnp.asarray([s / 4, s / 4, s / 2, s / 2], jnp.float32), (3, 1, 4))
  props = jnp.broadcast_to(box[:, :, None], (3, 1, 2, 4))
  v = jax.eval_shape(lambda: net.init(jax.random.key(0), imgs, imgs, box, box, props, train=False))
  return {"params": v["params"], "batch_stats": v.get("batch_stats", {})}


def model_template(arch: str, **overrides) -> dict:
  """Abstract variables (`jax.ShapeDtypeStruct` leaves) `{'params', 'batch_stats'}` of `arch` (no compute)."""
  return _template_cached(arch, tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                             for k, v in overrides.items())))


def _leaves(tree: Mapping, prefix: tuple[str, ...] = ()):
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _leaves(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def _backbone_prefix(arch: str) -> str:
  """Where the ResNet sits in the reference network: CIDiMPnet's MoCo wrapper, DiMPnet, or bare torchvision."""
  if arch in BACKBONE_ONLY:
    return ""
  return "feature_extractor.encoder_q" if arch.startswith("cia") else "feature_extractor"


def _torch_module(path: tuple[str, ...], backbone_prefix: str) -> str:
  """Reference module name of our Flax module path (without the leaf)."""
  top, rest = path[0], list(path[1:])
  if top == "backbone":
    parts = ([backbone_prefix] if backbone_prefix else []) + rest
  elif top == "proj":
    parts = ["feature_extractor.encoder_q.proj"] + rest
  elif top == "modulator":
    parts = ["feature_extractor.modulator"] + [re.sub(r"^proj_(\d+)$", r"proj.\1", p) for p in rest]
  elif top == "upper_classifier":
    parts = ["upper_classifier"] + ["proj_fc.0" if p == "proj_fc" else p for p in rest]
  elif top == "category_encoder":
    if rest and rest[0] == "dictionary":
      raise ValueError("the learned dictionary of num_known_categories=0 has no reference counterpart")
    parts = ["upper_classifier"] + [re.sub(r"^layers_(\d+)$", r"transformer_encoder.layers.\1", p)
                                    for p in rest]
  elif top in ("classifier", "bb_regressor"):
    parts = [top] + rest
  else:
    raise ValueError(f"no reference name for our module {'/'.join(path)}")
  return ".".join(parts)


def key_table(arch: str, **overrides) -> tuple[list[KeyEntry], list[AttentionEntry]]:
  """The full torch <-> Flax key table of `arch` (see the module docstring for the rules).

  Returns:
    (tensor entries, attention entries), in our tree's order.
  """
  template = model_template(arch, **overrides)
  prefix = _backbone_prefix(arch)
  entries: list[KeyEntry] = []
  attention: dict[tuple[str, ...], AttentionEntry] = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in _leaves(template.get(collection, {})):
      module, leaf_name = path[:-1], path[-1]
      shape = tuple(leaf.shape)
      if "self_attn" in module:
        attn_path = module[:module.index("self_attn") + 1]
        if attn_path not in attention and leaf_name == "kernel" and module[-1] == "query":
          attention[attn_path] = AttentionEntry(_torch_module(attn_path, prefix), attn_path, shape[0], shape[1])
        continue
      torch_module = _torch_module(module, prefix)
      if collection == "batch_stats":
        kind, name = "copy", _BN_STATS[leaf_name]
      elif leaf_name == "kernel":
        kind, name = {4: "conv", 2: "linear"}[len(shape)], "weight"
      elif leaf_name == "scale":
        kind, name = "copy", "weight"
      else:
        kind, name = "copy", leaf_name
      entries.append(KeyEntry(f"{torch_module}.{name}", collection, path, kind, shape))
  return entries, list(attention.values())


def _ignored(key: str, arch: str, entries: list[KeyEntry]) -> bool:
  """Reference keys that exist but have no use here (design.md §6.2 / 6.3)."""
  if key.endswith("num_batches_tracked") or key in ("feature_extractor.queue", "feature_extractor.queue_ptr"):
    return True
  prefix = _backbone_prefix(arch)
  bb = f"{prefix}." if prefix else ""
  has_layer4 = any(e.path[:2] == ("backbone", "layer4") for e in entries)
  for p in ([bb] + ([f"{MOMENTUM_PREFIX}."] if prefix == "feature_extractor.encoder_q" else [])):
    if key.startswith(p + "fc.") or (not has_layer4 and key.startswith(p + "layer4.")):
      return True
  return False


def _to_flax_value(entry: KeyEntry, value: np.ndarray) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if entry.kind == "conv":
    return np.ascontiguousarray(np.transpose(value, (2, 3, 1, 0)))
  if entry.kind == "linear":
    return np.ascontiguousarray(value.T)
  return value.reshape(entry.shape)


def _to_torch_value(entry: KeyEntry, value: Any) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if entry.kind == "conv":
    return np.ascontiguousarray(np.transpose(value, (3, 2, 0, 1)))
  if entry.kind == "linear":
    return np.ascontiguousarray(value.T)
  return value.copy()


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
  for p in path:
    tree = tree[p]
  return tree


def _momentum_entries(entries: list[KeyEntry], backbone_prefix: str) -> list[KeyEntry]:
  """Entries of the key encoder: encoder_q's backbone + proj renamed to encoder_k."""
  out = []
  q = "feature_extractor.encoder_q."
  for e in entries:
    if e.path[0] in ("backbone", "proj") and e.torch_key.startswith(q):
      out.append(dataclasses.replace(e, torch_key=MOMENTUM_PREFIX + "." + e.torch_key[len(q):]))
  return out if backbone_prefix == "feature_extractor.encoder_q" else []


def torch_to_flax(state_dict: Mapping[str, np.ndarray], arch: str, **overrides) -> tuple[dict, dict]:
  """Maps a reference state dict of `arch` to our variables.

  Args:
    state_dict: `{torch key: array}` in torch layout (from `load_torch_file` / `state_dict_from_checkpoint`).
    arch: one of `ARCH_CONFIGS`.
    **overrides: `CIANet` keyword arguments changed from `ARCH_CONFIGS[arch]` (tiny test networks).

  Returns:
    (variables `{'params', 'batch_stats'}` of float32 NumPy arrays with exactly our init's structure,
    momentum `{'params': {'backbone', 'proj'}, 'batch_stats': {'backbone'}}` from `encoder_k` -- empty dicts
    when the checkpoint has no key encoder).

  Raises:
    ValueError: listing, in one message, every missing key, every unknown key and every shape mismatch.
  """
  entries, attention = key_table(arch, **overrides)
  prefix = _backbone_prefix(arch)
  momentum_entries = _momentum_entries(entries, prefix)
  has_momentum = any(k.startswith(MOMENTUM_PREFIX + ".") and not _ignored(k, arch, entries) for k in state_dict)
  missing, mismatched, used = [], [], set()
  variables: dict = {"params": {}, "batch_stats": {}}
  momentum: dict = {"params": {}, "batch_stats": {}}

  for target, table in ((variables, entries), (momentum, momentum_entries if has_momentum else [])):
    for e in table:
      if e.torch_key not in state_dict:
        missing.append(e.torch_key)
        continue
      used.add(e.torch_key)
      value = np.asarray(state_dict[e.torch_key])
      if tuple(value.shape) != e.torch_shape and not (e.kind == "copy" and value.size == int(np.prod(e.shape))
                                                       and len(e.shape) <= 1 and value.ndim <= 1):
        mismatched.append(f"{e.torch_key}: {tuple(value.shape)}, expected {e.torch_shape}")
        continue
      _set(target[e.collection], e.path, _to_flax_value(e, value))

  for a in attention:
    shapes = a.torch_shapes
    absent = [k for k in shapes if k not in state_dict]
    missing.extend(absent)
    used.update(k for k in shapes if k in state_dict)
    bad = [f"{k}: {tuple(np.shape(state_dict[k]))}, expected {s}" for k, s in shapes.items()
           if k in state_dict and tuple(np.shape(state_dict[k])) != s]
    mismatched.extend(bad)
    if absent or bad:
      continue
    w = [np.asarray(state_dict[k], np.float32) for k in shapes]
    _set(variables["params"], a.path, attention_params_from_torch(*w, num_heads=a.num_heads))

  unknown = [k for k in state_dict if k not in used and not _ignored(k, arch, entries)]
  if missing or unknown or mismatched:
    raise ValueError(_mismatch_report(arch, missing, unknown, mismatched))
  variables = {k: v for k, v in variables.items() if v or k == "params"}
  variables.setdefault("batch_stats", {})
  return variables, (momentum if has_momentum else {"params": {}, "batch_stats": {}})


def _mismatch_report(arch: str, missing: list[str], unknown: list[str], mismatched: list[str]) -> str:
  lines = [f"state dict does not match arch {arch!r}: {len(missing)} missing, {len(unknown)} unknown, "
           f"{len(mismatched)} with the wrong shape"]
  for title, items in (("missing keys", missing), ("unknown keys", unknown), ("shape mismatches", mismatched)):
    if items:
      lines.append(f"  {title}:")
      lines.extend(f"    {k}" for k in items[:_MAX_LISTED])
      if len(items) > _MAX_LISTED:
        lines.append(f"    ... and {len(items) - _MAX_LISTED} more")
  return "\n".join(lines)


def flax_to_torch(variables: Mapping[str, Any], arch: str, momentum: Mapping[str, Any] | None = None,
                  **overrides) -> dict[str, np.ndarray]:
  """Reverse mapping: our variables -> a reference-layout state dict (with `num_batches_tracked` = 0).

  Args:
    variables: `{'params', 'batch_stats'}` with the structure of `model_template(arch, **overrides)`.
    arch: one of `ARCH_CONFIGS`.
    momentum: optional key-encoder tree (CIA) -> `feature_extractor.encoder_k.*`.
    **overrides: as in `torch_to_flax`.

  Returns:
    `{torch key: float32 array (int64 for num_batches_tracked)}` in torch layout.
  """
  entries, attention = key_table(arch, **overrides)
  tables = [(variables, entries)]
  if momentum and momentum.get("params"):
    tables.append((momentum, _momentum_entries(entries, _backbone_prefix(arch))))
  state: dict[str, np.ndarray] = {}
  for source, table in tables:
    for e in table:
      state[e.torch_key] = _to_torch_value(e, _get(source[e.collection], e.path))
      if e.collection == "batch_stats" and e.torch_key.endswith("running_var"):
        state[e.torch_key[:-len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
  for a in attention:
    p = _get(variables["params"], a.path)
    c = a.dim
    w = [np.asarray(p[n]["kernel"], np.float32).reshape(c, c).T for n in ("query", "key", "value")]
    b = [np.asarray(p[n]["bias"], np.float32).reshape(c) for n in ("query", "key", "value")]
    state[f"{a.torch_prefix}.in_proj_weight"] = np.concatenate(w, axis=0)
    state[f"{a.torch_prefix}.in_proj_bias"] = np.concatenate(b)
    state[f"{a.torch_prefix}.out_proj.weight"] = np.ascontiguousarray(
        np.asarray(p["out"]["kernel"], np.float32).reshape(c, c).T)
    state[f"{a.torch_prefix}.out_proj.bias"] = np.asarray(p["out"]["bias"], np.float32).copy()
  return state


def complete_reference_state(state: dict[str, np.ndarray], arch: str, **overrides) -> dict[str, np.ndarray]:
  """`flax_to_torch`'s state dict plus the reference keys we drop, so the reference's strict loader accepts it.

  None of the added tensors is used by the reference tracker: the ResNet `fc` and, for DiMP18 / SuperDiMP,
  `layer4` (zeros; BN running_var ones), CIA's `queue` / `queue_ptr` (zeros) and, when `state` has no key
  encoder, `encoder_k.*` as a copy of `encoder_q.*` (the MoCo wrapper's own initialisation).

  Returns:
    A new dict: `state` and the added keys, in the reference layout (`tests/data/interop/reference_keys.json.gz`).
  """
  if arch in BACKBONE_ONLY:
    return dict(state)
  out = dict(state)
  prefix = _backbone_prefix(arch)
  entries, _ = key_table(arch, **overrides)
  if not any(e.path[:2] == ("backbone", "layer4") for e in entries):
    resnet = "resnet50" if model_kwargs(arch, **overrides).get("backbone_arch") == "resnet50" else "resnet18"
    for e in key_table(resnet, **overrides)[0]:
      if e.path[:2] != ("backbone", "layer4"):
        continue
      fill = 1.0 if e.torch_key.endswith("running_var") else 0.0
      out[f"{prefix}.{e.torch_key}"] = _to_torch_value(e, np.full(e.shape, fill, np.float32))
      if e.torch_key.endswith("running_var"):
        out[f"{prefix}.{e.torch_key[:-len('running_var')]}num_batches_tracked"] = np.zeros((), np.int64)
  width = max(v.shape[0] for k, v in out.items() if k.startswith(f"{prefix}.layer4.") and k.endswith("running_mean"))
  out[f"{prefix}.fc.weight"] = np.zeros((_IMAGENET_CLASSES, width), np.float32)
  out[f"{prefix}.fc.bias"] = np.zeros((_IMAGENET_CLASSES,), np.float32)
  if prefix == "feature_extractor.encoder_q":
    if not any(k.startswith(MOMENTUM_PREFIX + ".") for k in out):
      for k in [k for k in out if k.startswith(prefix + ".")]:
        out[MOMENTUM_PREFIX + k[len(prefix):]] = np.array(out[k], copy=True)
    out[f"{MOMENTUM_PREFIX}.fc.weight"] = out[f"{prefix}.fc.weight"].copy()
    out[f"{MOMENTUM_PREFIX}.fc.bias"] = out[f"{prefix}.fc.bias"].copy()
    out["feature_extractor.queue"] = np.zeros(_REFERENCE_QUEUE_SHAPE, np.float32)
    out["feature_extractor.queue_ptr"] = np.zeros((1,), np.int64)
  return out
