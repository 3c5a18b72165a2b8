"""Tracking speed: compile time, init time and frames per second of the jitted tracker; batched K-sequence speed.

  .venv/bin/python scripts/benchmark_tracking.py                                   # the BENCHMARKS.md table
  .venv/bin/python scripts/benchmark_tracking.py --trackers dimp18 --max-frames 30 --batch 4

Random-weight networks of the given presets with the reference tracker parameters (design.md §5.1), except
`target_not_found_threshold=0` so random-weight scores (~0.1) do not stop the model updates and every branch
of a frame is exercised. For each sequence of --root (default: ../shared/data/real, read with the folder
reader): the first call of `init` / `step` at that frame size (compilation + run), then a second `init`, then
frames 2..N (median and mean ms per frame). Batched: the first --batch sequences of one frame size are tracked
in lockstep with `jax.vmap` (copies of one sequence under different names when no K sequences share a size),
frames/s counted over all K. FLOPs per `step` come from XLA's cost analysis of the compiled step, for a frame
whose boxes fit the smallest IoU window (`bench_common.step_flops`). Peak RSS is the process maximum
(`resource.getrusage`).

Lanes (`--lanes`, what `cia-jax track` runs): every sequence of --root (mixed frame sizes, padded to one
bucket) tracked by `batching.track_lanes` with K lanes per device and C frames per call, for each (K, C) of
`--configs`; total frames/s = frames of all sequences / wall time of the run (init, decoding and
writing included, compilation excluded: a short run of the same shapes first), median of `--rounds` rounds
(`--copies N` tracks the set N times, so that idle lanes at the end weigh as little as in a long benchmark)
that alternate the configurations. GFLOP/s = XLA's cost analysis of the compiled chunk and init programs x
calls / wall time (a chunk's count includes the IoU-Net's whole-map fallback, so it is high). Then the
projected LaSOT-test wall time (`--lasot-frames` in `--lasot-sequences`): one CPU
host at the best measured rate, and N accelerators at an assumed sustained rate (`--accel-tflops`, see the
printed assumptions).

  .venv/bin/python scripts/benchmark_tracking.py --lanes --trackers dimp18 cia18 --max-frames 40

Association cost (`--tcm-cost`): what KeepTrack's target candidate matching adds per frame. On one sequence
(--sequences, default OTB_Crossing) the jitted `init` / `step` of SuperDiMP, KeepTrack with matching off (the
same 480 px / scale-8 geometry: SuperDiMP's tracker at KeepTrack's parameters), KeepTrack; then CIA50,
CIA50-tcm with matching off, CIA50-tcm. --rounds runs of each, alternating (the order rotates per round),
median ms per tracked frame (frames 2..N, compilation excluded), and XLA's cost analysis of the step
(GFLOP, `bench_common.step_flops`). Random weights peak near 0.02, below the candidate threshold 0.05,
so `--candidate-threshold` (default 0.01) lets candidates and the matcher run as with trained weights.

  .venv/bin/python scripts/benchmark_tracking.py --tcm-cost --max-frames 30 --rounds 3
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

from bench_common import flops_of, step_flops  # noqa: E402  (scripts/ is on sys.path)

from cia_jax import xla_flags  # standard library only

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
  p.add_argument("--lanes", action="store_true", help="run the lanes benchmark (cia-jax track's engine) instead")
  p.add_argument("--tcm-cost", action="store_true",
                 help="per-frame cost of KeepTrack's target candidate matching (see the module docstring)")
  p.add_argument("--tcm-family", choices=["keeptrack", "cia50_tcm", "both"], default="both",
                 help="--tcm-cost: the SuperDiMP / KeepTrack variants, the CIA50 / CIA50-tcm ones, or both")
  p.add_argument("--candidate-threshold", type=float, default=0.01,
                 help="--tcm-cost: local_max_candidate_score_th of the tcm variants")
  p.add_argument("--configs", nargs="+", default=["1x1", "4x1", "8x1", "1x8", "4x8", "8x8"],
                 help="KxC: K lanes per device, C frames per device call")
  p.add_argument("--rounds", type=int, default=2, help="alternating rounds (median reported)")
  p.add_argument("--copies", type=int, default=1,
                 help="--lanes: track the sequence set N times (each copy under its own name, so its own key): "
                      "a larger set keeps the lanes filled, as a long benchmark does")
  p.add_argument("--lasot-frames", type=float, default=690e3, help="frames of the projected benchmark")
  p.add_argument("--lasot-sequences", type=int, default=280)
  p.add_argument("--accel-tflops", type=float, default=20.0,
                 help="assumed sustained fp32 TFLOP/s of one accelerator for the projection (not measured)")
  p.add_argument("--accel-counts", type=int, nargs="+", default=[1, 8, 64])
  return p.parse_args(argv)


def lanes_benchmark(args, seqs) -> int:
  """The `--lanes` tables (module docstring)."""
  import jax
  import numpy as np

  from cia_jax.models.cia import build_model, init_variables
  from cia_jax.models.presets import model_kwargs
  from cia_jax.track import batching, params, runner
  from cia_jax.track import tracker as trk

  seqs = [dataclasses.replace(s, name=f"{s.name}_copy{i}" if i else s.name) for i in range(args.copies)
          for s in seqs]
  lengths = [min(len(s), args.max_frames) for s in seqs]
  sizes = [runner.frame_size(s) for s in seqs]
  total = sum(lengths)
  configs = [tuple(int(v) for v in cfg.lower().split("x")) for cfg in args.configs]
  mesh = batching.lane_mesh(jax.local_devices()[:1])
  h, w = batching.bucket_shape(sizes)
  print(f"lanes: {len(seqs)} sequences, {total} frames, sizes {sorted(set(sizes))} padded to {w}x{h}; "
        f"1 device; configurations (K, C) {configs}")
  rows, best = [], {}
  for name in args.trackers:
    net = build_model(model_kwargs(name))
    model = trk.prepare(trk.TrackingModel(net=net, variables=init_variables(net, jax.random.key(args.seed))))
    settings = params.get_settings(name, target_not_found_threshold=0.0)
    fns = batching.lane_fns(settings, mesh)
    flops, walls = {}, {cfg: [] for cfg in configs}
    for k, c in configs:  # compile (a short run of the same shapes) and count FLOPs per call
      t0 = time.perf_counter()
      batching.track_lanes(model, settings, seqs, [min(n, c + 1) for n in lengths], sizes, seed=args.seed,
                           lanes_per_device=k, chunk=c, mesh=mesh)
      compile_s = time.perf_counter() - t0
      L = k
      img = np.zeros((L, h, w, 3), np.uint8)
      args_init = (model, img, np.zeros((L, 4), np.float32) + 8, np.zeros((L, 2), np.uint32),
                   np.full((L, 2), [h, w], np.float32))
      state = fns["empty"](*args_init)
      f_init = flops_of(fns["init"].lower(model, state, *args_init[1:], np.ones(L, bool)).compile())
      f_chunk = flops_of(fns["chunk"].lower(model, state, np.zeros((c, L, h, w, 3), np.uint8),
                                            np.zeros((L, 2), np.uint32), np.zeros((c, L), np.int32)).compile())
      f_chunk *= c  # XLA's cost analysis counts a loop body (the scan over the chunk) once
      slots = batching.schedule(lengths, L, c)
      chunks = max(s.chunk + s.chunks for s in slots)
      inits = len({s.chunk for s in slots})
      # An init call runs one lane's init per starting lane (`lax.map`; the cost analysis counts the body once).
      flops[(k, c)] = (f_init * len(seqs) + f_chunk * chunks, compile_s, f_chunk / (k * c), chunks * k * c)
      print(f"  {name} K={k} C={c}: compile + first run {compile_s:.0f} s, {f_init / 1e9:.1f} GFLOP per lane init, "
            f"{f_chunk / 1e9:.1f} GFLOP per chunk call, {inits} init and {chunks} chunk calls, "
            f"{chunks * k * c} lane-steps for {total - len(seqs)} tracked frames", flush=True)
    for _ in range(args.rounds):
      for cfg in configs:
        t0 = time.perf_counter()
        batching.track_lanes(model, settings, seqs, lengths, sizes, seed=args.seed, lanes_per_device=cfg[0],
                             chunk=cfg[1], mesh=mesh)
        walls[cfg].append(time.perf_counter() - t0)
        print(f"  {name} K={cfg[0]} C={cfg[1]}: {walls[cfg][-1]:.1f} s, load {os.getloadavg()[0]:.2f}", flush=True)
    base = total / statistics.median(walls[(1, 1)]) if (1, 1) in walls else None
    for cfg in configs:
      wall = statistics.median(walls[cfg])
      fps = total / wall
      gf = flops[cfg][0] / wall / 1e9
      rows.append((name, cfg[0], cfg[1], wall, fps, fps / base if base else float("nan"), gf, flops[cfg][1],
                   flops[cfg][3]))
      if fps > best.get(name, (0.0, None))[0]:
        # Projection: a long sequence costs about one lane-step per frame (inits and masked steps amortised).
        best[name] = (fps, cfg, flops[cfg][2])
      print(f"  {name} K={cfg[0]} C={cfg[1]}: {fps:.2f} frames/s (median of {len(walls[cfg])}), "
            f"{fps / base if base else float('nan'):.2f}x K=1 C=1, {gf:.0f} GFLOP/s", flush=True)
  print()
  print(f"fp32 peak for the % column: {args.peak_gflops:.0f} GFLOP/s. Load average now {os.getloadavg()[0]:.2f}.")
  print()
  print(f"Lane-steps: what the devices step, for {total - len(seqs)} tracked frames (idle lanes and chunk tails "
        "included); inits are not lane-steps.")
  print()
  print("| tracker | K | C | wall s (median) | total frames/s | vs K=1 C=1 | GFLOP/s (% peak) | compile s | "
        "lane-steps |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for (name, k, c, wall, fps, ratio, gf, cs, steps) in rows:
    pct = 100 * gf / args.peak_gflops
    print(f"| {name} | {k} | {c} | {wall:.1f} | {fps:.1f} | {ratio:.2f}x | {gf:.0f} ({pct:.0f}%) | {cs:.0f} | "
          f"{steps} |")
  print()
  print(f"Projected wall time of {args.lasot_frames:.0f} frames in {args.lasot_sequences} sequences:")
  print("| tracker | where | assumption | frames/s | wall time |")
  print("|---|---|---|---:|---:|")
  for name, (fps, (k, c), gflop_frame) in best.items():
    print(f"| {name} | 1 CPU host (this one) | measured best: K={k}, C={c} | {fps:.1f} | "
          f"{args.lasot_frames / fps / 3600:.1f} h |")
    per_device = args.accel_tflops * 1e12 / gflop_frame
    for n in args.accel_counts:
      print(f"| {name} | {n} accelerator(s) | {args.accel_tflops:.0f} TFLOP/s sustained each, "
            f"{gflop_frame / 1e9:.1f} GFLOP per lane-step, linear in N | {n * per_device:.0f} | "
            f"{args.lasot_frames / (n * per_device) / 3600:.2f} h |")
  return 0




# --tcm-cost variants: (label, preset, settings overrides, base label the extra time is measured against).
TCM_VARIANTS = (
    ("superdimp", "superdimp", {}, None),
    ("keeptrack, matching off", "keeptrack", {"use_tcm": False, "use_certainty_for_weight_computation": False},
     "superdimp"),
    ("keeptrack", "keeptrack", {}, "keeptrack, matching off"),
    ("cia50", "cia50", {}, None),
    ("cia50_tcm, matching off", "cia50_tcm", {"use_tcm": False, "use_certainty_for_weight_computation": False},
     "cia50"),
    ("cia50_tcm", "cia50_tcm", {}, "cia50_tcm, matching off"),
)


def tcm_cost_benchmark(args, seqs) -> int:
  """The `--tcm-cost` table (module docstring)."""
  import jax
  import jax.numpy as jnp

  from cia_jax.data.frames import read_frame
  from cia_jax.track import params, runner
  from cia_jax.track import tracker as trk

  seq = next((s for s in seqs if s.name == "OTB_Crossing"), seqs[0]) if not args.sequences else seqs[0]
  n = min(len(seq), args.max_frames)
  if n < 3:
    print(f"benchmark_tracking: --tcm-cost needs >= 3 frames, {seq.name} gives {n}", file=sys.stderr)
    return 2
  frames = [read_frame(p) for p in seq.frame_paths[:n]]
  box = jnp.asarray(runner.first_box(seq), jnp.float32)
  key = runner.sequence_key(args.seed, seq.name)
  h, w = frames[0].shape[:2]
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs; {seq.name} ({w}x{h}), "
        f"first {n} frames, {args.rounds} alternating rounds; load avg {os.getloadavg()}", flush=True)
  variants = {}
  families = {"keeptrack": ("superdimp", "keeptrack"), "cia50_tcm": ("cia50", "cia50_tcm")}
  keep = families.get(args.tcm_family, ("superdimp", "keeptrack", "cia50", "cia50_tcm"))
  for label, preset, overrides, base in TCM_VARIANTS:
    if preset not in keep:
      continue
    settings = params.get_settings(preset, target_not_found_threshold=0.0, **overrides)
    if settings.use_tcm:
      settings = dataclasses.replace(settings, local_max_candidate_score_th=args.candidate_threshold)
    model = runner.load_model(preset, None, True, args.seed, tcm=settings.use_tcm)
    t0 = time.perf_counter()
    state = jax.block_until_ready(trk.init(model, settings, frames[0], box, key))
    state1, out = trk.step(model, settings, state, frames[1], jax.random.fold_in(key, 1))
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    flops = step_flops(model, settings, state, frames[1], jax.random.fold_in(key, 1))
    variants[label] = dict(model=model, settings=settings, base=base, compile_s=compile_s, flops=flops, times=[])
    print(f"  {label}: compile + first frames {compile_s:.0f} s, step {flops / 1e9:.1f} GFLOP", flush=True)
  labels = list(variants)
  for r in range(args.rounds):
    for label in labels[r % len(labels):] + labels[:r % len(labels)]:  # rotate who goes first
      v = variants[label]
      state = jax.block_until_ready(trk.init(v["model"], v["settings"], frames[0], box, key))
      times, matched, cands = [], 0, []
      for t in range(1, n):
        t0 = time.perf_counter()
        state, out = trk.step(v["model"], v["settings"], state, frames[t], jax.random.fold_in(key, t))
        jax.block_until_ready(out)
        if t >= 2:
          times.append(time.perf_counter() - t0)
        if v["settings"].use_tcm:
          matched += bool(out["matched"])
          cands.append(int(state.tcm.candidates.valid.sum()))
      v["times"].append(times)
      v["matched"] = f"{matched}/{n - 1}, {statistics.mean(cands):.1f}" if cands else "-"
      print(f"  round {r} {label}: {1e3 * statistics.median(times):.1f} ms/frame, load {os.getloadavg()[0]:.2f}",
            flush=True)
  print(f"\nLoad average now {os.getloadavg()}.\n")
  print("| tracker | crop px | step ms (median, all rounds) | per-round medians ms | extra ms vs | GFLOP / step | "
        "extra GFLOP | frames matched, mean candidates |")
  print("|---|---:|---:|---|---|---:|---:|---|")
  for label, v in variants.items():
    med = statistics.median([t for ts in v["times"] for t in ts])
    v["median"] = med
    rounds = " ".join(f"{1e3 * statistics.median(ts):.0f}" for ts in v["times"])
    if v["base"]:
      b = variants[v["base"]]
      extra = f"{1e3 * (med - b['median']):+.1f} ({v['base']})"
      extra_gf = f"{(v['flops'] - b['flops']) / 1e9:+.1f}"
    else:
      extra, extra_gf = "-", "-"
    print(f"| {label} | {v['settings'].image_sample_size} | {1e3 * med:.1f} | {rounds} | {extra} | "
          f"{v['flops'] / 1e9:.1f} | {extra_gf} | {v['matched']} |")
  return 0


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
  args = parse_args(argv)
  xla_flags.configure()  # what `cia-jax` runs with; before JAX's first computation
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
  if args.lanes:
    return lanes_benchmark(args, seqs)
  if args.tcm_cost:
    return tcm_cost_benchmark(args, seqs)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs, {platform.machine()}, "
        f"load avg (1 min) {os.getloadavg()[0]:.2f}; {len(seqs)} sequences, first {args.max_frames} frames")
  rows, brows = [], []
  for name in args.trackers:
    net = build_model(model_kwargs(name))
    model = trk.prepare(trk.TrackingModel(net=net, variables=init_variables(net, jax.random.key(args.seed))))
    settings = params.get_settings(name, target_not_found_threshold=0.0)
    frame_flops = None
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
      if frame_flops is None:
        frame_flops = step_flops(model, settings, state, frames[1], jax.random.fold_in(key, 1))
      med = statistics.median(times) if times else float("nan")
      h, w = frames[0].shape[:2]
      rows.append((name, seq.name, f"{w}x{h}", n, first_init - init_s, init_s, first_step - med, med,
                   1.0 / med, frame_flops / med / 1e9))
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
