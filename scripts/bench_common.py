"""Helpers shared by the `benchmark_*.py` scripts (imported from the scripts' own folder)."""

from __future__ import annotations


def flops_of(compiled) -> float:
  """FLOPs per call from `Compiled.cost_analysis()` (a dict, or a list of per-program dicts in older jax)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, dict):
    cost = [cost]
  return float(sum((c or {}).get("flops", 0.0) for c in cost or []))


def pipeline_rate(sampler, cfg, batch: int, batches: int, parallel, threads: int | None = 1, seed: int = 0):
  """(samples/s, CPU ms per sample) of the tf.data pipeline over `batches` batches after 2 warm-up batches.

  The CPU time is the whole process's (all threads) per sample: robust to other processes sharing the cores,
  and it shows thread-pool overhead (spinning, oversubscription) that wall time hides on a busy machine.
  """
  import time  # pylint: disable=g-import-not-at-top

  from cia_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  ds = pipeline.make_dataset(sampler, cfg, seed=seed, seqs_per_device=batch, num_local_devices=1,
                             process_index=0, process_count=1, num_batches=batches + 2,
                             num_parallel_calls=parallel, prefetch=2, opencv_threads=threads)
  it = ds.as_numpy_iterator()
  next(it)
  next(it)  # warm-up: graph construction, first decodes, prefetch filled
  t0, c0 = time.perf_counter(), time.process_time()
  n = 0
  for b in it:
    n += b["sample_index"].size
  return n / (time.perf_counter() - t0), 1e3 * (time.process_time() - c0) / n
