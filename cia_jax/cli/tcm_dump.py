"""`cia-jax tcm-dump`: run a base tracker over training sequences and write KeepTrack's candidate dataset.

    cia-jax tcm-dump --tracker superdimp --checkpoint superdimp_ckpt --dataset lasot --root LaSOT \
        --split train --out candidates.json

Exit codes: 0 (every selected sequence dumped or already in the file), 1 (some failed; listed), 2 (bad options).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax tcm-dump`."""
  parser.add_argument("--tracker", default="superdimp",
                      help="base tracker preset (superdimp as in KeepTrack's training data, cia50, ...)")
  parser.add_argument("--checkpoint", default=None, help="the base network (training workdir or converted)")
  parser.add_argument("--random-weights", action="store_true", help="random base network (tests only)")
  parser.add_argument("--dataset", required=True, help="benchmark format (lasot, got10k, ...) or folder")
  parser.add_argument("--root", required=True, help="dataset root")
  parser.add_argument("--split", default=None, help="dataset split")
  parser.add_argument("--sequences", default=None, help="comma-separated sequence names (default: all)")
  parser.add_argument("--out", required=True, help="output JSON (pytracking's candidate-dataset layout); "
                                                   "sequences already in it are skipped")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a tracker setting (repeatable), e.g. --set image_sample_size=352")
  parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="only the first N frames")
  parser.add_argument("--seed", type=int, default=0, help="seed of the tracker's randomness")
  parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed sequence")


def run(args: argparse.Namespace) -> int:
  """Dumps the selected sequences; prints one line per sequence."""
  from cia_jax.tcm import dump  # pylint: disable=g-import-not-at-top  (jax)
  from cia_jax.track import runner  # pylint: disable=g-import-not-at-top
  from cia_jax.track.params import apply_overrides, get_settings  # pylint: disable=g-import-not-at-top

  settings = apply_overrides(get_settings(args.tracker), args.set)
  if settings.use_tcm:
    raise ValueError(f"--tracker {args.tracker} uses target candidate matching itself; tcm-dump runs a base tracker "
                     f"(superdimp, cia50, ...)")
  if args.max_frames is not None and args.max_frames < 2:
    raise ValueError(f"--max-frames must be at least 2 (the init frame is never dumped), got {args.max_frames}")
  seqs, broken = runner.load_benchmark(args.dataset, args.root, args.split, args.sequences)
  model = runner.load_model(args.tracker, args.checkpoint, args.random_weights, args.seed, tcm=False)
  summary = dump.dump_benchmark(model, settings, seqs, args.out, args.seed, args.max_frames, args.fail_fast,
                                on_sequence=lambda name, what: print(f"{name}: {what}", flush=True))
  failed = {**broken, **summary["failed"]}
  print(f"dumped {len(summary['dumped'])} sequence(s), skipped {len(summary['skipped'])} already in {args.out}, "
        f"{len(failed)} failed", flush=True)
  if failed:
    print("\n".join(f"  {n}: {r}" for n, r in sorted(failed.items())), file=sys.stderr, flush=True)
    return 1
  return 0
