"""Input-pipeline throughput: processed training samples per second (CIA18 settings by default).

One sample = 3 train + 3 test frames decoded, jittered, cropped to 288 px, photometrically augmented and
normalised, plus Gaussian labels and 8 IoU-Net proposals per test frame (`cia_jax.data.pipeline.load_sample`).

Measures, on whatever sequences `--data` holds (default: the real sequences in ../shared/data/real):
  1. where the time of one sample goes (decode vs the rest), single thread, no tf.data;
  2. the JPEG decoder choice: OpenCV `imdecode` vs TF-native `tf.io.decode_jpeg` per frame;
  3. the tf.data pipeline (`make_dataset`) for several `num_parallel_calls` and OpenCV thread settings.
Prints Markdown tables.

  .venv/bin/python scripts/benchmark_pipeline.py [--preset cia18] [--batch 8] [--batches 12]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import time

from bench_common import pipeline_rate  # noqa: E402  (scripts/ is on sys.path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from cia_jax.data import pipeline  # noqa: E402
from cia_jax.data.datasets import load_sequence  # noqa: E402
from cia_jax.data.processing import PROCESSING_PRESETS  # noqa: E402
from cia_jax.data.sampler import SAMPLER_PRESETS, DiMPSampler  # noqa: E402


def parse_args():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", default="../shared/data/real", help="folder of sequence folders (any layout)")
  p.add_argument("--min-width", type=int, default=0, help="only sequences with frames at least this wide")
  p.add_argument("--preset", default="cia18", choices=sorted(PROCESSING_PRESETS))
  p.add_argument("--batch", type=int, default=8, help="samples per batch (one device)")
  p.add_argument("--batches", type=int, default=12, help="timed batches per pipeline setting")
  p.add_argument("--parallel", default="1,2,autotune", help="num_parallel_calls values to try")
  p.add_argument("--repeats", type=int, default=3, help="pipeline runs per setting (median reported)")
  p.add_argument("--breakdown-samples", type=int, default=30)
  return p.parse_args()


def load_sequences(root: str, min_width: int):
  seqs = []
  for folder in sorted(glob.glob(os.path.join(root, "*/"))):
    try:
      seq = load_sequence(folder)
    except (ValueError, FileNotFoundError) as e:
      print(f"skipping {folder}: {e}")
      continue
    if cv2.imread(seq.frame_paths[0]).shape[1] >= min_width:
      seqs.append(seq)
  if not seqs:
    raise SystemExit(f"no usable sequences under {root}")
  return seqs


def frame_stats(seqs):
  sizes = [cv2.imread(s.frame_paths[0]).shape[:2] for s in seqs]
  return ", ".join(f"{s.name} {w}x{h}" for s, (h, w) in zip(seqs, sizes))


def breakdown(sampler, cfg, n):
  """Median ms per sample for decoding its frames and for everything (load_sample)."""
  dec, total = [], []
  for i in range(3):  # warm-up
    pipeline.load_sample(sampler, cfg, 0, n + i)
  for i in range(n):
    fs = sampler.sample(0, i)
    paths = [fs.sequence.frame_paths[f] for f in dict.fromkeys(fs.train_frame_ids + fs.test_frame_ids)]
    t0 = time.perf_counter()
    for path in paths:
      pipeline.load_image(path)
    t1 = time.perf_counter()
    pipeline.load_sample(sampler, cfg, 0, i)
    t2 = time.perf_counter()
    dec.append(t1 - t0)
    total.append(t2 - t1)
  return 1e3 * statistics.median(dec), 1e3 * statistics.median(total)


def decoder_comparison(seqs, per_seq=8, reps=5):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rows = []
  for seq in seqs:
    blobs = [open(p, "rb").read() for p in seq.frame_paths[:per_seq]]
    cv_t, tf_t = [], []
    for _ in range(reps):
      for b in blobs:
        t0 = time.perf_counter()
        cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR_RGB)
        t1 = time.perf_counter()
        tf.io.decode_jpeg(b, channels=3).numpy()
        t2 = time.perf_counter()
        cv_t.append(t1 - t0)
        tf_t.append(t2 - t1)
    h, w = cv2.imdecode(np.frombuffer(blobs[0], np.uint8), cv2.IMREAD_COLOR).shape[:2]
    rows.append((seq.name, f"{w}x{h}", 1e3 * statistics.median(cv_t), 1e3 * min(cv_t),
                 1e3 * statistics.median(tf_t), 1e3 * min(tf_t)))
  return rows




def main():
  args = parse_args()
  cfg = PROCESSING_PRESETS[args.preset]
  seqs = load_sequences(args.data, args.min_width)
  sampler = DiMPSampler([seqs], config=SAMPLER_PRESETS.get(args.preset, SAMPLER_PRESETS["cia18"]))
  print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}")
  print(f"preset {args.preset}: output {cfg.output_sz} px, "
        f"proposals {cfg.proposal_mode} x{cfg.proposals_per_frame}")
  print(f"sequences: {frame_stats(seqs)}\n")

  default_threads = cv2.getNumThreads()
  cv2.setNumThreads(1)  # as make_dataset does by default
  dec, total = breakdown(sampler, cfg, args.breakdown_samples)
  print("| single thread (OpenCV pool 1), per sample | median ms |\n|---|---:|")
  print(f"| decode the unique frames (cv2) | {dec:.1f} |\n| whole `load_sample` | {total:.1f} |")
  print(f"| => samples/s, one thread | {1e3 / total:.1f} |\n")

  print("| frames | size | cv2.imdecode ms median (min) | tf.io.decode_jpeg ms median (min) |")
  print("|---|---|---:|---:|")
  for name, size, c, cmin, t, tmin in decoder_comparison(seqs):
    print(f"| {name} | {size} | {c:.2f} ({cmin:.2f}) | {t:.2f} ({tmin:.2f}) |")
  print()

  settings = [(par, threads) for threads in (default_threads, 1) for par in args.parallel.split(",")]
  results = {k: [] for k in settings}
  for _ in range(args.repeats):  # interleaved, so a busy period hits every setting alike
    for par, threads in settings:
      value = None if par == "autotune" else int(par)
      results[(par, threads)].append(pipeline_rate(sampler, cfg, args.batch, args.batches, value, threads))
  print(f"| num_parallel_calls | OpenCV threads | samples/s, median of {args.repeats} (min-max) | "
        "CPU ms / sample, median |")
  print("|---|---|---:|---:|")
  for (par, threads), res in results.items():
    rates, cpu = [r for r, _ in res], [c for _, c in res]
    print(f"| {par} | {threads} | {statistics.median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f}) | "
          f"{statistics.median(cpu):.1f} |")
  cv2.setNumThreads(default_threads)
  print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
  main()
