"""`cia-jax embed-plot`: t-SNE of target features at three network stages (Fig. 5; `cia_jax.evaluation.embedding`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax embed-plot`."""
  parser.add_argument("--checkpoint", required=True, help="training workdir or converted checkpoint")
  parser.add_argument("--root", required=True,
                      help="a folder of sequence folders (any layout `load_sequence` reads), or a dataset root "
                           "with --dataset")
  parser.add_argument("--dataset", default="folder", help="dataset name for load_dataset, or folder")
  parser.add_argument("--split", default=None)
  parser.add_argument("--sequences", default=None, help="comma-separated names (default: the first 8)")
  parser.add_argument("--frames", type=int, default=20, help="frames per sequence")
  parser.add_argument("--search-area-factor", type=float, default=None, help="default: from the checkpoint")
  parser.add_argument("--crop-size", type=int, default=None, help="default: from the checkpoint")
  parser.add_argument("--out", required=True, help="output image (.png or .pdf)")
  parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
  """`cia-jax embed-plot`."""
  from cia_jax.evaluation import embedding  # pylint: disable=g-import-not-at-top  (jax, matplotlib)
  from cia_jax.track import runner  # pylint: disable=g-import-not-at-top

  seqs, _ = runner.load_benchmark(args.dataset, args.root, args.split, args.sequences, strict=True)
  scores = embedding.embed_plot(args.checkpoint, seqs if args.sequences else seqs[:8], args.out, args.frames,
                                args.search_area_factor, args.crop_size, args.seed)
  print(f"wrote {args.out}; 5-NN accuracy in 2-D: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in scores.items()))
  return 0
