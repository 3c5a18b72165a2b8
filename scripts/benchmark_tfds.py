"""Input pipeline from raw folders vs from the prepared TFDS data: training samples per second.

Builds the TFDS version (`cia_jax.data.tfds.builders`, array_record, configs `sequences` + `frames`) of a
benchmark layout and runs the same `make_dataset` (same sampler, processing and seed) over the folder
reader's sequences and over `load_tfds_dataset`'s. Checks first that both give identical batches, then
reports, interleaving the two sources so a busy period of the shared cores hits both alike:
  1. per frame: read the file + `cv2.imdecode` vs fetch the TFDS record + the same decode (median ms);
  2. tf.data pipeline samples/s (median of --repeats runs) and process CPU ms per sample.

Data (`--data`):
  real       the real LaSOT sequence in ../shared/data/real (LaSOT_airplane-1, 300 frames 640x360),
             linked into a LaSOT layout `<class>/<class>-<n>` (default);
  synthetic  `cia_jax.data.synthetic` GOT-10k train sequences (`--num-sequences`, `--frames`, `--size`).

  .venv/bin/python scripts/benchmark_tfds.py [--data real] [--preset cia18] [--batch 8] [--batches 10]
      [--parallel 1,2,autotune] [--repeats 3] [--num-shards N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from bench_common import pipeline_rate  # noqa: E402  (scripts/ is on sys.path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from cia_jax.data import pipeline, synthetic  # noqa: E402
from cia_jax.data.datasets import load_dataset  # noqa: E402
from cia_jax.data.processing import PROCESSING_PRESETS  # noqa: E402
from cia_jax.data.sampler import SAMPLER_PRESETS, DiMPSampler  # noqa: E402
from cia_jax.data.tfds import builders, reader  # noqa: E402

REAL = "../shared/data/real/LaSOT_airplane-1"


def parse_args():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", default="real", choices=("real", "synthetic"))
  p.add_argument("--num-sequences", type=int, default=6, help="synthetic: sequences")
  p.add_argument("--frames", type=int, default=60, help="synthetic: frames per sequence")
  p.add_argument("--size", default="640x360", help="synthetic: frame size WxH")
  p.add_argument("--preset", default="cia18", choices=sorted(PROCESSING_PRESETS))
  p.add_argument("--batch", type=int, default=8, help="samples per batch (one device)")
  p.add_argument("--batches", type=int, default=10, help="timed batches per run")
  p.add_argument("--parallel", default="1,2,autotune", help="num_parallel_calls values to try")
  p.add_argument("--repeats", type=int, default=3, help="runs per setting and source (median reported)")
  p.add_argument("--frame-reads", type=int, default=200, help="frames timed for the per-frame table")
  p.add_argument("--num-shards", type=int, default=None, help="TFDS files per split (default: TFDS's choice)")
  p.add_argument("--workdir", default=None, help="where to write the layout and TFDS data (default: a temp dir)")
  return p.parse_args()


def make_layout(args, workdir):
  """(format name, split, manual dir) of the benchmark layout to build."""
  if args.data == "real":
    if not os.path.isdir(REAL):
      raise SystemExit(f"real sequence not found: {REAL} (use --data synthetic)")
    root = os.path.join(workdir, "lasot")
    os.makedirs(os.path.join(root, "airplane"), exist_ok=True)
    link = os.path.join(root, "airplane", "airplane-1")
    if not os.path.islink(link):
      os.symlink(REAL, link)
    return "lasot", "all", root
  w, h = (int(v) for v in args.size.lower().split("x"))
  root = os.path.join(workdir, "got10k")
  synthetic.generate(root, "got10k", num_sequences=args.num_sequences, num_frames=args.frames,
                     image_size=(w, h), split="train")
  return "got10k", "train", root


def du(path):
  total = 0
  for d, _, files in os.walk(path, followlinks=True):
    total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
  return total


def tfds_info_shards(path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return sum(s.num_shards for s in tfds.builder_from_directory(path).info.splits.values())


def frame_read_ms(raw, prepared, n):
  """Median ms per frame: file read + decode, TFDS record fetch + decode (same frames, interleaved)."""
  pairs = [(p, u) for a, b in zip(raw, prepared) for p, u in zip(a.frame_paths, b.frame_paths)]
  rng = np.random.default_rng(0)
  pick = [pairs[i] for i in rng.integers(len(pairs), size=n)]
  file_t, tfds_t = [], []
  for path, uri in pick:
    t0 = time.perf_counter()
    pipeline.load_image(path)
    t1 = time.perf_counter()
    pipeline.load_image(uri)
    t2 = time.perf_counter()
    file_t.append(t1 - t0)
    tfds_t.append(t2 - t1)
  return 1e3 * statistics.median(file_t), 1e3 * statistics.median(tfds_t)




def main():
  args = parse_args()
  cfg = PROCESSING_PRESETS[args.preset]
  sampler_cfg = SAMPLER_PRESETS.get(args.preset, SAMPLER_PRESETS["cia18"])
  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or tmp
    name, split, root = make_layout(args, workdir)
    data_dir = os.path.join(workdir, "tfds")
    t0 = time.perf_counter()
    dirs = builders.build(name, root, data_dir, num_shards=args.num_shards)
    build_s = time.perf_counter() - t0
    raw = load_dataset(name, root, split)
    prepared = reader.load_tfds_dataset(name, split, data_dir=data_dir)
    folders = DiMPSampler([raw], config=sampler_cfg)
    tfds_sampler = DiMPSampler([prepared], config=sampler_cfg)
    size = cv2.imread(raw[0].frame_paths[0]).shape
    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}")
    print(f"data: {args.data} {name}/{split}, {len(raw)} sequences, {sum(map(len, raw))} frames of "
          f"{size[1]}x{size[0]}; preset {args.preset} ({cfg.output_sz} px crops)")
    shards = tfds_info_shards(dirs["frames"])
    print(f"TFDS build: {build_s:.1f} s; raw {du(root) / 2**20:.1f} MiB, TFDS frames "
          f"{du(dirs['frames']) / 2**20:.1f} MiB in {shards} shard(s) + sequences "
          f"{du(dirs['sequences']) / 2**10:.1f} KiB\n")

    kw = dict(seed=0, seqs_per_device=args.batch, num_local_devices=1, process_index=0, process_count=1,
              num_batches=2, num_parallel_calls=2)
    a = list(pipeline.make_iterator(folders, cfg, **kw))
    b = list(pipeline.make_iterator(tfds_sampler, cfg, **kw))
    same = all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    print(f"first 2 batches identical from folders and TFDS: {'yes' if same else 'NO'}\n")

    cv2.setNumThreads(1)
    f_ms, t_ms = frame_read_ms(raw, prepared, args.frame_reads)
    print("| one frame (read + cv2.imdecode), single thread | median ms |\n|---|---:|")
    print(f"| JPEG file from the folder | {f_ms:.2f} |\n| TFDS array_record record | {t_ms:.2f} |\n")

    settings = [p for p in args.parallel.split(",")]
    results = {(p, s): [] for p in settings for s in ("folders", "tfds")}
    for _ in range(args.repeats):
      for p in settings:
        value = None if p == "autotune" else int(p)
        for source, sampler in (("folders", folders), ("tfds", tfds_sampler)):
          results[(p, source)].append(pipeline_rate(sampler, cfg, args.batch, args.batches, value))
    print(f"| num_parallel_calls | source | samples/s, median of {args.repeats} (min-max) | "
          "CPU ms / sample, median |")
    print("|---|---|---:|---:|")
    for (p, source), res in results.items():
      rates, cpu = [r for r, _ in res], [c for _, c in res]
      print(f"| {p} | {source} | {statistics.median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f}) | "
            f"{statistics.median(cpu):.1f} |")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
  main()
