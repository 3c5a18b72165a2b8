"""`cia-jax convert`: a PyTorch checkpoint <-> a variables checkpoint."""

from __future__ import annotations

import argparse

from cia_jax.interop.archs import ARCH_CONFIGS, TCM_ARCHS


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `cia-jax convert`."""
  parser.add_argument("--from", dest="source_format", choices=("pytracking", "cia-jax"), default="pytracking",
                      help="pytracking: IN is a PyTorch checkpoint (pytracking/CIA dict with 'net', or a bare "
                           "state dict such as torchvision ResNet weights), OUT a variables checkpoint. "
                           "cia-jax: the reverse, IN a variables checkpoint, OUT a torch file {'net': state "
                           "dict} that the reference loads")
  parser.add_argument("--arch", required=True, choices=sorted(ARCH_CONFIGS) + list(TCM_ARCHS),
                      help="network the checkpoint holds (resnet18/resnet50: backbone only, e.g. ImageNet; "
                           "keeptrack: the association net of keep_track.pth.tar, its base is --arch superdimp)")
  parser.add_argument("--momentum-out", default=None,
                      help="CIA only: also write the key encoder (encoder_k) to this directory")
  parser.add_argument("input", metavar="IN", help="PyTorch checkpoint (.pth / .pth.tar), or a variables "
                                                  "checkpoint with --from cia-jax")
  parser.add_argument("output", metavar="OUT", help="output variables-checkpoint directory (a .pth file with "
                                                    "--from cia-jax)")


def run(args: argparse.Namespace) -> int:
  """`cia-jax convert --arch ARCH IN OUT`: PyTorch checkpoint -> variables checkpoint, or the reverse."""
  from cia_jax.interop import convert  # pylint: disable=g-import-not-at-top  (JAX: only when converting)

  if args.source_format == "cia-jax":
    convert.export_file(args.input, args.arch, args.output)
    print(f"wrote {args.output} ({args.arch} state dict, from {args.input})")
    return 0
  written = convert.write_converted(args.input, args.arch, args.output, args.momentum_out)
  print(f"wrote {written[0]} ({args.arch}, from {args.input})")
  if len(written) > 1:
    print(f"wrote {written[1]} (key encoder)")
  return 0
