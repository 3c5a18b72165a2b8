"""One-shot device check: tracking and training speed on this machine's accelerator, as ONE Markdown table.

  scripts/device_check.sh                  # GPU / TPU: full sizes, under 8 minutes on one GPU
  scripts/device_check.sh --tiny           # CPU: the same code paths at tiny sizes (tests/test_device_check.py)

No downloads, random weights (NumPy He-normal, `cia_jax.models.cia.random_variables`), synthetic frames (a
textured target drifting over noise). Rows:
  * the device (kind, count, backend, jax version);
  * tracking frames/s of DiMP18 / CIA18 / CIA50 with the preset tracker settings (`target_not_found_threshold=0`
    so random-weight scores never stop the model updates): K = 1 is the jitted `tracker.step` (`cia-jax track`'s
    unbatched path), median over the timed frames; "best batched K" is the runner's batched step
    (`runner.tracker_fns(settings)['vstep']`, `vmap` over K sequences in lockstep) at each K of `--ks`, frames/s
    over all K lanes, the best K reported (the batched state starts as K copies of one `init`, so `vinit` is not
    compiled; it runs once per sequence and is not what limits throughput);
  * seconds per CIA18 training step (forward + backward + Adam + EMA, state donated; `train_step_program`) at
    two batch sizes, median of the timed steps after warm-up.
Every timed call ends with a host read of its result (what the tracker loop does). Columns: fp32; bf16 (mixed
precision, design.md §9.1: the same weights with the network built with dtype='bfloat16' – the tracker's
`compute_dtype=bfloat16`, the trainer's `--config.model.dtype=bfloat16`; the batched bf16 rate is measured at
the K that was best in fp32); compile s (lowering + XLA compilation, fp32 / bf16); GFLOP/s from XLA's cost
analysis of the compiled fp32 program / measured time; XLA memory = arguments + outputs + temporaries of the
compiled fp32 program (`memory_analysis`); peak device memory = the device's `peak_bytes_in_use` so far in the
process (`memory_stats`, monotone down the table; n/a on CPU). Frame host->device copies are inside the timing.

`--tiny` runs every code path of this script (tracking K = 1 init/step, the batched step, the training step, each
in fp32 and bf16) but compiles as little as it can: CIA18 only (the other presets run the same code with another
network) and one training batch size; width-8 networks, one category-encoder layer, one training
steepest-descent step, 64 px patches, fewer augmentation samples and optimiser / refinement iterations; random
weights drawn with NumPy (`random_variables`, no Flax init compiled); and scripts/device_check.sh lowers XLA's
backend optimisation level (`--xla_backend_optimization_level=0`: about half the compile time, the tiny timings
mean nothing anyway) and uses XLA's loop emitters instead of its fusion emitters (`--xla_cpu_use_fusion_emitters=
false`: at that level, half the compile CPU time again; the HLO programs are the same). 8 programs; about 50
CPU-seconds (BENCHMARKS.md "Suite time").

`--budget-s` keeps the run short: larger K are skipped once the trackers have used 60% of it, the second
training batch once 85% is gone (such rows say "skipped"). A row that fails prints its error in the table and
the exit code is 1. Progress goes to stderr, the table to stdout. `--compilation-cache none` (the default)
makes the compile times cold ones.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bench_common import flops_of  # noqa: E402  (scripts/ is on sys.path)
from cia_jax import compile_cache
from cia_jax.data.processing.config import PROCESSING_PRESETS
from cia_jax.models.cia import build_model, random_variables, with_dtype
from cia_jax.models.presets import model_kwargs
from cia_jax.track import params, runner
from cia_jax.track import tracker as trk
from cia_jax.train.batch import random_batch
from cia_jax.train.state import create_train_state, make_optimizer
from cia_jax.train.step import StepSettings, make_train_step

TRACKERS = ("dimp18", "cia18", "cia50")
NAMES = {"dimp18": "DiMP18", "superdimp": "SuperDiMP", "cia18": "CIA18", "cia50": "CIA50"}
TINY_NET = dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32, encoder_layers=1, num_iter=1)
# Tiny tracker: the same code paths (every augmentation kind, filter updates, IoU-Net refinement) with fewer
# samples and iterations, so that there is less to compile.
TINY_TRACKER = dict(image_sample_size=64, aug_rotate=(10.0,), aug_blur=((1.0, 1.0),), aug_relativeshift=((0.6, 0.6),),
                    aug_dropout_num=1, sample_memory_size=12, net_opt_iter=2, net_opt_update_iter=1,
                    num_init_random_boxes=2, box_refinement_iter=1)
DTYPES = ("float32", "bfloat16")
# CIA18's per-group Adam learning rates (configs/cia18.py, design.md §4.9); only the optimiser's arithmetic
# depends on them.
CIA18_LEARNING_RATES = dict(feature_extractor=2e-4, upper_classifier=2e-4, filter_initializer=5e-5,
                            filter_optimizer=5e-4, clf_feature_extractor=5e-5, bb_regressor=1e-3)


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What one run measures (`FULL` on accelerators, `TINY` on CPU)."""

  net: dict  # CIANet overrides of every preset ({} = the real networks)
  tracker: dict  # TrackerSettings overrides ({} = the presets' patch sizes)
  frame_hw: tuple[int, int]
  target: int  # side of the synthetic target, pixels
  ks: tuple[int, ...]  # batched K to try
  track_steps: int  # timed frames at K = 1
  batched_steps: int  # timed lockstep frames per K
  train_size: int  # training crop side, pixels
  train_batches: tuple[int, int]
  train_steps: int  # timed training steps (after one warm-up step)
  trackers: tuple[str, ...] = TRACKERS  # tracker presets measured


FULL = Sizes(net={}, tracker={}, frame_hw=(480, 640), target=64, ks=(8, 32), track_steps=30, batched_steps=10,
             train_size=288, train_batches=(8, 64), train_steps=5)
# Tiny: one tracker and one training batch size (the other presets and batch sizes run the same code).
TINY = Sizes(net=TINY_NET, tracker=TINY_TRACKER, frame_hw=(96, 128), target=24, ks=(2,), track_steps=3,
             batched_steps=2, train_size=64, train_batches=(2,), train_steps=2, trackers=("cia18",))


@dataclasses.dataclass
class Row:
  """One table row; numbers already formatted."""

  measurement: str
  setting: str = ""
  fp32: str = "-"
  bf16: str = "-"
  compile_s: str = "-"
  gflops: str = "-"
  xla_memory: str = "-"
  peak_memory: str = "-"
  failed: bool = False


class Clock:
  """Seconds since the start of the run, against the `--budget-s` budget."""

  def __init__(self, budget_s: float):
    self.start, self.budget_s = time.perf_counter(), budget_s

  def used(self) -> float:
    """Fraction of the budget spent."""
    return (time.perf_counter() - self.start) / self.budget_s


def log(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


def gib(nbytes: float | None) -> str:
  """Bytes -> '1.23 GiB' / '45.6 MiB', 'n/a' for None."""
  if nbytes is None:
    return "n/a"
  return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def xla_bytes(compiled) -> float | None:
  """Arguments + outputs + temporaries (less aliased buffers) of a compiled program, from XLA."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def peak_bytes() -> float | None:
  """The first device's peak allocated bytes so far (None where the backend keeps no statistics, e.g. CPU)."""
  stats = jax.local_devices()[0].memory_stats()
  return None if not stats else stats.get("peak_bytes_in_use")


def compile_many(programs: list[tuple[Callable, tuple]]) -> list[tuple[Any, float]]:
  """[(compiled program, seconds to lower + compile)] of `[(jitted, args)]`: lowered one after the other (Python),
  compiled concurrently in threads (XLA releases the GIL), so that the fp32 and bf16 versions of a program share
  the machine's cores. Each time is that program's own lowering + compilation wall time."""
  lowered = []
  for jitted, args in programs:
    t0 = time.perf_counter()
    lowered.append((jitted.lower(*args), time.perf_counter() - t0))

  def compile_one(item):
    low, lower_s = item
    t0 = time.perf_counter()
    compiled = low.compile()
    return compiled, lower_s + time.perf_counter() - t0

  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(lowered))) as pool:
    return list(pool.map(compile_one, lowered))


def median_time(run: Callable[[Any, int], Any], carry: Any, warmup: int, steps: int) -> tuple[float, Any]:
  """Median seconds of `carry = run(carry, i)` over `steps` calls after `warmup`; each call's box is read back."""
  times = []
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    carry, out = run(carry, i)
    np.asarray(out)
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  return statistics.median(times), carry


def synthetic_frames(hw: tuple[int, int], count: int, target: int, seed: int = 0):
  """A 4x4 black/white checker target drifting over grey noise -> (frames `[T, H, W, 3]` uint8, box0 xywh)."""
  rng = np.random.default_rng(seed)
  h, w = hw
  tex = np.kron(rng.choice([20, 235], (4, 4, 3)), np.ones((target // 4, target // 4, 1), np.int64))
  frames = rng.normal(128, 20, (count, h, w, 3)).clip(0, 255).astype(np.uint8)
  x0, y0 = w // 4, h // 4
  for t in range(count):
    x, y = min(x0 + 2 * t, w - target), min(y0 + t, h - target)
    frames[t, y:y + target, x:x + target] = tex[:h - y, :w - x]
  return frames, np.asarray([x0, y0, target, target], np.float32)


def random_network(preset: str, overrides: dict):
  """(Flax module, random variables) of a model preset; NumPy weights, so no Flax init is compiled."""
  net = build_model(model_kwargs(preset, **overrides))
  return net, jax.device_put(random_variables(net))


# ------------------------------------------------------------------------------------------------
# Tracking.

def time_k1(model, compiled_step, state, frames, keys, sizes: Sizes) -> float:
  """Median seconds of one jitted `tracker.step` (K = 1) over the timed frames."""

  def run(s, i):
    s, out = compiled_step(model, s, frames[1 + i], keys[1 + i])
    return s, out["box_xywh"]

  return median_time(run, state, 2, sizes.track_steps)[0]


def batched_program(name: str, model, settings, frames, state, k: int, sizes: Sizes):
  """The runner's batched step at K lanes (K copies of `state`) -> (vstep, (model, states, images, keys))."""
  vstep = runner.tracker_fns(settings)["vstep"]
  states = jax.tree.map(lambda x: jnp.stack([x] * k), state)
  seq_keys = [runner.sequence_key(0, f"{name}#{lane}") for lane in range(k)]
  keys = [jnp.stack([jax.random.fold_in(s, i) for s in seq_keys]) for i in range(len(frames))]
  images = [np.stack([f] * k) for f in frames[:3 + sizes.batched_steps]]  # built before the timing
  return vstep, (model, states, images, keys)


def time_batched(compiled, inputs, k: int, sizes: Sizes) -> float:
  """Frames/s over all K lanes of a compiled batched step."""
  model, states, images, keys = inputs

  def run(s, i):
    s, out = compiled(model, s, images[1 + i], keys[1 + i])
    return s, out["box_xywh"]

  return k / median_time(run, states, 1, sizes.batched_steps)[0]


def tracker_rows(name: str, sizes: Sizes, clock: Clock) -> list[Row]:
  """The K = 1 row and the best-batched-K row of one tracker preset, fp32 and bf16 (same weights).

  K = 1: `tracker.init` / `tracker.step` (jitted), each compiled for both dtypes at once. Batched: fp32 at every
  K of `sizes.ks`, bf16 at the K that was best in fp32 (compiled together with fp32 when there is one K).
  """
  log(f"tracking {name}: random network ...")
  net, variables = random_network(name, sizes.net)
  base = params.get_settings(name, target_not_found_threshold=0.0, **sizes.tracker)
  frames, box = synthetic_frames(sizes.frame_hw, 3 + max(sizes.track_steps, sizes.batched_steps), sizes.target)
  models = {d: trk.TrackingModel(net=with_dtype(net, d), variables=variables) for d in DTYPES}
  settings = {d: base.replace(compute_dtype=d) for d in DTYPES}
  keys = [jax.random.fold_in(runner.sequence_key(0, name), i) for i in range(len(frames))]
  log("  compiling init / step (fp32 and bf16) ...")
  inits = dict(zip(DTYPES, compile_many([(trk.init, (models[d], settings[d], frames[0], box, keys[0]))
                                         for d in DTYPES])))
  states = {d: jax.block_until_ready(inits[d][0](models[d], frames[0], box, keys[0])) for d in DTYPES}
  steps = dict(zip(DTYPES, compile_many([(trk.step, (models[d], settings[d], states[d], frames[1], keys[1]))
                                         for d in DTYPES])))
  h, w = frames.shape[1:3]
  k1 = Row(f"tracking {NAMES[name]}, K=1", f"{w}x{h} frames, {base.image_sample_size} px patches")
  secs = {}
  for d in DTYPES:
    secs[d] = time_k1(models[d], steps[d][0], states[d], frames, keys, sizes)
    setattr(k1, DTYPE_COLUMN[d], f"{1 / secs[d]:.1f} frames/s")
    log(f"  {d} K=1: {1 / secs[d]:.1f} frames/s")
  k1.compile_s = " / ".join(f"init {inits[d][1]:.1f} + step {steps[d][1]:.1f}" for d in DTYPES)
  k1.gflops = f"{flops_of(steps['float32'][0]) / secs['float32'] / 1e9:.1f}"
  k1.xla_memory, k1.peak_memory = gib(xla_bytes(steps["float32"][0])), gib(peak_bytes())

  results, skipped = {"float32": {}, "bfloat16": {}}, []
  ks = list(sizes.ks)
  together = len(ks) == 1  # the bf16 K is known before fp32 has run
  for i, k in enumerate(ks):
    if i and clock.used() > 0.6:
      skipped.append(k)
      continue
    dts = DTYPES if together else ("float32",)
    _measure_batched(name, models, settings, frames, states, k, sizes, dts, results)
  good = {k: r for k, r in results["float32"].items() if "error" not in r}
  if good and not together:
    best = max(good, key=lambda k: good[k]["fps"])
    _measure_batched(name, models, settings, frames, states, best, sizes, ("bfloat16",), results)
  return [k1, _best_k_row(name, results["float32"], results["bfloat16"], skipped)]


def _measure_batched(name, models, settings, frames, states, k, sizes, dtypes, results) -> None:
  """Compiles (concurrently) and times the batched step at K for `dtypes`; results[dtype][k] = dict or error."""
  try:
    programs = {d: batched_program(name, models[d], settings[d], frames, states[d], k, sizes) for d in dtypes}
    compiled = dict(zip(dtypes, compile_many([(programs[d][0], _first_call_args(programs[d][1])) for d in dtypes])))
    for d in dtypes:
      prog, secs = compiled[d]
      fps = time_batched(prog, programs[d][1], k, sizes)
      results[d][k] = {"fps": fps, "compile_s": secs, "gflops": flops_of(prog) * fps / k / 1e9,
                       "xla": xla_bytes(prog)}
      log(f"  {d} K={k}: {fps:.1f} frames/s")
  except Exception as e:  # pylint: disable=broad-except  # e.g. out of memory at a large K: report, go on
    log(f"  K={k}: {type(e).__name__}: {e}")
    for d in dtypes:
      results[d][k] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"}


def _first_call_args(inputs) -> tuple:
  model, states, images, keys = inputs
  return model, states, images[1], keys[1]


DTYPE_COLUMN = {"float32": "fp32", "bfloat16": "bf16"}


def _best_k_row(name: str, results: dict, results_bf16: dict, skipped: list[int]) -> Row:
  good = {k: r for k, r in results.items() if "error" not in r}
  tried = ", ".join(f"K={k}: {r['fps']:.1f}" if "error" not in r else f"K={k}: {r['error']}"
                    for k, r in results.items())
  tried += "".join(f", K={k}: skipped (time budget)" for k in skipped)
  label = f"tracking {NAMES[name]}, best batched K"
  if not good:
    return Row(label, tried, "error", failed=True)
  k, best = max(good.items(), key=lambda kv: kv[1]["fps"])
  bf16 = results_bf16.get(k, {"error": "not run"})
  return Row(label, f"K={k} ({tried} frames/s)", f"{best['fps']:.1f} frames/s",
             "error" if "error" in bf16 else f"{bf16['fps']:.1f} frames/s",
             compile_s=f"{best['compile_s']:.1f}" + ("" if "error" in bf16 else f" / {bf16['compile_s']:.1f}"),
             gflops=f"{best['gflops']:.1f}", xla_memory=gib(best["xla"]), peak_memory=gib(peak_bytes()),
             failed=len(good) < len(results) or "error" in bf16)


# ------------------------------------------------------------------------------------------------
# Training.

def train_step_program(net, variables, batch_size: int, image_size: int, seed: int = 0):
  """CIA18's training step as `cia-jax train` runs it (single device), on a random batch.

  The only place that touches `cia_jax.train` (being restructured): `state.make_optimizer`,
  `state.create_train_state`, `step.StepSettings` (its defaults are CIA18's losses), `step.make_train_step`,
  `batch.random_batch`. CIA18's processing preset gives the layout (3 + 3 frames, 8 IoU proposals, mse targets).

  Returns:
    (jitted step `(state, batch) -> (state, metrics)` with the state donated, initial state, batch).
  """
  proc = PROCESSING_PRESETS["cia18"]
  batch = random_batch(seed, batch_size, image_size, num_train=3, num_test=3,
                       num_proposals=int(proc.proposals_per_frame), proposal_mode=proc.proposal_mode,
                       search_area_factor=float(proc.search_area_factor))
  tx = make_optimizer(variables["params"], CIA18_LEARNING_RATES, steps_per_epoch=2000)
  state = create_train_state(variables, tx, jax.random.key(seed), use_momentum_encoder=True)
  return make_train_step(net, StepSettings(), tx), state, batch


def train_row(net, variables, batch_size: int, sizes: Sizes) -> Row:
  """Seconds per CIA18 training step at one batch size, fp32 and bf16 (same weights, compiled concurrently)."""
  programs = {}
  for d in DTYPES:
    # A copy each: the step donates its state, whose params would otherwise be `variables`' own buffers.
    step, state, batch = train_step_program(with_dtype(net, d), jax.tree.map(jnp.copy, variables), batch_size,
                                            sizes.train_size)
    programs[d] = (step, (state, jax.device_put(batch)))  # the input pipeline's transfer is not the step's
  compiled = dict(zip(DTYPES, compile_many([programs[d] for d in DTYPES])))
  row = Row(f"training CIA18, batch {batch_size}", f"{batch_size} seq x (3+3) frames, {sizes.train_size} px")
  for d in DTYPES:
    prog, state, batch = compiled[d][0], *programs[d][1]

    def run(s, _, prog=prog, batch=batch):
      s, metrics = prog(s, batch)
      return s, metrics["total"]

    sec, _ = median_time(run, state, 1, sizes.train_steps)
    setattr(row, DTYPE_COLUMN[d], f"{sec:.3f} s/step")
    if d == "float32":
      row.gflops, row.xla_memory = f"{flops_of(prog) / sec / 1e9:.1f}", gib(xla_bytes(prog))
  row.compile_s = " / ".join(f"{compiled[d][1]:.1f}" for d in DTYPES)
  row.peak_memory = gib(peak_bytes())
  return row


def train_rows(sizes: Sizes, clock: Clock) -> list[Row]:
  """One row per training batch size (the second skipped when the budget is nearly spent)."""
  log("training CIA18: random network ...")
  net, variables = random_network("cia18", sizes.net)
  rows = []
  for i, b in enumerate(sizes.train_batches):
    if i and clock.used() > 0.85:
      rows.append(Row(f"training CIA18, batch {b}", "skipped (time budget)"))
      continue
    log(f"  batch {b}: compiling ...")
    rows.append(_guarded(f"training CIA18, batch {b}", lambda b=b: train_row(net, variables, b, sizes))[0])
    log(f"  batch {b}: {rows[-1].fp32} (bf16 {rows[-1].bf16})")
  return rows


# ------------------------------------------------------------------------------------------------
# The table.

def _guarded(label: str, make: Callable[[], Any]) -> list[Row]:
  """`make()` as a list of rows, or one row carrying the error (the table is printed whatever happens)."""
  try:
    rows = make()
    return rows if isinstance(rows, list) else [rows]
  except Exception as e:  # pylint: disable=broad-except  # one failed measurement must not lose the others
    log(f"{label}: {type(e).__name__}: {e}")
    return [Row(label, f"error: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}", "error",
                failed=True)]


def device_row() -> Row:
  dev = jax.local_devices()[0]
  return Row("device", f"{dev.device_kind} x{jax.local_device_count()} ({jax.default_backend()}), "
             f"jax {jax.__version__}, {jax.process_count()} process(es)")


def markdown(rows: list[Row]) -> str:
  """The rows as one Markdown table."""
  head = ("measurement", "setting", "fp32", "bf16", "compile s (fp32 / bf16)", "GFLOP/s (fp32)",
          "XLA memory (fp32)", "peak device memory")
  lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    cells = (r.measurement, r.setting, r.fp32, r.bf16, r.compile_s, r.gflops, r.xla_memory, r.peak_memory)
    lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
  return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tiny", action="store_true", help="tiny networks and frames (CPU, CI): same code paths")
  p.add_argument("--trackers", default=None,
                 help=f"comma-separated tracker presets (default {','.join(TRACKERS)}; --tiny: cia18)")
  p.add_argument("--ks", default=None, help="comma-separated batched K to try (default 8,32; --tiny: 2)")
  p.add_argument("--budget-s", type=float, default=None, help="soft time budget (default 420; --tiny: 300)")
  p.add_argument("--compilation-cache", default="none", metavar="DIR|none",
                 help="persistent compilation cache (default none: compile times are cold)")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  compile_cache.configure(args.compilation_cache)
  sizes = TINY if args.tiny else FULL
  if args.ks:
    sizes = dataclasses.replace(sizes, ks=tuple(int(k) for k in args.ks.split(",")))
  clock = Clock(args.budget_s or (300.0 if args.tiny else 420.0))
  rows = [device_row()]
  log(f"device check: {rows[0].setting}; {'tiny' if args.tiny else 'full'} sizes")
  try:
    for name in args.trackers.split(",") if args.trackers else sizes.trackers:
      rows += _guarded(f"tracking {NAMES.get(name, name)}", lambda name=name: tracker_rows(name, sizes, clock))
    rows += _guarded("training CIA18", lambda: train_rows(sizes, clock))
  except KeyboardInterrupt:  # scripts/device_check.sh's timeout: print what there is
    rows.append(Row("interrupted", f"after {time.perf_counter() - clock.start:.0f} s", failed=True))
  print(markdown(rows), flush=True)
  log(f"device check: {time.perf_counter() - clock.start:.0f} s, process CPU {time.process_time():.0f} s")
  return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
  sys.exit(main())
