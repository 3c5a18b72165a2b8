"""The single `cia-jax` console script.

One module per subcommand in this package (`cia_jax/cli/<command>.py`), each with `add_arguments(parser)` and
`run(args) -> int`. These modules are the only place in the project with function-local imports: they import
the library (jax, TensorFlow) inside `run`, so `cia-jax --help` and argument errors stay fast.

Errors a user can fix (`ValueError`, `FileNotFoundError`: a bad flag, file, key or sequence) are printed as one
line `cia-jax <command>: error: ...` with exit code 2, never as a traceback (set `CIA_JAX_DEBUG=1` for the
traceback).

XLA flags: `cia_jax.xla_flags` (the CPU backend without YNNPACK fusions on the measured jaxlib; opt out with
`CIA_JAX_XLA_DEFAULTS=0`).

Global option `--compilation-cache DIR|none` (before or after the subcommand): JAX's persistent compilation
cache, on by default in a user-level folder (`cia_jax.compile_cache`), so a second run of the same command
loads its compiled programs instead of compiling them again.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from cia_jax import compile_cache, xla_flags  # standard library only: `--help` stays fast

# name -> (module under cia_jax.cli, one-line help). Add a line here when a subcommand lands.
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("quickstart", "Train a tiny CIA on synthetic data, track, evaluate, plot (the main job)."),
    "synth": ("synth", "Write synthetic tracking sequences in a benchmark's on-disk layout."),
    "evaluate": ("evaluate", "Benchmark metrics, tables and plots of tracker results."),
    "convert": ("convert", "Convert a PyTorch (pytracking / CIA / torchvision) checkpoint."),
    "train": ("train", "Train CIA / DiMP from a config file (resumes from the workdir's checkpoints)."),
    "track": ("track", "Run a tracker over a benchmark and write result files."),
    "export": ("export", "Export a tracker (jitted init / step + weights) for a jax-only runtime."),
    "embed-plot": ("embed_plot", "t-SNE of target features at three network stages (Fig. 5)."),
    "tfds-build": ("tfds_build", "Prepare a training benchmark as TFDS data (array_record)."),
    "pack": ("pack", "Check tracker results and zip them for the GOT-10k / TrackingNet server."),
    "vot": ("vot", "Serve the tracker over TraX to the VOT toolkit (needs the vot extra)."),
    "tcm-dump": ("tcm_dump", "Run a base tracker over training sequences and write KeepTrack's candidate dataset."),
}

CONFIG_PREFIX = "--config."
CACHE_FLAG = "--compilation-cache"


class ArgumentParser(argparse.ArgumentParser):
  """argparse that refuses a flag as the value of another flag (`--results --format raw`)."""

  def _get_values(self, action, arg_strings):
    for s in arg_strings:
      if action.option_strings and s.startswith("--") and len(s) > 2:
        self.error(f"argument {'/'.join(action.option_strings)}: expected a value, got the flag {s}")
    return super()._get_values(action, arg_strings)


def split_config_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.KEY=VALUE` / `--config.KEY VALUE` arguments -> (other args, ['KEY=VALUE', ...])."""
  rest, overrides = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith(CONFIG_PREFIX):
      key = arg[len(CONFIG_PREFIX):]
      if "=" in key:
        overrides.append(key)
      elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        overrides.append(f"{key}={argv[i + 1]}")
        i += 1
      else:
        raise ValueError(f"config override {arg!r} has no value (use {arg}=VALUE)")
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def split_cache_option(argv: list[str]) -> tuple[list[str], str | None]:
  """Takes `--compilation-cache DIR` / `--compilation-cache=DIR` out of argv, wherever it is -> (rest, DIR or None).

  Taken out before argparse sees the arguments so that it may follow the subcommand too (argparse only knows a
  main-parser option before it), and so that its value is never mistaken for the subcommand.
  """
  rest, value = [], None
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith(CACHE_FLAG + "="):
      value = arg[len(CACHE_FLAG) + 1:]
    elif arg == CACHE_FLAG:
      if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
        raise ValueError(f"{CACHE_FLAG} needs a value: a folder, or none")
      value = argv[i + 1]
      i += 1
    else:
      rest.append(arg)
    i += 1
  if value is not None and not value.strip():
    raise ValueError(f"{CACHE_FLAG} needs a value: a folder, or none")
  return rest, value


def _module(name: str):
  return importlib.import_module(f"cia_jax.cli.{COMMANDS[name][0]}")


def build_parser() -> ArgumentParser:
  parser = ArgumentParser(prog="cia-jax",
                          description="CIA / DiMP visual object tracking in JAX: train, track, evaluate.")
  parser.add_argument(CACHE_FLAG, metavar="DIR|none", default=None,
                      help="JAX persistent compilation cache folder, or none (default: $CIA_JAX_COMPILATION_CACHE, "
                           "else $XDG_CACHE_HOME/cia_jax/jax or ~/.cache/cia_jax/jax); may follow the subcommand")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
  for name, (_, help_text) in COMMANDS.items():
    _module(name).add_arguments(sub.add_parser(name, help=help_text, description=help_text))
  return parser


def _say_terminated(signum, frame):  # pylint: disable=unused-argument
  """SIGTERM before a command installs its own handler: say so instead of dying silently (exit 143 = 128 + 15)."""
  command = next((a for a in sys.argv[1:] if a in COMMANDS), "")
  print(f"cia-jax {command}: stopped by SIGTERM (result files are written whole or not at "
        "all; rerun the command to continue)", file=sys.stderr, flush=True)
  sys.stdout.flush()
  # Not sys.exit: raised inside a finaliser or a C callback, SystemExit is ignored and the process runs on.
  os._exit(128 + signal.SIGTERM)  # pylint: disable=protected-access


def main(argv: list[str] | None = None) -> int:
  if argv is None and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _say_terminated)  # the console script: from the first instant
  # TensorFlow (the input pipeline) prints oneDNN / absl banners at import; keep the console for our output.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  try:
    argv, cache = split_cache_option(argv)
  except ValueError as e:
    parser.error(str(e))
  command = next((a for a in argv if not a.startswith("-")), None)
  overrides: list[str] = []
  if command in COMMANDS and getattr(_module(command), "ACCEPTS_CONFIG_OVERRIDES", False):
    try:
      argv, overrides = split_config_overrides(argv)
    except ValueError as e:
      parser.error(str(e))
  args = parser.parse_args(argv)
  if args.command is None:
    parser.print_help()
    return 0
  args.config_overrides = overrides
  args.compilation_cache = cache
  try:
    compile_cache.configure(cache)  # before the command imports jax and compiles anything
    xla_flags.configure()  # before JAX initialises its backends
    return int(_module(args.command).run(args) or 0)
  except (ValueError, FileNotFoundError) as e:
    if os.environ.get("CIA_JAX_DEBUG"):
      raise
    print(f"cia-jax {args.command}: error: {e}", file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
  sys.exit(main())
