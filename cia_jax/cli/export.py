"""`cia-jax export`: a tracker's jitted init / step with its weights, for a runtime that needs only jax + numpy.

    cia-jax export --tracker cia18 --checkpoint runs/cia18 --image-size 480x640 --out exported/cia18_480x640
    python exported/cia18_480x640/cia_tracker_runtime.py exported/cia18_480x640 --frames f.npy --box 10,20,40,30

The folder holds `init.jaxexport` / `step.jaxexport` (serialized StableHLO, `jax.export`), `weights.npz`,
`manifest.json` and `cia_tracker_runtime.py` (the loader: jax and numpy only); see `cia_jax.export.exporter`.
One export serves one frame size (`--image-size HxW`, height x width) and one set of tracker settings.
"""

from __future__ import annotations

import argparse
import math
import os

from cia_jax.cli.track import TRACKERS

PLATFORMS = "cpu,cuda,tpu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax export`."""
  parser.add_argument("--tracker", required=True, choices=TRACKERS, help="tracker parameter preset")
  weights = parser.add_mutually_exclusive_group(required=True)
  weights.add_argument("--checkpoint", default=None,
                       help="training workdir or converted checkpoint (cia-jax convert) holding the network")
  weights.add_argument("--random-weights", action="store_true",
                       help="export a randomly initialised network (tests and benchmarks only)")
  parser.add_argument("--image-size", required=True, metavar="HxW",
                      help="frame size the exported programs take: height x width in pixels, e.g. 480x640")
  parser.add_argument("--out", required=True, help="output folder (an earlier export there is replaced)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a tracker setting (repeatable), compiled into the export")
  parser.add_argument("--platforms", default=PLATFORMS,
                      help=f"comma-separated jax platforms to lower for (default {PLATFORMS}; also rocm)")
  parser.add_argument("--seed", type=int, default=0, help="seed of --random-weights")


def _check_out(path: str) -> None:
  """ValueError when `path` is a file, or a non-empty folder that is not an earlier export."""
  if os.path.isfile(path):
    raise ValueError(f"--out {path} is a file")
  if os.path.isdir(path) and os.listdir(path) and not os.path.isfile(os.path.join(path, "manifest.json")):
    raise ValueError(f"--out {path} is a non-empty folder that holds no export; choose a new or empty folder")


def run(args: argparse.Namespace) -> int:
  """`cia-jax export`: 0 when the folder is written, 2 for bad options."""
  from cia_jax.export import exporter  # pylint: disable=g-import-not-at-top  (jax, flax)
  from cia_jax.track import params, runner  # pylint: disable=g-import-not-at-top

  image_size = exporter.parse_image_size(args.image_size)
  platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
  if not platforms:
    raise ValueError("--platforms: give at least one platform, e.g. cpu,cuda")
  settings = params.apply_overrides(params.get_settings(args.tracker), args.set)
  _check_out(args.out)
  model = runner.load_model(args.tracker, args.checkpoint, args.random_weights, args.seed)
  source = os.path.abspath(args.checkpoint) if args.checkpoint else f"random weights (seed {args.seed})"
  manifest = exporter.export_tracker(model, settings, image_size, args.out, platforms,
                                     info={"tracker": args.tracker, "source": source, "overrides": list(args.set)})
  n = sum(math.prod(w["shape"]) for w in manifest["weights"]["arrays"])
  print(f"exported {args.tracker} for {image_size[0]}x{image_size[1]} (HxW) frames on {', '.join(platforms)}: "
        f"{len(manifest['weights']['arrays'])} weight arrays ({n / 1e6:.1f} M values) -> {args.out}", flush=True)
  return 0
