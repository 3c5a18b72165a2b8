"""`cia-jax tfds-build`: prepare the TFDS versions of the training benchmarks (`cia_jax.data.tfds`).

  cia-jax tfds-build --dataset got10k --manual_dir /data/got10k --data_dir /data/tfds
  cia-jax tfds-build --dataset lasot --manual_dir /data/lasot --data_dir /data/tfds --num_shards 64

Equivalent to `tfds build cia_<dataset> --imports cia_jax.data.tfds.builders --manual_dir ... --data_dir ...`
(both configs, array_record). The training config then reads them with `source="tfds"`.
"""

from __future__ import annotations



def add_arguments(parser) -> None:
  """Flags of `cia-jax tfds-build` (cheap: no TFDS import; the library checks the benchmark name)."""
  parser.add_argument("--dataset", required=True,
                      help="benchmark to prepare: got10k, lasot, trackingnet or coco (see cia_jax.data.tfds)")
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
  """Builds both configs (`sequences`, `frames`) and prints their folders; 1 when --verify finds differences."""
  if args.num_shards is not None and args.num_shards < 1:
    raise ValueError(f"--num_shards must be >= 1, got {args.num_shards}")
  from cia_jax.data.tfds import builders, reader
  try:
    prepared = builders.build(args.dataset, args.manual_dir, args.data_dir, args.num_shards,
                              overwrite=args.overwrite)
  except FileNotFoundError:
    raise
  except OSError as e:  # e.g. --data_dir names a file or an unwritable folder: the user's to fix, so one line
    raise ValueError(str(e)) from e
  for config, path in prepared.items():
    print(f"{config}: {path}")
  if args.verify is None:
    return 0
  found = reader.compare_splits_with_folders(args.dataset, args.manual_dir, args.data_dir,
                                             None if args.verify < 0 else args.verify)
  for split, problems in found.items():
    print(f"verify {args.dataset}/{split}: {'identical' if not problems else f'{len(problems)} difference(s)'}")
  problems = [p for split_problems in found.values() for p in split_problems]
  for p in problems[:20]:
    print(f"  {p}")
  return 1 if problems else 0
