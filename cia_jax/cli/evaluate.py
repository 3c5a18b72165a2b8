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
                      help=f"evaluation protocol {sorted(PROTOCOLS)} (default: from --dataset); vot: the "
                           "reset-based VOT analysis (A, failures, R, EAO) of `track --protocol vot` results")
  parser.add_argument("--eao-interval", default=None, metavar="LOW,HIGH|auto",
                      help="with --protocol vot: EAO sequence-length interval (default 100,356, VOT2018; auto: "
                           "from the benchmark's sequence lengths)")
  parser.add_argument("--exclude-invalid-frames", action="store_true",
                      help="leave frames without valid ground truth out of every curve")
  parser.add_argument("--skip-missing", action="store_true",
                      help="skip sequences some tracker has no result for (default: error)")
  parser.add_argument("--no-plots", action="store_true", help="tables only")
  parser.add_argument("--plot-formats", nargs="+", default=["png", "pdf"], help="plot file formats")
  parser.add_argument("--by-attribute", action="store_true",
                      help="AUC / precision per attribute (attributes.md, .csv, attributes_plot.*) from the "
                           "dataset's attribute files (LaSOT, UAV123, VOT tags)")
  parser.add_argument("--attributes", default=None, metavar="FILE",
                      help="JSON table sequence -> [attribute, ...] replacing the dataset's (implies --by-attribute)")
  parser.add_argument("--compare", nargs=2, action="append", default=None, metavar=("A", "B"),
                      help="paired bootstrap test of tracker A against B (repeatable; default: every tracker "
                           "against the first --results NAME)")
  parser.add_argument("--bootstrap-samples", type=int, default=10000, metavar="N",
                      help="resampled sequence sets of the confidence intervals and tests")
  parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")


def _run_vot(args: argparse.Namespace) -> int:
  """`cia-jax evaluate --protocol vot`: A / failures / R / EAO (`cia_jax.evaluation.vot`), one run per NAME."""
  from cia_jax.evaluation import report, vot  # pylint: disable=g-import-not-at-top

  dirs = report.parse_results_args(args.results)
  repeated = [name for name, ds in dirs.items() if len(ds) > 1]
  if repeated:
    raise ValueError(f"--protocol vot: one results directory per tracker (repetitions are <seq>_NNN.txt files), "
                     f"got several for {repeated}")
  rep = vot.evaluate_vot_benchmark(args.dataset, args.root, {n: ds[0] for n, ds in dirs.items()}, args.out,
                                   args.split, args.eao_interval)
  print(vot.format_markdown(rep), end="")
  print(f"Written to {args.out}")
  return 0


def run(args: argparse.Namespace) -> int:
  """`cia-jax evaluate`: evaluates, writes OUT, prints the Markdown table."""
  if args.protocol == "vot":
    return _run_vot(args)
  if args.eao_interval is not None:
    raise ValueError("--eao-interval goes with --protocol vot")
  from cia_jax.evaluation import report  # pylint: disable=g-import-not-at-top  (matplotlib)

  rep = report.evaluate_benchmark(args.dataset, args.root, args.results, args.out, args.split, args.protocol,
                                  attributes_file=args.attributes,
                                  exclude_invalid_frames=args.exclude_invalid_frames,
                                  skip_missing=args.skip_missing, plots=not args.no_plots,
                                  formats=args.plot_formats, by_attribute=args.by_attribute,
                                  compare=args.compare, bootstrap_samples=args.bootstrap_samples, seed=args.seed)
  print(report.format_markdown(rep), end="")
  if args.by_attribute or args.attributes:
    print("\n" + report.format_attributes_markdown(rep), end="")
  print(f"Written to {args.out}")
  return 0
