"""`cia-jax quickstart`: train a tiny CIA on synthetic data, track held-out sequences, evaluate, plot.

    cia-jax quickstart --workdir quickstart --minutes 6 --real ../shared/data/real

What it does and writes: `cia_jax.quickstart`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax quickstart`."""
  parser.add_argument("--workdir", default="quickstart", help="output folder (default: ./quickstart)")
  parser.add_argument("--minutes", type=float, default=6.0,
                      help="training time limit in minutes, compilation included (default 6)")
  parser.add_argument("--real", default=None,
                      help="also track every sequence folder under this directory (e.g. ../shared/data/real)")
  parser.add_argument("--test-sequences", type=int, default=None, help="held-out synthetic sequences (6)")
  parser.add_argument("--test-frames", type=int, default=None, help="frames per test sequence (60)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no-progress", action="store_true")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override of the training config (configs/tiny.py + the quickstart's settings), "
                           "repeatable, e.g. --set optim.lr_scale=2")


def run(args: argparse.Namespace) -> int:
  """Runs the quickstart (user errors reach `cia_jax.cli.main`, which prints them as one line)."""
  from cia_jax.quickstart import run_quickstart

  run_quickstart(args.workdir, args.minutes, args.real, args.test_sequences, args.test_frames,
                 overrides=args.set, seed=args.seed, progress=not args.no_progress)
  return 0
