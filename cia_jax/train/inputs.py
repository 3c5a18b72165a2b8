"""The training run's inputs: datasets of the config (or generated synthetic ones), samplers, batches.

`build_samplers(config, workdir)` reads `config.data.train` / `config.val.datasets` (benchmark folders, or TFDS
data with `config.data.source=tfds`); an entry whose root is None is an error unless
`config.data.synthetic.enabled`, in which case synthetic sequences are generated into
`<workdir>/synthetic/<entry>_<format>` (once, by process 0). `batches(...)` yields this host's part of each
global batch in the layout of `cia_jax.train.step`.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from cia_jax.data import synthetic
from cia_jax.data.datasets import load_dataset
from cia_jax.data.pipeline import make_iterator
from cia_jax.data.processing import ProcessingConfig
from cia_jax.data.sampler import DiMPSampler, SamplerConfig
from cia_jax.data.tfds import load_sequences

# Pipeline fields the step does not read.
NON_STEP_FIELDS = ("sample_index", "skipped_images")


def _freeze(v: Any) -> Any:
  """Lists from overrides / JSON -> the dataclasses' (nested) tuples."""
  return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


def processing_config(config) -> ProcessingConfig:
  """`ProcessingConfig` from `config.data.processing`."""
  try:
    return ProcessingConfig(**{k: _freeze(v) for k, v in config.data.processing.items()})
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.data.processing: {e}") from None


def sampler_config(config) -> SamplerConfig:
  """`SamplerConfig` from `config.data.sampler`."""
  try:
    return SamplerConfig(**dict(config.data.sampler))
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.data.sampler: {e}") from None


def barrier(name: str) -> None:
  """Waits for every process (multi-host runs; a no-op in one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _ensure_synthetic(config, workdir: str, name: str, entry, split: str) -> str:
  """Writes synthetic sequences for a dataset entry (once; process 0 only) and returns its root."""
  root = os.path.join(workdir, "synthetic", f"{name}_{entry.format}")
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
  barrier("synthetic data")
  return root


def _reader_kwargs(entry) -> dict:
  """The optional reader arguments of a dataset entry (split file, TrackingNet chunks)."""
  kwargs = {}
  if entry.get("split_file"):
    kwargs["split_file"] = entry.split_file
  if entry.get("chunks") is not None and entry.format == "trackingnet":
    kwargs["chunks"] = list(entry.chunks)
  return kwargs


def _tfds_entry(config, where: str, entry):
  if not config.data.tfds_data_dir:
    raise ValueError("config.data.source=tfds needs --config.data.tfds_data_dir=DIR (see cia-jax tfds-build)")
  try:
    return load_sequences(entry.format, entry.split, source="tfds", data_dir=config.data.tfds_data_dir,
                          shard_by_host=bool(config.data.tfds_shard_by_host), **_reader_kwargs(entry))
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"config.{where} ({entry.format} from TFDS at {config.data.tfds_data_dir}): {e}") from None


def _folder_entry(config, workdir: str, where: str, name: str, entry, root: str | None):
  split = entry.split
  if root is None:
    if not config.data.synthetic.enabled:
      raise ValueError(f"config.{where}.root is not set: give the {entry.format} root with "
                       f"--config.{where}.root=PATH (or set --config.{where}.weight=0 to leave it "
                       f"out, or --config.data.synthetic.enabled=true for generated data)")
    root = _ensure_synthetic(config, workdir, name, entry, split)
    if entry.format == "got10k":  # generated GOT-10k has plain train/val folders, no vot split files
      split = "val" if split in ("val", "votval") else "train"
    elif entry.format == "lasot":  # generated LaSOT has no train/test split lists
      split = "all"
  if entry.format == "got10k" and split in ("vottrain", "votval") and not entry.get("split_file"):
    raise ValueError(f"config.{where}: GOT-10k split {split!r} needs a split file: set "
                     f"--config.{where}.split_file=PATH (pytracking's got10k_vot_{split[3:]}_split.txt) "
                     f"or use --config.{where}.split=train")
  try:
    return load_dataset(entry.format, root, split=split, **_reader_kwargs(entry))
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"config.{where} ({entry.format} at {root}): {e}") from None


def load_entry(config, workdir: str, group: str, name: str, entry, fallback_root: str | None = None,
               synthetic_name: str | None = None):
  """The sequences of dataset entry `config.<group>.<name>` (with a clear error for a missing root).

  `synthetic_name` (default `name`) names the generated data of a root-less entry: the same name, format and
  split give the same generated sequences (the tracking validation reuses those of `config.val.datasets`).
  """
  if config.data.source not in ("folders", "tfds"):
    raise ValueError(f"config.data.source must be 'folders' or 'tfds', got {config.data.source!r}")
  where = f"{group}.{name}"
  if config.data.source == "tfds":
    return _tfds_entry(config, where, entry)
  return _folder_entry(config, workdir, where, synthetic_name or name, entry, entry.root or fallback_root)


def _check_roots(config) -> None:
  """Names every missing training root at once (folders without synthetic data)."""
  if config.data.synthetic.enabled or config.data.source != "folders":
    return
  missing = [f"config.data.train.{n}.root" for n, e in config.data.train.items() if float(e.weight) > 0 and not e.root]
  if missing:
    raise ValueError(f"{', '.join(missing)} not set: give the dataset roots with --config.data.train.NAME.root=PATH "
                     f"(or leave a dataset out with --config.data.train.NAME.weight=0, or use "
                     f"--config.data.synthetic.enabled=true for generated data)")


def build_samplers(config, workdir: str) -> tuple[DiMPSampler, DiMPSampler | None]:
  """(training sampler, validation sampler or None) from the config's dataset entries."""
  scfg = sampler_config(config)
  _check_roots(config)
  datasets, weights, roots = [], [], {}
  for name, entry in config.data.train.items():
    if float(entry.weight) > 0:
      datasets.append(load_entry(config, workdir, "data.train", name, entry))
      weights.append(float(entry.weight))
      roots[name] = entry.root
  if not datasets:
    raise ValueError("config.data.train: every dataset has weight 0")
  train = DiMPSampler(datasets, weights, scfg)
  if not config.val.enabled:
    return train, None
  vsets, vweights = [], []
  for name, entry in config.val.datasets.items():
    if float(entry.weight) > 0:
      vsets.append(load_entry(config, workdir, "val.datasets", name, entry, fallback_root=roots.get(name)))
      vweights.append(float(entry.weight))
  return train, (DiMPSampler(vsets, vweights, scfg) if vsets else None)


def batches(sampler: DiMPSampler, proc: ProcessingConfig, config, *, seed: int, start_step: int,
            num_batches: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
  """This host's part of global batches `start_step, start_step + 1, ...` of sample stream `seed`.

  Yields (step fields `[B_host, ...]`, the input to `step.shard_batch`; the number of unreadable images
  skipped while making them). B_host = `config.data.batch_size` / processes.
  """
  local = make_iterator(sampler, proc, seed=seed, start_step=start_step, num_batches=num_batches,
                        seqs_per_device=int(config.data.batch_size) // jax.device_count(),
                        num_local_devices=jax.local_device_count(), process_index=jax.process_index(),
                        process_count=jax.process_count(), num_parallel_calls=config.data.num_parallel_calls,
                        prefetch=int(config.data.prefetch))
  for batch in local:  # [D_local, B / D, ...] -> [B_host, ...]
    fields = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items() if k not in NON_STEP_FIELDS}
    yield fields, int(np.sum(batch["skipped_images"]))
