"""`cia-jax track`: run a tracker over a benchmark (or a folder of sequence folders) and write result files.

The work is `cia_jax.track.runner.track_benchmark` (checks before the network is built, failed sequences
recorded in `<results>/failures.json`, exit code 1 when any failed); result layouts in `cia_jax.results`.
With `--video SOURCE --init-box x,y,w,h` (a video file, an image folder without ground truth or a camera
index) instead of `--dataset` / `--root`: `cia_jax.track.video.track_video`.
"""

from __future__ import annotations

import argparse
import os

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


def _devices(text: str) -> int | None:
  """argparse type of `--devices`: `all` (None) or a whole number >= 1."""
  return None if text.strip().lower() == "all" else _at_least_one(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax track`."""
  parser.add_argument("--tracker", required=True, choices=TRACKERS, help="tracker parameter preset")
  parser.add_argument("--checkpoint", default=None,
                      help="training workdir or converted checkpoint (cia-jax convert) holding the network")
  parser.add_argument("--tcm-checkpoint", default=None,
                      help="keeptrack / cia50_tcm: the association network (cia-jax convert --arch keeptrack, or "
                           "cia-jax train --config configs/keeptrack.py) next to the base --checkpoint")
  parser.add_argument("--random-weights", action="store_true",
                      help="track with a randomly initialised network, the association network of keeptrack / "
                           "cia50_tcm included (tests and benchmarks only)")
  parser.add_argument("--dataset", default=None,
                      help="otb, lasot, got10k, trackingnet, uav, nfs, vot, tnl2k, dtb70 or folder")
  parser.add_argument("--root", default=None, help="dataset root (for folder: a folder of sequence folders)")
  parser.add_argument("--video", default=None, metavar="SOURCE",
                      help="instead of --dataset: a video file, an image folder (no ground truth) or a camera index")
  parser.add_argument("--init-box", default=None, metavar="X,Y,W,H",
                      help="with --video: the target in the first frame, pixels")
  parser.add_argument("--out", default=None, metavar="OVERLAY.mp4",
                      help="with --video: also write an overlay video (box, score, flag)")
  parser.add_argument("--split", default=None, help="dataset split (e.g. val / test for GOT-10k)")
  parser.add_argument("--sequences", default=None, help="comma-separated sequence names (default: all)")
  parser.add_argument("--results", required=True, help="output directory for the result files")
  parser.add_argument("--format", default="raw", choices=RESULT_FORMATS, help="result file layout")
  parser.add_argument("--protocol", default="ope", choices=("ope", "vot"),
                      help="ope: one pass from frame 0; vot: VOT reset-based (re-initialise 5 frames after each "
                           "failure; <results>/<seq>/<seq>_001.txt, cia_jax.track.vot_protocol)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a tracker setting (repeatable), e.g. --set target_not_found_threshold=0")
  parser.add_argument("--batch-sequences", type=_at_least_one, default=1, metavar="K",
                      help="lanes per device: each device tracks K sequences (any frame sizes) at once (vmap)")
  parser.add_argument("--chunk-frames", type=_at_least_one, default=1, metavar="C",
                      help="frames per device call (lax.scan over C prefetched frames of every lane)")
  parser.add_argument("--devices", type=_devices, default=None, metavar="all|N",
                      help="local devices to spread the lanes over (default: all)")
  parser.add_argument("--coordinator-address", default=None, help="multi-host: HOST:PORT of process 0")
  parser.add_argument("--num-processes", type=int, default=None, help="multi-host: number of processes")
  parser.add_argument("--process-id", type=int, default=None, help="multi-host: this process (0-based)")
  parser.add_argument("--distributed", action="store_true",
                      help="multi-host: jax.distributed.initialize() with cluster auto-detection (TPU pods)")
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


def _run_video(args: argparse.Namespace) -> int:
  """`cia-jax track --video`: tracks one video / folder / camera, prints where the results went."""
  from cia_jax.track import runner, video  # pylint: disable=g-import-not-at-top  (jax)
  from cia_jax.track.params import apply_overrides, get_settings  # pylint: disable=g-import-not-at-top

  if args.dataset or args.root or args.sequences or args.batch_sequences != 1 or args.chunk_frames != 1:
    raise ValueError("--video tracks one source: --dataset, --root, --sequences, --batch-sequences and "
                     "--chunk-frames do not apply")
  if not args.init_box:
    raise ValueError("--video needs --init-box x,y,w,h (the target in the first frame)")
  if args.format != "raw":
    raise ValueError("--video writes the raw layout (<results>/<name>.txt); --format does not apply")
  box = video.parse_box(args.init_box)
  settings = apply_overrides(get_settings(args.tracker), args.set)
  model = runner.load_model(args.tracker, args.checkpoint, args.random_weights, args.seed,
                             tcm_checkpoint=args.tcm_checkpoint)
  result = video.track_video(model, settings, args.video, box, args.results, out=args.out, seed=args.seed,
                             max_frames=args.max_frames)
  stopped = " (stopped by Ctrl-C)" if result.interrupted else ""
  print(f"{len(result.boxes)} frames tracked{stopped}: {result.box_path}"
        + (f", overlay {result.overlay}" if result.overlay else ""))
  return 0


def _run_vot(args: argparse.Namespace) -> int:
  """`cia-jax track --protocol vot`: the reset-based experiment (`cia_jax.track.vot_protocol`)."""
  from cia_jax.track import vot_protocol  # pylint: disable=g-import-not-at-top  (jax)

  if args.format != "raw" or args.batch_sequences != 1 or args.chunk_frames != 1 or args.max_frames is not None:
    raise ValueError("--protocol vot writes the VOT layout, one sequence at a time, every frame: "
                     "--format, --batch-sequences, --chunk-frames and --max-frames do not apply")
  return vot_protocol.track_vot_benchmark(
      tracker=args.tracker, dataset=args.dataset, root=args.root, results_dir=args.results,
      checkpoint=args.checkpoint, tcm_checkpoint=args.tcm_checkpoint, random_weights=args.random_weights,
      split=args.split,
      sequences=args.sequences, overrides=args.set, seed=args.seed)


def run(args: argparse.Namespace) -> int:
  """`cia-jax track`: 0 when every sequence is finished, 1 when some failed (table printed), 2 bad options."""
  if args.video is not None:
    return _run_video(args)
  if args.out or args.init_box:
    raise ValueError("--init-box and --out go with --video")
  if not args.dataset or not args.root:
    raise ValueError("give --dataset and --root (a benchmark), or --video (one video, folder or camera)")
  if args.protocol == "vot":
    return _run_vot(args)
  if (args.distributed or args.coordinator_address or args.num_processes is not None or args.process_id is not None
      or os.environ.get("CIA_JAX_COORDINATOR_ADDRESS")):
    # Before any other JAX call; every process then tracks its share (cia_jax.track.distributed). Imported only
    # here: the training module takes seconds to import.
    from cia_jax.train.trainer import initialize_distributed  # pylint: disable=g-import-not-at-top  (jax)

    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id, args.distributed)
  from cia_jax.track import runner  # pylint: disable=g-import-not-at-top  (jax)

  return runner.track_benchmark(
      tracker=args.tracker, dataset=args.dataset, root=args.root, results_dir=args.results,
      checkpoint=args.checkpoint, tcm_checkpoint=args.tcm_checkpoint, random_weights=args.random_weights,
      split=args.split,
      sequences=args.sequences, fmt=args.format, overrides=args.set, batch_sequences=args.batch_sequences,
      max_frames=args.max_frames, seed=args.seed, progress=not args.no_progress, fail_fast=args.fail_fast,
      chunk_frames=args.chunk_frames, devices=args.devices)
