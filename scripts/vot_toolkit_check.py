"""Cross-check `cia-jax evaluate --protocol vot` against the real VOT toolkit on the same raw results (offline).

    PYTHONPATH=$PWD python scripts/vot_toolkit_check.py --workspace /tmp/vot_ws --tracker cia18
    PYTHONPATH=$PWD python scripts/vot_toolkit_check.py --workspace /tmp/vot_ws --stand-in   # no network, ~20 s

Needs the `vot` extra (`pip install '.[vot]'`). Steps:
1. A local VOT workspace in WORKSPACE: synthetic sequences in VOT layout (`cia_jax.data.synthetic`, polygon
   ground truth on every other sequence) plus `../shared/data/real/VOT_bag` (relative to the repository root) when
   present, linked; `sequences/list.txt`; a local stack (`stack.yaml`, no `dataset:` URL, so nothing is
   downloaded) with the VOT2018 short-term baseline experiment (supervised, skip 5, one repetition) and the
   `supervised_average_ar` (sensitivity 30) / `supervised_eao_score` analyses over the EAO interval given; a
   `trackers.ini` entry that launches `cia-jax vot` (or, with `--stand-in`, this script's own TraX server: a
   tracker that drifts 2 px per frame, so it fails and is re-initialised; no JAX compilation).
2. `vot evaluate` (the toolkit runs the tracker over TraX, `VOT_RESULTS_BINARY=0`: text results) and
   `vot analysis --format json`.
3. `cia_jax.evaluation.vot` on the toolkit's raw results `results/<tracker>/baseline`, and the comparison:
   A, failures per sequence, robustness exp(-30 F / L) and EAO; exit 1 when any differs by more than `--tolerance`
   (the toolkit accumulates EAO in float32).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_VOT = os.path.join("..", "shared", "data", "real", "VOT_bag")  # relative to the repository root
STAND_IN = "cia_jax_stand_in"


# ------------------------------------------------------------------------------------------------
# The stand-in tracker (a TraX server without a network).

def serve_stand_in() -> int:
  """This script as a TraX server: starts from the given box, moves it 2 px right per frame."""
  from cia_jax.track import vot_server  # pylint: disable=g-import-not-at-top  (trax only when serving)

  def init(image, box, i):
    del image, i
    return np.asarray(box, np.float32)

  def step(state, image, i):
    del image, i
    state = state + np.array([2, 0, 0, 0], np.float32)
    return state, state

  vot_server.serve(init, step, reader=lambda path: np.zeros((1, 1, 3), np.uint8))
  return 0


# ------------------------------------------------------------------------------------------------
# The toolkit, with single-object TraX trackers working in the supervised experiment.

def run_toolkit_cli(argv: list[str]) -> int:
  """`vot ARGV` (the toolkit's own CLI) with one fix: vot-toolkit 0.9.0's `SupervisedExperiment` calls a
  single-object TraX runtime with one `ObjectStatus` (a 2-tuple, refused as "multiple objects") and `update(frame)`
  (new=None, refused too), and reads `.region` of the list the runtime returns. 0.9.0 lost the single-object
  adapter around the runtime (`Experiment._get_runtime`); this puts one back. Analyses are untouched."""
  from vot.experiment import Experiment  # pylint: disable=g-import-not-at-top  (only in the toolkit process)
  from vot.tracker import ObjectStatus, OnlineTrackerRuntime  # pylint: disable=g-import-not-at-top
  from vot.utilities.cli import main as vot_main  # pylint: disable=g-import-not-at-top

  class SingleObjectRuntime(OnlineTrackerRuntime):
    """One object in, one `ObjectStatus` out, over a runtime that speaks lists."""

    def __init__(self, runtime):
      super().__init__(runtime.tracker)
      self.runtime = runtime

    def stop(self):
      self.runtime.stop()

    def restart(self):
      self.runtime.restart()

    def initialize(self, frame, new=None, properties=None):
      status, elapsed = self.runtime.initialize(frame, [new] if isinstance(new, ObjectStatus) else new)
      return status[0], elapsed

    def update(self, frame, new=None, properties=None):
      status, elapsed = self.runtime.update(frame, [] if new is None else new)
      return status[0], elapsed

  original = Experiment._get_runtime

  def get_runtime(self, tracker, sequence, multiobject=False):
    runtime = original(self, tracker, sequence, multiobject)
    return runtime if multiobject else SingleObjectRuntime(runtime)

  Experiment._get_runtime = get_runtime
  sys.argv = ["vot", *argv]
  return vot_main() or 0


# ------------------------------------------------------------------------------------------------
# The workspace.

def build_sequences(seq_dir: str, num_sequences: int, num_frames: int, real: bool) -> list[str]:
  """Synthetic VOT sequences (and VOT_bag, linked) in `seq_dir` with the toolkit's `sequence` files; names."""
  from cia_jax.data.synthetic import writers  # pylint: disable=g-import-not-at-top

  names = writers.generate(seq_dir, "vot", num_sequences=num_sequences, num_frames=num_frames, seed=0)
  for name in names:  # the toolkit's metadata: frames under color/ (its legacy reader wants them in the folder)
    with open(os.path.join(seq_dir, name, "sequence"), "w", encoding="utf-8") as f:
      f.write("channels.color=color/%08d.jpg\n")
  real_dir = os.path.normpath(os.path.join(ROOT, REAL_VOT))
  if real and os.path.isdir(real_dir):
    link = os.path.join(seq_dir, "VOT_bag")
    if not os.path.exists(link):
      os.symlink(real_dir, link)
    names.append("VOT_bag")
  with open(os.path.join(seq_dir, "list.txt"), "w", encoding="utf-8") as f:
    f.writelines(n + "\n" for n in names)
  return names


def stack_yaml(low: int, high: int) -> str:
  """The local stack: VOT2018 short-term baseline, one repetition, no dataset URL."""
  return f"""title: cia-jax local VOT check
experiments:
  baseline:
    type: supervised
    repetitions: 1
    skip_initialize: 5
    analyses:
      - type: supervised_average_ar
        sensitivity: 30
      - type: supervised_eao_score
        low: {low}
        high: {high}
"""


def tracker_entry(name: str, args: argparse.Namespace, workspace: str) -> str:
  """The `trackers.ini` section that launches our TraX server (absolute paths: the toolkit runs it elsewhere)."""
  if args.stand_in:
    command = f"{sys.executable} {os.path.abspath(__file__)} --serve-stand-in"
  else:
    weights = f"--checkpoint {args.checkpoint}" if args.checkpoint else "--random-weights"
    warmup = " ".join(f"--warmup-size {s}" for s in args.warmup_size)
    command = f"{sys.executable} -m cia_jax.cli vot --tracker {args.tracker} {weights} {warmup}".strip()
  return (f"[{name}]\nlabel = {name}\nprotocol = trax\ncommand = {command}\ntimeout = {args.timeout}\n"
          f"env_PYTHONPATH = {ROOT}\nenv_JAX_COMPILATION_CACHE_DIR = {os.path.join(workspace, 'jax_cache')}\n")


def build_workspace(args: argparse.Namespace, name: str) -> list[str]:
  """Writes config.yaml, stack.yaml, trackers.ini and sequences/ in the workspace; returns the sequence names."""
  ws = args.workspace
  if os.path.isdir(ws) and args.fresh:
    shutil.rmtree(ws)
  os.makedirs(ws, exist_ok=True)
  low, high = args.eao_interval
  with open(os.path.join(ws, "stack.yaml"), "w", encoding="utf-8") as f:
    f.write(stack_yaml(low, high))
  with open(os.path.join(ws, "config.yaml"), "w", encoding="utf-8") as f:
    f.write("registry:\n  - ./trackers.ini\nstack: stack.yaml\nsequences: sequences\n")
  with open(os.path.join(ws, "trackers.ini"), "w", encoding="utf-8") as f:
    f.write(tracker_entry(name, args, ws))
  return build_sequences(os.path.join(ws, "sequences"), args.sequences, args.frames, not args.no_real)


# ------------------------------------------------------------------------------------------------
# Running the toolkit and comparing.

def run_toolkit(workspace: str, name: str) -> dict:
  """`vot evaluate` then `vot analysis --format json`; returns the analysis JSON."""
  env = dict(os.environ, VOT_RESULTS_BINARY="0", PYTHONPATH=ROOT)
  for command in (["evaluate", "--workspace", workspace, name],
                  ["analysis", "--workspace", workspace, "--format", "json", "--name", "check", name]):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--toolkit", *command], env=env,
                          capture_output=True, text=True, check=False)
    print(f"vot {command[0]}: exit {proc.returncode} in {time.perf_counter() - t0:.1f} s", flush=True)
    if proc.returncode != 0:
      raise RuntimeError(f"vot {command[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
  paths = sorted(glob.glob(os.path.join(workspace, "analysis", "**", "*.json"), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    raise RuntimeError(f"vot analysis wrote no JSON under {os.path.join(workspace, 'analysis')}")
  with open(paths[-1], encoding="utf-8") as f:
    return json.load(f)


def toolkit_scores(analysis: dict) -> dict[str, float]:
  """A, failures, robustness and EAO from the toolkit's analysis JSON: `results.baseline.results` holds one list per
  analysis of the stack, in order, each with one entry per tracker: AR (accuracy, failures, (robustness, accuracy),
  length) and EAO (eao,)."""
  ar, eao = analysis["results"]["baseline"]["results"]
  accuracy, failures, (robustness, _), _ = ar[0]
  return {"accuracy": accuracy, "failures": failures, "robustness": robustness, "eao": eao[0][0]}


def compare(workspace: str, name: str, interval: tuple[int, int], analysis: dict, tolerance: float) -> bool:
  """Prints toolkit vs ours and returns True when every score agrees within `tolerance`."""
  from cia_jax.evaluation import vot  # pylint: disable=g-import-not-at-top

  results_dir = os.path.join(workspace, "results", name, "baseline")
  ours = vot.evaluate_vot_benchmark("vot", os.path.join(workspace, "sequences"), {name: results_dir},
                                    os.path.join(workspace, "ours"), interval=interval).summary[name]
  theirs = toolkit_scores(analysis)
  print(f"same raw results: {results_dir}\n"
        f"cia-jax evaluate --protocol vot --dataset vot --root {workspace}/sequences "
        f"--results {name}={results_dir} --out {workspace}/ours --eao-interval {interval[0]},{interval[1]}")
  print(f"{'score':<12}{'toolkit':>12}{'ours':>12}{'diff':>12}")
  ok = True
  for key in ("accuracy", "failures", "robustness", "eao"):
    a, b = float(theirs.get(key, math.nan)), float(ours[key])
    same = abs(a - b) <= tolerance or (math.isnan(a) and math.isnan(b))
    ok &= same
    print(f"{key:<12}{a:>12.6f}{b:>12.6f}{b - a:>12.2e}{'' if same else '  MISMATCH'}")
  return ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workspace", default=None, help="workspace folder (created)")
  parser.add_argument("--tracker", default="cia18", help="cia-jax tracker preset served over TraX")
  parser.add_argument("--checkpoint", default=None, help="checkpoint (default: random weights)")
  parser.add_argument("--stand-in", action="store_true", help="a drifting stand-in tracker instead of the network")
  parser.add_argument("--serve-stand-in", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--toolkit", nargs=argparse.REMAINDER, default=None,
                      help="run the toolkit's CLI with these arguments (with the single-object fix) and exit")
  parser.add_argument("--sequences", type=int, default=2, help="synthetic sequences")
  parser.add_argument("--frames", type=int, default=40, help="frames per synthetic sequence")
  parser.add_argument("--no-real", action="store_true", help=f"leave {REAL_VOT} out")
  parser.add_argument("--eao-interval", default="5,30", help="EAO interval LOW,HIGH (short sequences)")
  parser.add_argument("--warmup-size", action="append", default=["160x120"], help="cia-jax vot --warmup-size")
  parser.add_argument("--timeout", type=int, default=600, help="the toolkit's watchdog, seconds")
  parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted difference")
  parser.add_argument("--fresh", action="store_true", help="delete the workspace first")
  args = parser.parse_args(argv)
  if not args.serve_stand_in and args.toolkit is None and not args.workspace:
    parser.error("--workspace is required")
  low, high = (int(v) for v in args.eao_interval.split(","))
  args.eao_interval = (low, high)
  return args


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv[:1] == ["--toolkit"]:
    return run_toolkit_cli(argv[1:])
  args = parse_args(argv)
  if args.serve_stand_in:
    return serve_stand_in()
  args.workspace = os.path.abspath(args.workspace)
  name = STAND_IN if args.stand_in else f"cia_jax_{args.tracker}"
  names = build_workspace(args, name)
  print(f"workspace {args.workspace}: {len(names)} sequences ({', '.join(names)}), tracker {name}", flush=True)
  analysis = run_toolkit(args.workspace, name)
  return 0 if compare(args.workspace, name, args.eao_interval, analysis, args.tolerance) else 1


if __name__ == "__main__":
  sys.exit(main())
