"""Cold vs warm starts of `cia-jax` with the persistent compilation cache (BENCHMARKS.md "Warm starts").

  .venv/bin/python scripts/benchmark_warm_start.py --what track     # CIA18, one real sequence, 5 frames
  .venv/bin/python scripts/benchmark_warm_start.py --what train     # CIA18, batch 2, synthetic data, 1 step

Per repeat: the command with `--compilation-cache` pointing at a new, empty folder (cold: compiles everything
and fills the folder), the same command again (warm: loads the compiled programs), and the command with
`--compilation-cache none` (cold, nothing written). Times are from process start (imports, network set-up and
tracing included) to a console line:
  * track: time to first box = the line the runner prints after the first tracked frame (init + first step,
    "compiled the tracker for ..."); random CIA18 weights (`--random-weights`), `--max-frames 5`;
  * train: time to first step = "compiling the train step ... done": CIA18's network (every module) and 288 px
    crops at `--batch` sequences on `configs/tiny.py`'s synthetic data, 1 step, no validation (the synthetic
    data is generated into each run's new workdir: a few seconds of every run).
and the whole command's wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "real"))
MARKERS = {"track": r"compiled the tracker for", "train": r"compiling the train step \.\.\. done"}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--what", choices=sorted(MARKERS), default="track")
  p.add_argument("--root", default=DEFAULT_DATA, help="track: a folder of sequence folders")
  p.add_argument("--sequence", default="OTB_Crossing", help="track: the sequence")
  p.add_argument("--batch", type=int, default=2, help="train: sequences per step")
  p.add_argument("--repeats", type=int, default=1)
  return p.parse_args(argv)


def command(args, cache: str, work: str) -> list[str]:
  """The `cia-jax` command line of one run (its outputs under `work`)."""
  base = [sys.executable, "-m", "cia_jax.cli", "--compilation-cache", cache]
  if args.what == "track":
    return base + ["track", "--tracker", "cia18", "--random-weights", "--dataset", "folder", "--root", args.root,
                   "--sequences", args.sequence, "--results", os.path.join(work, "results"), "--max-frames", "5",
                   "--no-progress"]
  # configs/tiny.py (synthetic GOT-10k + LaSOT data) with CIA18's network and crops: configs/cia18.py itself
  # cannot run on synthetic data yet (its TrackingNet entry reads chunks TRAIN_0-3, the generator writes TRAIN_0).
  cia18 = ["--config.model.backbone_width=64", "--config.model.clf_dim=256", "--config.model.iou_dim=256",
           "--config.model.encoder_ffn=2048", "--config.data.processing.output_sz=288",
           "--config.data.processing.feature_sz=18"]
  return base + ["train", "--config", os.path.join(ROOT, "configs", "tiny.py"), "--workdir",
                 os.path.join(work, "train"), *cia18, f"--config.data.batch_size={args.batch}",
                 "--config.optim.total_steps=1", "--config.val.enabled=False"]


def timed_run(cmd: list[str], marker: str) -> tuple[float, float]:
  """(seconds to the first output line matching `marker`, seconds to exit); RuntimeError if it fails."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
  first, lines = None, []
  for line in proc.stdout:
    lines.append(line)
    if first is None and re.search(marker, line):
      first = time.perf_counter() - t0
  proc.wait()
  total = time.perf_counter() - t0
  if proc.returncode or first is None:
    raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{''.join(lines[-30:])}")
  return first, total


def main(argv=None) -> int:
  args = parse_args(argv)
  marker = MARKERS[args.what]
  print(f"{args.what}: {os.cpu_count()} CPUs, load average (1/5/15 min) at the start "
        + "/".join(f"{x:.2f}" for x in os.getloadavg()))
  rows = []
  for r in range(args.repeats):
    with tempfile.TemporaryDirectory() as tmp:
      cache = os.path.join(tmp, "cache")
      for i, (label, cache_arg) in enumerate((("cold (empty cache)", cache), ("warm", cache),
                                              ("no cache (none)", "none"))):
        load = os.getloadavg()[0]
        first, total = timed_run(command(args, cache_arg, os.path.join(tmp, f"run{i}")), marker)
        rows.append((r, label, first, total, load))
        print(f"  repeat {r}: {label}: {first:.1f} s to the marker, {total:.1f} s in all", flush=True)
  what = "time to first box" if args.what == "track" else "time to first step"
  print(f"\n| run | {what} s | wall s | load average (1 min) before |\n|---|---:|---:|---:|")
  for r, label, first, total, load in rows:
    print(f"| {label}{f' #{r}' if args.repeats > 1 else ''} | {first:.1f} | {total:.1f} | {load:.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
