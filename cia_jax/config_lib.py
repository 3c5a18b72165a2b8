"""Experiment configs and the one typed `KEY=VALUE` override parser.

Training configs: a file `configs/<name>.py` defines `get_config(arg=None) -> ml_collections.ConfigDict` (locked,
so a misspelt key fails). `load_config("configs/cia18.py:no_category")` imports the file and calls
`get_config("no_category")`; `arg` names one or more `VARIANTS` (comma-separated), applied by `apply_variant`.
The helpers the config files call (`run_settings`, `dataset_entry`, `dataclass_fields`, `finalize`) are here.

Overrides: `apply_overrides(config, ["optim.epochs=2", "data.train.got10k.root=/data/got10k"])` sets values of a
ConfigDict (`cia-jax train --config.KEY=VALUE`); `replace_fields(settings, ["image_sample_size=288"], ...)` makes
a new frozen dataclass (`cia-jax track --set KEY=VALUE` on `TrackerSettings`). Both parse each value with
`parse_value`, by the type of the field it replaces: bool (true/false, yes/no, on/off, 1/0), int, float (also
inf), str (surrounding quotes dropped), tuple/list (Python literal syntax; a scalar becomes a 1-tuple, lists
become tuples, and numbers become floats where the field holds floats) and `None` where the field allows it.
Every error is a ValueError naming the key.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import types
import typing
from typing import Any, Iterable

import ml_collections
from ml_collections import config_dict

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_NONE = ("none", "null")


# ----------------------------------------------------------------------------------------------------------
# Loading.


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Imports a config file and calls its `get_config`.

  Args:
    spec: `path/to/config.py` or `path/to/config.py:arg` (`arg` goes to `get_config(arg)`).

  Returns:
    The ConfigDict the file returns (locked).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a Python file, a file that fails to import, no `get_config`, or a wrong return type; the
      message names the file.
  """
  path, _, arg = spec.partition(":")
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path} (from --config {spec!r})")
  if not path.endswith(".py"):
    raise ValueError(f"config file {path}: not a Python file; a config is a configs/<name>.py file with "
                     f"get_config(arg=None)")
  name = "cia_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  # any error of user code: name the file
    raise ValueError(f"config file {path} failed to import: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path}: a config file must define get_config(arg=None)")
  config = module.get_config(arg or None)
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f"config file {path}: get_config must return an ml_collections.ConfigDict, got "
                     f"{type(config).__name__}")
  return config


# ----------------------------------------------------------------------------------------------------------
# Building blocks of `configs/*.py`.


def placeholder(kind: type) -> Any:
  """A typed `None` config field (overridable with a value of `kind` or None)."""
  return config_dict.placeholder(kind)


def dataset_entry(fmt: str, split: str, weight: float, **extra) -> ml_collections.ConfigDict:
  """One dataset of `config.data.train` / `config.val.datasets`: reader format, split, sampling weight.

  `root` (None: set it on the command line, or generate synthetic data) and `split_file` are typed placeholders;
  `extra` adds fields (e.g. TrackingNet's `chunks`).
  """
  entry = ml_collections.ConfigDict({"format": fmt, "root": placeholder(str), "split": split,
                                     "weight": float(weight), "split_file": placeholder(str)})
  for k, v in extra.items():
    entry[k] = v
  return entry


def tracking_validation(tracker: str, dataset: ml_collections.ConfigDict | None = None,
                        **fields) -> ml_collections.ConfigDict:
  """`config.val.tracking`: the optional tracking-accuracy check while training (`cia_jax.train.track_eval`).

  Fields: `enabled` (off by default; the check also needs `config.val.enabled`), `every_steps` (None =
  `config.val.every_steps`), `dataset` (format, root, split, split_file; root None = the root of the
  `config.val.datasets` entry of that format, or generated synthetic sequences), `num_sequences` (the first N by
  name), `max_frames` per sequence (None = all), `tracker` (a `TrackerSettings` preset) with `overrides`
  (`KEY=VALUE` strings, as `cia-jax track --set`), `batch_sequences` (K sequences in lockstep), `protocol`
  (`cia_jax.evaluation.metrics`) and `seed` (the tracker's random stream). `fields` replaces defaults.
  """
  group = ml_collections.ConfigDict(dict(
      enabled=False, every_steps=placeholder(int),
      dataset=dataset if dataset is not None else ml_collections.ConfigDict(dict(
          format="got10k", root=placeholder(str), split="votval", split_file=placeholder(str))),
      num_sequences=8, max_frames=placeholder(int), tracker=tracker, overrides=(), batch_sequences=4,
      protocol="otb", seed=0))
  for k, v in fields.items():
    group[k] = v
  return group


def dataclass_fields(value: Any, exclude: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """Every field of a dataclass instance (e.g. a `ProcessingConfig` preset) as a ConfigDict.

  None fields become typed placeholders (float), so they stay overridable.
  """
  out = ml_collections.ConfigDict()
  for f in dataclasses.fields(value):
    if f.name not in exclude:
      v = getattr(value, f.name)
      out[f.name] = placeholder(float) if v is None else v
  return out


def run_settings(name: str) -> ml_collections.ConfigDict:
  """The fields of a training config that are not experiment values: seeds, data source and loading,
  synthetic data, checkpointing, logging, time limit. Unlocked; a config file adds `model`, `loss`, `optim`,
  the data sets and settings, and `val`.
  """
  c = ml_collections.ConfigDict()
  c.name = name
  c.seed = 0  # network initialisation and the step's dropout stream
  c.init_checkpoint = placeholder(str)  # a variables checkpoint (`save_variables`) to start from
  c.data = ml_collections.ConfigDict()
  c.data.seed = 0
  c.data.num_parallel_calls = placeholder(int)  # None = tf.data AUTOTUNE
  c.data.prefetch = 2
  # Synthetic sequences written into <workdir>/synthetic/<format> for every dataset whose root is None.
  c.data.synthetic = ml_collections.ConfigDict(dict(enabled=False, num_sequences=8, num_frames=40,
                                                    image_size=(128, 96), seed=0))
  # Where the training sequences come from: "folders" (the benchmarks' own layouts at each entry's root) or
  # "tfds" (data prepared with `cia-jax tfds-build` in tfds_data_dir; same sampler, bit-identical batches).
  c.data.source = "folders"
  c.data.tfds_data_dir = placeholder(str)
  c.data.tfds_shard_by_host = False  # True: host p keeps its own block of sequences (and frame shards)
  c.val = ml_collections.ConfigDict()
  c.val.seed = 1  # a fixed validation sample set
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=2000, keep=3, async_save=True))
  # Wall-clock budget of `train_and_evaluate` in minutes (0 = none): when it runs out the run checkpoints,
  # exports `model/` and returns, as at the last step (the quickstart's bounded training).
  c.time_limit_minutes = 0.0
  c.log_every_steps = 50
  return c


# Module switches of the paper's ablations (Table 1 rows, Table 2, Fig. 6). `loss.momentum` is the Fig. 6 switch.
VARIANTS: dict[str, dict[str, Any]] = {
    # Table 1 rows (DiMP baseline + CC, + CC + CE, + CL, + CL + IE, full).
    "dimp": {"model": dict(category_classification=False, category_encoder=False, contrastive=False,
                           instance_encoder=False)},
    "cc": {"model": dict(category_classification=True, category_encoder=False, contrastive=False,
                         instance_encoder=False)},
    "cc_ce": {"model": dict(category_classification=True, category_encoder=True, contrastive=False,
                            instance_encoder=False)},
    "cl": {"model": dict(category_classification=False, category_encoder=False, contrastive=True,
                         instance_encoder=False)},
    "cl_ie": {"model": dict(category_classification=False, category_encoder=False, contrastive=True,
                            instance_encoder=True)},
    "full": {"model": dict(category_classification=True, category_encoder=True, contrastive=True,
                           instance_encoder=True)},
    # Single switches.
    "no_category": {"model": dict(category_classification=False, category_encoder=False)},
    "no_contrastive": {"model": dict(contrastive=False)},
    "no_momentum": {"loss": dict(momentum=False)},
    # Table 2 "w/o known categories": no category labels, the dictionary is a learned random tree.
    "no_known_categories": {"model": dict(category_classification=False, num_known_categories=0)},
}


def apply_variant(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies `arg` = one or more comma-separated names of `VARIANTS` (None or '' = the config as is)."""
  if not arg:
    return config
  for name in arg.split(","):
    name = name.strip()
    if name not in VARIANTS:
      raise ValueError(f"unknown config variant {name!r}; known: {', '.join(sorted(VARIANTS))}")
    for group, values in VARIANTS[name].items():
      for k, v in values.items():
        config[group][k] = v
  config.variant = arg
  return config


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks the config (new keys fail; values stay overridable with type checks)."""
  if "variant" not in config:
    config.variant = ""
  config.lock()
  return config


# ----------------------------------------------------------------------------------------------------------
# Overrides.


def _unwrap_optional(typ: Any) -> tuple[Any, bool]:
  """(X, True) for `Optional[X]` / `X | None`, else (typ, False)."""
  if typing.get_origin(typ) in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if len(args) == 1 and len(args) < len(typing.get_args(typ)):
      return args[0], True
  return typ, False


def _leaves(value: Any) -> list:
  return [x for v in value for x in _leaves(v)] if isinstance(value, (list, tuple)) else [value]


def _like(value: Any, current: Any) -> Any:
  """A parsed literal as nested tuples; numbers become floats where the field's current value holds floats."""
  floats = isinstance(current, (list, tuple)) and bool(_leaves(current)) and all(
      isinstance(x, float) for x in _leaves(current))

  def convert(v):
    if isinstance(v, (list, tuple)):
      return tuple(convert(x) for x in v)
    if floats:
      if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected numbers, got {v!r}")
      return float(v)
    return v

  return convert(value)


def parse_value(key: str, text: str, typ: Any, current: Any = None) -> Any:
  """The override string `text` of field `key` as a value of the field's type.

  Args:
    key: the field's name, for messages.
    text: the command-line string.
    typ: the field's type: bool, int, float, str, tuple, list, `Optional[...]` of one of them (None allowed),
      or `type(None)` (an untyped None field: a Python literal if `text` is one, else the string).
    current: the field's current value (tuples of floats keep floats).

  Raises:
    ValueError: `text` does not parse as `typ`, or None for a field that cannot be None (names `key`).
  """
  typ, optional = _unwrap_optional(typ)
  t = text.strip()
  if t.lower() in _NONE and typ is not type(None):
    if optional:
      return None
    raise ValueError(f"{key}=None: the field holds a {getattr(typ, '__name__', typ)} and cannot be None")
  try:
    if typ is bool:
      if t.lower() in _TRUE:
        return True
      if t.lower() in _FALSE:
        return False
      raise ValueError("expected true/false")
    if typ is int:
      return int(t)
    if typ is float:
      return float(t)
    if typ is str:
      return t[1:-1] if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"" else t
    if typ in (tuple, list):
      value = ast.literal_eval(t) if t else ()
      return typ(_like(value if isinstance(value, (list, tuple)) else (value,), current))
    if typ is type(None):
      try:
        return None if t.lower() in _NONE else ast.literal_eval(t)
      except (ValueError, SyntaxError):
        return t
  except (ValueError, SyntaxError) as e:
    raise ValueError(f"{key}={text!r}: expected a {typ.__name__} ({e})") from None
  raise ValueError(f"{key}: cannot set a field of type {getattr(typ, '__name__', typ)} from the command line")


def _split(item: str, what: str, example: str) -> tuple[str, str]:
  key, sep, text = item.partition("=")
  key = key.strip()
  if not sep or not key:
    raise ValueError(f"{what} {item!r}: expected KEY=VALUE ({example})")
  return key, text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies `key.path=value` overrides (`--config.` prefix optional) to a ConfigDict in place; returns it.

  Raises:
    ValueError: malformed override, unknown key (the message names it and the keys that exist there),
      or a value that does not parse as / convert to the field's type.
  """
  for item in overrides:
    key, text = _split(item, "config override", "e.g. --config.optim.epochs=2")
    key = key.removeprefix("--").removeprefix("config.")
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
      child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
      if not isinstance(child, ml_collections.ConfigDict):
        raise ValueError(f"config override {item!r}: unknown key {'.'.join(parts[:i + 1])!r}" + _known(node))
      node = child
    leaf = parts[-1]
    if leaf not in node:
      raise ValueError(f"config override {item!r}: unknown key {key!r}" + _known(node))
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
      raise ValueError(f"config override {item!r}: {key!r} is a group of settings, set its fields "
                       f"({', '.join(sorted(current.keys()))})")
    placeholder_type = node.get_type(leaf) if current is None else None
    typ = type(current) if current is not None else (
        typing.Optional[placeholder_type] if placeholder_type is not None else type(None))
    try:
      value = parse_value(key, text, typ, current)
    except ValueError as e:
      raise ValueError(f"config override {e}") from None
    try:
      if current is None and placeholder_type is None:
        with node.ignore_type():
          node[leaf] = value
      else:
        node[leaf] = value
    except TypeError as e:
      raise ValueError(f"config override {item!r}: {e}") from None
  return config


def _known(node: ml_collections.ConfigDict) -> str:
  return f"; known keys here: {', '.join(sorted(node.keys()))}" if isinstance(node, ml_collections.ConfigDict) else ""


def replace_fields(value: Any, overrides: Iterable[str], what: str = "setting") -> Any:
  """A copy of the frozen dataclass `value` with `["key=value", ...]` applied (values parsed by field type).

  `what` names the fields in messages (e.g. "tracker setting"). The dataclass's own checks (`__post_init__`)
  run on the result.

  Raises:
    ValueError: malformed item, unknown field (the message lists the valid ones), or an unparsable value.
  """
  hints = typing.get_type_hints(type(value))
  names = [f.name for f in dataclasses.fields(value)]
  changes = {}
  for item in overrides:
    key, text = _split(item, f"{what} override", "key=value")
    if key not in names:
      raise ValueError(f"unknown {what} {key!r} in {item!r}; valid: {names}")
    try:
      changes[key] = parse_value(key, text, hints[key], getattr(value, key))
    except ValueError as e:
      raise ValueError(f"{what} {e}") from None
  return dataclasses.replace(value, **changes)
