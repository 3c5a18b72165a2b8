"""The single `cia-jax` console script.

Each subcommand lives in the module that owns its logic; that module exposes
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only when
their subcommand runs, so `cia-jax --help` stays fast (no TensorFlow import).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Add a line here when a subcommand lands.
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("cia_jax.quickstart", "Train a tiny CIA on synthetic data, track, evaluate, plot (the main job)."),
    "synth": ("cia_jax.data.synthetic", "Write synthetic tracking sequences in a benchmark's on-disk layout."),
    "evaluate": ("cia_jax.evaluation.report", "Benchmark metrics, tables and plots of tracker results."),
    "convert": ("cia_jax.interop.pytorch", "Convert a PyTorch (pytracking / CIA / torchvision) checkpoint."),
    "train": ("cia_jax.train.loop", "Train CIA / DiMP from a config file (resumes from the workdir's checkpoints)."),
    "track": ("cia_jax.track.runner", "Run a tracker over a benchmark and write result files."),
    "embed-plot": ("cia_jax.evaluation.embedding", "t-SNE of target features at three network stages (Fig. 5)."),
    "tfds-build": ("cia_jax.data.tfds.command", "Prepare a training benchmark as TFDS data (array_record)."),
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="cia-jax",
      description="CIA / DiMP visual object tracking in JAX: train, track, evaluate.",
  )
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, (module_name, help_text) in COMMANDS.items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(_module=module_name)
    # Argument definitions are cheap to import only if the module is; modules keep
    # their heavy imports (jax, tensorflow) inside `run`.
    importlib.import_module(module_name).add_arguments(p)
  return parser


def main(argv: list[str] | None = None) -> int:
  # TensorFlow (the input pipeline) prints oneDNN / absl banners at import; keep the console for our output.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.command is None:
    parser.print_help()
    return 0
  module = importlib.import_module(args._module)
  return int(module.run(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
