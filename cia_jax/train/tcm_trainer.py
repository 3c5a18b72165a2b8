"""Training KeepTrack's association network (keeptrack.md §5): `train_tcm(config, workdir)`.

`cia-jax train --config configs/keeptrack.py` comes here (the config's `task` is 'keeptrack'). A run:

* base network: the base tracker's network (`config.base.checkpoint`, a training workdir or converted
  checkpoint; or random weights of `config.base.network` with `config.base.random_weights`, CI only). It is
  frozen and runs in eval mode; only its layer3 is used (`cia_jax.track.tracker.extract_features`);
* data: a candidate dump (`config.data.dump`, from `cia-jax tcm-dump`) and the benchmark holding its frames
  (`config.data.dataset`); with `config.data.synthetic` both are generated into `<workdir>/synthetic`
  (`cia_jax.data.candidate_matching.synthetic_dump`). Samples: `draw_sample` (self_sup / partial_sup);
* network: `TargetCandidateMatchingNet(**config.tcm)` trained with BatchNorm in train mode, the loss of
  `cia_jax.tcm.loss` (keeptrack.md §5.4), Adam with a step decay per epoch (keeptrack.md §5.5);
* output: `<workdir>/model`, an association-net checkpoint (`cia_jax.tcm.weights`; `attach_tcm` puts it on a
  tracking model), written every `config.checkpoint.every_steps` steps and at the end, with
  `keypoint_center='tracker'` (the convention of the released tracker, keeptrack.md §7.1); `<workdir>/metrics.jsonl`.

Validation: the real-candidate pairs of `config.val.pair_states` (val_HH / val_HK), extra lines of metrics.jsonl.

Not done (yet): resuming (a rerun starts again from step 0), the self-sup validation loader, multi-device, the
reference's train-mode BatchNorm statistics in the frozen layer3 (keeptrack.md §5.5; here the base network is in
eval mode).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

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
  """jit(model, crops [B, P, P, 3] 0..255) -> layer3 `[B, P/16, P/16, C3]` of the frozen base network."""
  return jax.jit(lambda model, crops: jax.lax.stop_gradient(tracker.extract_features(model, crops)[1]))


def _candidate_set(batch, f: int) -> CandidateSet:
  scores = batch[f"scores{f}"]
  return CandidateSet(batch[f"coords{f}"], scores, jnp.ones(scores.shape, bool), batch[f"image_hw{f}"])


def make_train_step(net, tx: optax.GradientTransformation, nll_balancing: float, nll_weight: float):
  """jit((params, batch_stats, opt_state), layer3_0, layer3_1, batch) -> (new triple, metrics)."""

  def loss_fn(params, batch_stats, l3_0, l3_1, batch):
    out, mutated = net.apply({"params": params, "batch_stats": batch_stats}, l3_0, batch["cells0"],
                             _candidate_set(batch, 0), l3_1, batch["cells1"], _candidate_set(batch, 1),
                             use_running_average=False, mutable=["batch_stats"])
    terms = matching_loss(out.log_assignment, batch["gt_assignment"], batch["gt_matches0"], batch["gt_matches1"],
                          nll_balancing=nll_balancing, nll_weight=nll_weight)
    return jnp.mean(terms.total), (terms, mutated["batch_stats"], out)

  @jax.jit
  def step(carry, l3_0, l3_1, batch):
    params, batch_stats, opt_state = carry
    (loss, (terms, batch_stats, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, l3_0, l3_1, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    recall = match_recall(out.matches1, batch["gt_matches1"])
    precision = match_precision(out.matches1, batch["gt_matches1"])
    metrics = {"loss": loss, "nll_pos": jnp.mean(terms.nll_pos), "nll_neg": jnp.mean(terms.nll_neg),
               "sinkhorn_norm": jnp.mean(terms.sinkhorn_norm), "bin_score": out.bin_score,
               "match_recall": jnp.nanmean(recall), "match_precision": jnp.nanmean(precision)}
    return (params, batch_stats, opt_state), metrics

  return step


def _candidate_set_masked(batch, f: int) -> CandidateSet:
  return CandidateSet(batch[f"coords{f}"], batch[f"scores{f}"], batch[f"valid{f}"], batch[f"image_hw{f}"])


def make_eval_fn(net, nll_balancing: float, nll_weight: float):
  """jit(params, batch_stats, layer3_0, layer3_1, batch) -> per-sample (loss, recall, precision), BN in eval mode,
  padded sets masked (the real-candidate validation pairs have variable sizes)."""

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


def validate(evaluate, layer3, model, carry, pairs: dict[str, list[dict]], batch_size: int) -> dict[str, float]:
  """Mean loss / match recall / precision (NaN-free means) of each state's validation pairs."""
  params, batch_stats, _ = carry
  metrics = {}
  for state, samples in pairs.items():
    parts = []
    for i in range(0, len(samples), batch_size):
      batch = collate(samples[i:i + batch_size])
      l3 = layer3(model, np.concatenate([batch["crop0"], batch["crop1"]]))
      n = len(samples[i:i + batch_size])
      inputs = {k: v for k, v in batch.items() if not k.startswith("crop")}
      parts.append([np.asarray(x) for x in evaluate(params, batch_stats, l3[:n], l3[n:], inputs)])
    loss, recall, precision = (np.concatenate(x) for x in zip(*parts))
    metrics.update({f"val_{state}/loss": float(np.mean(loss)), f"val_{state}/match_recall": float(np.nanmean(recall)),
                    f"val_{state}/match_precision": float(np.nanmean(precision)) if np.any(np.isfinite(precision))
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


def _export(workdir: str, net, carry, layer3_channels: int, config, step: int) -> str:
  params, batch_stats, _ = carry
  variables = {"params": jax.tree.map(np.asarray, params), "batch_stats": jax.tree.map(np.asarray, batch_stats)}
  return save_tcm(os.path.join(workdir, checkpoints.EXPORT_DIR), net.clone(keypoint_center="tracker"), variables,
                  layer3_channels, step=step, config=config.to_dict(), trained_keypoint_center=net.keypoint_center)


def train_tcm(config, workdir: str) -> list[dict]:
  """Trains the association network of `config` in `workdir` (module docstring) -> the logged metrics per step."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
  cfg = sampler_config(config)
  model = base_model(config)
  c3 = tracker.layer3_channels(model)
  data = training_data(config, workdir)
  net = build_tcm_net(dict(config.tcm))
  variables = init_tcm_variables(net, c3, jax.random.key(int(config.data.seed) + 1))
  tx = optimizer(config)
  carry = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
  step_fn = make_train_step(net, tx, float(config.loss.nll_balancing), float(config.loss.nll_weight))
  layer3 = make_layer3_fn()
  seed = int(config.data.seed)
  pool = concurrent.futures.ThreadPoolExecutor(int(config.data.num_workers))
  num_steps = int(config.optim.epochs) * int(config.optim.steps_per_epoch)
  batch_size, history = int(config.data.batch_size), []
  log_path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(log_path):  # no resuming (yet): a rerun starts from step 0 and logs afresh
    os.remove(log_path)
  val_pairs = validation_pairs(config, data, cfg) if config.val.enabled else {}
  evaluate = make_eval_fn(net, float(config.loss.nll_balancing), float(config.loss.nll_weight))
  t0 = time.perf_counter()
  try:
    for step in range(1, num_steps + 1):
      # Sample i of step s draws from its own stream [seed, s, i]: the same batches with any number of threads.
      batch = collate(list(pool.map(lambda i, s=step: draw_sample(np.random.default_rng([seed, s, i]), data, cfg,
                                                                    frames.read_frame), range(batch_size))))
      l3 = layer3(model, np.concatenate([batch["crop0"], batch["crop1"]]))
      inputs = {k: v for k, v in batch.items() if not k.startswith("crop")}
      carry, metrics = step_fn(carry, l3[:batch_size], l3[batch_size:], inputs)
      metrics = {k: float(v) for k, v in metrics.items()}
      if not np.isfinite(metrics["loss"]):
        raise FloatingPointError(f"non-finite tcm loss at step {step}: {metrics}")
      history.append(dict(metrics, step=step))
      with open(log_path, "a") as f:
        f.write(json.dumps(history[-1]) + "\n")
      if step % int(config.log_every_steps) == 0 or step == num_steps:
        _LOG.info("step %d/%d loss %.4f recall %.3f precision %.3f (%.2f s/step)", step, num_steps, metrics["loss"],
                  metrics["match_recall"], metrics["match_precision"], (time.perf_counter() - t0) / step)
      if val_pairs and (step % int(config.val.every_steps) == 0 or step == num_steps):
        vm = validate(evaluate, layer3, model, carry, val_pairs, batch_size)
        history[-1].update(vm)
        with open(log_path, "a") as f:
          f.write(json.dumps({"step": step, **vm}) + "\n")
        _LOG.info("  val: %s", " ".join(f"{k} {v:.4g}" for k, v in vm.items()))
      if step % int(config.checkpoint.every_steps) == 0 or step == num_steps:
        _export(workdir, net, carry, c3, config, step)
  finally:
    pool.shutdown()
  return history
