"""`cia-jax evaluate`: benchmark metrics, tables and plots of tracker results (`cia_jax.evaluation.report`)."""

from __future__ import annotations

import argparse

from cia_jax.evaluation.metrics import PROTOCOLS  # NumPy only: `--help` stays fast


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax evaluate`."""
  parser.add_argument("--dataset", required=True, help="dataset name for cia_jax.data.datasets.load_dataset")
  parser.add_argument("--root", required=True, help="dataset root directory")
  parser.add_argument("--split", default=None, help="dataset split (e.g. val for GOT-10k)")
  parser.add_argument("--results", required=True, nargs="+", metavar="NAME=DIR",
                      help="tracker results directories; repeat a NAME to add runs")
  parser.add_argument("--out", required=True, help="output directory for tables and plots")
  parser.add_argument("--protocol", default=None,
                      help=f"evaluation protocol {sorted(PROTOCOLS)} (default: from --dataset)")
  parser.add_argument("--exclude-invalid-frames", action="store_true",
                      help="leave frames without valid ground truth out of every curve")
  parser.add_argument("--skip-missing", action="store_true",
                      help="skip sequences some tracker has no result for (default: error)")
  parser.add_argument("--no-plots", action="store_true", help="tables only")
  parser.add_argument("--plot-formats", nargs="+", default=["png", "pdf"], help="plot file formats")


def run(args: argparse.Namespace) -> int:
  """`cia-jax evaluate`: evaluates, writes OUT, prints the Markdown table."""
  from cia_jax.evaluation import report  # pylint: disable=g-import-not-at-top  (matplotlib)

  rep = report.evaluate_benchmark(args.dataset, args.root, args.results, args.out, args.split, args.protocol,
                                  exclude_invalid_frames=args.exclude_invalid_frames,
                                  skip_missing=args.skip_missing, plots=not args.no_plots,
                                  formats=args.plot_formats)
  print(report.format_markdown(rep), end="")
  print(f"Written to {args.out}")
  return 0
