"""`cia-jax train`: train CIA / DiMP from a config file (resumes from the workdir's checkpoints).

    cia-jax train --config configs/tiny.py --workdir /tmp/cia_tiny --config.optim.epochs=2

Exit codes: 0 (done, or stopped by SIGTERM / the time limit), 2 (a config, flag or data error, one line), 3 (a
non-finite loss).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

# `cia_jax.cli.main` takes the `--config.KEY=VALUE` arguments out before argparse into `args.config_overrides`.
ACCEPTS_CONFIG_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax train`."""
  parser.add_argument("--config", required=True, help="config file, e.g. configs/cia18.py or configs/cia18.py:cl")
  parser.add_argument("--workdir", required=True, help="output folder (checkpoints, logs, export); resumed if it "
                      "holds a checkpoint")
  parser.add_argument("--coordinator-address", default=None, help="multi-host: HOST:PORT of process 0")
  parser.add_argument("--num-processes", type=int, default=None, help="multi-host: number of processes")
  parser.add_argument("--process-id", type=int, default=None, help="multi-host: this process (0-based)")
  parser.add_argument("--distributed", action="store_true",
                      help="multi-host: jax.distributed.initialize() with cluster auto-detection (TPU pods)")
  parser.epilog = "Any config value: --config.KEY=VALUE (e.g. --config.optim.epochs=2)."


def _stopped_before_training(signum, frame):  # pylint: disable=unused-argument
  # Until `train_and_evaluate` installs its own handler (its first statement) there is nothing to save.
  # os._exit, not sys.exit: a SystemExit raised inside an import in progress can be swallowed by the module
  # being imported, and the run would then train to the end after saying it stopped.
  print("cia-jax train: SIGTERM before training started: stopped, nothing to save", flush=True)
  sys.stderr.flush()
  os._exit(0)  # pylint: disable=protected-access


def run(args: argparse.Namespace) -> int:
  """Loads the config, applies the overrides, and trains."""
  previous = signal.signal(signal.SIGTERM, _stopped_before_training)  # before the seconds of importing JAX / TF
  try:
    from cia_jax import config_lib
    from cia_jax.train import trainer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge"):  # orbax logs every save step at INFO
      logging.getLogger(noisy).setLevel(logging.WARNING)
    config = config_lib.apply_overrides(config_lib.load_config(args.config), args.config_overrides)
    if config.get("task") == "keeptrack":  # configs/keeptrack.py: the association network (cia_jax.train.tcm_trainer)
      from cia_jax.train import tcm_trainer
      tcm_trainer.train_tcm(config, args.workdir)
      return 0
    trainer.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id, args.distributed)
    trainer.train_and_evaluate(config, args.workdir)
  except FloatingPointError as e:
    print(f"cia-jax train: error: {e}", file=sys.stderr, flush=True)
    return 3
  finally:
    signal.signal(signal.SIGTERM, previous)
  return 0
