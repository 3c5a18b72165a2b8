"""Tracking accuracy while training (`config.val.tracking`): the current weights track a few validation sequences.

With `val.enabled` and `val.tracking.enabled`, every `val.tracking.every_steps` steps (None: `val.every_steps`; also
at the last step and when the time limit runs out) process 0 copies the state's params and BN statistics to the
host, tracks the first `num_sequences` sequences (by name) of `val.tracking.dataset` for at most `max_frames` frames
each with the jitted, batched runner (`cia_jax.track.runner.track_batch`, `batch_sequences` in lockstep per frame
size) and the `TrackerSettings` preset `tracker` with `overrides`, scores them with `cia_jax.evaluation.metrics`
(`evaluate_sequence` + `summarize`, protocol `protocol`) and logs `val/track_auc`, `val/track_precision` (rates in
[0, 1], as the metrics module reports them), `val/track_norm_precision`, `val/track_seconds` and the counts to
TensorBoard and `metrics.jsonl`. Other processes skip it (they wait for process 0 at the next collective). The check
only reads the state (its own seed, no training rng), so training is unchanged; the tracker's compilation (once per
frame size and group size, cached by `tracker_fns`) is paid at the first check.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping, Sequence as SequenceT

import jax
import ml_collections

from cia_jax.evaluation import metrics
from cia_jax.track import runner
from cia_jax.track.params import TrackerSettings, apply_overrides, get_settings
from cia_jax.track.tracker import TrackingModel, prepare
from cia_jax.train import inputs
from cia_jax.train.step import host_value


@dataclasses.dataclass(frozen=True)
class TrackingValidation:
  """What the check of a run needs, built once at setup (`build`).

  Attributes:
    settings: the tracker settings; `sequences` the validation sequences (first `num_sequences` by name).
    every_steps: steps between checks; `max_frames` frames per sequence (None: all); `batch_sequences` K.
    seed: the tracker's random stream (`runner.sequence_key`); `protocol` the metrics protocol.
  """

  settings: TrackerSettings
  sequences: tuple
  every_steps: int
  max_frames: int | None
  batch_sequences: int
  seed: int
  protocol: str


def tracker_settings(cfg) -> TrackerSettings:
  """The `TrackerSettings` of `config.val.tracking` (preset + `KEY=VALUE` overrides); ValueError naming the key."""
  try:
    return apply_overrides(get_settings(str(cfg.tracker)), [str(o) for o in cfg.overrides])
  except ValueError as e:
    raise ValueError(f"config.val.tracking.tracker/overrides: {e}") from None


def _check(cfg, val_every: int) -> int:
  """ValueError naming the key for unusable counts -> the steps between checks."""
  every = int(cfg.every_steps) if cfg.every_steps is not None else int(val_every)
  for key, value in (("every_steps", every), ("num_sequences", cfg.num_sequences),
                     ("batch_sequences", cfg.batch_sequences)):
    if int(value) < 1:
      raise ValueError(f"config.val.tracking.{key} must be >= 1 (or val.tracking.enabled=false), got {value}")
  if cfg.max_frames is not None and int(cfg.max_frames) < 2:
    raise ValueError(f"config.val.tracking.max_frames must be >= 2 or None, got {cfg.max_frames}")
  metrics.get_protocol(str(cfg.protocol))
  return every


def _dataset_entry(config) -> tuple[ml_collections.ConfigDict, str, str | None]:
  """(the dataset entry with the split file filled in, the name of its synthetic data, the fallback root).

  A root-less entry falls back on the `config.val.datasets` entry of the same format (its root, else the
  training entry's of that name, and its split file), so it reads (or generates) the same data.
  """
  entry = config.val.tracking.dataset
  out = ml_collections.ConfigDict(dict(format=str(entry.format), root=entry.root, split=str(entry.split),
                                       split_file=entry.get("split_file")))
  for name, val_entry in config.val.datasets.items():
    if val_entry.format == entry.format:
      if out.split_file is None and val_entry.split == entry.split:
        out.split_file = val_entry.get("split_file")
      train_entry = config.data.train.get(name)
      return out, name, val_entry.root or (train_entry.root if train_entry is not None else None)
  return out, "tracking", None


def build(config, workdir: str) -> TrackingValidation | None:
  """The check of a run (None unless `config.val.enabled` and `config.val.tracking.enabled`: `val.enabled` is
  the switch of all validation); reads the sequences' lists.

  Raises ValueError / FileNotFoundError naming the key before anything is compiled.
  """
  cfg = config.val.tracking
  if not (config.val.enabled and cfg.enabled):
    return None
  every = _check(cfg, config.val.every_steps)
  settings = tracker_settings(cfg)
  entry, synthetic_name, fallback = _dataset_entry(config)
  seqs = inputs.load_entry(config, workdir, "val.tracking", "dataset", entry, fallback_root=fallback,
                           synthetic_name=synthetic_name)
  chosen = tuple(sorted(seqs, key=lambda s: s.name)[:int(cfg.num_sequences)])
  if not chosen:
    raise ValueError(f"config.val.tracking.dataset ({entry.format} {entry.split}): no sequences")
  return TrackingValidation(settings=settings, sequences=chosen, every_steps=every,
                            max_frames=None if cfg.max_frames is None else int(cfg.max_frames),
                            batch_sequences=int(cfg.batch_sequences), seed=int(cfg.seed),
                            protocol=str(cfg.protocol))


def tracking_auc(net, variables: Mapping[str, Any], settings: TrackerSettings, sequences: SequenceT, *,
                 max_frames: int | None = None, batch_sequences: int = 1, seed: int = 0,
                 protocol: str = "otb") -> dict[str, float]:
  """Tracks `sequences` with `net` / `variables` and scores them -> scalars.

  Args:
    net: the `CIANet`; variables: `{'params', 'batch_stats'}` (host arrays).
    settings: `TrackerSettings`; sequences: `Sequence`s, tracked from their first box for at most
      `max_frames` frames, `batch_sequences` of one frame size in lockstep (`runner.batch_groups`,
      `runner.track_batch`); seed: the run seed of `runner.sequence_key`.
    protocol: `metrics.evaluate_sequence`'s protocol.

  Returns:
    `track_auc` (success AUC), `track_precision` (precision at 20 px), `track_norm_precision` (normalised
    precision AUC), all in [0, 1] over the tracked sequences (`metrics.summarize`; NaN when none was tracked),
    `track_sequences`, `track_failed` (sequences whose frames could not be read), `track_frames`, and
    `track_seconds` (wall clock, compilation included).
  """
  t0 = time.perf_counter()
  model = prepare(TrackingModel(net=net, variables=variables))
  fns = runner.tracker_fns(settings)
  scored, failed, frames = [], 0, 0
  for group in runner.batch_groups(sequences, int(batch_sequences)):
    for seq, run in zip(group, runner.track_batch(model, settings, group, seed, max_frames, fns=fns)):
      if run.error is not None:
        failed += 1
        continue
      n = len(run.boxes)
      scored.append(metrics.evaluate_sequence(run.boxes, seq.boxes[:n], seq.visible[:n], protocol, name=seq.name))
      frames += n
  nan = float("nan")
  summary = metrics.summarize(scored) if scored else {"auc": nan, "precision20": nan, "norm_precision_auc": nan}
  return {"track_auc": summary["auc"], "track_precision": summary["precision20"],
          "track_norm_precision": summary["norm_precision_auc"], "track_sequences": float(len(scored)),
          "track_failed": float(failed), "track_frames": float(frames),
          "track_seconds": time.perf_counter() - t0}


def is_due(check: TrackingValidation | None, step: int, last: bool) -> bool:
  """Whether the check runs after `step` (every `every_steps`, and at the run's last step)."""
  return check is not None and (step % check.every_steps == 0 or last)


def run_check(check: TrackingValidation, net, state) -> dict[str, float] | None:
  """`tracking_auc` with host copies of the state's params and BN statistics (process 0; None elsewhere)."""
  if jax.process_index() != 0:
    return None
  variables = {"params": jax.tree.map(host_value, state.params),
               "batch_stats": jax.tree.map(host_value, state.batch_stats)}
  return tracking_auc(net, variables, check.settings, check.sequences, max_frames=check.max_frames,
                      batch_sequences=check.batch_sequences, seed=check.seed, protocol=check.protocol)
