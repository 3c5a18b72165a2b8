"""The training program: `train_and_evaluate(config, workdir)` and the `cia-jax train` subcommand.

What a run does (config layout: `configs/*.py`, `cia_jax.train.config_utils.base_config`):

* builds the training (and validation) datasets from `config.data.train` / `config.val.datasets` (a root
  left None is an error, unless `config.data.synthetic.enabled`: then synthetic sequences are generated into
  `<workdir>/synthetic/<entry>`), the `DiMPSampler` and the processing settings, and the `CIANet` of
  `config.model`;
* initialises the network (BatchNorm statistics at their initial 0 / 1), optionally loads the params of
  `config.init_checkpoint` (a variables checkpoint) where names match, builds the reference optimiser and the
  `TrainState`, and resumes from `<workdir>/checkpoints` when that holds a checkpoint (params, BN
  statistics, the EMA tree, optimiser state, step, rng; the input pipeline restarts at the checkpoint's step,
  so a resumed run replays exactly the samples of an uninterrupted one);
* runs the jitted step over a 1-D mesh of all devices (`jax.devices()`; over every host after
  `jax.distributed.initialize`); each host feeds its own shard of the global batch;
* every `config.log_every_steps` steps fetches the metrics of all steps since the last fetch and checks
  every loss term of every one of those steps for non-finite values (a `FloatingPointError` names the term
  and the step; the run stops without saving), then writes them to TensorBoard (`<workdir>`), to
  `<workdir>/metrics.jsonl` and to the console (tqdm bar with ETA) -- only on process 0;
* validates every `config.val.every_steps` steps on a fixed set of held-out samples (loss terms only, BN in
  eval mode, no dropout, no update);
* saves a checkpoint every `config.checkpoint.every_steps` steps and at the end (orbax, asynchronous, the
  last `config.checkpoint.keep` kept), on SIGTERM after the current step (then returns), and writes the
  network-only export `<workdir>/model` (`save_variables`) at the end of training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any, Iterator, Mapping

import numpy as np

_LOG = logging.getLogger(__name__)

# Scalars checked for finiteness, in the order they are reported (the specific term before the total).
LOSS_TERMS = ("clf", "clf_init", "clf_final", "iou", "category", "contrastive", "total", "grad_norm")
# Pipeline fields the step does not read.
_NON_STEP_FIELDS = ("sample_index", "skipped_images")


# ----------------------------------------------------------------------------------------------------------
# Config -> objects.


def step_settings(config) -> Any:
  """The `StepSettings` of a training config (loss weights and form, momentum, EMA, schedule for the metrics)."""
  from cia_jax.train.step import StepSettings  # pylint: disable=g-import-not-at-top

  weights = config.loss.weights
  return StepSettings(
      loss_weights=tuple((k, float(weights[k])) for k in ("clf", "iou", "category", "contrastive")),
      iou_loss=config.loss.iou_loss, infonce_form=config.loss.infonce_form,
      temperature=float(config.loss.temperature), momentum=bool(config.loss.momentum),
      ema_decay=float(config.loss.ema_decay), bn_train=True, dropout=bool(config.loss.dropout),
      learning_rates=tuple(sorted(learning_rates(config).items())),
      steps_per_epoch=int(config.optim.steps_per_epoch),
      decay_every_epochs=int(config.optim.decay_every_epochs) or None,
      decay_factor=float(config.optim.decay_factor))


def learning_rates(config) -> dict[str, float]:
  """Per-group learning rates of the config times `optim.lr_scale`."""
  scale = float(config.optim.lr_scale)
  return {k: float(v) * scale for k, v in config.optim.learning_rates.items()}


def total_steps(config) -> int:
  """`optim.total_steps`, or epochs x steps_per_epoch."""
  if config.optim.total_steps is not None:
    n = int(config.optim.total_steps)
  else:
    n = int(config.optim.epochs) * int(config.optim.steps_per_epoch)
  if n < 1:
    raise ValueError(f"config: the run must have >= 1 step (optim.total_steps / optim.epochs x "
                     f"optim.steps_per_epoch gave {n})")
  return n


def processing_config(config) -> Any:
  """`ProcessingConfig` from `config.data.processing`."""
  from cia_jax.data.processing import ProcessingConfig  # pylint: disable=g-import-not-at-top

  def freeze(v):  # lists from overrides / JSON -> the dataclass's (nested) tuples
    return tuple(freeze(x) for x in v) if isinstance(v, (list, tuple)) else v

  fields = {k: freeze(v) for k, v in config.data.processing.items()}
  try:
    return ProcessingConfig(**fields)
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.data.processing: {e}") from None


def sampler_config(config) -> Any:
  """`SamplerConfig` from `config.data.sampler`."""
  from cia_jax.data.sampler import SamplerConfig  # pylint: disable=g-import-not-at-top

  try:
    return SamplerConfig(**dict(config.data.sampler))
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.data.sampler: {e}") from None


def _synthetic_root(workdir: str, name: str, entry) -> str:
  return os.path.join(workdir, "synthetic", f"{name}_{entry.format}")


def _ensure_synthetic(config, workdir: str, name: str, entry, split: str) -> str:
  """Writes synthetic sequences for a dataset entry (once; process 0 only) and returns its root."""
  import jax  # pylint: disable=g-import-not-at-top

  from cia_jax.data import synthetic  # pylint: disable=g-import-not-at-top

  root = _synthetic_root(workdir, name, entry)
  marker = os.path.join(root, f".generated_{split}")
  if jax.process_index() == 0 and not os.path.isfile(marker):
    s = config.data.synthetic
    # Different seeds per split so validation sequences differ from the training ones.
    seed = int(s.seed) + (1000 if split in ("val", "votval", "test") else 0) + sum(map(ord, name))
    fmt_split = ("val" if split in ("val", "votval") else "train") if entry.format == "got10k" else "train"
    synthetic.generate(root, entry.format, int(s.num_sequences), int(s.num_frames), tuple(s.image_size), seed,
                       split=fmt_split)
    with open(marker, "w") as f:
      f.write("ok\n")
  _barrier("synthetic data")
  return root


def _barrier(name: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def _load_entry(config, workdir: str, group: str, name: str, entry, fallback_root: str | None = None):
  """The sequences of one dataset entry of the config (with a clear error for a missing root)."""
  from cia_jax.data.datasets import load_dataset  # pylint: disable=g-import-not-at-top

  if config.data.source not in ("folders", "tfds"):
    raise ValueError(f"config.data.source must be 'folders' or 'tfds', got {config.data.source!r}")
  if config.data.source == "tfds":
    if not config.data.tfds_data_dir:
      raise ValueError("config.data.source=tfds needs --config.data.tfds_data_dir=DIR (see cia-jax tfds-build)")
    from cia_jax.data.tfds import load_sequences  # pylint: disable=g-import-not-at-top

    kwargs = {k: entry[k] for k in ("split_file",) if entry.get(k)}
    if entry.get("chunks") is not None and entry.format == "trackingnet":
      kwargs["chunks"] = list(entry.chunks)
    try:
      return load_sequences(entry.format, entry.split, source="tfds", data_dir=config.data.tfds_data_dir,
                            shard_by_host=bool(config.data.tfds_shard_by_host), **kwargs)
    except (FileNotFoundError, ValueError) as e:
      raise type(e)(f"config.{group}.{name} ({entry.format} from TFDS at {config.data.tfds_data_dir}): {e}") from None
  root = entry.root or fallback_root
  split = entry.split
  generated = root is None
  if generated:
    if not config.data.synthetic.enabled:
      raise ValueError(f"config.{group}.{name}.root is not set: give the {entry.format} root with "
                       f"--config.{group}.{name}.root=PATH (or set --config.{group}.{name}.weight=0 to leave it "
                       f"out, or --config.data.synthetic.enabled=true for generated data)")
    root = _ensure_synthetic(config, workdir, name, entry, split)
    if entry.format == "got10k":  # generated GOT-10k has plain train/val folders, no vot split files
      split = "val" if split in ("val", "votval") else "train"
    elif entry.format == "lasot":  # generated LaSOT has no train/test split lists
      split = "all"
  kwargs = {}
  if entry.get("split_file"):
    kwargs["split_file"] = entry.split_file
  if entry.get("chunks") is not None and entry.format == "trackingnet":
    kwargs["chunks"] = list(entry.chunks)
  if entry.format == "got10k" and split in ("vottrain", "votval") and not entry.get("split_file"):
    raise ValueError(f"config.{group}.{name}: GOT-10k split {split!r} needs a split file: set "
                     f"--config.{group}.{name}.split_file=PATH (pytracking's got10k_vot_{split[3:]}_split.txt) "
                     f"or use --config.{group}.{name}.split=train")
  try:
    return load_dataset(entry.format, root, split=split, **kwargs)
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"config.{group}.{name} ({entry.format} at {root}): {e}") from None


def build_samplers(config, workdir: str):
  """(training sampler, validation sampler or None) from the config's dataset entries."""
  from cia_jax.data.sampler import DiMPSampler  # pylint: disable=g-import-not-at-top

  scfg = sampler_config(config)
  if not config.data.synthetic.enabled and config.data.source == "folders":  # name every missing root at once
    missing = [f"config.data.train.{n}.root" for n, e in config.data.train.items()
               if float(e.weight) > 0 and not e.root]
    if missing:
      raise ValueError(f"{', '.join(missing)} not set: give the dataset roots with --config.data.train.NAME.root=PATH "
                       f"(or leave a dataset out with --config.data.train.NAME.weight=0, or use "
                       f"--config.data.synthetic.enabled=true for generated data)")
  datasets, weights, roots = [], [], {}
  for name, entry in config.data.train.items():
    if float(entry.weight) <= 0:
      continue
    datasets.append(_load_entry(config, workdir, "data.train", name, entry))
    weights.append(float(entry.weight))
    roots[name] = entry.root
  if not datasets:
    raise ValueError("config.data.train: every dataset has weight 0")
  train = DiMPSampler(datasets, weights, scfg)
  val = None
  if config.val.enabled:
    vsets, vweights = [], []
    for name, entry in config.val.datasets.items():
      if float(entry.weight) <= 0:
        continue
      vsets.append(_load_entry(config, workdir, "val.datasets", name, entry, fallback_root=roots.get(name)))
      vweights.append(float(entry.weight))
    if vsets:
      val = DiMPSampler(vsets, vweights, scfg)
  return train, val


# ----------------------------------------------------------------------------------------------------------
# Model initialisation.


def init_variables(model, config, proc) -> dict:
  """`model.init` on a one-sequence dummy batch (BN statistics stay at their initial 0 / 1)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cia_jax.train.batch import random_batch  # pylint: disable=g-import-not-at-top

  s = config.data.sampler
  batch = random_batch(0, 1, int(proc.output_sz), num_train=int(s.num_train_frames),
                       num_test=int(s.num_test_frames), num_proposals=int(proc.proposals_per_frame),
                       proposal_mode=proc.proposal_mode, search_area_factor=float(proc.search_area_factor))
  fm = [jnp.swapaxes(jnp.asarray(batch[k]), 0, 1) for k in
        ("train_images", "test_images", "train_box_xywh", "test_box_xywh", "test_proposals_xywh")]
  key = jax.random.key(int(config.seed))
  rngs = {"params": key, "dropout": jax.random.fold_in(key, 1)}
  variables = _jitted_init(model)(rngs, *fm)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


# Jitted functions are reused across runs in one process (tests, sweeps): tracing the step takes seconds. The
# keys are hashable, immutable descriptions (Flax modules and StepSettings are frozen dataclasses).
_JIT_CACHE: dict = {}


def _memo(key, build):
  if key not in _JIT_CACHE:
    _JIT_CACHE[key] = build()
  return _JIT_CACHE[key]


def _jitted_init(model):
  import jax  # pylint: disable=g-import-not-at-top

  return _memo(("init", model), lambda: jax.jit(lambda r, *a: model.init(r, *a, train=False)))


def _optimizer(params, lrs: Mapping[str, float], config, frozen_layers):
  """The reference optimiser; the same object for the same settings and parameter tree (so a jitted step,
  whose state carries it as static data, is not re-traced)."""
  import jax  # pylint: disable=g-import-not-at-top

  from cia_jax.train.state import make_optimizer  # pylint: disable=g-import-not-at-top

  args = (int(config.optim.steps_per_epoch), int(config.optim.decay_every_epochs) or None,
          float(config.optim.decay_factor))
  key = ("tx", jax.tree.structure(params), tuple(sorted(lrs.items())), args, tuple(frozen_layers))
  return _memo(key, lambda: make_optimizer(params, lrs, *args, frozen_layers=tuple(frozen_layers)))


def load_init_checkpoint(variables: Mapping[str, Any], path: str) -> tuple[dict, dict]:
  """Copies the params/BN statistics of a variables checkpoint into `variables` where the names match.

  Returns (new variables, report {'loaded', 'missing', 'unexpected'} of '/'-joined names). Raises a
  ValueError listing every name whose shape differs, and when nothing matches at all.
  """
  import flax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cia_jax.checkpoints import load_variables  # pylint: disable=g-import-not-at-top

  loaded, _ = load_variables(path)
  out, report = {}, {"loaded": [], "missing": [], "unexpected": []}
  mismatched = []
  for col in ("params", "batch_stats"):
    mine = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables.get(col, {})), sep="/")
    theirs = flax.traverse_util.flatten_dict(flax.core.unfreeze(loaded.get(col, {})), sep="/")
    merged = {}
    for k, v in mine.items():
      if k in theirs:
        if tuple(np.shape(theirs[k])) != tuple(np.shape(v)):
          mismatched.append(f"{col}/{k}: model {tuple(np.shape(v))} vs checkpoint {tuple(np.shape(theirs[k]))}")
          continue
        merged[k] = jnp.asarray(theirs[k], dtype=v.dtype)
        report["loaded"].append(f"{col}/{k}")
      else:
        merged[k] = v
        report["missing"].append(f"{col}/{k}")
    report["unexpected"] += [f"{col}/{k}" for k in theirs if k not in mine]
    out[col] = flax.traverse_util.unflatten_dict(merged, sep="/")
  if mismatched:
    raise ValueError(f"init_checkpoint {path}: {len(mismatched)} shape mismatch(es):\n  " + "\n  ".join(mismatched))
  if not any(k.startswith("params/") for k in report["loaded"]):
    raise ValueError(f"init_checkpoint {path}: no parameter name matches the model "
                     f"(checkpoint has e.g. {report['unexpected'][:5]})")
  return out, report


# ----------------------------------------------------------------------------------------------------------
# Devices.


def _replicate(tree: Any, mesh) -> Any:
  """Host values (identical on every process) -> global arrays replicated over the mesh."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

  sharding = NamedSharding(mesh, P())

  def put(x):
    x = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(put, tree)


def _state_to_mesh(state, mesh):
  from cia_jax.train.checkpoint import state_to_tree, tree_to_state  # pylint: disable=g-import-not-at-top

  return tree_to_state(_replicate(state_to_tree(state), mesh), state)


def _global_batch(local: Mapping[str, np.ndarray], mesh) -> dict:
  """A host's `[D_local, B, ...]` pipeline batch -> global arrays `[G, ...]` sharded over the data axis."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

  from cia_jax.train.step import DATA_AXIS  # pylint: disable=g-import-not-at-top

  sharding = NamedSharding(mesh, P(DATA_AXIS))
  out = {}
  for k, v in local.items():
    if k in _NON_STEP_FIELDS:
      continue
    v = np.asarray(v)
    out[k] = jax.make_array_from_process_local_data(sharding, v.reshape(-1, *v.shape[2:]))
  return out


def _host_value(x) -> np.ndarray:
  """A (replicated) global array as a NumPy array on this host."""
  import jax  # pylint: disable=g-import-not-at-top

  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_data(0))
  return np.asarray(jax.device_get(x))


def make_eval_step(model, settings, mesh):
  """Jitted validation losses `(state, batch) -> metrics` (BN running statistics, no dropout, no update)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  from cia_jax.models.cia import CIANet  # pylint: disable=g-import-not-at-top
  from cia_jax.train.step import DATA_AXIS, compute_losses  # pylint: disable=g-import-not-at-top

  eval_settings = dataclasses.replace(settings, bn_train=False, dropout=False)

  def per_device(state, batch):
    keys = None
    if model.contrastive and settings.momentum:
      fm = lambda k: jax.numpy.swapaxes(batch[k], 0, 1)
      frames = jax.numpy.concatenate([fm("train_images"), fm("test_images")])
      boxes = jax.numpy.concatenate([fm("train_box_xywh"), fm("test_box_xywh")])
      keys = model.apply({"params": state.momentum_params, "batch_stats": state.momentum_batch_stats},
                         frames.reshape(-1, *frames.shape[2:]), boxes.reshape(-1, 4), train=False,
                         method=CIANet.key_embedding)
    total, (terms, _) = compute_losses(state.params, state.batch_stats, keys, batch, model, eval_settings,
                                       state.rng, axis_name=DATA_AXIS)
    return dict(terms, total=total)

  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                               out_specs=P()))


# ----------------------------------------------------------------------------------------------------------
# Logging.


class _Logger:
  """TensorBoard + metrics.jsonl + console, on process 0 only."""

  def __init__(self, workdir: str, total: int, initial: int, active: bool):
    self.active = active
    self.writer = None
    self.bar = None
    self.jsonl = None
    if not active:
      return
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    from cia_jax.data.pipeline import hide_gpus_from_tf  # pylint: disable=g-import-not-at-top

    hide_gpus_from_tf()
    self._tf = tf
    from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top

    self.writer = tf.summary.create_file_writer(workdir)
    self._metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)

  def scalars(self, step: int, prefix: str, values: Mapping[str, float]) -> None:
    if not self.active:
      return
    tf = self._tf
    with self.writer.as_default():
      for k, v in values.items():
        # `tf.summary.scalar` lives in the tensorboard package (not a dependency); this is the same record.
        tf.summary.write(f"{prefix}/{k}", tf.constant(float(v), tf.float32), step=step, metadata=self._metadata)
    self.writer.flush()
    self.jsonl.write(json.dumps({"step": step, "split": prefix, **{k: float(v) for k, v in values.items()}}) + "\n")
    self.jsonl.flush()

  def advance(self, n: int, postfix: Mapping[str, float] | None = None) -> None:
    if self.active:
      self.bar.update(n)
      if postfix:
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

  def write(self, text: str) -> None:
    if self.active:
      self.bar.write(text)

  def close(self) -> None:
    if self.active:
      self.bar.close()
      self.writer.close()
      self.jsonl.close()


def _check_finite(step: int, metrics: Mapping[str, float]) -> None:
  for k in LOSS_TERMS:
    if k in metrics and not np.isfinite(metrics[k]):
      raise FloatingPointError(f"non-finite loss term '{k}' = {metrics[k]} at step {step} (training stopped; "
                               f"no checkpoint written for this step). Other terms: "
                               + ", ".join(f"{n}={metrics[n]:.4g}" for n in LOSS_TERMS if n in metrics))


def _format(step: int, total: int, metrics: Mapping[str, float]) -> str:
  keys = [k for k in ("total", "clf", "iou", "category", "contrastive", "grad_norm", "steps_per_sec") if k in metrics]
  return f"step {step}/{total}: " + " ".join(f"{k} {metrics[k]:.4g}" for k in keys)


# ----------------------------------------------------------------------------------------------------------
# The run.


class _StopFlag:
  """Set by SIGTERM; the loop finishes its step, saves and returns."""

  def __init__(self):
    self.requested = False
    self._old = None

  def install(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no signal handling
      self._old = None
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def restore(self):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)

  def poll(self, deadline: float | None = None) -> tuple[bool, bool]:
    """(any process got SIGTERM, any process is past `deadline` (a `time.monotonic()` value; None = none)).

    One collective for both, so all processes stop at the same step.
    """
    import jax  # pylint: disable=g-import-not-at-top

    flags = np.asarray([self.requested, deadline is not None and time.monotonic() >= deadline], np.int32)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      flags = np.max(multihost_utils.process_allgather(flags), axis=0)
    return bool(flags[0]), bool(flags[1])


def train_and_evaluate(config, workdir: str):
  """Trains `config` in `workdir` (resuming from its latest checkpoint) -> the final `TrainState`.

  Args:
    config: a training ConfigDict (`configs/*.py`).
    workdir: output folder (created): `config.json`, `checkpoints/`, `model/` (the export, written when the
      last step is reached or `config.time_limit_minutes` (wall clock from the call, compilation included;
      0 = none) runs out), TensorBoard event files, `metrics.jsonl`, and `synthetic/` when data is generated.

  Returns:
    The `TrainState` after the last step run (the SIGTERM step when stopped early).

  Raises:
    ValueError / FileNotFoundError: bad config values or dataset paths (before anything is compiled).
    FloatingPointError: a non-finite loss term (checked on the host every `log_every_steps` steps, for
      every step since the previous check).
  """
  import jax  # pylint: disable=g-import-not-at-top

  from cia_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from cia_jax.data.pipeline import make_iterator  # pylint: disable=g-import-not-at-top
  from cia_jax.models.cia import build_model  # pylint: disable=g-import-not-at-top
  from cia_jax.train import checkpoint as ckpt  # pylint: disable=g-import-not-at-top
  from cia_jax.train.config_utils import to_dict  # pylint: disable=g-import-not-at-top
  from cia_jax.train.state import create_train_state, param_labels  # pylint: disable=g-import-not-at-top
  from cia_jax.train.step import data_mesh, make_train_step  # pylint: disable=g-import-not-at-top

  t_begin = time.monotonic()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  limit_min = float(config.get("time_limit_minutes") or 0.0)
  if limit_min < 0:
    raise ValueError(f"config.time_limit_minutes must be >= 0 (0 = no limit), got {limit_min}")
  deadline = t_begin + 60.0 * limit_min if limit_min else None
  num_steps = total_steps(config)
  global_batch = int(config.data.batch_size)
  num_devices = jax.device_count()
  if global_batch < 1 or global_batch % num_devices:
    raise ValueError(f"config.data.batch_size={global_batch} must be a positive multiple of the {num_devices} "
                     f"devices")
  for key in ("log_every_steps",):
    if int(config[key]) < 1:
      raise ValueError(f"config.{key} must be >= 1, got {config[key]}")
  if int(config.checkpoint.every_steps) < 1:
    raise ValueError(f"config.checkpoint.every_steps must be >= 1, got {config.checkpoint.every_steps}")
  if config.val.enabled and (int(config.val.every_steps) < 1 or int(config.val.num_batches) < 1):
    raise ValueError("config.val.every_steps and config.val.num_batches must be >= 1 (or val.enabled=false)")
  config_dict = to_dict(config)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config_dict, f, indent=2, sort_keys=True, default=str)

  proc = processing_config(config)
  settings = step_settings(config)
  try:
    model = build_model(config.model)
  except ValueError as e:
    raise ValueError(f"config.model: {e}") from None
  train_sampler, val_sampler = build_samplers(config, workdir)

  # Network, optimiser, state (host values, then replicated over the mesh).
  variables = init_variables(model, config, proc)
  if config.init_checkpoint:
    variables, report = load_init_checkpoint(variables, config.init_checkpoint)
    _LOG.info("init_checkpoint %s: loaded %d arrays, %d missing (kept initial): %s", config.init_checkpoint,
              len(report["loaded"]), len(report["missing"]), report["missing"][:20])
  used_groups = set(jax.tree.leaves(param_labels(variables["params"], tuple(model.frozen_layers))))
  lrs = learning_rates(config)
  tx = _optimizer(variables["params"], lrs, config, model.frozen_layers)
  settings = dataclasses.replace(settings, learning_rates=tuple((g, lr) for g, lr in sorted(lrs.items())
                                                                if g in used_groups))
  state = create_train_state(variables, tx, jax.random.key(int(config.seed)),
                             use_momentum_encoder=bool(model.contrastive and settings.momentum))
  mesh = data_mesh()
  state = _state_to_mesh(state, mesh)

  manager = ckpt.make_checkpoint_manager(os.path.join(workdir, checkpoints.CHECKPOINTS_DIR),
                                         keep=int(config.checkpoint.keep),
                                         async_save=bool(config.checkpoint.async_save))
  start_step = 0
  if manager.latest_step() is not None:
    try:
      state, meta = ckpt.restore_train_state(manager, state)
    except checkpoints.CheckpointMismatchError as e:
      raise ValueError(_restore_error(manager, config_dict, e)) from e
    start_step = int(_host_value(state.step))
    data_meta = meta.get("data", {})
    if data_meta.get("global_batch") not in (None, global_batch) or data_meta.get("seed") not in (
        None, int(config.data.seed)):
      _LOG.warning("resuming with a different data.batch_size/seed than the checkpoint's %s: the sample "
                   "stream will not replay the original run", data_meta)
    _LOG.info("resumed from %s at step %d", manager.directory, start_step)

  def meta_at(step: int) -> dict:
    return {"step": step, "config": config_dict,
            "data": {"seed": int(config.data.seed), "global_batch": global_batch, "next_step": step,
                     "next_sample_index": step * global_batch}}

  train_step = _memo(("train", model, settings, mesh), lambda: make_train_step(model, settings, mesh))
  eval_step = None
  if val_sampler is not None:
    eval_step = _memo(("eval", model, settings, mesh), lambda: make_eval_step(model, settings, mesh))
  seqs_per_device = global_batch // num_devices
  common = dict(seqs_per_device=seqs_per_device, num_local_devices=jax.local_device_count(),
                process_index=jax.process_index(), process_count=jax.process_count(),
                num_parallel_calls=config.data.num_parallel_calls, prefetch=int(config.data.prefetch))

  logger = _Logger(workdir, num_steps, start_step, is_main)
  stop = _StopFlag().install()
  step = start_step
  try:
    batches: Iterator = iter(())
    if step < num_steps:
      batches = make_iterator(train_sampler, proc, seed=int(config.data.seed), start_step=start_step,
                              num_batches=num_steps - start_step, **common)
    time_up = False
    pending: list[tuple[int, Any]] = []
    skipped = 0
    last_time, last_step = time.perf_counter(), step
    while step < num_steps:
      local = next(batches)
      skipped += int(np.sum(local["skipped_images"]))
      state, metrics = train_step(state, _global_batch(local, mesh))
      step += 1
      pending.append((step, metrics))
      stopping, time_up = stop.poll(deadline)
      if step % int(config.log_every_steps) == 0 or step == num_steps or stopping or time_up:
        fetched = [(s, {k: float(_host_value(v)) for k, v in m.items()}) for s, m in pending]
        pending = []
        for s, m in fetched:
          _check_finite(s, m)
        now = time.perf_counter()
        s, m = fetched[-1]
        m["steps_per_sec"] = (step - last_step) / max(now - last_time, 1e-9)
        m["skipped_images"] = float(skipped)
        last_time, last_step = now, step
        logger.scalars(s, "train", m)
        logger.advance(len(fetched), {"loss": m["total"]})
        logger.write(_format(s, num_steps, m))
      if eval_step is not None and (step % int(config.val.every_steps) == 0 or step == num_steps or time_up):
        vm = evaluate(eval_step, state, val_sampler, proc, config, mesh, common)
        logger.scalars(step, "val", vm)
        logger.write("  val: " + " ".join(f"{k} {v:.4g}" for k, v in vm.items()))
      if step % int(config.checkpoint.every_steps) == 0 or step == num_steps or stopping or time_up:
        ckpt.save_train_state(manager, state, meta_at(step))
      if stopping:
        logger.write(f"SIGTERM: stopped after step {step}, checkpoint saved")
        break
      if time_up and step < num_steps:
        logger.write(f"time limit of {limit_min:g} min reached after step {step}: checkpoint saved, exporting")
        break
    manager.wait_until_finished()
    if (step >= num_steps or time_up) and not stop.requested:
      export = {"params": jax.tree.map(_host_value, state.params),
                "batch_stats": jax.tree.map(_host_value, state.batch_stats)}
      checkpoints.save_variables(os.path.join(workdir, checkpoints.EXPORT_DIR), export,
                                 {"model": to_dict(config.model), "config": config_dict, "step": step})
  finally:
    stop.restore()
    logger.close()
    manager.wait_until_finished()
    manager.close()
  return state


def _restore_error(manager, config_dict: Mapping[str, Any], error: Exception) -> str:
  """Why a checkpoint does not fit this run: the model/loss settings that differ, when the meta says so."""
  step = manager.latest_step()
  meta_file = os.path.join(str(manager.directory), str(step), "meta", "metadata")
  diffs = []
  try:
    with open(meta_file) as f:
      saved = json.load(f).get("config", {})
    for group in ("model", "loss"):
      for k in sorted(set(saved.get(group, {})) | set(config_dict.get(group, {}))):
        a, b = saved.get(group, {}).get(k), config_dict.get(group, {}).get(k)
        if json.dumps(a, default=str) != json.dumps(b, default=str):
          diffs.append(f"{group}.{k}: checkpoint {a!r}, config {b!r}")
  except (OSError, ValueError):
    pass
  what = ("; ".join(diffs)) if diffs else f"{type(error).__name__}: {str(error)[:500]}"
  return (f"cannot resume from {manager.directory}/{step}: the checkpoint does not match this config ({what}). "
          f"Use a new --workdir, or the checkpoint's settings.")


def evaluate(eval_step, state, sampler, proc, config, mesh, common) -> dict[str, float]:
  """Mean validation losses over `config.val.num_batches` fixed batches (seed `config.val.seed`)."""
  from cia_jax.data.pipeline import make_iterator  # pylint: disable=g-import-not-at-top

  sums: dict[str, float] = {}
  n = 0
  for local in make_iterator(sampler, proc, seed=int(config.val.seed), start_step=0,
                             num_batches=int(config.val.num_batches), **common):
    m = eval_step(state, _global_batch(local, mesh))
    for k, v in m.items():
      sums[k] = sums.get(k, 0.0) + float(_host_value(v))
    n += 1
  return {k: v / max(n, 1) for k, v in sums.items()}


# ----------------------------------------------------------------------------------------------------------
# Multi-host and the CLI.


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, auto: bool = False) -> bool:
  """Calls `jax.distributed.initialize` when asked (flags, or env `CIA_JAX_COORDINATOR_ADDRESS`,
  `CIA_JAX_NUM_PROCESSES`, `CIA_JAX_PROCESS_ID`); `auto` = let JAX detect the cluster (TPU pods, SLURM).

  Must run before any other JAX call. Returns True when it initialised.
  """
  coordinator_address = coordinator_address or os.environ.get("CIA_JAX_COORDINATOR_ADDRESS")
  if num_processes is None and os.environ.get("CIA_JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["CIA_JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("CIA_JAX_PROCESS_ID"):
    process_id = int(os.environ["CIA_JAX_PROCESS_ID"])
  if not (auto or coordinator_address):
    if num_processes not in (None, 1) or process_id not in (None, 0):
      raise ValueError("--num-processes/--process-id need --coordinator-address (or --distributed)")
    return False
  import jax  # pylint: disable=g-import-not-at-top

  if coordinator_address and (num_processes is None or process_id is None):
    raise ValueError("--coordinator-address needs --num-processes and --process-id")
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"--process-id must be in [0, {num_processes}), got {process_id}")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax train` (`--config.KEY=VALUE` overrides are collected separately)."""
  from cia_jax.train.config_utils import split_override_args  # pylint: disable=g-import-not-at-top

  parser.add_argument("--config", required=True, help="config file, e.g. configs/cia18.py or configs/cia18.py:cl")
  parser.add_argument("--workdir", required=True, help="output folder (checkpoints, logs, export); resumed if it "
                      "holds a checkpoint")
  parser.add_argument("--coordinator-address", default=None, help="multi-host: HOST:PORT of process 0")
  parser.add_argument("--num-processes", type=int, default=None, help="multi-host: number of processes")
  parser.add_argument("--process-id", type=int, default=None, help="multi-host: this process (0-based)")
  parser.add_argument("--distributed", action="store_true",
                      help="multi-host: jax.distributed.initialize() with cluster auto-detection (TPU pods)")
  parser.epilog = "Any config value: --config.KEY=VALUE (e.g. --config.optim.epochs=2)."

  # argparse has no wildcard options: take the `--config.*` overrides out before it parses.
  original = parser.parse_known_args

  def parse_known_args(args=None, namespace=None):
    import sys  # pylint: disable=g-import-not-at-top
    args = sys.argv[1:] if args is None else list(args)
    try:
      rest, overrides = split_override_args(args)
    except ValueError as e:
      parser.error(str(e))
    ns, extra = original(rest, namespace)
    ns.config_overrides = list(getattr(ns, "config_overrides", None) or []) + overrides
    return ns, extra

  parser.parse_known_args = parse_known_args


def run(args) -> int:
  """Runs `cia-jax train`: parses the config and overrides, then `train_and_evaluate`."""
  from cia_jax.train.config_utils import apply_overrides, load_config  # pylint: disable=g-import-not-at-top

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "jax._src.xla_bridge"):  # orbax logs every save step at INFO
    logging.getLogger(noisy).setLevel(logging.WARNING)
  try:
    config = load_config(args.config)
    apply_overrides(config, getattr(args, "config_overrides", []))
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id, args.distributed)
    train_and_evaluate(config, args.workdir)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    print(f"cia-jax train: error: {e}", flush=True)
    return 2 if not isinstance(e, FloatingPointError) else 3
  return 0


def main(argv: list[str] | None = None) -> int:
  """`python -m cia_jax.train.loop ...` (same flags as `cia-jax train`)."""
  parser = argparse.ArgumentParser(prog="cia-jax train")
  add_arguments(parser)
  return run(parser.parse_args(argv))


if __name__ == "__main__":
  raise SystemExit(main())
