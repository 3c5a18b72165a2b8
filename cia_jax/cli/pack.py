"""`cia-jax pack`: check a tracker's results and zip them for the GOT-10k / TrackingNet server
(`cia_jax.evaluation.pack`)."""

from __future__ import annotations

import argparse

FORMATS = ("got10k", "trackingnet")  # cia_jax.evaluation.pack.PACK_FORMATS, repeated so `--help` stays fast


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax pack`."""
  parser.add_argument("--format", required=True, choices=FORMATS, help="evaluation server")
  expected = parser.add_mutually_exclusive_group(required=True)
  expected.add_argument("--dataset-root", default=None,
                        help="dataset root: the expected sequences and frame counts come from its --split")
  expected.add_argument("--sequences", default=None, metavar="FILE",
                        help="list file of the expected sequences: '<seq>' or '<seq> <frames>' per line")
  parser.add_argument("--split", default="test", help="dataset split with --dataset-root (default: test)")
  parser.add_argument("results", nargs="+", metavar="RESULTS",
                      help="results directory of one tracker (several: repeated runs, in order)")
  parser.add_argument("out", metavar="OUT.zip", help="the zip file to write")


def run(args: argparse.Namespace) -> int:
  """`cia-jax pack`: 0 and a summary when written; problems (sequence and line) exit 2 with nothing written."""
  from cia_jax.evaluation import pack  # pylint: disable=g-import-not-at-top

  if args.dataset_root:
    expected = pack.expected_from_dataset(args.format, args.dataset_root, args.split)
  else:
    expected = pack.expected_from_list(args.sequences)
  summary = pack.pack_results(args.results, args.out, args.format, expected)
  print(f"Wrote {summary.path}: {len(summary.sequences)} sequences ({summary.fmt} server layout).")
  if summary.repeated:
    print(f"{len(summary.repeated)} sequences have one run, written as all {pack.GOT10K_RUNS} GOT-10k repetitions "
          "(a deterministic tracker).")
  if summary.ignored:
    print(f"Not expected, left out: {len(summary.ignored)} ({', '.join(summary.ignored[:5])}"
          f"{', ...' if len(summary.ignored) > 5 else ''}).")
  return 0
