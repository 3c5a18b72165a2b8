"""Trains full-size DiMP18 / CIA18 on a folder of real sequences, for parity runs with trained weights (#16).

The point is peaked score maps, not generalisation: the networks are trained (from scratch: no ImageNet weights
here) on the very sequences the parity runs track, with the paper's losses, crops and per-group learning rates,
at a small batch and a constant, scaled learning rate. The result is exported as a reference-layout `.pth`
(`cia-jax convert --from cia-jax`) for `scripts/compare_pytorch.py --checkpoint`.

  .venv/bin/python scripts/train_parity_weights.py --arch dimp18 --data-root ../shared/data/real \\
      --workdir /tmp/parity_dimp18 --steps 300

Writes `<workdir>/model` (our variables checkpoint), `<workdir>/<arch>_trained.pth` and the trainer's
`metrics.jsonl`. Rerunning resumes from the workdir's checkpoints. Folder sequences have no category label, so
CIA18 trains without the category cross-entropy (weight 0); its dictionary rows still learn through the encoder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cia_jax import checkpoints
from cia_jax import config_lib
from cia_jax.interop import convert
from cia_jax.train import trainer

CONFIGS = {"dimp18": "configs/dimp18.py", "cia18": "configs/cia18.py"}


def parity_config(arch: str, data_root: str, steps: int, batch_size: int, lr_scale: float):
  """The training ConfigDict: the arch's config with the folder dataset as the only training set."""
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = config_lib.load_config(os.path.join(here, CONFIGS[arch]))
  with config.unlocked():
    config.data.train = {"real": config_lib.dataset_entry("folder", "all", 1.0)}
    config.data.train.real.root = os.path.abspath(data_root)
    config.data.batch_size = batch_size
    config.optim.total_steps = steps
    config.optim.decay_every_epochs = 0  # constant rate: the run is short
    config.optim.lr_scale = lr_scale
    config.val.enabled = False
    config.checkpoint.every_steps = 25
    config.log_every_steps = 5
    # Folder sequences carry no category label: the classifier's rows (CIA's dictionary) still train through
    # the category encoder, only the cross-entropy term is off.
    config.loss.weights.category = 0.0
  return config


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--arch", required=True, choices=sorted(CONFIGS))
  p.add_argument("--data-root", required=True, help="folder of sequence folders (e.g. ../shared/data/real)")
  p.add_argument("--workdir", required=True)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--batch-size", type=int, default=4)
  p.add_argument("--lr-scale", type=float, default=5.0, help="multiplies every group's learning rate")
  args = p.parse_args(argv)
  if not os.path.isdir(args.data_root):
    print(f"train_parity_weights: data root not found: {args.data_root}", file=sys.stderr)
    return 2
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  config = parity_config(args.arch, args.data_root, args.steps, args.batch_size, args.lr_scale)
  trainer.train_and_evaluate(config, args.workdir)
  model_dir = os.path.join(args.workdir, checkpoints.EXPORT_DIR)
  # Stopped early (SIGTERM): nothing new was exported (`model/` may hold an earlier, shorter run); rerun to resume.
  if not os.path.isdir(model_dir) or checkpoints.load_variables(model_dir)[1].get("step") != args.steps:
    print(f"not exported: {model_dir} does not hold step {args.steps} (stopped early? rerun to resume)")
    return 0
  out = os.path.join(args.workdir, f"{args.arch}_trained.pth")
  convert.export_file(model_dir, args.arch, out)
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
