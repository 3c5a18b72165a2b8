"""Where the time of one tracker step goes: each part of `tracker.step` jitted on its own, timed and costed.

  .venv/bin/python scripts/profile_tracking.py                       # dimp18 + cia18, 360x240 and 1280x720
  .venv/bin/python scripts/profile_tracking.py --trackers cia18 --rounds 15 --peak-gflops 166
  .venv/bin/python scripts/profile_tracking.py --set winograd_convs=false --against winograd_convs=true  # A / B

Random-weight networks (the presets' architectures, `models.cia.init_variables`) with the reference tracker
parameters, except `target_not_found_threshold=0` (random-weight scores must not stop the model updates).
Frames: ../shared/data/real/OTB_Crossing (360x240) and LaSOT_airplane-1 upsampled 2x to 1280x720 (pixel
repetition; the box doubled), so both are real image content. The tracker is initialised and stepped over a
few frames; the parts then run on that state and the next frame:

  patch        `sample_patch` from the uint8 frame (the only part that sees the frame)
  backbone     normalisation + ResNet to layer2 / layer3
  instance     CIA's [IE]: the learned projection of layer3 and its angle modulation (absent for DiMP)
  category     CIA's [CE]: the category encoder over the dictionary (absent for DiMP)
  clf_feat     DiMP's classification feature block
  localize     scores (filter correlation) + advanced localisation
  iou_refine   IoU-Net features, 10 boxes x box_refinement_iter gradient steps, top-k average
  update_N     memory write + filter update running N steepest-descent iterations (N = 0: write only), with
               the frame's flag and number traced as in the step; its GFLOP count the write and one
               iteration (XLA's cost analysis counts a loop body once)
  step         the whole compiled `tracker.step` (the sum of the parts minus what XLA fuses across them)

Each part is its own jitted function; rounds run every part once in turn (alternating, so load drifts hit all
parts alike) and the median per part is reported, with the FLOPs of XLA's cost analysis of that compiled part
and the achieved GFLOP/s against the fp32 matmul peak (`--peak-gflops`, or `--measure-peak` as in
scripts/benchmark_backbone.py). The step row counts frames as the runner does: a NumPy uint8 frame passed in.
`--against KEY=VALUE` adds a variant B of the settings; A's and B's parts alternate in every round. GFLOP
counts direct convolutions whatever runs (`bench_common.step_flops`), so Winograd's rows give effective rates.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time

import numpy as np

from bench_common import flops_of, iou_refine_flops, step_flops  # noqa: E402  (scripts/ is on sys.path)

from cia_jax import xla_flags  # standard library only

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "real"))
# (label, sequence folder, integer upsampling factor): 360x240 as is; 640x360 x 2 = 1280x720.
FRAME_SETS = {"360x240": ("OTB_Crossing", 1), "1280x720": ("LaSOT_airplane-1", 2)}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--trackers", nargs="+", default=["dimp18", "cia18"], choices=["dimp18", "superdimp", "cia18",
                                                                               "cia50"])
  p.add_argument("--sizes", nargs="+", default=list(FRAME_SETS), choices=list(FRAME_SETS))
  p.add_argument("--root", default=DEFAULT_ROOT, help="the folder holding the real sequences")
  p.add_argument("--rounds", type=int, default=9, help="timed rounds (each runs every part once)")
  p.add_argument("--warmup-frames", type=int, default=4, help="tracked frames before the parts are timed")
  p.add_argument("--peak-gflops", type=float, default=None, help="fp32 matmul peak (GFLOP/s)")
  p.add_argument("--measure-peak", action="store_true", help="measure the matmul peak first (2048^3, jitted)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a tracker setting (repeatable, the `cia-jax track --set` parser), e.g. winograd_convs=false")
  p.add_argument("--against", action="append", default=[], metavar="KEY=VALUE",
                 help="also profile variant B: the settings with these overrides on top of --set (repeatable); "
                      "A and B alternate in every round")
  args = p.parse_args(argv)
  if args.rounds < 1 or args.warmup_frames < 1:
    p.error("--rounds and --warmup-frames must be >= 1")
  return args


def load_frames(root: str, name: str, factor: int, count: int):
  """(uint8 frames `[count, H, W, 3]`, first box `[4]` xywh) of a real sequence, upsampled by `factor`."""
  from cia_jax.data.frames import read_frame  # pylint: disable=g-import-not-at-top
  from cia_jax.track import runner  # pylint: disable=g-import-not-at-top
  seqs = {s.name: s for s in runner.folder_sequences(root)}
  if name not in seqs:
    raise SystemExit(f"profile_tracking: no sequence {name!r} under {root}")
  seq = seqs[name]
  frames = [read_frame(p) for p in seq.frame_paths[:count]]
  if factor > 1:
    frames = [np.repeat(np.repeat(f, factor, axis=0), factor, axis=1) for f in frames]
  return np.stack(frames), np.asarray(seq.boxes[0], np.float32) * factor


def make_parts(model, settings):
  """{name: jitted fn}: the stages of `tracker.step_impl` (`_variant` builds their arguments)."""
  import jax  # pylint: disable=g-import-not-at-top

  from cia_jax.models.cia import CIANet  # pylint: disable=g-import-not-at-top
  from cia_jax.ops.crop import sample_patch, sample_pos_scale  # pylint: disable=g-import-not-at-top
  from cia_jax.track import tracker as trk  # pylint: disable=g-import-not-at-top

  s = settings.image_sample_size
  apply = lambda method, *a: model.net.apply(model.variables, *a, method=method)  # noqa: E731

  def patch(state, image):
    p, coord = sample_patch(image, state.pos_yx, state.target_scale * s, (s, s), settings.border_mode,
                            settings.patch_max_scale_change, rule=settings.crop_rule, image_sz_yx=state.image_sz_yx)
    return p[None], coord

  def backbone(p):
    f = apply(CIANet.backbone_features, trk.normalize_image(p), False, ("layer2", "layer3"))
    return f["layer2"], f["layer3"]

  def instance(layer3):
    return apply(CIANet.instance_stage, layer3)

  def category(x):
    return apply(CIANet.category_stage, x, True)

  def clf_feat(x):
    return apply(lambda m, v: m.classifier.extract_classification_feat(v, False), x)

  def localize(state, x, coord):
    scores = apply(CIANet.classify, state.filter[None], x[:, None])[0, 0]
    sample_pos, sample_scale = sample_pos_scale(coord, s)
    return trk.localize(scores, settings, state.pos_yx, state.target_sz_yx, sample_pos, sample_scale)

  def iou_refine(state, layer2, layer3, coord, key):
    sample_pos, sample_scale = sample_pos_scale(coord, s)
    return trk.refine_target(model, settings, state, layer2, layer3, state.pos_yx, state.target_sz_yx,
                             sample_pos, sample_scale, key)

  def update(state, x, coord, flag, frame_num):
    sample_pos, sample_scale = sample_pos_scale(coord, s)
    box = trk.patch_box(state.pos_yx, state.target_sz_yx, sample_pos, sample_scale, s)
    return trk.update_model(model, settings, state, x, box, flag, frame_num, state.tcm, None)[:2]

  parts = {"patch": jax.jit(patch), "backbone": jax.jit(backbone), "instance": jax.jit(instance),
           "category": jax.jit(category), "clf_feat": jax.jit(clf_feat), "localize": jax.jit(localize),
           "iou_refine": jax.jit(iou_refine)}
  update = jax.jit(update)  # one compilation: the iteration count comes from the traced flag and frame number
  for n in sorted({0, settings.net_opt_hn_iter, settings.net_opt_update_iter}):
    parts[f"update_{n}"] = update
  return parts


def update_args(settings, n_iter: int):
  """(flag, frame_num) of a frame whose filter update runs `n_iter` iterations: a normal frame with no
  update (0) or the periodic one (net_opt_update_iter), else a hard-negative frame (net_opt_hn_iter)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cia_jax.track import tracker as trk  # pylint: disable=g-import-not-at-top
  hard = n_iter == settings.net_opt_hn_iter and n_iter != settings.net_opt_update_iter
  flag = trk.FLAG_HARD_NEGATIVE if hard else trk.FLAG_NORMAL
  # Traced, as in the step: constants let XLA fold the update's branches and loop into a slower program
  # (hard-negative 24 against 9 ms for CIA18).
  return jnp.asarray(flag, jnp.int32), jnp.asarray(1 + (settings.train_skipping if n_iter else 1), jnp.int32)


def _with_constants(update, consts, state, x, coord, *_):
  return update(state, x, coord, *consts)


def _variant(model, settings, frames, box, args):
  """(jitted parts, their arguments, part order, FLOPs per part) of one tracker on one frame set."""
  import jax  # pylint: disable=g-import-not-at-top

  from cia_jax.track import tracker as trk  # pylint: disable=g-import-not-at-top

  key = jax.random.key(args.seed)
  state = trk.init(model, settings, frames[0], box, key)
  for t in range(1, args.warmup_frames):
    state, _ = trk.step(model, settings, state, frames[t], jax.random.fold_in(key, t))
  image = frames[args.warmup_frames]
  # The parts run the network as the step does (`--set winograd_convs=...`); their work is counted on direct
  # convolutions whatever runs (`bench_common.step_flops`).
  fns = make_parts(trk.for_settings(model, settings), settings)
  counted = make_parts(trk.for_settings(model, settings.replace(winograd_convs=False)), settings)
  p, coord = fns["patch"](state, image)
  layer2, layer3 = fns["backbone"](p)
  inst = fns["instance"](layer3) if model.net.instance_encoder else layer3
  clf_in = fns["category"](inst) if model.net.category_encoder else inst
  x = fns["clf_feat"](clf_in)
  k = jax.random.fold_in(key, 999)
  calls = {"patch": (state, image), "backbone": (p,), "clf_feat": (clf_in,), "localize": (state, x, coord),
           "iou_refine": (state, layer2, layer3, coord, k)}
  if model.net.instance_encoder:
    calls["instance"] = (layer3,)
  if model.net.category_encoder:
    calls["category"] = (inst,)
  for name in fns:
    if name.startswith("update_"):
      calls[name] = (state, x, coord, *update_args(settings, int(name.split("_")[1])))
  calls["step"] = (model, settings, state, image, k)
  fns["step"] = trk.step
  order = [n for n in ["patch", "backbone", "instance", "category", "clf_feat", "localize", "iou_refine"]
           if n in calls]
  order += sorted(n for n in calls if n.startswith("update_")) + ["step"]
  flops = {}
  for n in order:
    fn, a = fns[n], calls[n]
    counted_fn = counted.get(n, fn)
    if n.startswith("update_"):  # counted with the flag and frame number folded in: its branch, one iteration
      counted_fn = jax.jit(functools.partial(_with_constants, counted[n], a[3:]))
    flops[n] = flops_of(counted_fn.lower(*a).compile())
    jax.block_until_ready(fn(*a))  # compile + warm
  # The cost analysis counts the IoU-Net's whole-map fallback and its largest window: count the smallest window.
  full, small = iou_refine_flops(model, settings, calls["iou_refine"][0])
  direct = settings.replace(iou_feature_windows=(), winograd_convs=False)
  iou_counted = flops_of(make_parts(model, direct)["iou_refine"].lower(*calls["iou_refine"]).compile())
  flops["iou_refine"] = iou_counted - full + small
  flops["step"] = step_flops(model, settings, calls["step"][2], calls["step"][3], calls["step"][4])
  return fns, calls, order, flops


def profile(model, variants, frames, box, args, peak):
  """Rows (variant, part, GFLOP, median ms, GFLOP/s, % peak) of one tracker on one frame size, for each
  settings variant; every round runs every part of every variant once (alternating)."""
  import jax  # pylint: disable=g-import-not-at-top

  runs = {v: _variant(model, settings, frames, box, args) for v, settings in variants.items()}
  times = {(v, n): [] for v, run in runs.items() for n in run[2]}
  for _ in range(args.rounds):
    for v, (fns, calls, order, _) in runs.items():
      for n in order:
        t0 = time.perf_counter()
        jax.block_until_ready(fns[n](*calls[n]))
        times[(v, n)].append(time.perf_counter() - t0)
  rows = []
  for v, (_, _, order, flops) in runs.items():
    for n in order:
      ms = 1e3 * statistics.median(times[(v, n)])
      gf = flops[n] / 1e9
      rate = gf / (ms / 1e3) if ms > 0 else float("nan")
      rows.append((v, n, gf, ms, rate, 100.0 * rate / peak if peak else float("nan")))
  return rows


def main(argv=None) -> int:
  args = parse_args(argv)
  xla_flags.configure()  # what `cia-jax` runs with; before JAX's first computation
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.path.insert(0, HERE)
  import jax  # pylint: disable=g-import-not-at-top

  from benchmark_backbone import measure_matmul_peak  # pylint: disable=g-import-not-at-top
  from cia_jax.models.cia import build_model, init_variables  # pylint: disable=g-import-not-at-top
  from cia_jax.models.presets import model_kwargs  # pylint: disable=g-import-not-at-top
  from cia_jax.track import params  # pylint: disable=g-import-not-at-top
  from cia_jax.track import tracker as trk  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(args.root):
    print(f"profile_tracking: no sequences at {args.root}", file=sys.stderr)
    return 2
  peak = measure_matmul_peak(2, 9) if args.measure_peak else args.peak_gflops
  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
             platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
  flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
  isa = "AVX-512" if " avx512f" in flags else ("AVX2" if " avx2" in flags else "no AVX2")
  print(f"jax {jax.__version__}, {jax.default_backend()}, {os.cpu_count()} CPUs, {cpu} ({isa}), "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, load avg (1 min) {os.getloadavg()[0]:.2f}"
        f"{'; --set ' + ' '.join(args.set) if args.set else ''}")
  print(f"fp32 matmul peak: {peak:.1f} GFLOP/s ({'measured' if args.measure_peak else 'given'})" if peak
        else "fp32 matmul peak: not given (--peak-gflops or --measure-peak)")
  print(f"median of {args.rounds} alternating rounds\n")
  if args.against:
    print(f"variant A: --set {' '.join(args.set) or '(preset)'}; variant B: A + {' '.join(args.against)}")
  print("| tracker | frame | variant | part | GFLOP | median ms | GFLOP/s | % peak |")
  print("|---|---|---|---|---:|---:|---:|---:|")
  for name in args.trackers:
    net = build_model(model_kwargs(name))
    model = trk.prepare(trk.TrackingModel(net=net, variables=init_variables(net, jax.random.key(args.seed))))
    settings = params.apply_overrides(params.get_settings(name, target_not_found_threshold=0.0), args.set)
    variants = {"A": settings, "B": params.apply_overrides(settings, args.against)} if args.against else {"-": settings}
    for size in args.sizes:
      seq, factor = FRAME_SETS[size]
      frames, box = load_frames(args.root, seq, factor, args.warmup_frames + 1)
      for v, part, gf, ms, rate, pct in profile(model, variants, frames, box, args, peak):
        print(f"| {name} | {size} | {v} | {part} | {gf:.2f} | {ms:.1f} | {rate:.0f} | {pct:.0f}% |", flush=True)
  print(f"\nload avg (1 min) at the end {os.getloadavg()[0]:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
