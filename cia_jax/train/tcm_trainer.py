"""Training KeepTrack's association network (keeptrack.md §5, §8.2): `train_tcm(config, workdir)`.

`cia-jax train --config configs/keeptrack.py` comes here (the config's `task` is 'keeptrack'). A run:

* base network: the base tracker's network (`config.base.checkpoint`, a training workdir or converted
  checkpoint; or random weights of `config.base.network` with `config.base.random_weights`, CI only). It is
  frozen and runs in eval mode; only its layer3 is used (`cia_jax.track.tracker.extract_features`);
* data: a candidate dump (`config.data.dump`, from `cia-jax tcm-dump`) and the benchmark holding its frames
  (`config.data.dataset`); with `config.data.synthetic` both are generated into `<workdir>/synthetic`
  (`cia_jax.data.candidate_matching.synthetic_dump`). Samples: `draw_sample` (self_sup / partial_sup); sample i
  of step s draws from the NumPy stream `[data.seed, s, i]`, so the data position is the step;
* network: `TargetCandidateMatchingNet(**config.tcm)` trained with BatchNorm in train mode, the loss of
  `cia_jax.tcm.loss` (keeptrack.md §5.4), Adam with a step decay per epoch (keeptrack.md §5.5);
* devices: data parallel over a 1-D mesh of the local devices (`cia_jax.train.step.data_mesh`): the state is
  replicated, every field of the global batch (crops included) split along the batch axis, and the step is
  written for the global batch (jit with shardings, no shard_map), so the loss, the gradient mean and the
  matcher's BatchNorm batch statistics are those of the whole batch: N devices compute what one device
  computes (up to float32 summation order). `data.batch_size` must be a multiple of the device count;
* state and resume: a `cia_jax.train.state.TrainState` (params, BN statistics, Adam state, step; no momentum
  encoder) checkpointed with orbax every `config.checkpoint.every_steps` steps, at the end and on SIGTERM
  (`cia_jax.train.checkpoint`: `<workdir>/checkpoints/<step>`, the last `checkpoint.keep` kept). A rerun in the
  same workdir continues from the newest intact step (a damaged one is set aside, `trainer.resume`) and replays
  exactly the batches of an uninterrupted run; `metrics.jsonl` keeps the lines up to that step;
* stop: at the last step, or on SIGTERM after the current step (`trainer.StopFlag`), with a checkpoint;
* output: `<workdir>/model`, an association-net checkpoint (`cia_jax.tcm.weights`; `attach_tcm` puts it on a
  tracking model), written with every checkpoint except the SIGTERM one, with `keypoint_center='tracker'` (the
  convention of the released tracker, keeptrack.md §7.1); `<workdir>/metrics.jsonl`.

Validation (BN in eval mode, every `config.val.every_steps` steps and at the last step; extra lines of
metrics.jsonl): the real-candidate pairs of `config.val.pair_states` (the reference's val_HH / val_HK) and, with
`config.val.self_sup.enabled`, `val.self_sup.num_samples` self_sup samples of the frame states
`val.self_sup.frame_states` (the reference's val_self_sup loader: G / H / J / K at 0.2 / 0.4 / 0.2 / 0.2, the
training augmentation), drawn from the fixed streams `[val.self_sup.seed, i]`, so every validation sees the
same samples.

Not done (yet): multi-host training (one process only), the reference's train-mode BatchNorm statistics in the
frozen layer3 (keeptrack.md §5.5; here the base network is in eval mode).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import time
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cia_jax import checkpoints
from cia_jax.data import frames
from cia_jax.data.synthetic import generate
from cia_jax.data.candidate_matching import (CandidateDataset, MatchingSamplerConfig, collate, draw_sample,
                                             real_candidates_sample, synthetic_dump)
from cia_jax.models.cia import build_model, init_variables
from cia_jax.models.presets import model_kwargs
from cia_jax.models.tcm import CandidateSet
from cia_jax.tcm import dump as tcm_dump
from cia_jax.tcm.loss import match_precision, match_recall, matching_loss
from cia_jax.tcm.weights import build_tcm_net, save_tcm
from cia_jax.train import checkpoint as ckpt
from cia_jax.train.state import TrainState, create_train_state
from cia_jax.train.step import DATA_AXIS, data_mesh, host_value, replicate, shard_batch
from cia_jax.train.trainer import StopFlag, checkpoint_meta, resume
from cia_jax.track import runner, tracker
from cia_jax.track.keeptrack import init_tcm_variables

_LOG = logging.getLogger(__name__)
TASK = "keeptrack"


def base_model(config) -> tracker.TrackingModel:
  """The frozen base network of `config.base`."""
  base = config.base
  if base.checkpoint:
    net, variables, _ = checkpoints.load_for_tracking(base.checkpoint)
    return tracker.TrackingModel(net=net, variables=variables)
  if not base.random_weights:
    raise ValueError("config.base.checkpoint is not set: give the base network (or base.random_weights=true for "
                     "smoke tests)")
  net = build_model(model_kwargs(base.network, **dict(base.model_overrides)))
  return tracker.TrackingModel(net=net, variables=init_variables(net, jax.random.key(int(config.data.seed))))


def sampler_config(config) -> MatchingSamplerConfig:
  """`MatchingSamplerConfig` of `config.data.sampler` (lists as tuples)."""
  fields = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in config.data.sampler.items()}
  return MatchingSamplerConfig(**fields)


def training_data(config, workdir: str) -> CandidateDataset:
  """The dump and its sequences (generated under `<workdir>/synthetic` with `config.data.synthetic`)."""
  data = config.data
  if data.synthetic:
    root = os.path.join(workdir, "synthetic")
    if not os.path.isdir(root):
      generate(root, "folder", num_sequences=int(data.synthetic_sequences), num_frames=int(data.synthetic_frames),
               image_size=(160, 120), seed=int(data.seed))
    seqs, _ = runner.load_benchmark("folder", root)
    sc = data.sampler
    dumped = synthetic_dump(seqs, np.random.default_rng(int(data.seed)), float(data.synthetic_search_area_scale),
                            int(sc.score_size))
    return CandidateDataset(dumped, seqs)
  if not data.dump:
    raise ValueError("config.data.dump is not set: the candidate dump of `cia-jax tcm-dump` (or data.synthetic=true)")
  dumped = tcm_dump.read_dump(data.dump)
  if not dumped:
    raise FileNotFoundError(f"config.data.dump: no candidate dump at {data.dump}")
  seqs, _ = runner.load_benchmark(data.dataset, data.root, data.split)
  found = CandidateDataset(dumped, seqs)
  if not found.sequences:
    raise ValueError(f"config.data: none of the {len(dumped)} sequences of {data.dump} is in {data.dataset} "
                     f"{data.root}")
  return found


def make_layer3_fn():
  """jit(model, crops [B, P, P, 3] 0..255) -> layer3 `[B, P/16, P/16, C3]` of the frozen base network (sharded
  like `crops`)."""
  return jax.jit(lambda model, crops: jax.lax.stop_gradient(tracker.extract_features(model, crops)[1]))


def _candidate_set(batch, f: int) -> CandidateSet:
  scores = batch[f"scores{f}"]
  return CandidateSet(batch[f"coords{f}"], scores, jnp.ones(scores.shape, bool), batch[f"image_hw{f}"])


def make_train_step(net, tx: optax.GradientTransformation, nll_balancing: float, nll_weight: float,
                    mesh: Mesh | None = None):
  """jit(state, layer3_0, layer3_1, batch) -> (new `TrainState`, metrics); donates the old state.

  With `mesh`: the state (and the result) replicated, the layer3 maps and the batch split along the mesh's data
  axis; the step is the global-batch computation (module docstring), XLA inserts the cross-device reductions.
  """

  def loss_fn(params, batch_stats, l3_0, l3_1, batch):
    out, mutated = net.apply({"params": params, "batch_stats": batch_stats}, l3_0, batch["cells0"],
                             _candidate_set(batch, 0), l3_1, batch["cells1"], _candidate_set(batch, 1),
                             use_running_average=False, mutable=["batch_stats"])
    terms = matching_loss(out.log_assignment, batch["gt_assignment"], batch["gt_matches0"], batch["gt_matches1"],
                          nll_balancing=nll_balancing, nll_weight=nll_weight)
    return jnp.mean(terms.total), (terms, mutated["batch_stats"], out)

  def step(state: TrainState, l3_0, l3_1, batch):
    (loss, (terms, batch_stats, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, l3_0, l3_1, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          batch_stats=batch_stats, opt_state=opt_state)
    recall = match_recall(out.matches1, batch["gt_matches1"])
    precision = match_precision(out.matches1, batch["gt_matches1"])
    metrics = {"loss": loss, "nll_pos": jnp.mean(terms.nll_pos), "nll_neg": jnp.mean(terms.nll_neg),
               "sinkhorn_norm": jnp.mean(terms.sinkhorn_norm), "bin_score": out.bin_score,
               "match_recall": jnp.nanmean(recall), "match_precision": jnp.nanmean(precision)}
    return state, metrics

  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
  return jax.jit(step, in_shardings=(replicated, split, split, split), out_shardings=(replicated, replicated),
                 donate_argnums=0)


def _candidate_set_masked(batch, f: int) -> CandidateSet:
  return CandidateSet(batch[f"coords{f}"], batch[f"scores{f}"], batch[f"valid{f}"], batch[f"image_hw{f}"])


def make_eval_fn(net, nll_balancing: float, nll_weight: float):
  """jit(params, batch_stats, layer3_0, layer3_1, batch) -> per-sample (loss, recall, precision), BN in eval mode,
  the slots of `valid0/1` only (the real-candidate validation pairs have variable sizes)."""

  @jax.jit
  def evaluate(params, batch_stats, l3_0, l3_1, batch):
    out = net.apply({"params": params, "batch_stats": batch_stats}, l3_0, batch["cells0"],
                    _candidate_set_masked(batch, 0), l3_1, batch["cells1"], _candidate_set_masked(batch, 1),
                    use_running_average=True)
    terms = matching_loss(out.log_assignment, batch["gt_assignment"], batch["gt_matches0"], batch["gt_matches1"],
                          batch["valid0"], nll_balancing=nll_balancing, nll_weight=nll_weight)
    return (terms.total, match_recall(out.matches1, batch["gt_matches1"]),
            match_precision(out.matches1, batch["gt_matches1"]))

  return evaluate


def validation_pairs(config, data: CandidateDataset, cfg: MatchingSamplerConfig) -> dict[str, list[dict]]:
  """{pair state: samples} of the real-candidate validation (the first `val.num_pairs` pairs of each state in
  `val.pair_states` whose sets fit `val.capacity`; keeptrack.md §5.2 val_HH / val_HK)."""
  out = {}
  for state in config.val.pair_states:
    samples = []
    for name, index in data.pairs.get(state, []):
      if len(samples) == int(config.val.num_pairs):
        break
      records = [data.records[(name, index)], data.records[(name, index + 1)]]
      if max(len(r["target_candidate_scores"]) for r in records) > int(config.val.capacity):
        continue
      images = [data.image(name, index, frames.read_frame), data.image(name, index + 1, frames.read_frame)]
      samples.append(real_candidates_sample(images, records, cfg, int(config.val.capacity)))
    if samples:
      out[state] = samples
  return out


def self_sup_validation_config(config, cfg: MatchingSamplerConfig) -> MatchingSamplerConfig | None:
  """The sampler settings of the self_sup validation (`config.val.self_sup`; None: off): the training
  processing, supervision mode self_sup only, its own frame states and probabilities."""
  v = config.val.self_sup
  if not (config.val.enabled and v.enabled):
    return None
  states, probs = tuple(v.frame_states), tuple(float(p) for p in v.p_frame)
  if not states or len(states) != len(probs) or int(v.num_samples) < 1:
    raise ValueError(f"config.val.self_sup: frame_states {states} and p_frame {probs} must have the same "
                     f"non-zero length and num_samples ({v.num_samples}) must be >= 1")
  return dataclasses.replace(cfg, sup_modes=("self_sup",), frame_states=states, p_frame=probs)


def self_sup_validation_batches(config, data: CandidateDataset, cfg: MatchingSamplerConfig, pool):
  """Yields the self_sup validation samples in batches of `data.batch_size`; sample i draws from the NumPy stream
  `[val.self_sup.seed, i]` (the same samples every time). Every slot counts as a candidate (`valid` all true:
  the fakes are inputs, as in training)."""
  v, batch_size = config.val.self_sup, int(config.data.batch_size)
  seed, total = int(v.seed), int(v.num_samples)
  for first in range(0, total, batch_size):
    samples = list(pool.map(lambda i: draw_sample(np.random.default_rng([seed, i]), data, cfg, frames.read_frame),
                            range(first, min(first + batch_size, total))))
    batch = collate(samples)
    batch["valid0"], batch["valid1"] = np.ones_like(batch["valid0"]), np.ones_like(batch["valid1"])
    yield batch


def validate(evaluate, layer3, model, state: TrainState, batches: dict[str, Iterable[dict]]) -> dict[str, float]:
  """Mean loss / match recall / precision (NaN-free means) over each set's batches -> `val_<set>/...` metrics."""
  metrics = {}
  for name, set_batches in batches.items():
    parts = []
    for batch in set_batches:
      inputs = {k: v for k, v in batch.items() if not k.startswith("crop")}
      l3_0, l3_1 = layer3(model, batch["crop0"]), layer3(model, batch["crop1"])
      parts.append([np.asarray(x) for x in evaluate(state.params, state.batch_stats, l3_0, l3_1, inputs)])
    loss, recall, precision = (np.concatenate(x) for x in zip(*parts))
    metrics.update({f"val_{name}/loss": float(np.mean(loss)), f"val_{name}/match_recall": float(np.nanmean(recall)),
                    f"val_{name}/match_precision": float(np.nanmean(precision)) if np.any(np.isfinite(precision))
                    else float("nan")})
  return metrics


def optimizer(config) -> optax.GradientTransformation:
  """Adam (default betas / eps, no weight decay) at `learning_rate`, times `decay_factor` every
  `decay_every_epochs` epochs (StepLR stepped per epoch; 0 = constant)."""
  o = config.optim
  every = int(o.decay_every_epochs) * int(o.steps_per_epoch)
  lr = float(o.learning_rate)
  schedule = optax.exponential_decay(lr, every, float(o.decay_factor), staircase=True) if every else lr
  return optax.adam(schedule)


def _export(workdir: str, net, state: TrainState, layer3_channels: int, config, step: int) -> str:
  variables = {"params": jax.tree.map(host_value, state.params),
               "batch_stats": jax.tree.map(host_value, state.batch_stats)}
  return save_tcm(os.path.join(workdir, checkpoints.EXPORT_DIR), net.clone(keypoint_center="tracker"), variables,
                  layer3_channels, step=step, config=config.to_dict(), trained_keypoint_center=net.keypoint_center)


def _check_run(config, mesh: Mesh) -> None:
  if jax.process_count() > 1:
    raise ValueError("configs/keeptrack.py trains in one process (multi-host is not supported); run it without "
                     "--coordinator-address / --distributed")
  batch_size, n = int(config.data.batch_size), mesh.devices.size
  if batch_size < 1 or batch_size % n:
    raise ValueError(f"config.data.batch_size={batch_size} must be a positive multiple of the {n} devices")
  if int(config.checkpoint.every_steps) < 1 or int(config.log_every_steps) < 1:
    raise ValueError("config.checkpoint.every_steps and config.log_every_steps must be >= 1")
  if config.val.enabled and int(config.val.every_steps) < 1:
    raise ValueError("config.val.every_steps must be >= 1 (or val.enabled=false)")


def _keep_metrics_until(log_path: str, step: int) -> None:
  """metrics.jsonl of a resumed run: the lines of steps <= `step` (later ones were never checkpointed)."""
  if not os.path.exists(log_path):
    return
  with open(log_path) as f:
    lines = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
  with open(log_path, "w") as f:
    f.writelines(lines)


def train_tcm(config, workdir: str, devices=None) -> TrainState:
  """Trains the association network of `config` in `workdir`, resuming from its newest checkpoint (module
  docstring) -> the `TrainState` after the last step run (the SIGTERM step when stopped early).

  `devices`: the devices of the data-parallel mesh (default: all of them).
  """
  stop = StopFlag().install()
  manager = pool = None
  try:
    workdir = os.path.abspath(workdir)
    mesh = data_mesh(devices)
    _check_run(config, mesh)
    os.makedirs(workdir, exist_ok=True)
    config_dict = config.to_dict()
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config_dict, f, indent=2, sort_keys=True, default=str)
    cfg = sampler_config(config)
    self_sup_cfg = self_sup_validation_config(config, cfg)
    model = base_model(config)
    c3 = tracker.layer3_channels(model)
    model = model.replace(variables=replicate(model.variables, mesh))
    data = training_data(config, workdir)
    net = build_tcm_net(dict(config.tcm))
    tx = optimizer(config)
    variables = init_tcm_variables(net, c3, jax.random.key(int(config.data.seed) + 1))
    state = replicate(create_train_state(variables, tx, jax.random.key(int(config.data.seed)), False), mesh)
    manager = ckpt.make_checkpoint_manager(os.path.join(workdir, checkpoints.CHECKPOINTS_DIR),
                                           keep=int(config.checkpoint.keep),
                                           async_save=bool(config.checkpoint.async_save))
    state, start_step = resume(manager, state, config_dict, groups=("tcm", "loss"))
    log_path = os.path.join(workdir, "metrics.jsonl")
    if start_step:
      _keep_metrics_until(log_path, start_step)
    elif os.path.exists(log_path):  # a fresh run in a workdir without checkpoints logs afresh
      os.remove(log_path)
    if stop.poll()[0]:
      _LOG.info("SIGTERM before step %d: stopped, nothing new to save", start_step + 1)
      return state
    pool = concurrent.futures.ThreadPoolExecutor(int(config.data.num_workers))
    state = _train_steps(config, workdir, mesh, model, data, net, tx, c3, state, start_step, manager, stop, pool,
                         cfg, self_sup_cfg)
    return state
  finally:
    stop.restore()
    if pool is not None:
      pool.shutdown()
    if manager is not None:
      manager.wait_until_finished()
      manager.close()


def _train_steps(config, workdir, mesh, model, data, net, tx, c3, state, start_step, manager, stop, pool, cfg,
                 self_sup_cfg) -> TrainState:
  """Steps `start_step + 1 ...` until the last step or SIGTERM (`train_tcm`)."""
  step_fn = make_train_step(net, tx, float(config.loss.nll_balancing), float(config.loss.nll_weight), mesh)
  layer3 = make_layer3_fn()
  seed = int(config.data.seed)
  num_steps = int(config.optim.epochs) * int(config.optim.steps_per_epoch)
  batch_size = int(config.data.batch_size)
  log_path = os.path.join(workdir, "metrics.jsonl")
  config_dict = config.to_dict()
  val_pairs = validation_pairs(config, data, cfg) if config.val.enabled else {}
  evaluate = make_eval_fn(net, float(config.loss.nll_balancing), float(config.loss.nll_weight))
  t0 = time.perf_counter()
  for step in range(start_step + 1, num_steps + 1):
    # Sample i of step s draws from its own stream [seed, s, i]: the same batches with any number of threads.
    batch = shard_batch(collate(list(pool.map(
        lambda i, s=step: draw_sample(np.random.default_rng([seed, s, i]), data, cfg, frames.read_frame),
        range(batch_size)))), mesh)
    inputs = {k: v for k, v in batch.items() if not k.startswith("crop")}
    state, metrics = step_fn(state, layer3(model, batch["crop0"]), layer3(model, batch["crop1"]), inputs)
    metrics = {k: float(host_value(v)) for k, v in metrics.items()}
    if not np.isfinite(metrics["loss"]):
      raise FloatingPointError(f"non-finite tcm loss at step {step}: {metrics}")
    with open(log_path, "a") as f:
      f.write(json.dumps(dict(metrics, step=step)) + "\n")
    stopping = stop.poll()[0]
    last = step == num_steps
    if step % int(config.log_every_steps) == 0 or last:
      _LOG.info("step %d/%d loss %.4f recall %.3f precision %.3f (%.2f s/step)", step, num_steps, metrics["loss"],
                metrics["match_recall"], metrics["match_precision"],
                (time.perf_counter() - t0) / (step - start_step))
    if (val_pairs or self_sup_cfg is not None) and (step % int(config.val.every_steps) == 0 or last):
      sets: dict[str, Iterable[dict]] = {name: (collate(samples[i:i + batch_size])
                                                for i in range(0, len(samples), batch_size))
                                         for name, samples in val_pairs.items()}
      if self_sup_cfg is not None:
        sets["self_sup"] = self_sup_validation_batches(config, data, self_sup_cfg, pool)
      vm = validate(evaluate, layer3, model, state, sets)
      with open(log_path, "a") as f:
        f.write(json.dumps({"step": step, **vm}) + "\n")
      _LOG.info("  val: %s", " ".join(f"{k} {v:.4g}" for k, v in vm.items()))
    if step % int(config.checkpoint.every_steps) == 0 or last or stopping:
      ckpt.save_train_state(manager, state, checkpoint_meta(config_dict, step))
      if not stopping:
        _export(workdir, net, state, c3, config, step)
    if stopping:
      _LOG.info("SIGTERM: stopped after step %d, checkpoint saved", step)
      break
  return state
