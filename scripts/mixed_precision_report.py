"""Mixed precision (bf16) vs fp32 on the same weights: per-stage relative differences and tracking accuracy.

  # per-stage relative L2 difference of every network stage (cia_jax.models.stages), random weights, real crops
  python scripts/mixed_precision_report.py stages --presets dimp18,cia18,superdimp,cia50 \\
      --sequence ../shared/data/real/OTB_Crossing
  # the same with a checkpoint's weights (its own network and crop size)
  python scripts/mixed_precision_report.py stages --checkpoint /tmp/cia_tiny --size 64 --sequence ...
  # training loss curves of two runs (e.g. scripts/train_tiny_convergence.py with model.dtype=float32 / bfloat16)
  python scripts/mixed_precision_report.py curves /tmp/tiny_float32 /tmp/tiny_bfloat16 --every 20
  # whole real sequences tracked in fp32 and in bf16: per-frame IoU against the ground truth and AUC
  python scripts/mixed_precision_report.py track --checkpoint /tmp/cia_tiny --tracker cia18 \\
      --set image_sample_size=64 --set search_area_scale=4.0 --root ../shared/data/real

Random weights are `cia_jax.models.cia.random_variables` (NumPy He-normal, not the reference init). Crops: N
frames of the sequence, each cropped square around its ground-truth box (side = `--factor` x sqrt(w h)), resized
to the preset's crop size, ImageNet-normalised; boxes in crop pixels from the ground truth; 8 IoU proposals per
crop jittered around it. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cia_jax.checkpoints import load_for_tracking  # noqa: E402
from cia_jax.data import datasets  # noqa: E402
from cia_jax.data.frames import read_frame  # noqa: E402
from cia_jax.evaluation.metrics import evaluate_sequence, iou_inclusive  # noqa: E402
from cia_jax.models.cia import build_model, random_variables, with_dtype  # noqa: E402
from cia_jax.models.presets import model_kwargs  # noqa: E402
from cia_jax.models.stages import stage_outputs  # noqa: E402
from cia_jax.ops.image import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from cia_jax.track import params, runner  # noqa: E402

CROP = {"dimp18": 288, "cia18": 288, "superdimp": 352, "cia50": 352}


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))


def real_crops(seq_path: str, size: int, num: int, factor: float = 5.0, num_proposals: int = 8, seed: int = 0):
  """(images `[N, S, S, 3]` normalised, boxes `[N, 4]`, proposals `[N, P, 4]`) from N evenly spaced frames."""
  seq = datasets.load_sequence(seq_path)
  rng = np.random.default_rng(seed)
  idx = np.linspace(0, len(seq.frame_paths) - 1, num).astype(int)
  images, boxes = [], []
  for i in idx:
    frame = np.asarray(read_frame(seq.frame_paths[i]), np.float32)
    x, y, w, h = seq.boxes[i]
    side = factor * np.sqrt(w * h)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = cx - side / 2, cy - side / 2
    # Sample the crop on an S x S grid (bilinear, edge-replicated).
    grid = (np.arange(size) + 0.5) * side / size - 0.5
    ys = np.clip(y0 + grid, 0, frame.shape[0] - 1)
    xs = np.clip(x0 + grid, 0, frame.shape[1] - 1)
    y_lo, x_lo = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y_hi, x_hi = np.minimum(y_lo + 1, frame.shape[0] - 1), np.minimum(x_lo + 1, frame.shape[1] - 1)
    wy, wx = (ys - y_lo)[:, None, None], (xs - x_lo)[None, :, None]
    img = ((1 - wy) * (1 - wx) * frame[y_lo][:, x_lo] + (1 - wy) * wx * frame[y_lo][:, x_hi]
           + wy * (1 - wx) * frame[y_hi][:, x_lo] + wy * wx * frame[y_hi][:, x_hi])
    images.append((img / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD))
    s = size / side
    boxes.append([(x - x0) * s, (y - y0) * s, w * s, h * s])
  boxes = np.asarray(boxes, np.float32)
  jitter = rng.normal(0, 0.1, (num, num_proposals, 4)) * np.sqrt(boxes[:, 2:3] * boxes[:, 3:4])[:, None]
  proposals = boxes[:, None] + jitter
  proposals[..., 2:] = np.maximum(proposals[..., 2:], 2.0)
  return np.asarray(images, np.float32), boxes, proposals.astype(np.float32)


def stages_table(name: str, net, variables, images, boxes, proposals) -> list[str]:
  net32, net16 = with_dtype(net, "float32"), with_dtype(net, "bfloat16")
  run = jax.jit(lambda v: tuple(stage_outputs(n, v, images, boxes, proposals, optimize_iter=5) for n in (net32, net16)))
  out32, out16 = run(variables)
  return [f"| {name} | {k} | {rel_err(out32[k], out16[k]):.2e} | {float(jnp.sqrt(jnp.mean(out32[k] ** 2))):.3g} |"
          for k in out32]


def cmd_stages(args) -> None:
  print("| network | stage | rel. L2 diff bf16 vs fp32 | RMS (fp32) |")
  print("|---|---|---:|---:|")
  if args.checkpoint:
    net, variables, _ = load_for_tracking(args.checkpoint)
    images, boxes, proposals = real_crops(args.sequence, args.size, args.num)
    print("\n".join(stages_table(os.path.basename(args.checkpoint.rstrip("/")), net, variables, images, boxes,
                                 proposals)), flush=True)
    return
  for preset in args.presets.split(","):
    net = build_model(model_kwargs(preset))
    images, boxes, proposals = real_crops(args.sequence, args.size or CROP[preset], args.num)
    print("\n".join(stages_table(preset, net, jax.device_put(random_variables(net)), images, boxes, proposals)),
          flush=True)


def cmd_track(args) -> None:
  model = runner.load_model(args.tracker, args.checkpoint, False)
  seqs, _ = runner.load_benchmark("folder", args.root, names=args.sequences)
  print("| sequence | frames | AUC fp32 | AUC bf16 | mean IoU fp32 | mean IoU bf16 | mean abs. per-frame IoU diff | "
        "max abs. diff | frames with IoU diff > 0.05 |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for seq in seqs:
    ious, aucs = {}, {}
    for dtype in ("float32", "bfloat16"):
      settings = params.apply_overrides(params.get_settings(args.tracker), list(args.set) + [f"compute_dtype={dtype}"])
      boxes, _ = runner.track_sequence(model, settings, seq, max_frames=args.max_frames)
      gt = np.asarray(seq.boxes[:len(boxes)])
      ious[dtype] = iou_inclusive(np.asarray(boxes), gt)
      aucs[dtype] = evaluate_sequence(boxes, gt, seq.visible[:len(boxes)], "otb")["auc"]
    d = np.abs(np.nan_to_num(ious["float32"]) - np.nan_to_num(ious["bfloat16"]))
    print(f"| {seq.name} | {len(d)} | {aucs['float32']:.3f} | {aucs['bfloat16']:.3f} | "
          f"{np.nanmean(ious['float32']):.3f} | {np.nanmean(ious['bfloat16']):.3f} | {d.mean():.4f} | {d.max():.3f} | "
          f"{int((d > 0.05).sum())} |", flush=True)


def cmd_curves(args) -> None:
  runs = []
  for workdir in args.workdirs:
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    runs.append({r["step"]: r for r in rows if r["split"] == "train" and "total" in r})
  last = min(max(r) for r in runs)
  names = [os.path.basename(w.rstrip("/")) for w in args.workdirs]
  terms = ("total", "clf", "iou", "category", "contrastive")
  print(f"| steps | {' | '.join(f'{n} {t}' for t in terms for n in names)} |")
  print("|---|" + "---:|" * (len(terms) * len(names)))
  for start in range(1, last + 1, args.every):
    steps = range(start, min(start + args.every, last + 1))
    cells = [f"{np.mean([r[s][t] for s in steps if s in r]):.3f}" for t in terms for r in runs]
    print(f"| {start}-{steps[-1]} | {' | '.join(cells)} |")


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="cmd", required=True)
  s = sub.add_parser("stages")
  s.add_argument("--presets", default="dimp18,cia18,superdimp,cia50")
  s.add_argument("--checkpoint", default=None)
  s.add_argument("--sequence", required=True, help="a real sequence folder (its frames give the crops)")
  s.add_argument("--size", type=int, default=None, help="crop side (default: the preset's training crop)")
  s.add_argument("--num", type=int, default=4, help="crops (frames)")
  t = sub.add_parser("track")
  t.add_argument("--checkpoint", required=True)
  t.add_argument("--tracker", default="cia18")
  t.add_argument("--root", required=True, help="a folder of sequence folders")
  t.add_argument("--sequences", default=None)
  t.add_argument("--set", action="append", default=[], help="tracker setting KEY=VALUE")
  t.add_argument("--max-frames", type=int, default=None)
  c = sub.add_parser("curves")
  c.add_argument("workdirs", nargs="+", help="training workdirs (metrics.jsonl)")
  c.add_argument("--every", type=int, default=20, help="steps per row (mean over them)")
  args = p.parse_args(argv)
  {"stages": cmd_stages, "track": cmd_track, "curves": cmd_curves}[args.cmd](args)


if __name__ == "__main__":
  main()
