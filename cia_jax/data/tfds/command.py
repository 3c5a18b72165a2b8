"""`cia-jax tfds-build`: prepare the TFDS versions of the training benchmarks (see `builders.py`).

  cia-jax tfds-build --dataset got10k --manual_dir /data/got10k --data_dir /data/tfds
  cia-jax tfds-build --dataset lasot --manual_dir /data/lasot --data_dir /data/tfds --num_shards 64

Equivalent to `tfds build cia_<dataset> --imports cia_jax.data.tfds.builders --manual_dir ... --data_dir ...`
(both configs, array_record). The training config then reads them with `source="tfds"`.
"""

from __future__ import annotations

BENCHMARKS = ("got10k", "lasot", "trackingnet", "coco")


def add_arguments(parser) -> None:
  """Flags of `cia-jax tfds-build` (cheap: no TensorFlow import)."""
  parser.add_argument("--dataset", required=True, choices=BENCHMARKS, help="benchmark to prepare")
  parser.add_argument("--manual_dir", required=True, help="the extracted benchmark (its folder layout)")
  parser.add_argument("--data_dir", required=True, help="TFDS data dir to write into")
  parser.add_argument("--num_shards", type=int, default=None,
                      help="files per split (default: TFDS's choice from the size, 64 MiB-1 GiB each)")
  parser.add_argument("--overwrite", action="store_true",
                      help="rebuild configs already prepared in --data_dir (default: keep them)")
  parser.add_argument("--verify", type=int, default=None, metavar="FRAMES",
                      help="after building, compare every split with the folders: metadata and the bytes of "
                           "the first FRAMES frames per sequence (0 = metadata only, -1 = every frame)")


def run(args) -> int:
  """Builds both configs (`sequences`, `frames`) and prints their folders."""
  import os  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from cia_jax.data.tfds import builders  # pylint: disable=g-import-not-at-top
  if args.num_shards is not None and args.num_shards < 1:
    raise ValueError(f"--num_shards must be >= 1, got {args.num_shards}")
  for config, path in builders.build(args.dataset, args.manual_dir, args.data_dir, args.num_shards,
                                      overwrite=args.overwrite).items():
    print(f"{config}: {path}")
  if args.verify is None:
    return 0
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from cia_jax.data.tfds import reader  # pylint: disable=g-import-not-at-top
  info = tfds.builder_from_directory(reader.builder_dir(args.data_dir, args.dataset, builders.SEQUENCES)).info
  frames = None if args.verify < 0 else args.verify
  problems = []
  for split in info.splits:
    split_arg = "all" if split == "full" else split
    found = reader.compare_with_folders(args.dataset, args.manual_dir, args.data_dir, split_arg, frames)
    print(f"verify {args.dataset}/{split}: {'identical' if not found else f'{len(found)} difference(s)'}")
    problems += found
  for p in problems[:20]:
    print(f"  {p}")
  return 1 if problems else 0
