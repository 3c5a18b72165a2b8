"""Seconds per training step (forward + backward + Adam update + EMA) and FLOP efficiency.

  .venv/bin/python scripts/benchmark_train.py                       # the BENCHMARKS.md table
  .venv/bin/python scripts/benchmark_train.py --cases tiny --repeats 20

Cases: `tiny` = configs/tiny.py (its batch of 4 sequences, 64 px crops); `cia18` = configs/cia18.py at a small
batch (--cia18-batch sequences x 6 frames, 288 px). Batches come from `cia_jax.train.batch.random_batch` (no
image decoding: this times the step only, see scripts/benchmark_pipeline.py for the input pipeline). The step is
the one `cia-jax train` runs (`make_train_step`, single device, state donated). FLOPs per step come from XLA's
cost analysis of the compiled step; "% peak" divides the achieved GFLOP/s by --peak-gflops.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

from bench_common import flops_of  # noqa: E402  (scripts/ is on sys.path)

from cia_jax import xla_flags  # standard library only

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", nargs="+", default=["tiny", "cia18"], choices=["tiny", "cia18"])
  p.add_argument("--cia18-batch", type=int, default=2, help="sequences per CIA18 step (6 frames each)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  p.add_argument("--repeats", type=int, default=5, help="timed steps; the median is reported")
  p.add_argument("--peak-gflops", type=float, default=150.0, help="fp32 peak of this machine (~150 on 2 cores)")
  args = p.parse_args(argv)
  if args.repeats < 1 or args.warmup < 0 or args.cia18_batch < 1:
    p.error("--repeats and --cia18-batch must be >= 1, --warmup >= 0")
  return args




def main(argv=None) -> int:
  args = parse_args(argv)
  xla_flags.configure()  # what `cia-jax` runs with; before JAX's first computation
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax
  import numpy as np

  from cia_jax import config_lib
  from cia_jax.models.cia import build_model
  from cia_jax.models.cia import init_variables
  from cia_jax.train import init, inputs, trainer
  from cia_jax.train.batch import random_batch
  from cia_jax.train.state import create_train_state
  from cia_jax.train.step import make_train_step, uses_key_encoder

  load = os.getloadavg()
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, load avg (1/5/15 min) "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")
  print(f"fp32 peak used: {args.peak_gflops:.0f} GFLOP/s; median of {args.repeats} steps after {args.warmup} "
        f"warm-up steps\n")
  print("| case | batch layout | GFLOP/step | compile s | median s/step | GFLOP/s | % peak |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for case in args.cases:
    config = config_lib.load_config(os.path.join(CONFIGS, f"{case}.py"))
    if case == "cia18":
      config.data.batch_size = args.cia18_batch
    net = build_model(config.model)
    proc = inputs.processing_config(config)
    s = config.data.sampler
    batch = random_batch(0, int(config.data.batch_size), int(proc.output_sz), num_train=int(s.num_train_frames),
                         num_test=int(s.num_test_frames), num_proposals=int(proc.proposals_per_frame),
                         proposal_mode=proc.proposal_mode, search_area_factor=float(proc.search_area_factor))
    variables = init_variables(net, jax.random.key(0))
    tx = init.optimizer(config, variables["params"], net.frozen_layers)
    settings = trainer.step_settings(config)
    state = create_train_state(variables, tx, jax.random.key(0), uses_key_encoder(net, settings))
    step = make_train_step(net, settings, tx)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    gflop = flops_of(compiled) / 1e9
    for _ in range(args.warmup):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - t0)
    assert np.isfinite(float(metrics["total"])), case
    sec = statistics.median(times)
    b, ntr = batch["train_images"].shape[:2]
    nte, size = batch["test_images"].shape[1], batch["train_images"].shape[2]
    layout = f"{b} seq x ({ntr}+{nte}) frames, {size} px"
    rate = gflop / sec
    print(f"| {case} | {layout} | {gflop:.1f} | {compile_s:.0f} | {sec:.3f} | {rate:.1f} | "
          f"{100 * rate / args.peak_gflops:.0f}% |", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
