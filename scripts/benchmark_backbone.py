"""Times the jitted ResNet backbone forward (inference mode, random weights) and its FLOP efficiency.

  .venv/bin/python scripts/benchmark_backbone.py                      # the BENCHMARKS.md table
  .venv/bin/python scripts/benchmark_backbone.py --measure-peak       # use a measured matmul peak instead
  .venv/bin/python scripts/benchmark_backbone.py --archs resnet18 --sizes 288 --batches 1 --repeats 5

Cases: ResNet-18 returning layer3 + layer4 (CIA18) and ResNet-50 returning layer3 (SuperDiMP/CIA50 classifier
path), square inputs of each --sizes, each --batches. FLOPs per call come from XLA's cost analysis of the
compiled function; "% peak" divides the achieved GFLOP/s by --peak-gflops (fp32 matmul peak of the machine).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time

from bench_common import flops_of  # noqa: E402  (scripts/ is on sys.path)

from cia_jax import xla_flags  # standard library only

CASES = {"resnet18": ("layer3", "layer4"), "resnet50": ("layer3",)}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--archs", nargs="+", default=list(CASES), choices=list(CASES))
  p.add_argument("--sizes", nargs="+", type=int, default=[288, 352], help="input side in pixels")
  p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
  p.add_argument("--warmup", type=int, default=2, help="untimed calls after compilation")
  p.add_argument("--repeats", type=int, default=10, help="timed calls; the median is reported")
  p.add_argument("--peak-gflops", type=float, default=150.0,
                 help="fp32 matmul peak of this machine in GFLOP/s (default: ~150 on 2 cores)")
  p.add_argument("--measure-peak", action="store_true",
                 help="measure the fp32 peak with a jitted 2048^3 matmul and use it instead of --peak-gflops")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  for name in ("sizes", "batches"):
    if any(v < 1 for v in getattr(args, name)):
      p.error(f"--{name} must be positive, got {getattr(args, name)}")
  if args.repeats < 1 or args.warmup < 0:
    p.error("--repeats must be >= 1 and --warmup >= 0")
  return args




def median_seconds(fn, *args, warmup: int, repeats: int) -> float:
  """Median wall time of `fn(*args)` (blocking on the result) after `warmup` untimed calls."""
  import jax
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measure_matmul_peak(warmup: int, repeats: int, n: int = 2048) -> float:
  """Achieved fp32 GFLOP/s of a jitted n x n x n matmul (2 n^3 FLOPs)."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  sec = median_seconds(f, a, b, warmup=max(warmup, 1), repeats=repeats)
  return 2 * n**3 / sec / 1e9


def main(argv=None) -> int:
  args = parse_args(argv)
  xla_flags.configure()  # what `cia-jax` runs with; before JAX's first computation
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax
  import jax.numpy as jnp

  from cia_jax.models import resnet

  peak = args.peak_gflops
  if args.measure_peak:
    peak = measure_matmul_peak(args.warmup, args.repeats)
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, load avg (1 min) {load:.2f}")
  print(f"fp32 peak used: {peak:.1f} GFLOP/s ({'measured' if args.measure_peak else 'given'}); "
        f"median of {args.repeats} calls after {args.warmup} warm-up calls\n")
  print("| model | outputs | input | batch | GFLOP/call | compile s | median ms | GFLOP/s | % peak |")
  print("|---|---|---|---:|---:|---:|---:|---:|---:|")
  for arch in args.archs:
    model = getattr(resnet, arch)()
    layers = CASES[arch]
    variables = resnet.init_variables(model, jax.random.key(args.seed))
    fwd = jax.jit(functools.partial(model.apply, output_layers=layers, train=False))
    for size in args.sizes:
      for batch in args.batches:
        x = jax.random.normal(jax.random.key(args.seed + 1), (batch, size, size, 3), jnp.float32)
        t0 = time.perf_counter()
        compiled = fwd.lower(variables, x).compile()
        compile_s = time.perf_counter() - t0
        gflop = flops_of(compiled) / 1e9
        sec = median_seconds(compiled, variables, x, warmup=args.warmup, repeats=args.repeats)
        rate = gflop / sec
        print(f"| {arch} | {'+'.join(layers)} | {size}x{size} | {batch} | {gflop:.2f} | {compile_s:.1f} | "
              f"{sec * 1e3:.1f} | {rate:.1f} | {100 * rate / peak:.0f}% |", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
