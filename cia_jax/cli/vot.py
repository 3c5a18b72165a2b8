"""`cia-jax vot`: the tracker as a TraX server for the VOT toolkit (`cia_jax.track.vot_server`).

A `trackers.ini` entry (README, "VOT toolkit") launches it; needs the `vot` extra (`pip install .[vot]`).
"""

from __future__ import annotations

import argparse

from cia_jax.cli.track import TRACKERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax vot`."""
  parser.add_argument("--tracker", required=True, choices=TRACKERS, help="tracker parameter preset")
  parser.add_argument("--checkpoint", default=None,
                      help="training workdir or converted checkpoint (cia-jax convert) holding the network")
  parser.add_argument("--tcm-checkpoint", default=None,
                      help="keeptrack / cia50_tcm: the association network (cia-jax convert --arch keeptrack, or "
                           "cia-jax train --config configs/keeptrack.py) next to the base --checkpoint")
  parser.add_argument("--random-weights", action="store_true",
                      help="serve a randomly initialised network (tests and benchmarks only)")
  parser.add_argument("--warmup-size", action="append", default=[], metavar="WxH",
                      help="compile for this frame size before the handshake (repeatable), e.g. 640x480")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a tracker setting (repeatable)")
  parser.add_argument("--seed", type=int, default=0, help="seed of the augmentation / IoU-Net randomness")


def run(args: argparse.Namespace) -> int:
  """`cia-jax vot`: builds the tracker, warms it up, serves TraX until the toolkit quits."""
  try:
    from cia_jax.track import vot_server  # pylint: disable=g-import-not-at-top  (jax, trax)
  except ImportError as e:
    raise ValueError(f"the VOT toolkit integration needs the `vot` extra (pip install '.[vot]'): {e}") from e
  from cia_jax.data.frames import read_frame  # pylint: disable=g-import-not-at-top
  from cia_jax.track import runner, vot_protocol  # pylint: disable=g-import-not-at-top
  from cia_jax.track.params import apply_overrides, get_settings  # pylint: disable=g-import-not-at-top

  sizes = tuple(vot_server.parse_size(s) for s in args.warmup_size)
  settings = apply_overrides(get_settings(args.tracker), args.set)
  model = runner.load_model(args.tracker, args.checkpoint, args.random_weights, args.seed,
                             tcm_checkpoint=args.tcm_checkpoint)
  init, step = vot_protocol.model_tracker(model, settings, args.seed, "vot")
  return vot_server.run_server(init, step, read_frame, sizes)
