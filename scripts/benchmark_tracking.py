"""Tracking speed: compile time, init time and frames per second of the jitted tracker; batched K-sequence speed.

  .venv/bin/python scripts/benchmark_tracking.py                                   # the BENCHMARKS.md table
  .venv/bin/python scripts/benchmark_tracking.py --trackers dimp18 --max-frames 30 --batch 4

Random-weight networks of the given presets with the reference tracker parameters (design.md §5.1), except
`target_not_found_threshold=0` so random-weight scores (~0.1) do not stop the model updates and every branch
of a frame is exercised. For each sequence of --root (default: ../shared/data/real, read with the folder
reader): the first call of `init` / `step` at that frame size (compilation + run), then a second `init`, then
frames 2..N (median and mean ms per frame). Batched: the first --batch sequences of one frame size are tracked
in lockstep with `jax.vmap` (copies of one sequence under different names when no K sequences share a size),
frames/s counted over all K. FLOPs per `step` come from XLA's cost analysis of the compiled step. Peak RSS is
the process maximum (`resource.getrusage`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import statistics
import sys
import time

from bench_common import flops_of  # noqa: E402  (scripts/ is on sys.path)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "real"))


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--trackers", nargs="+", default=["dimp18", "cia18", "cia50"],
                 choices=["dimp18", "superdimp", "cia18", "cia50"])
  p.add_argument("--root", default=DEFAULT_ROOT, help="a folder of sequence folders")
  p.add_argument("--sequences", default=None, help="comma-separated names (default: all)")
  p.add_argument("--max-frames", type=int, default=40, help="frames per sequence (first N)")
  p.add_argument("--batch", type=int, default=4, help="K of the batched run (0: skip)")
  p.add_argument("--batch-frames", type=int, default=20, help="frames per sequence in the batched run")
  p.add_argument("--peak-gflops", type=float, default=442.0,
                 help="fp32 matmul peak in GFLOP/s (442 measured on the 2-core dev machine, see BENCHMARKS.md)")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)




def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
  args = parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax
  import jax.numpy as jnp

  from cia_jax.data.frames import read_frame
  from cia_jax.models.cia import build_model, init_variables
  from cia_jax.models.presets import model_kwargs
  from cia_jax.track import params, runner
  from cia_jax.track import tracker as trk

  if not os.path.isdir(args.root):
    print(f"benchmark_tracking: no sequences at {args.root}", file=sys.stderr)
    return 2
  seqs = runner.select_sequences(runner.folder_sequences(args.root), args.sequences)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs, {platform.machine()}, "
        f"load avg (1 min) {os.getloadavg()[0]:.2f}; {len(seqs)} sequences, first {args.max_frames} frames")
  rows, brows = [], []
  for name in args.trackers:
    net = build_model(model_kwargs(name))
    model = trk.TrackingModel(net=net, variables=init_variables(net, jax.random.key(args.seed)))
    settings = params.get_settings(name, target_not_found_threshold=0.0)
    step_flops = None
    for seq in seqs:
      n = min(len(seq), args.max_frames)
      frames = [read_frame(p) for p in seq.frame_paths[:n]]
      box = jnp.asarray(runner.first_box(seq), jnp.float32)
      key = runner.sequence_key(args.seed, seq.name)
      t0 = time.perf_counter()
      state = jax.block_until_ready(trk.init(model, settings, frames[0], box, key))
      first_init = time.perf_counter() - t0
      t0 = time.perf_counter()
      state = jax.block_until_ready(trk.init(model, settings, frames[0], box, key))
      init_s = time.perf_counter() - t0
      t0 = time.perf_counter()
      state, out = trk.step(model, settings, state, frames[1], jax.random.fold_in(key, 1))
      jax.block_until_ready(out)
      first_step = time.perf_counter() - t0
      times = []
      for t in range(2, n):
        t0 = time.perf_counter()
        state, out = trk.step(model, settings, state, frames[t], jax.random.fold_in(key, t))
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
      if step_flops is None:
        lowered = jax.jit(trk.step_impl, static_argnums=1).lower(model, settings, state, frames[1],
                                                                   jax.random.fold_in(key, 1))
        step_flops = flops_of(lowered.compile())
      med = statistics.median(times) if times else float("nan")
      h, w = frames[0].shape[:2]
      rows.append((name, seq.name, f"{w}x{h}", n, first_init - init_s, init_s, first_step - med, med,
                   1.0 / med, step_flops / med / 1e9))
      print(f"  {name} {seq.name}: init {init_s * 1e3:.0f} ms, step median {med * 1e3:.1f} ms", flush=True)
    if args.batch > 1:
      groups = [g for g in runner.batch_groups(seqs, args.batch) if len(g) == args.batch]
      if groups:
        group, note = groups[0], "distinct sequences"
      else:
        base = seqs[0]
        group = [dataclasses.replace(base, name=f"{base.name}#{i}") for i in range(args.batch)]
        note = f"{args.batch} copies of {base.name}"
      fns = runner.tracker_fns(settings)
      runner.track_batch(model, settings, group, args.seed, max_frames=3, fns=fns)  # compile
      t0 = time.perf_counter()
      res = runner.track_batch(model, settings, group, args.seed, max_frames=args.batch_frames, fns=fns)
      wall = time.perf_counter() - t0
      steps = sum(len(r.times) - 1 for r in res)
      brows.append((name, args.batch, note, args.batch_frames, wall, steps / sum(sum(r.times[1:]) for r in res)))
  print()
  print(f"Peak RSS {peak_rss_mb():.0f} MB. fp32 peak for % column: {args.peak_gflops:.0f} GFLOP/s.")
  print()
  print("| tracker | sequence | frame size | frames | compile init s | init ms | compile step s | step ms "
        "(median) | fps | GFLOP/s (% peak) |")
  print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
  for (name, sname, size, n, ci, init_s, cs, med, fps, gf) in rows:
    print(f"| {name} | {sname} | {size} | {n} | {ci:.1f} | {init_s * 1e3:.0f} | {cs:.1f} | {med * 1e3:.1f} | "
          f"{fps:.1f} | {gf:.0f} ({100 * gf / args.peak_gflops:.0f}%) |")
  if brows:
    print()
    print("| tracker | K | sequences | frames each | wall s (incl. init) | frames/s over all K (steps) |")
    print("|---|---:|---|---:|---:|---:|")
    for (name, k, note, nf, wall, fps) in brows:
      print(f"| {name} | {k} | {note} | {nf} | {wall:.1f} | {fps:.1f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
