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


def iou_refine_flops(model, settings, state) -> tuple[float, float]:
  """(whole maps, smallest window) FLOPs of a frame's IoU-Net features + box ascent (`tracker.refine_whole_maps`,
  `refine_in_window`; design.md §5.6), compiled alone at the settings' patch size and box count. The smallest
  window equals the whole maps when `settings.iou_feature_windows` has no window smaller than the maps."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cia_jax.track import tracker as trk  # pylint: disable=g-import-not-at-top

  s = settings.image_sample_size
  l2, l3, _ = jax.eval_shape(lambda p: trk.extract_features(model, p), jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32))
  p = 1 if settings.deterministic else 1 + settings.num_init_random_boxes
  args = (l2, l3, jax.ShapeDtypeStruct((p, 4), jnp.float32))
  m3, m4 = state.iou_mod3, state.iou_mod4
  whole = jax.jit(lambda a, b, c: trk.refine_whole_maps(model, settings, m3, m4, a, b, c))
  full = flops_of(whole.lower(*args).compile())
  if not trk.window_sizes(settings, l2.shape[1], l3.shape[1]):
    return full, full

  smallest = jax.jit(lambda a, b, c: trk.refine_in_window(model, settings, m3, m4, a, b, c))
  return full, flops_of(smallest.lower(*args).compile())


def step_flops(model, settings, state, frame, key) -> float:
  """FLOPs of one tracker step on a frame whose boxes fit the smallest IoU window (the common case, BENCHMARKS.md).

  XLA's cost analysis counts a `cond` / `switch` by its costliest branch, so the compiled step's own count
  includes the whole-map fallback of the box ascent and its largest window as well. This is the step compiled
  on the whole maps, with the whole-map refinement's cost swapped for the smallest window's.

  The work is that of direct convolutions even when `settings.winograd_convs` computes them with fewer
  multiplications (design.md §9.2): the same frame is the same work, so the rates it gives are effective rates,
  as GPU libraries report for their Winograd kernels.
  """
  from cia_jax.track import tracker as trk  # pylint: disable=g-import-not-at-top

  direct = settings.replace(iou_feature_windows=(), winograd_convs=False)
  whole = flops_of(trk.step.lower(model, direct, state, frame, key).compile())
  full, small = iou_refine_flops(model, settings, state)
  return whole - full + small
