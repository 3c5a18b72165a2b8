"""The training program: `train_and_evaluate(config, workdir)`.

What a run does (config layout: `configs/*.py`, `cia_jax.config_lib`), phase by phase:

* setup: checks the run settings, writes `<workdir>/config.json`, builds the `CIANet` of `config.model`, the
  training (and validation) samplers (`inputs.build_samplers`: benchmark folders, TFDS data or generated
  synthetic sequences) and the processing settings;
* initial state: the network's random variables (optionally the params of `config.init_checkpoint` where
  names match), the reference optimiser and the `TrainState`, replicated over a 1-D mesh of all devices
  (`jax.devices()`; over every host after `jax.distributed.initialize`);
* resume: from the newest checkpoint in `<workdir>/checkpoints` when there is one (params, BN statistics, the
  EMA tree, optimiser state, step, rng; the input pipeline restarts at the checkpoint's step, so a resumed run
  replays exactly the samples of an uninterrupted one);
* steps: the jitted step; each host feeds its own shard of the global batch. Every `config.log_every_steps`
  steps the metrics of all steps since the last fetch are checked for non-finite loss terms (a
  `FloatingPointError` names the term and the step; the run stops without saving) and written to TensorBoard,
  `<workdir>/metrics.jsonl` and the console (`logging.MetricsLogger`, process 0 only); every
  `config.val.every_steps` steps the validation losses of a fixed sample set (BN in eval mode, no dropout, no
  update); optionally (`config.val.tracking`, `track_eval`) the tracking AUC of a few validation sequences with
  the current weights (process 0); every `config.checkpoint.every_steps` steps and at the end a checkpoint
  (orbax, asynchronous, the last `config.checkpoint.keep` kept);
* stop: at the last step, when `config.time_limit_minutes` runs out, or on SIGTERM (the handler is installed
  first thing, so a SIGTERM during setup stops the run before its first step; later ones after the current
  step, with a checkpoint);
* export: the network-only `<workdir>/model` (`save_variables`) when the last step is reached or the time ran
  out.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any, Mapping

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from cia_jax import checkpoints
from cia_jax.data.processing import ProcessingConfig
from cia_jax.data.sampler import DiMPSampler
from cia_jax.models.cia import CIANet, build_model
from cia_jax.train import checkpoint as ckpt
from cia_jax.train import init, inputs, track_eval
from cia_jax.train.logging import MetricsLogger, check_finite, format_metrics
from cia_jax.train.state import TrainState, learning_rate_schedules
from cia_jax.train.step import (StepSettings, data_mesh, host_value, make_eval_step, make_train_step, replicate,
                                shard_batch, uses_key_encoder)

_LOG = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Config -> run settings.


def step_settings(config) -> StepSettings:
  """The `StepSettings` of a training config (loss weights and form, momentum, EMA)."""
  weights = config.loss.weights
  return StepSettings(
      loss_weights=tuple((k, float(weights[k])) for k in ("clf", "iou", "category", "contrastive")),
      iou_loss=config.loss.iou_loss, infonce_form=config.loss.infonce_form,
      temperature=float(config.loss.temperature), momentum=bool(config.loss.momentum),
      ema_decay=float(config.loss.ema_decay), bn_train=True, dropout=bool(config.loss.dropout))


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


def check_run_settings(config) -> None:
  """ValueError naming the key for run settings that cannot work (before anything is built)."""
  if float(config.get("time_limit_minutes") or 0.0) < 0:
    raise ValueError(f"config.time_limit_minutes must be >= 0 (0 = no limit), got {config.time_limit_minutes}")
  global_batch, num_devices = int(config.data.batch_size), jax.device_count()
  if global_batch < 1 or global_batch % num_devices:
    raise ValueError(f"config.data.batch_size={global_batch} must be a positive multiple of the {num_devices} "
                     f"devices")
  if int(config.log_every_steps) < 1:
    raise ValueError(f"config.log_every_steps must be >= 1, got {config.log_every_steps}")
  if int(config.checkpoint.every_steps) < 1:
    raise ValueError(f"config.checkpoint.every_steps must be >= 1, got {config.checkpoint.every_steps}")
  if config.val.enabled and (int(config.val.every_steps) < 1 or int(config.val.num_batches) < 1):
    raise ValueError("config.val.every_steps and config.val.num_batches must be >= 1 (or val.enabled=false)")


@dataclasses.dataclass(frozen=True)
class Run:
  """What the phases of `train_and_evaluate` share (built once by `setup`).

  Attributes:
    config: the training ConfigDict; `config_dict` its plain-dict form (config.json, checkpoint meta).
    workdir: absolute output folder.
    num_steps: the last step; `deadline` the `time.monotonic()` at which the time limit ends (None = none).
    net, settings, proc: the network, the step's settings, the crop processing.
    train_sampler, val_sampler: the samplers (val None: no validation).
    mesh: the 1-D device mesh.
    track_check: the tracking-accuracy check (`track_eval`; None: off).
  """

  config: Any
  config_dict: dict
  workdir: str
  num_steps: int
  deadline: float | None
  net: CIANet
  settings: StepSettings
  proc: ProcessingConfig
  train_sampler: DiMPSampler
  val_sampler: DiMPSampler | None
  mesh: Mesh
  track_check: track_eval.TrackingValidation | None = None


def setup(config, workdir: str, t_begin: float) -> Run:
  """Checks the config, writes `config.json` (process 0), builds the network and the inputs."""
  check_run_settings(config)
  num_steps = total_steps(config)
  limit_min = float(config.get("time_limit_minutes") or 0.0)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  config_dict = config.to_dict()
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config_dict, f, indent=2, sort_keys=True, default=str)
  proc = inputs.processing_config(config)
  settings = step_settings(config)
  try:
    net = build_model(config.model)
  except ValueError as e:
    raise ValueError(f"config.model: {e}") from None
  train_sampler, val_sampler = inputs.build_samplers(config, workdir)
  track_check = track_eval.build(config, workdir)
  return Run(config=config, config_dict=config_dict, workdir=workdir, num_steps=num_steps,
             deadline=t_begin + 60.0 * limit_min if limit_min else None, net=net, settings=settings, proc=proc,
             train_sampler=train_sampler, val_sampler=val_sampler, mesh=data_mesh(), track_check=track_check)


# ----------------------------------------------------------------------------------------------------------
# Resume.


def resume(manager, state: TrainState, config_dict: Mapping[str, Any],
           groups: tuple[str, ...] = ("model", "loss")) -> tuple[TrainState, int]:
  """(the state restored from the newest checkpoint of `manager`, its step), or (`state`, 0) when there is none.

  A damaged newest step is set aside by `restore_train_state` and an older intact one is used. `config_dict` is
  the run's config (`config.to_dict()`); `groups` its sections whose differences explain a mismatch.

  Raises:
    ValueError: the checkpoint does not fit this run (`_restore_error` says which settings of `groups` differ).
    DamagedCheckpointError: no intact checkpoint (its message names the damaged files).
  """
  if manager.latest_step() is None:
    return state, 0
  try:
    state, meta = ckpt.restore_train_state(manager, state)
  except checkpoints.CheckpointMismatchError as e:
    raise ValueError(_restore_error(manager, config_dict, e, groups)) from e
  start_step = int(host_value(state.step))
  data_meta, data = meta.get("data", {}), config_dict.get("data", {})
  if data_meta.get("global_batch") not in (None, int(data["batch_size"])) or data_meta.get("seed") not in (
      None, int(data["seed"])):
    _LOG.warning("resuming with a different data.batch_size/seed than the checkpoint's %s: the sample "
                 "stream will not replay the original run", data_meta)
  _LOG.info("resumed from %s at step %d", manager.directory, start_step)
  return state, start_step


def _restore_error(manager, config_dict: Mapping[str, Any], error: Exception, groups: tuple[str, ...]) -> str:
  """Why a checkpoint does not fit this run: the settings of `groups` that differ, when the meta says so."""
  step = manager.latest_step()
  meta_file = os.path.join(str(manager.directory), str(step), "meta", "metadata")
  diffs = []
  try:
    with open(meta_file) as f:
      saved = json.load(f).get("config", {})
    for group in groups:
      for k in sorted(set(saved.get(group, {})) | set(config_dict.get(group, {}))):
        a, b = saved.get(group, {}).get(k), config_dict.get(group, {}).get(k)
        if json.dumps(a, default=str) != json.dumps(b, default=str):
          diffs.append(f"{group}.{k}: checkpoint {a!r}, config {b!r}")
  except (OSError, ValueError):
    pass
  what = ("; ".join(diffs)) if diffs else f"{type(error).__name__}: {str(error)[:500]}"
  return (f"cannot resume from {manager.directory}/{step}: the checkpoint does not match this config ({what}). "
          f"Use a new --workdir, or the checkpoint's settings.")


def checkpoint_meta(config_dict: Mapping[str, Any], step: int) -> dict:
  """The JSON saved with the checkpoint of `step`: the config (`config.to_dict()`) and where the sample stream
  continues (sample streams are functions of the step, so the step is the data position)."""
  global_batch = int(config_dict["data"]["batch_size"])
  return {"step": step, "config": dict(config_dict),
          "data": {"seed": int(config_dict["data"]["seed"]), "global_batch": global_batch, "next_step": step,
                   "next_sample_index": step * global_batch}}


# ----------------------------------------------------------------------------------------------------------
# SIGTERM.


class StopFlag:
  """Set by SIGTERM; the run finishes its step (or its setup), saves and returns."""

  def __init__(self):
    self.requested = False
    self._old = None

  def install(self) -> "StopFlag":
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no signal handling
      self._old = None
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def restore(self) -> None:
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)

  def poll(self, deadline: float | None = None) -> tuple[bool, bool]:
    """(any process got SIGTERM, any process is past `deadline` (a `time.monotonic()` value; None = none)).

    One collective for both, so all processes stop at the same step.
    """
    flags = np.asarray([self.requested, deadline is not None and time.monotonic() >= deadline], np.int32)
    if jax.process_count() > 1:
      flags = np.max(multihost_utils.process_allgather(flags), axis=0)
    return bool(flags[0]), bool(flags[1])


# ----------------------------------------------------------------------------------------------------------
# Steps, validation, logging.


def evaluate(eval_step, state: TrainState, run: Run) -> dict[str, float]:
  """Mean validation losses over `config.val.num_batches` fixed batches (seed `config.val.seed`)."""
  sums: dict[str, float] = {}
  n = 0
  for fields, _ in inputs.batches(run.val_sampler, run.proc, run.config, seed=int(run.config.val.seed),
                                  start_step=0, num_batches=int(run.config.val.num_batches)):
    for k, v in eval_step(state, shard_batch(fields, run.mesh)).items():
      sums[k] = sums.get(k, 0.0) + float(host_value(v))
    n += 1
  return {k: v / max(n, 1) for k, v in sums.items()}


def _first_step(train_step, state: TrainState, batch: dict, logger: MetricsLogger):
  """The run's first step, with a console line when its compilation (minutes on a CPU) starts and ends."""
  logger.write("compiling the train step ...")
  t0 = time.perf_counter()
  state, metrics = train_step(state, batch)
  jax.block_until_ready(metrics)
  logger.write(f"compiling the train step ... done in {time.perf_counter() - t0:.1f} s (first step included)")
  return state, metrics


class _StepLog:
  """Fetches, checks and logs the metrics of the steps since the last log (one device->host sync per log)."""

  def __init__(self, run: Run, logger: MetricsLogger, lrs: Mapping[str, float], start_step: int):
    cfg = run.config.optim
    self.run, self.logger = run, logger
    self.schedules = learning_rate_schedules(lrs, int(cfg.steps_per_epoch), int(cfg.decay_every_epochs) or None,
                                             float(cfg.decay_factor))
    self.pending: list[tuple[int, Any]] = []
    self.skipped = 0
    self.since = (time.perf_counter(), start_step)

  def flush(self, step: int) -> None:
    fetched = [(s, {k: float(host_value(v)) for k, v in m.items()}) for s, m in self.pending]
    self.pending = []
    for s, m in fetched:
      check_finite(s, m)
    now = time.perf_counter()
    s, m = fetched[-1]
    m.update({f"lr/{g}": float(f(s - 1)) for g, f in self.schedules.items()})  # the rate step s applied
    m["steps_per_sec"] = (step - self.since[1]) / max(now - self.since[0], 1e-9)
    m["skipped_images"] = float(self.skipped)
    self.since = (now, step)
    self.logger.scalars(s, "train", m)
    self.logger.progress(s, m)
    self.logger.write(format_metrics(s, self.run.num_steps, m))


def _track_check(run: Run, state: TrainState, step: int, logger: MetricsLogger) -> None:
  """The tracking-accuracy check after `step` (process 0): `val/track_*` scalars and one console line."""
  tm = track_eval.run_check(run.track_check, run.net, state)
  if tm is not None:
    logger.scalars(step, "val", tm)
    logger.write(f"  val tracking: auc {tm['track_auc']:.4f} precision {tm['track_precision']:.4f} "
                 f"({int(tm['track_sequences'])} sequences, {int(tm['track_frames'])} frames, "
                 f"{tm['track_seconds']:.1f} s)")


def train_steps(run: Run, state: TrainState, tx: optax.GradientTransformation, start_step: int, manager,
                stop: StopFlag, logger: MetricsLogger) -> tuple[TrainState, int, bool]:
  """Steps `start_step + 1 ...` until the last step, the time limit or SIGTERM -> (state, step, time ran out)."""
  cfg = run.config
  train_step = make_train_step(run.net, run.settings, tx, run.mesh)
  eval_step = make_eval_step(run.net, run.settings, run.mesh) if run.val_sampler is not None else None
  log = _StepLog(run, logger, init.used_learning_rates(cfg, state.params, run.net.frozen_layers), start_step)
  step, time_up = start_step, False
  batches = inputs.batches(run.train_sampler, run.proc, cfg, seed=int(cfg.data.seed), start_step=start_step,
                           num_batches=run.num_steps - start_step)
  for fields, skipped in batches:
    log.skipped += skipped
    batch = shard_batch(fields, run.mesh)
    if step == start_step:
      state, metrics = _first_step(train_step, state, batch, logger)
    else:
      state, metrics = train_step(state, batch)
    step += 1
    log.pending.append((step, metrics))
    stopping, time_up = stop.poll(run.deadline)
    last = step == run.num_steps
    if step % int(cfg.log_every_steps) == 0 or last or stopping or time_up:
      log.flush(step)
    if eval_step is not None and (step % int(cfg.val.every_steps) == 0 or last or time_up):
      vm = evaluate(eval_step, state, run)
      logger.scalars(step, "val", vm)
      logger.write("  val: " + " ".join(f"{k} {v:.4g}" for k, v in vm.items()))
    if track_eval.is_due(run.track_check, step, last or time_up):
      _track_check(run, state, step, logger)
    if step % int(cfg.checkpoint.every_steps) == 0 or last or stopping or time_up:
      ckpt.save_train_state(manager, state, checkpoint_meta(run.config_dict, step))
    if stopping:
      logger.write(f"SIGTERM: stopped after step {step}, checkpoint saved")
      break
    if time_up and not last:
      logger.write(f"time limit of {float(cfg.time_limit_minutes):g} min reached after step {step}: checkpoint "
                   f"saved, exporting")
      break
  return state, step, time_up


def export(run: Run, state: TrainState, step: int) -> None:
  """Writes the network-only `<workdir>/model` (params and BN statistics, the model config, the step)."""
  variables = {"params": jax.tree.map(host_value, state.params),
               "batch_stats": jax.tree.map(host_value, state.batch_stats)}
  checkpoints.save_variables(os.path.join(run.workdir, checkpoints.EXPORT_DIR), variables,
                             {"model": run.config.model.to_dict(), "config": run.config_dict, "step": step})


# ----------------------------------------------------------------------------------------------------------
# The run.


def train_and_evaluate(config, workdir: str) -> TrainState:
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
  t_begin = time.monotonic()
  stop = StopFlag().install()
  manager = logger = None
  try:
    run = setup(config, workdir, t_begin)
    state, tx = init.initial_state(config, run.net, uses_key_encoder(run.net, run.settings))
    state = replicate(state, run.mesh)
    manager = ckpt.make_checkpoint_manager(os.path.join(run.workdir, checkpoints.CHECKPOINTS_DIR),
                                           keep=int(config.checkpoint.keep),
                                           async_save=bool(config.checkpoint.async_save))
    state, start_step = resume(manager, state, run.config_dict)
    budget = 60.0 * float(config.time_limit_minutes) if run.deadline is not None else None
    logger = MetricsLogger(run.workdir, run.num_steps, start_step, jax.process_index() == 0, budget, t_begin)
    if stop.poll()[0]:
      logger.write(f"SIGTERM before step {start_step + 1}: stopped, nothing new to save")
      return state
    step, time_up = start_step, False
    if start_step < run.num_steps:
      state, step, time_up = train_steps(run, state, tx, start_step, manager, stop, logger)
    manager.wait_until_finished()
    if (step >= run.num_steps or time_up) and not stop.requested:
      export(run, state, step)
    return state
  finally:
    stop.restore()
    if logger is not None:
      logger.close()
    if manager is not None:
      manager.wait_until_finished()
      manager.close()


# ----------------------------------------------------------------------------------------------------------
# Multi-host.


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
  if coordinator_address and (num_processes is None or process_id is None):
    raise ValueError("--coordinator-address needs --num-processes and --process-id")
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"--process-id must be in [0, {num_processes}), got {process_id}")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  return True
