"""Experiment configs: loading `configs/<name>.py[:variant]` and `--config.key=value` overrides.

A config file defines `get_config(arg=None) -> ml_collections.ConfigDict` (locked, so a misspelt key fails).
`load_config("configs/cia18.py:no_category")` imports the file and calls `get_config("no_category")`.
`apply_overrides(config, ["optim.epochs=2", "data.train.got10k.root=/data/got10k"])` sets values; each
value string is parsed as the type of the field it replaces (int, float, bool, str, tuple/list via Python
literal syntax, `None` where the field allows it), and an unknown key raises a ValueError naming it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from typing import Any, Iterable, Sequence

import ml_collections
from ml_collections import config_dict

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Imports a config file and calls its `get_config`.

  Args:
    spec: `path/to/config.py` or `path/to/config.py:arg` (`arg` goes to `get_config(arg)`).

  Returns:
    The ConfigDict the file returns (locked).
  """
  path, _, arg = spec.partition(":")
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path} (from --config {spec!r})")
  name = "cia_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path}: a config file must define get_config(arg=None)")
  config = module.get_config(arg or None)
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f"{path}: get_config must return an ml_collections.ConfigDict, got {type(config).__name__}")
  return config


def _parse_value(key: str, text: str, current: Any, field_type: type | None) -> Any:
  """The override string `text` as a value of the field's type."""
  target = field_type if field_type is not None else type(current)
  if text.lower() in ("none", "null"):
    if current is None or field_type is not None:
      return None
    raise ValueError(f"config override {key}=None: the field holds a {type(current).__name__} and cannot be None")
  try:
    if target is bool:
      if text.lower() in _TRUE:
        return True
      if text.lower() in _FALSE:
        return False
      raise ValueError("expected true/false")
    if target is int:
      return int(text)
    if target is float:
      return float(text)
    if target is str:
      return text
    if target in (tuple, list):
      value = ast.literal_eval(text) if text.strip() else ()
      if not isinstance(value, (tuple, list)):
        value = (value,)
      return target(value)
    if target is type(None):  # untyped None field: best effort literal, else the string
      try:
        return ast.literal_eval(text)
      except (ValueError, SyntaxError):
        return text
  except (ValueError, SyntaxError) as e:
    raise ValueError(f"config override {key}={text!r}: expected a {target.__name__} ({e})") from None
  raise ValueError(f"config override {key}: cannot set a field of type {target.__name__} from the command line")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies `key.path=value` overrides in place (and returns the config).

  Raises:
    ValueError: malformed override, unknown key (the message names it and the keys that exist there),
      or a value that does not parse as / convert to the field's type.
  """
  for item in overrides:
    key, sep, text = item.partition("=")
    key = key.strip()
    if key.startswith("--"):
      key = key[2:]
    if key.startswith("config."):
      key = key[len("config."):]
    if not sep or not key:
      raise ValueError(f"config override {item!r}: expected KEY=VALUE (e.g. --config.optim.epochs=2)")
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
      child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
      if not isinstance(child, ml_collections.ConfigDict):
        raise ValueError(f"config override {item!r}: unknown key {'.'.join(parts[:i + 1])!r}"
                         + _known(node))
      node = child
    leaf = parts[-1]
    if leaf not in node:
      raise ValueError(f"config override {item!r}: unknown key {key!r}" + _known(node))
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
      raise ValueError(f"config override {item!r}: {key!r} is a group of settings, set its fields "
                       f"({', '.join(sorted(current.keys()))})")
    field_type = node.get_type(leaf) if current is None else None
    value = _parse_value(key, text, current, field_type)
    try:
      with node.ignore_type() if current is None and field_type is None else _nullcontext():
        node[leaf] = value
    except TypeError as e:
      raise ValueError(f"config override {item!r}: {e}") from None
  return config


class _nullcontext:
  def __enter__(self):
    return None

  def __exit__(self, *exc):
    return False


def _known(node: ml_collections.ConfigDict) -> str:
  return f"; known keys here: {', '.join(sorted(node.keys()))}" if isinstance(node, ml_collections.ConfigDict) else ""


def split_override_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.key=value` (or `--config.key value`) arguments from the others.

  Returns:
    (other arguments, overrides as `key=value` strings without the `--config.` prefix).
  """
  rest, overrides = [], []
  argv = list(argv)
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      if "=" in arg:
        overrides.append(arg[len("--config."):])
      elif i + 1 < len(argv):
        overrides.append(f"{arg[len('--config.'):]}={argv[i + 1]}")
        i += 1
      else:
        raise ValueError(f"config override {arg!r} has no value (use {arg}=VALUE)")
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def placeholder(kind: type) -> Any:
  """A typed `None` config field (overridable with a value of `kind` or None)."""
  return config_dict.placeholder(kind)


def to_dict(config: ml_collections.ConfigDict) -> dict:
  """Plain nested dict of a ConfigDict (tuples kept), e.g. for JSON."""
  return config.to_dict()


def to_json(config: ml_collections.ConfigDict) -> str:
  """The config as indented, key-sorted JSON text."""
  return json.dumps(to_dict(config), indent=2, sort_keys=True, default=str)


# ----------------------------------------------------------------------------------------------------------
# The experiment skeleton shared by `configs/*.py`.

# CIANet keyword arguments of the four networks of spec 0 (full size).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "cia18": dict(backbone_arch="resnet18", backbone_width=64, frozen_layers=(), clf_arch="r18", clf_dim=256,
                  num_iter=5, init_gauss_sigma=0.9, iou_dim=256, category_classification=True,
                  category_encoder=True, contrastive=True, instance_encoder=True, num_known_categories=70,
                  encoder_layers=3, encoder_heads=4, encoder_ffn=2048, encoder_dropout=0.1,
                  joint_backbone_batch=True),
}
MODEL_PRESETS["cia50"] = dict(MODEL_PRESETS["cia18"], backbone_arch="resnet50",
                              frozen_layers=("conv1", "layer1", "layer2"), clf_arch="r50", clf_dim=512,
                              init_gauss_sigma=0.25 / 6.0 * 22)
_DIMP_OFF = dict(category_classification=False, category_encoder=False, contrastive=False, instance_encoder=False,
                 joint_backbone_batch=False)
MODEL_PRESETS["dimp18"] = dict(MODEL_PRESETS["cia18"], **_DIMP_OFF)
MODEL_PRESETS["superdimp"] = dict(MODEL_PRESETS["cia50"], **_DIMP_OFF)

# Module switches of the paper's ablations (Table 1 rows, Table 2, Fig. 6). `loss.momentum` is the Fig. 6 switch.
_ALL_ON = dict(category_classification=True, category_encoder=True, contrastive=True, instance_encoder=True)
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
    "full": {"model": dict(_ALL_ON)},
    # Single switches.
    "no_category": {"model": dict(category_classification=False, category_encoder=False)},
    "no_contrastive": {"model": dict(contrastive=False)},
    "no_momentum": {"loss": dict(momentum=False)},
    # Table 2 "w/o known categories": no category labels, the dictionary is a learned random tree.
    "no_known_categories": {"model": dict(category_classification=False, num_known_categories=0)},
}

_TRAIN_SETS = {
    # entry name -> (reader format, split)
    "lasot": ("lasot", "train"),
    "got10k": ("got10k", "vottrain"),
    "trackingnet": ("trackingnet", "train"),
    "coco": ("coco", "train"),
}


def _dataset_entry(fmt: str, split: str, weight: float, **extra) -> ml_collections.ConfigDict:
  entry = ml_collections.ConfigDict({
      "format": fmt, "root": placeholder(str), "split": split, "weight": float(weight),
      "split_file": placeholder(str)})
  for k, v in extra.items():
    entry[k] = v
  return entry


def processing_fields(preset: str) -> ml_collections.ConfigDict:
  """Every `ProcessingConfig` field of a preset as a ConfigDict (None fields typed placeholders)."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  from cia_jax.data.processing import PROCESSING_PRESETS  # pylint: disable=g-import-not-at-top

  cfg = PROCESSING_PRESETS[preset]
  out = ml_collections.ConfigDict()
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    out[f.name] = placeholder(float) if value is None else value
  return out


def base_config(preset: str) -> ml_collections.ConfigDict:
  """The paper's training settings (spec 4.9 + Decisions) for 'cia18', 'cia50', 'dimp18' or 'superdimp'.

  Unlocked; `configs/*.py` adjust it, apply a variant and lock it.
  """
  if preset not in MODEL_PRESETS:
    raise ValueError(f"base_config: unknown preset {preset!r}; known: {sorted(MODEL_PRESETS)}")
  r50 = preset in ("cia50", "superdimp")
  c = ml_collections.ConfigDict()
  c.name = preset
  c.seed = 0  # model initialisation and the step's dropout stream
  c.init_checkpoint = placeholder(str)  # a variables checkpoint (`save_variables`) to start from

  c.model = ml_collections.ConfigDict(dict(MODEL_PRESETS[preset]))

  c.loss = ml_collections.ConfigDict()
  c.loss.weights = ml_collections.ConfigDict(dict(clf=1.0, iou=0.01 if r50 else 1.0, category=0.1,
                                                  contrastive=1.0))
  c.loss.iou_loss = "kl" if r50 else "mse"
  c.loss.infonce_form = "reference"  # Decisions 3; "paper" = Eq. 3
  c.loss.temperature = 0.07
  c.loss.momentum = True  # keys from the EMA encoder (False: paper Fig. 6 "w/o momentum")
  c.loss.ema_decay = 0.999
  c.loss.dropout = True  # category-encoder dropout in training

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rates = ml_collections.ConfigDict({
      "feature_extractor": 2e-5 if r50 else 2e-4, "upper_classifier": 2e-4, "filter_initializer": 5e-5,
      "filter_optimizer": 5e-4, "clf_feature_extractor": 5e-5, "bb_regressor": 1e-3})
  c.optim.lr_scale = 1.0  # multiplies every group (quick experiments)
  c.optim.epochs = 50
  # Decisions 5: CIA50 uses the paper's 2000 iterations (released config: 10, batch 20, decay step 60).
  c.optim.steps_per_epoch = 1000 if preset == "dimp18" else 2000
  c.optim.decay_every_epochs = 15  # 0 = constant
  c.optim.decay_factor = 0.2
  c.optim.total_steps = placeholder(int)  # None = epochs * steps_per_epoch

  c.data = ml_collections.ConfigDict()
  weights = (1.0, 1.0, 1.0, 1.0) if r50 else (0.25, 1.0, 1.0, 1.0)
  c.data.train = ml_collections.ConfigDict()
  for (name, (fmt, split)), w in zip(_TRAIN_SETS.items(), weights):
    extra = {"chunks": (0, 1, 2, 3)} if name == "trackingnet" else {}
    c.data.train[name] = _dataset_entry(fmt, split, w, **extra)
  c.data.batch_size = {"cia18": 64, "cia50": 64, "dimp18": 26, "superdimp": 20}[preset]  # global sequences
  c.data.seed = 0
  c.data.sampler = ml_collections.ConfigDict(dict(max_gap=200 if r50 else 30, num_train_frames=3,
                                                  num_test_frames=3, min_length=20))
  c.data.processing = processing_fields("cia50" if r50 else "cia18")
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
  c.val.enabled = True
  # root None = the root of the training entry with the same name.
  c.val.datasets = ml_collections.ConfigDict({"got10k": _dataset_entry("got10k", "votval", 1.0)})
  val_epochs = 20 if preset == "cia50" else 5
  c.val.every_steps = val_epochs * c.optim.steps_per_epoch
  val_samples = 10000 if preset == "cia50" else 5000
  c.val.num_batches = max(1, val_samples // c.data.batch_size)
  c.val.seed = 1  # a fixed validation sample set

  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=2000, keep=3, async_save=True))
  # Wall-clock budget of `train_and_evaluate` in minutes (0 = none): when it runs out the run checkpoints,
  # exports `model/` and returns, as at the last step (the quickstart's bounded training).
  c.time_limit_minutes = 0.0
  c.log_every_steps = 50
  return c


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
