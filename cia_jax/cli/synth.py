"""`cia-jax synth`: write synthetic tracking sequences in a benchmark's on-disk layout (`cia_jax.data.synthetic`).

  cia-jax synth --format lasot --out data/lasot --num-sequences 8 --num-frames 60
"""

from __future__ import annotations


def add_arguments(parser) -> None:
  """Flags of `cia-jax synth` (cheap: the formats are checked by the library, which lists them on error)."""
  parser.add_argument("--format", default="got10k",
                      help="on-disk layout to write: a benchmark name such as got10k, lasot, otb, trackingnet, "
                           "coco or folder (default got10k; an unknown name is answered with the full list)")
  parser.add_argument("--out", required=True, help="dataset root to write into")
  parser.add_argument("--num-sequences", type=int, default=4)
  parser.add_argument("--num-frames", type=int, default=30)
  parser.add_argument("--width", type=int, default=160)
  parser.add_argument("--height", type=int, default=120)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--split", default="train", help="got10k: train/val/test; trackingnet: train/test")


def run(args) -> int:
  """Writes the sequences and prints their names."""
  from cia_jax.data import synthetic
  try:
    names = synthetic.generate(args.out, args.format, args.num_sequences, args.num_frames,
                               (args.width, args.height), args.seed, split=args.split)
  except OSError as e:  # e.g. --out names a file or an unwritable folder: the user's to fix, so one line
    raise ValueError(f"cannot write to --out {args.out}: {e}") from e
  print(f"wrote {len(names)} {args.format} sequences to {args.out}: {', '.join(names)}")
  return 0
