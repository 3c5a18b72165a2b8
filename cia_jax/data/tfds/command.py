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


def run(args) -> int:
  """Builds both configs (`sequences`, `frames`) and prints their folders."""
  import os  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from cia_jax.data.tfds import builders  # pylint: disable=g-import-not-at-top
  if args.num_shards is not None and args.num_shards < 1:
    raise ValueError(f"--num_shards must be >= 1, got {args.num_shards}")
  for config, path in builders.build(args.dataset, args.manual_dir, args.data_dir, args.num_shards).items():
    print(f"{config}: {path}")
  return 0
