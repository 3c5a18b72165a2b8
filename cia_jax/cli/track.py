"""`cia-jax track`: run a tracker over a benchmark (or a folder of sequence folders) and write result files.

The work is `cia_jax.track.runner.track_benchmark` (checks before the network is built, failed sequences
recorded in `<results>/failures.json`, exit code 1 when any failed); result layouts in `cia_jax.results`.
"""

from __future__ import annotations

import argparse

from cia_jax.results import RESULT_FORMATS

# keeptrack / keeptrack_fast / cia50_tcm: KeepTrack's target candidate matching on SuperDiMP / CIA50.
TRACKERS = ("dimp18", "superdimp", "cia18", "cia50", "keeptrack", "keeptrack_fast", "cia50_tcm")


def _at_least_one(text: str) -> int:
  """argparse type of a count: a whole number >= 1 (the message then names the flag)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
  return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax track`."""
  parser.add_argument("--tracker", required=True, choices=TRACKERS, help="tracker parameter preset")
  parser.add_argument("--checkpoint", default=None,
                      help="training workdir or converted checkpoint (cia-jax convert) holding the network")
  parser.add_argument("--random-weights", action="store_true",
                      help="track with a randomly initialised network, the association network of keeptrack / "
                           "cia50_tcm included (tests and benchmarks only)")
  parser.add_argument("--dataset", required=True,
                      help="otb, lasot, got10k, trackingnet, uav, nfs, vot, tnl2k, dtb70 or folder")
  parser.add_argument("--root", required=True, help="dataset root (for folder: a folder of sequence folders)")
  parser.add_argument("--split", default=None, help="dataset split (e.g. val / test for GOT-10k)")
  parser.add_argument("--sequences", default=None, help="comma-separated sequence names (default: all)")
  parser.add_argument("--results", required=True, help="output directory for the result files")
  parser.add_argument("--format", default="raw", choices=RESULT_FORMATS, help="result file layout")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a tracker setting (repeatable), e.g. --set target_not_found_threshold=0")
  parser.add_argument("--batch-sequences", type=_at_least_one, default=1, metavar="K",
                      help="track K sequences of equal frame size in lockstep (vmap)")
  parser.add_argument("--max-frames", type=_at_least_one, default=None, metavar="N",
                      help="track only the first N frames")
  parser.add_argument("--seed", type=int, default=0, help="seed of the augmentation / IoU-Net randomness")
  parser.add_argument("--no-progress", action="store_true",
                      help="no progress bar (one line per finished or failed sequence is still printed)")
  failures = parser.add_mutually_exclusive_group()
  failures.add_argument("--keep-going", dest="fail_fast", action="store_false", default=False,
                        help="a failed sequence is recorded and the run goes on (the default)")
  failures.add_argument("--fail-fast", dest="fail_fast", action="store_true",
                        help="stop at the first failed sequence")


def run(args: argparse.Namespace) -> int:
  """`cia-jax track`: 0 when every sequence is finished, 1 when some failed (table printed), 2 bad options."""
  from cia_jax.track import runner  # pylint: disable=g-import-not-at-top  (jax)

  return runner.track_benchmark(
      tracker=args.tracker, dataset=args.dataset, root=args.root, results_dir=args.results,
      checkpoint=args.checkpoint, random_weights=args.random_weights, split=args.split,
      sequences=args.sequences, fmt=args.format, overrides=args.set, batch_sequences=args.batch_sequences,
      max_frames=args.max_frames, seed=args.seed, progress=not args.no_progress, fail_fast=args.fail_fast)
