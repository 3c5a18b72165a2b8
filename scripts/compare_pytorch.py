"""Side-by-side parity and speed of cia_jax against the PyTorch reference (pytracking DiMP18 / SuperDiMP /
KeepTrack, CIA CIA18 / CIA50).

  .venv/bin/python scripts/compare_pytorch.py --reference-root third_party/pytracking --arch dimp18 \\
      --checkpoint /tmp/dimp18_seed0.pth --create-checkpoint-seed 0 --sequence ../shared/data/real/OTB_Crossing

1. Network stages on the first frame. The reference tracker (`scripts/torch_reference.py`, run with
   `--torch-python` in its own venv) is initialised on frame 0 in deterministic mode; its 13 augmented init
   patches go through both networks and every stage is compared, chained (each side feeds its own previous
   stage): backbone conv1..layer4, [CIA] angle-modulated and category-encoded layer3, classification features,
   the 15 memory samples, the initial and the optimised (10 steepest-descent iterations) filter, the score map
   of sample 0, IoU-Net modulation vectors, test features, predicted IoU of 17 boxes and its gradient w.r.t. the
   boxes. Also our own init patches (crop + augmentation) against the reference's, in pixel units.
   Relative difference = max |ours - ref| / max |ref| over the whole tensor (float32 both sides).
2. Tracking. Both trackers run over the same decoded frames (`[T, H, W, 3]` uint8, written once by this
   script) in deterministic mode (no random shifts, no dropout, only the unjittered IoU-Net box) with
   `target_not_found_threshold` 0 (random weights peak near 0.1: otherwise every frame is 'not_found' and
   nothing after frame 1 is exercised). Per frame: IoU of the two boxes (x2 = x + w), their max scores and
   localisation flags; the first frame below `--iou-threshold` is reported with the stage quantities there.
   Each side's crop of every frame (decimation factor and side, from the sample size target_scale * S) is
   recorded too; the first frame where the crops differ is printed with both sample sizes (distance in ulp),
   the reference's truncating rule applied to our sample size and the exact-arithmetic crop (a one-pixel crop
   decision from last-bit differences is the typical cause of a float32 parting, `crop_divergence`).
   Where the sequence has ground truth, each side's AUC against it and its median max score (is the tracker
   following the target, are its maps peaked: with trained weights, `scripts/train_parity_weights.py`).

Diagnosis options: `--ours-eager` runs our tracker un-jitted (separates jit-only effects), `--reference-crop-from
DIR` gives the reference another checkout's `sample_patch` (the pytracking and CIA crop windows differ by a
rounding), `--float64` runs both sides in double precision (separates float32 rounding from real differences).
Noise floors (the reference against itself, same table format): `--noise-floor-perturb EPS` runs it a second time
from the initial box shifted by EPS pixels, `--noise-floor-threads N` with N torch threads (another float
summation order). With random weights the online filter amplifies any difference exponentially (score maps are
flat, so the max score, the localisation flags and finally the peak's position flip), so these floors say how
many frames two runs that differ only at rounding level can be expected to agree.
`--float64-truth` runs both sides a second time in float64 (its own process) and reports, per frame, each float32
run's distance from the float64 trajectory (boxes and max score; the reference's float64 run is the truth, valid
until our float64 run parts from it) and the frame and stage (max score / flag / box) where each leaves it first.

KeepTrack (`--arch keeptrack`): `--checkpoint` is the SuperDiMP base, `--tcm-checkpoint` the target candidate
matching net (keep_track.pth.tar layout; `--create-checkpoint-seed` writes both, `torch_reference.py make-checkpoint
--arch keeptrack`). The reference is pytracking's unmodified `KeepTrack` tracker with its `keep_track/default`
parameters (deterministic as above). Its base network is the one in `--checkpoint`: SuperDiMP-simple
(`dimpnet50_simple`, the released KeepTrack base, docs/keeptrack.md §0; `--keeptrack-base superdimp_simple` with
`--create-checkpoint-seed`), run as is and compared with cia_jax's `superdimp_simple` network (the initial samples'
labels and the hinge optimiser's filter are stages), or SuperDiMP's `dimpnet50`, whose filter optimiser is handed
the tracker's `train_label` through `torch_reference.LabelFreeOptimizer`. Stage 1 adds the association net on
the reference tracker's own candidate sets: the first `--record-matches` (default 2) matcher calls of every
sequence are recorded (layer3 maps, candidate cells, positions, scores, frame shape, outputs) and ours runs on
the same inputs, padded to our candidate capacity, chained (descriptors, Sinkhorn log-assignment and its exp,
match scores, matches). Random-weight score maps peak near 0.02, below the candidate threshold 0.05, so the
tracker falls back to DiMP localisation on every frame unless `--candidate-threshold` (both sides) is lowered,
e.g. 0.01; `--candidate-capacity` sets our static number of candidate slots (the reference has none).

3. Speed (`--speed`, instead of 1 and 2): our jitted tracker (`cia-jax track`'s own loop,
   `runner.track_sequence`) and the unmodified reference tracker over the same decoded frames (default the first
   40), same weights, deterministic, `--rounds` alternating runs each, both pinned to `--threads` CPUs (JAX through
   the affinity mask, torch through `set_num_threads`); prints the median per-frame time of each (init frame and
   compilation excluded), the speed ratio, the reference's per-part breakdown (timing wrappers installed from
   outside around the reference tracker's methods, `torch_reference.py track --timing 1`), the CPU model, its
   AVX2 / AVX-512 flags, both libraries' fp32 matmul peak and the load average. What the work allows: the
   GFLOP of our step without a filter update and with the boxes in the smallest IoU window (XLA cost analysis,
   `bench_common.step_flops`: the least work of any tracked frame) at JAX's matmul peak (measured after each of
   our runs, the median of those: the rate of a VM can swing within minutes) give a per-frame floor, our % of
   peak on that work, and the ceiling: the largest speed ratio over the reference that any implementation doing
   this work at that peak could reach.
   `--frame-size WxH` (repeatable, 'native' for the frames as they are) tracks each sequence at those sizes, the
   frames resized and the boxes scaled: the same content and nearly the same decisions (update frames) at another
   frame size, so the ratio of the per-frame times measures what the frame size alone costs each tracker.
   `--lockstep` runs both trackers together in each round, taking turns frame by frame (`scripts/lockstep.py`:
   reference frame t just before our frame t in even rounds, just after it in odd ones, one process at a time,
   50 ms idle between turns), so that a slow spell of a shared machine slows both sides alike instead of one run.
   `--our-parts` also times our tracker's parts on the same frames (`profile_tracking.py`'s parts, each jitted
   alone, grouped as the reference groups its methods) and prints them beside the reference's breakdown.

`scripts/torch_reference.py track --dump-frame K` records one frame's internals (scores, translation, IoU-Net
iterates) for a stage-by-stage look at the first diverging frame.

Checkpoints: random weights made by the reference constructors under `torch.manual_seed(seed)` (plus
random BatchNorm statistics), `--create-checkpoint-seed` writes one; any reference-layout `.pth` works.
Exit status: 0 = every stage <= `--tolerance` and every frame >= `--iou-threshold`, 1 = some target missed,
2 = bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import fractions
import functools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

from cia_jax import xla_flags  # standard library only

_HERE = pathlib.Path(__file__).resolve().parent
# The torch venv next to the checkout (see BENCHMARKS.md); CIA_JAX_TORCH_PYTHON or --torch-python point elsewhere.
DEFAULT_TORCH_PYTHON = os.environ.get("CIA_JAX_TORCH_PYTHON", str(_HERE.parent.parent / "torchref" / "bin" / "python"))
ARCHS = ("dimp18", "superdimp", "cia18", "cia50", "keeptrack")

# Stage key (as written by torch_reference.py) -> (layout of the reference array, description).
# Layouts: 'nchw' maps to our NHWC, 'filter' (B, D, 4, 4) to our (B, 4, 4, D), 'flat' compares flattened values,
# 'same' compares as is.
STAGE_KEYS: dict[str, tuple[str, str]] = {
    "patches": ("same", "init patches (crop + augmentation), 0..255"),
    "backbone/conv1": ("nchw", "backbone conv1 (stem, after BN + ReLU)"),
    "backbone/layer1": ("nchw", "backbone layer1"),
    "backbone/layer2": ("nchw", "backbone layer2"),
    "backbone/layer3": ("nchw", "backbone layer3"),
    "backbone/layer4": ("nchw", "backbone layer4"),
    "cia/instance": ("nchw", "CIA angle-modulated layer3 (layer3_ins)"),
    "cia/category": ("nchw", "CIA category-encoded features"),
    "clf/features": ("nchw", "classification features (13 patches)"),
    "clf/samples": ("nchw", "memory samples (13 + 2 copies)"),
    "filter/init": ("filter", "initial filter (FilterInitializerLinear)"),
    "clf/labels": ("same", "Gaussian labels of the 15 samples (SuperDiMP-simple base)"),
    "filter/optimized": ("filter", "optimised filter (10 SD iterations)"),
    "score/map": ("same", "score map of sample 0"),
    "iou/mod3": ("flat", "IoU-Net modulation (layer2 branch)"),
    "iou/mod4": ("flat", "IoU-Net modulation (layer3 branch)"),
    "iou/feat3": ("nchw", "IoU-Net test features (layer2 branch)"),
    "iou/feat4": ("nchw", "IoU-Net test features (layer3 branch)"),
    "iou/pred": ("flat", "IoU-Net predictions (17 boxes)"),
    "iou/grad": ("flat", "d IoU / d box (17 boxes)"),
}


# KeepTrack association stages (`--arch keeptrack`): key of `torch_reference.record_matches` -> description.
# Compared in the reference's layout (descriptors [1, D, K]); ours run on the reference's candidate sets.
TCM_STAGE_KEYS: dict[str, str] = {
    "descriptors_0": "descriptors, previous frame (4x4 conv on layer3, gathered at the candidate cells)",
    "descriptors_1": "descriptors, current frame",
    "log_assignment": "Sinkhorn log-assignment [M + 1, N + 1] (dustbins last)",
    "match_scores0": "match scores of the previous-frame candidates",
    "match_scores1": "match scores of the current-frame candidates",
    "matches0": "matches0 (index into the current set, -1 = none)",
    "matches1": "matches1 (index into the previous set, -1 = none)",
}

# ------------------------------------------------------------------------------------------------------------
# Pure NumPy: differences, IoU, tables (tested in tests/interop/test_compare_tool.py).


def to_reference_layout(ours: np.ndarray, layout: str) -> np.ndarray:
  """Our array in the reference's layout: NHWC -> NCHW ('nchw'), (B, 4, 4, D) -> (B, D, 4, 4) ('filter'),
  flattened ('flat') or unchanged ('same')."""
  a = np.asarray(ours)
  if layout in ("nchw", "filter"):
    if a.ndim != 4:
      raise ValueError(f"layout {layout!r} needs a 4-d array, got shape {a.shape}")
    return np.transpose(a, (0, 3, 1, 2))
  if layout == "flat":
    return a.reshape(-1)
  if layout == "same":
    return a
  raise ValueError(f"unknown layout {layout!r}; expected nchw, filter, flat or same")


@dataclasses.dataclass(frozen=True)
class StageDiff:
  """Difference of one stage: `max_abs` = max |ours - ref|, `ref_max` = max |ref|, `rel` = max_abs / ref_max."""

  name: str
  shape: tuple[int, ...]
  max_abs: float
  ref_max: float
  rel: float


def stage_diff(name: str, ours: np.ndarray, ref: np.ndarray) -> StageDiff:
  """Max absolute and relative (to the reference's max magnitude) difference, computed in float64.

  Shapes must agree exactly (ValueError naming the stage otherwise). A reference that is all zeros gives
  rel = 0 if ours is too, else inf.
  """
  a = np.asarray(ours, np.float64)
  b = np.asarray(ref, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"stage {name!r}: shape mismatch, ours {a.shape} vs reference {b.shape}")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    return StageDiff(name, a.shape, float("nan"), float("nan"), float("nan"))
  max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
  ref_max = float(np.max(np.abs(b))) if b.size else 0.0
  if ref_max == 0.0:
    rel = 0.0 if max_abs == 0.0 else float("inf")
  else:
    rel = max_abs / ref_max
  return StageDiff(name, a.shape, max_abs, ref_max, rel)


def format_stage_table(diffs, tolerance: float, descriptions: dict[str, str] | None = None) -> str:
  """Markdown table of `StageDiff`s; the last column says whether rel <= tolerance (NaN never passes)."""
  descriptions = descriptions or {}
  lines = ["| stage | shape (reference layout) | max abs diff | max abs ref | rel diff | <= %.0e |" % tolerance,
           "|---|---|---|---|---|---|"]
  for d in diffs:
    ok = bool(d.rel <= tolerance)  # NaN compares False
    label = descriptions.get(d.name, d.name)
    shape = "x".join(str(s) for s in d.shape)
    lines.append(f"| {label} | {shape} | {d.max_abs:.3e} | {d.ref_max:.3e} | {d.rel:.3e} | "
                 f"{'yes' if ok else 'NO'} |")
  return "\n".join(lines)


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of boxes `[..., 4]` (x, y, w, h) pairwise along the leading axes, float64; corners (x, y), (x + w, y + h).

  Boxes with non-positive area (or NaN) give IoU 0 unless both are identical.
  """
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.shape != b.shape or a.shape[-1] != 4:
    raise ValueError(f"box_iou_xywh: need two [..., 4] arrays of one shape, got {a.shape} and {b.shape}")
  ix = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
  iy = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
  inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
  union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
  same = np.all(a == b, axis=-1)
  return np.where(same, 1.0, np.nan_to_num(iou, nan=0.0))


@dataclasses.dataclass(frozen=True)
class IoUReport:
  """Per-frame agreement of two box tracks (frame 0 = the shared init box, excluded from the statistics).

  Attributes:
    name: sequence name.
    num_frames: tracked frames compared (T - 1).
    ious: `[T]` per-frame IoU (frame 0 included, = 1).
    min_iou, mean_iou: over frames 1..T-1.
    first_below: first frame index (0-based, in the sequence) with IoU < threshold, or None.
    num_below: frames below the threshold.
    flag_mismatches: frames whose localisation flags differ (when flags were given).
    first_flag_mismatch: first such frame index, or None.
  """

  name: str
  num_frames: int
  ious: np.ndarray
  min_iou: float
  mean_iou: float
  first_below: int | None
  num_below: int
  flag_mismatches: int = 0
  first_flag_mismatch: int | None = None


def iou_report(name: str, ours_xywh: np.ndarray, ref_xywh: np.ndarray, threshold: float = 0.99,
               ours_flags=None, ref_flags=None) -> IoUReport:
  """Compares two `[T, 4]` box tracks frame by frame (see `IoUReport`)."""
  ours = np.asarray(ours_xywh, np.float64)
  ref = np.asarray(ref_xywh, np.float64)
  if ours.ndim != 2 or ours.shape != ref.shape:
    raise ValueError(f"{name}: box tracks must both be [T, 4], got {ours.shape} and {ref.shape}")
  ious = box_iou_xywh(ours, ref)
  tracked = ious[1:]
  below = np.nonzero(tracked < threshold)[0]
  mism, first_m = 0, None
  if ours_flags is not None and ref_flags is not None:
    of = [str(f) for f in ours_flags][1:]
    rf = [str(f) for f in ref_flags][1:]
    bad = [i + 1 for i, (x, y) in enumerate(zip(of, rf)) if x != y]
    mism, first_m = len(bad), (bad[0] if bad else None)
  return IoUReport(name=name, num_frames=len(tracked), ious=ious,
                   min_iou=float(tracked.min()) if tracked.size else 1.0,
                   mean_iou=float(tracked.mean()) if tracked.size else 1.0,
                   first_below=int(below[0] + 1) if below.size else None, num_below=int(below.size),
                   flag_mismatches=mism, first_flag_mismatch=first_m)


def first_score_divergence(ours_scores, ref_scores, rel_tol: float = 1e-3) -> int | None:
  """First frame (index >= 1) whose max scores differ by more than `rel_tol` relative to the reference's, or None.

  The score map usually drifts apart (through the filter updates) some frames before the boxes do.
  """
  o = np.asarray(ours_scores, np.float64)[1:]
  r = np.asarray(ref_scores, np.float64)[1:]
  with np.errstate(invalid="ignore", divide="ignore"):
    rel = np.abs(o - r) / np.abs(r)
  bad = np.nonzero(~(rel <= rel_tol))[0]  # NaN counts as diverged
  return int(bad[0] + 1) if bad.size else None


def format_iou_table(reports, threshold: float) -> str:
  """Markdown table, one row per sequence."""
  lines = [f"| sequence | frames | min IoU | mean IoU | frames < {threshold} | first frame < {threshold} | "
           "flag mismatches (first) |",
           "|---|---|---|---|---|---|---|"]
  for r in reports:
    first = "-" if r.first_below is None else str(r.first_below)
    flags = f"{r.flag_mismatches}" + ("" if r.first_flag_mismatch is None else f" ({r.first_flag_mismatch})")
    lines.append(f"| {r.name} | {r.num_frames} | {r.min_iou:.4f} | {r.mean_iou:.4f} | {r.num_below} | {first} | "
                 f"{flags} |")
  return "\n".join(lines)


def frame_detail(index: int, ours: dict, ref: dict) -> str:
  """One line about frame `index`: both boxes, max scores and flags (dicts of per-frame arrays)."""
  ob, rb = np.asarray(ours["boxes"][index]), np.asarray(ref["boxes"][index])
  iou = float(box_iou_xywh(ob, rb))
  return (f"frame {index}: IoU {iou:.4f}; ours box {np.round(ob, 2).tolist()} score {ours['max_scores'][index]:.6f} "
          f"flag {ours['flags'][index]}; reference box {np.round(rb, 2).tolist()} score "
          f"{ref['max_scores'][index]:.6f} flag {ref['flags'][index]}")


# ------------------------------------------------------------------------------------------------------------
# The torch side (subprocess in the torch venv).


def _run_reference(torch_python: str, args: list[str], verbose: bool, threads: int = 1) -> None:
  cmd = [torch_python, str(_HERE / "torch_reference.py"), *args]
  env = dict(os.environ, PYTHONWARNINGS="ignore", TORCH_REF_THREADS=str(threads))
  res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
  if verbose and res.stdout:
    print(res.stdout.strip(), file=sys.stderr)
  if res.returncode != 0:
    raise RuntimeError(f"reference run failed ({' '.join(cmd)}):\n{res.stderr[-4000:]}")


# ------------------------------------------------------------------------------------------------------------
# Our side.


def load_our_model(checkpoint: str, arch: str, float64: bool = False, tcm_checkpoint: str | None = None):
  """(TrackingModel, CIANet) from a reference-layout torch checkpoint, via the interop converter.

  keeptrack: `checkpoint` is the SuperDiMP base, `tcm_checkpoint` the association net (`attach_tcm_file`).
  float64: cast the (float32) parameters to float64 (exact); needs `jax_enable_x64` (see `enable_float64`).
  """
  import jax  # pylint: disable=g-import-not-at-top

  from cia_jax.interop.convert import convert_file  # pylint: disable=g-import-not-at-top
  from cia_jax.models.cia import build_model  # pylint: disable=g-import-not-at-top
  from cia_jax.track.tracker import TrackingModel, prepare  # pylint: disable=g-import-not-at-top

  variables, _, meta = convert_file(checkpoint, keeptrack_base_of(checkpoint) if arch == "keeptrack" else arch)
  if float64:
    variables = jax.tree.map(lambda a: np.asarray(a, np.float64) if np.issubdtype(a.dtype, np.floating) else a,
                             variables)
  net = build_model(meta["model"])
  model = prepare(TrackingModel(net=net, variables=variables))
  if arch == "keeptrack":
    if not tcm_checkpoint:
      raise ValueError("--arch keeptrack needs --tcm-checkpoint (keep_track.pth.tar layout)")
    model = attach_tcm_file(model, tcm_checkpoint, float64)
  return model, net


def keeptrack_base_of(checkpoint: str) -> str:
  """'superdimp_simple' when the torch file holds dimpnet50_simple's optimiser key (keeptrack.md §0), else
  'superdimp'."""
  from cia_jax.interop.torch_pickle import load_torch_file, state_dict_from_checkpoint  # pylint: disable=g-import-not-at-top
  state = state_dict_from_checkpoint(load_torch_file(checkpoint), where=checkpoint)
  return "superdimp_simple" if "classifier.filter_optimizer.residual_module.filter_reg" in state else "superdimp"


def attach_tcm_file(model, path: str, float64: bool = False):
  """`model` with the association net of a reference-layout KeepTrack file (`keep_track.pth.tar`: its
  `descriptor_extractor.*` / `matcher.*`, converted as `cia-jax convert --arch keeptrack` does)."""
  import jax  # pylint: disable=g-import-not-at-top

  from cia_jax.interop.keeptrack import torch_to_tcm  # pylint: disable=g-import-not-at-top
  from cia_jax.interop.torch_pickle import load_torch_file, state_dict_from_checkpoint  # pylint: disable=g-import-not-at-top
  from cia_jax.models.tcm import TargetCandidateMatchingNet  # pylint: disable=g-import-not-at-top

  try:
    variables = torch_to_tcm(state_dict_from_checkpoint(load_torch_file(path), where=path))
  except ValueError as e:
    raise ValueError(f"--tcm-checkpoint {path}: {e}") from None
  dtype = np.float64 if float64 else np.float32
  variables = jax.tree.map(lambda a: np.asarray(a, dtype), variables)
  return model.replace(tcm_net=TargetCandidateMatchingNet(), tcm_variables=variables)


def enable_float64() -> None:
  """Turns on JAX float64 (before anything is traced): the tracker's arithmetic follows JAX's default float
  (`cia_jax.ops.dtypes.default_float`), the network the promoted dtype of input and parameters."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_enable_x64", True)


def our_settings(arch: str, threshold: float, deterministic: bool = True, candidate_threshold: float | None = None,
                 candidate_capacity: int | None = None, overrides=()):
  """The preset of `arch`, deterministic, with `target_not_found_threshold`; keeptrack: the candidate threshold
  (`local_max_candidate_score_th`) and our static `candidate_capacity` when given; then the `--set KEY=VALUE`
  `overrides` (`params.apply_overrides`)."""
  from cia_jax.track.params import apply_overrides, get_settings  # pylint: disable=g-import-not-at-top
  extra = {}
  if candidate_threshold is not None:
    extra["local_max_candidate_score_th"] = candidate_threshold
  if candidate_capacity is not None:
    extra["candidate_capacity"] = candidate_capacity
  return apply_overrides(get_settings(arch, deterministic=deterministic, target_not_found_threshold=threshold,
                                      **extra), overrides)


def recorded_matches(track: dict) -> list[dict]:
  """The association-net calls recorded by `torch_reference.py track --record-matches N` ('match/<i>/<key>'
  arrays of a track .npz) as one dict per call, in call order."""
  calls: dict[int, dict] = {}
  for k, v in track.items():
    if k.startswith("match/"):
      _, i, key = k.split("/", 2)
      calls.setdefault(int(i), {})[key] = np.asarray(v)
  return [calls[i] for i in sorted(calls)]


def our_tcm_stages(model, capacity: int, rec: dict) -> dict[str, np.ndarray]:
  """Our association net on one recorded reference call `rec` (see `torch_reference.record_matches`): the same
  layer3 maps, candidate cells, image positions, scores and frame size, padded to `capacity` slots as in our
  tracker; chained (our matcher reads our descriptors). Returned in the reference's layout and sizes:
  descriptors [1, D, K], log_assignment [1, M + 1, N + 1], matches / match scores [1, K].

  Raises:
    ValueError: a candidate set larger than `capacity` (our tracker would keep only the top `capacity`).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cia_jax.models.tcm import CandidateSet  # pylint: disable=g-import-not-at-top
  from cia_jax.ops.dtypes import default_float  # pylint: disable=g-import-not-at-top

  f = default_float()
  net, v = model.tcm_net, model.tcm_variables
  forward = _TCM_FORWARD.setdefault(net, jax.jit(lambda v, l0, c0, s0, l1, c1, s1: _tcm_forward(net, v, l0, c0, s0,
                                                                                                  l1, c1, s1)))
  sizes = [len(rec[f"scores_{s}"]) for s in (0, 1)]
  if max(sizes) > capacity:
    raise ValueError(f"candidate sets of {sizes} exceed candidate_capacity {capacity} (use --candidate-capacity)")
  pad = lambda a, n: np.concatenate([a, np.zeros((capacity - n, *a.shape[1:]), a.dtype)])  # noqa: E731
  inputs = []
  for s, n in zip((0, 1), sizes):
    valid = (np.arange(capacity) < n)[None]
    inputs += [jnp.asarray(np.transpose(rec[f"layer3_{s}"], (0, 2, 3, 1)), f),
               jnp.asarray(pad(rec[f"tsm_coords_{s}"].astype(np.int32), n)[None]),
               CandidateSet(jnp.asarray(pad(rec[f"img_coords_{s}"], n)[None], f),
                            jnp.asarray(pad(rec[f"scores_{s}"], n)[None], f), jnp.asarray(valid),
                            jnp.asarray(rec["image_hw"][None], f))]
  descs, out = forward(v, *inputs)
  m, n = sizes
  rows, cols = [*range(m), capacity], [*range(n), capacity]  # real slots + the dustbin (last)
  la = np.asarray(out.log_assignment)[:, rows][:, :, cols]
  return {"descriptors_0": np.transpose(np.asarray(descs[0])[:, :m], (0, 2, 1)),
          "descriptors_1": np.transpose(np.asarray(descs[1])[:, :n], (0, 2, 1)),
          "log_assignment": la, "match_scores0": np.asarray(out.match_scores0)[:, :m],
          "match_scores1": np.asarray(out.match_scores1)[:, :n],
          "matches0": np.asarray(out.matches0)[:, :m], "matches1": np.asarray(out.matches1)[:, :n]}


_TCM_FORWARD: dict = {}  # association net -> its jitted `_tcm_forward` (one compilation per net and shapes)


def _tcm_forward(net, v, layer3_0, cells0, set0, layer3_1, cells1, set1):
  """(descriptors of both sets, `MatcherOutput`): the tracker's two association-net calls on one pair of sets."""
  descs = [net.apply(v, layer3, cells, cs.valid, method=lambda m, *a: m.descriptors(*a))
           for layer3, cells, cs in ((layer3_0, cells0, set0), (layer3_1, cells1, set1))]
  return descs, net.apply(v, descs[0], set0, descs[1], set1, method=lambda m, *a: m.match(*a))


def compare_tcm_stages(ours: dict, rec: dict, label: str = "") -> list[StageDiff]:
  """`StageDiff` of every `TCM_STAGE_KEYS` entry (named '<label>key'); matches compare as integers (0 = equal).

  After the log-assignment also 'assignment' = its exp (probabilities): random weights give log-assignments of
  -1e4 and below, whose magnitude would hide the entries near 0 that decide the matches.
  """
  diffs = []
  for k in TCM_STAGE_KEYS:
    if k in ours and k in rec:
      diffs.append(stage_diff(f"{label}{k}", ours[k], np.asarray(rec[k])))
      if k == "log_assignment":
        diffs.append(stage_diff(f"{label}assignment", np.exp(np.asarray(ours[k], np.float64)),
                                np.exp(np.asarray(rec[k], np.float64))))
  return diffs


def our_stages(model, settings, ref: dict, first_frame: np.ndarray) -> dict[str, np.ndarray]:
  """Every stage of `STAGE_KEYS` on our side (our layouts), fed with the reference's init patches and boxes.

  `patches` is our own crop + augmentation of `first_frame` at the reference's init box.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cia_jax.models.cia import CIANet  # pylint: disable=g-import-not-at-top
  from cia_jax.models.resnet import LAYER_NAMES  # pylint: disable=g-import-not-at-top
  from cia_jax.ops.crop import sample_patch  # pylint: disable=g-import-not-at-top
  from cia_jax.ops.dtypes import default_float  # pylint: disable=g-import-not-at-top
  from cia_jax.track import augment  # pylint: disable=g-import-not-at-top
  from cia_jax.track.tracker import (  # pylint: disable=g-import-not-at-top
      for_settings, normalize_image, sample_labels, takes_labels)

  net = for_settings(model, settings).net  # the network as the tracker runs it (compute dtype, Winograd convs)
  box = np.asarray(ref["meta/box"], np.float64)
  s = settings.image_sample_size
  pos = np.array([box[1] + (box[3] - 1) / 2, box[0] + (box[2] - 1) / 2])
  target_scale = np.sqrt(np.prod(box[[3, 2]] * settings.search_area_scale)) / s
  e = augment.expanded_size(settings)
  # DiMP networks carry no layer4 weights here (the tracker never computes it; the converter drops them).
  layers = LAYER_NAMES if net.needs_layer4 else LAYER_NAMES[:-1]

  @jax.jit  # One compilation for all stages (op-by-op dispatch of the eager modules is far slower).
  def compute(v, frame, init_pos, crop_sz, ref_patches, boxes, props):
    call = lambda method, *a: net.apply(v, *a, method=method)  # noqa: E731
    out = {}
    # Our init patches (design.md §5.4 steps 1-3), for the crop/augmentation row.
    expanded, _ = sample_patch(frame, init_pos, crop_sz, (e, e), "replicate", rule=settings.crop_rule)
    out["patches"], _ = augment.augment_init_patches(expanded, settings, jax.random.PRNGKey(0))
    # The network stages, fed with the reference's patches and boxes.
    feats = call(CIANet.backbone_features, normalize_image(ref_patches), False, layers)
    for k in layers:
      out[f"backbone/{k}"] = feats[k]
    stages = call(CIANet.classification_input_stages, feats["layer3"], True)
    if net.instance_encoder:
      out["cia/instance"] = stages["instance"]
    if net.category_encoder:
      out["cia/category"] = stages["category"]
    clf = net.apply(v, stages["category"], method=lambda m, a: m.classifier.extract_classification_feat(a, False))
    out["clf/features"] = clf
    samples = jnp.concatenate([clf, jnp.broadcast_to(clf[:1], (settings.aug_dropout_num, *clf.shape[1:]))])
    out["clf/samples"] = samples
    f0 = call(CIANet.init_filter, samples[:, None], boxes[:, None])
    out["filter/init"] = f0
    labels = None
    if takes_labels(model):  # the tracker's labels of the reference's sample boxes (centre x + (w - 1) / 2)
      offsets = boxes[:, 1::-1] + (boxes[:, :1:-1] - 1.0) / 2.0 - (s - 1) / 2.0
      base_sz = jnp.asarray(box[[3, 2]] / target_scale, default_float())
      labels = sample_labels(settings, offsets, base_sz, samples.shape[1:3], f0.shape[1])
      out["clf/labels"] = labels
    f, _, _ = call(CIANet.optimize_filter, f0, samples[:, None], boxes[:, None], None, settings.net_opt_iter,
                   None, None if labels is None else labels[:, None])
    out["filter/optimized"] = f
    out["score/map"] = call(CIANet.classify, f, samples[:1, None])
    mod3, mod4 = call(CIANet.iou_modulation, feats["layer2"][:1], feats["layer3"][:1], boxes[:1])
    out["iou/mod3"], out["iou/mod4"] = mod3, mod4
    c3t, c4t = call(CIANet.iou_features, feats["layer2"][:1], feats["layer3"][:1])
    out["iou/feat3"], out["iou/feat4"] = c3t, c4t

    def total(p):
      pred = call(CIANet.predict_iou, mod3, mod4, c3t, c4t, p)
      return jnp.sum(pred), pred
    (_, pred), grad = jax.value_and_grad(total, has_aux=True)(props)
    out["iou/pred"], out["iou/grad"] = pred, grad
    return out

  f = default_float()
  out = compute(model.variables, jnp.asarray(first_frame, f), jnp.asarray(np.round(pos), f),
                jnp.asarray(target_scale * e, f), jnp.asarray(ref["patches"], f),
                jnp.asarray(ref["clf/boxes"], f), jnp.asarray(ref["iou/proposals"], f)[None])
  return {k: np.asarray(val) for k, val in out.items()}


def compare_stages(ours: dict, ref: dict) -> list[StageDiff]:
  """`StageDiff` of every stage present on both sides, in `STAGE_KEYS` order."""
  diffs = []
  for key, (layout, _) in STAGE_KEYS.items():
    if key in ours and key in ref:
      mine = ours[key] if key == "patches" else to_reference_layout(ours[key], layout)
      theirs = ref[key].reshape(-1) if layout == "flat" else ref[key]
      diffs.append(stage_diff(key, mine, theirs))
  return diffs


def track_ours(model, settings, frames: np.ndarray, box_xywh: np.ndarray, eager: bool = False) -> dict:
  """Our tracker over `frames` `[T, H, W, 3]`: boxes `[T, 4]`, max scores and flag names per frame.

  eager: run the un-jitted `init_impl` / `step_impl` (op by op) instead of the jitted `init` / `step`.
  """
  import jax  # pylint: disable=g-import-not-at-top

  from cia_jax.ops.crop import crop_window  # pylint: disable=g-import-not-at-top
  from cia_jax.track import tracker  # pylint: disable=g-import-not-at-top

  init, step = (tracker.init_impl, tracker.step_impl) if eager else (tracker.init, tracker.step)
  key = jax.random.PRNGKey(0)
  state = init(model, settings, frames[0], np.asarray(box_xywh, np.float64), key)
  boxes, scores, flags = [np.asarray(box_xywh, np.float64)], [np.nan], ["init"]
  s, n = settings.image_sample_size, len(frames)
  crops = {"crops/sample_sz": np.full((n, 2), np.nan), "crops/df": np.full(n, -1), "crops/size": np.full((n, 2), -1)}
  for t in range(1, n):
    sample_sz = state.target_scale * s  # the step's own expression, evaluated on the same state
    geo = crop_window(frames.shape[1:3], state.pos_yx, sample_sz, (s, s), settings.border_mode,
                      settings.patch_max_scale_change, rule=settings.crop_rule)
    crops["crops/sample_sz"][t] = np.asarray(sample_sz)
    crops["crops/df"][t], crops["crops/size"][t] = int(geo["df"]), np.asarray(geo["size"])
    state, out = step(model, settings, state, frames[t], jax.random.fold_in(key, t))
    boxes.append(np.asarray(out["box_xywh"], np.float64))
    scores.append(float(out["max_score"]))
    flags.append(tracker.FLAG_NAMES[int(out["flag"])])
  return {"boxes": np.stack(boxes), "max_scores": np.asarray(scores), "flags": np.asarray(flags), **crops}


def _shrunk_side(side, image_hw, mode: str, max_scale_change: float | None):
  """The reference's crop side before `.long()`: side / clamp(min (inside_major) or max (inside) of side / im_sz,
  1, max_scale_change); `side` as is for 'replicate'. Scalar arithmetic of `side`'s own type (a NumPy float in
  its IEEE rounding, or a `fractions.Fraction`, exact)."""
  if mode == "replicate":
    return side
  one = type(side)(1)
  ratios = [side / type(side)(h) for h in image_hw]
  shrink = max(max(ratios) if mode == "inside" else min(ratios), one)
  if max_scale_change is not None:
    shrink = min(shrink, type(side)(max_scale_change))
  return side / shrink


def reference_crop_rule(sample_sz, image_hw, mode: str, max_scale_change: float | None, dtype) -> np.ndarray:
  """The reference's crop side before decimation (`sample_patch`, a square sample): `_shrunk_side` in IEEE
  arithmetic of `dtype`, truncated toward zero as `.long()`: `[2]` int64."""
  side = int(np.trunc(_shrunk_side(dtype(np.ravel(sample_sz)[0]), image_hw, mode, max_scale_change)))
  return np.array([side, side], np.int64)


def crop_divergence(ours: dict, ref: dict, image_hw, settings, dtype=np.float32) -> dict | None:
  """Where the two trackers first crop a different window size (df or side), or None.

  A crop one pixel apart is a discrete decision made from the float sample size (target_scale * S): the
  reference truncates sample_sz / shrink with `.long()`, so a quotient one ulp below an integer loses a pixel,
  while ours snaps quotients within 4 ulp of an integer (`ops.crop.crop_window`). Reported at that frame: both
  sample sizes and their distance in ulp, both crops, the reference's rule applied to *our* sample size (the
  same decision on our bits) and the exact-arithmetic crop of each sample size (rational arithmetic). Returns
  dict(frame, frames_differing, ours_sample_sz, ref_sample_sz, ulp_apart, ours_crop, ref_crop, ref_quotient,
  ref_rule_on_ours, exact_ours, exact_ref), crops as [df, side_y, side_x]; None when either side has no crops.
  """
  if "crops/size" not in ours or "crops/size" not in ref:
    return None
  o = np.concatenate([np.asarray(ours["crops/df"])[:, None], np.asarray(ours["crops/size"])], 1)
  r = np.concatenate([np.asarray(ref["crops/df"])[:, None], np.asarray(ref["crops/size"])], 1)
  n = min(len(o), len(r))
  diff = [t for t in range(1, n) if (o[t] != r[t]).any()]
  if not diff:
    return None
  t = diff[0]
  so, sr = dtype(ours["crops/sample_sz"][t][0]), dtype(ref["crops/sample_sz"][t][0])
  mode, msc = settings.border_mode, settings.patch_max_scale_change
  exact = lambda v: int(_shrunk_side(fractions.Fraction(float(v)), image_hw, mode, msc))  # noqa: E731
  ordinal = lambda v: int(np.asarray(v, dtype).view(np.int32 if dtype == np.float32 else np.int64))  # noqa: E731
  return {"frame": t, "frames_differing": len(diff), "ours_sample_sz": float(so), "ref_sample_sz": float(sr),
          "ulp_apart": ordinal(sr) - ordinal(so), "ours_crop": o[t].tolist(), "ref_crop": r[t].tolist(),
          "ref_quotient": float(ref["crops/quotient"][t][0]) if "crops/quotient" in ref else float("nan"),
          "ref_rule_on_ours": int(reference_crop_rule(so, image_hw, mode, msc, dtype)[0]),
          "exact_ours": exact(so), "exact_ref": exact(sr)}


def format_crop_divergence(d: dict) -> str:
  """One line for `crop_divergence`'s dict."""
  return (f"crop sizes first differ at frame {d['frame']} (frames with different crops: {d['frames_differing']}): "
          f"ours df/side {d['ours_crop']} from sample size {d['ours_sample_sz']:.9g}, reference {d['ref_crop']} "
          f"from {d['ref_sample_sz']:.9g} ({d['ulp_apart']:+d} ulp; its quotient {d['ref_quotient']:.9g} "
          f"truncated); the reference's rule on our sample size gives {d['ref_rule_on_ours']}; exact arithmetic gives "
          f"{d['exact_ours']} (ours) / {d['exact_ref']} (reference's)")


# ------------------------------------------------------------------------------------------------------------
# Float64 truth (`--float64-truth`): each float32 run against the float64 trajectory.


def truth_distances(run: dict, truth: dict) -> dict[str, np.ndarray]:
  """Per-frame distance of a run from the truth trajectory (dicts with `boxes` [T, 4], `max_scores` [T], `flags`
  [T], frame 0 = init): `iou` [T], `box_px` (max |corner difference| in pixels) [T], `score_rel`
  (|s - s_truth| / |s_truth|, 0 at frame 0) [T], `flag_same` [T] bool."""
  b, t = np.asarray(run["boxes"], np.float64), np.asarray(truth["boxes"], np.float64)
  if b.shape != t.shape:
    raise ValueError(f"truth_distances: box tracks of different shapes {b.shape} and {t.shape}")
  corners = lambda x: np.concatenate([x[:, :2], x[:, :2] + x[:, 2:]], axis=1)  # noqa: E731
  s, st = np.asarray(run["max_scores"], np.float64), np.asarray(truth["max_scores"], np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    rel = np.abs(s - st) / np.abs(st)
  rel[0] = 0.0
  return {"iou": box_iou_xywh(b, t), "box_px": np.max(np.abs(corners(b) - corners(t)), axis=1),
          "score_rel": np.where(np.isnan(rel), np.inf, rel),
          "flag_same": np.asarray([str(x) == str(y) for x, y in zip(run["flags"], truth["flags"])])}


def first_departure(dist: dict, iou_threshold: float = 0.99, score_tol: float = 1e-3,
                    box_px_tol: float = 1e-2) -> tuple[int | None, str]:
  """(first frame >= 1 where the run leaves the truth, the stage that shows it first there): 'max score'
  (relative difference > score_tol), then 'flag', then 'box' (IoU < iou_threshold or a corner more than
  box_px_tol pixels away: float32 rounding keeps a box within ~1e-3 px); (None, '-') if never."""
  checks = (("max score", dist["score_rel"] > score_tol), ("flag", ~dist["flag_same"]),
            ("box", (dist["iou"] < iou_threshold) | (dist["box_px"] > box_px_tol)))
  for t in range(1, len(dist["iou"])):
    for stage, bad in checks:
      if bad[t]:
        return t, stage
  return None, "-"


def truth_verdict(ours: tuple[int | None, str], ref: tuple[int | None, str], truth_valid_until: int | None) -> str:
  """Which float32 run leaves the float64 trajectory first (departures from `first_departure`); a departure at or
  after the frame where the two float64 runs part (`truth_valid_until`) is beyond what the truth can judge."""
  horizon = np.inf if truth_valid_until is None else truth_valid_until
  o = np.inf if ours[0] is None else ours[0]
  r = np.inf if ref[0] is None else ref[0]
  if min(o, r) >= horizon:
    return "neither, while the float64 runs agree"
  if o == r:
    return "both at the same frame"
  return "ours" if o < r else "reference"


def format_truth_table(rows, iou_threshold: float) -> str:
  """Markdown table of (sequence, frames, float64 parting, ours departure, reference departure) rows."""
  fmt = lambda d: "-" if d[0] is None else f"{d[0]} ({d[1]})"  # noqa: E731
  lines = ["| sequence | frames | float64 ours vs reference: first (stage) | ours float32 leaves the float64 truth "
           "| reference float32 leaves it | first to leave |", "|---|---|---|---|---|---|"]
  for name, n, truth_part, ours, ref in rows:
    lines.append(f"| {name} | {n} | {fmt(truth_part)} | {fmt(ours)} | {fmt(ref)} | "
                 f"{truth_verdict(ours, ref, truth_part[0])} |")
  return "\n".join(lines) + (f"\n\nA run leaves the truth at the first frame whose max score differs by > 1e-3 "
                              f"(relative), whose flag differs, or whose box IoU < {iou_threshold} or a corner "
                              "> 0.01 px away.")


def format_truth_frames(name: str, ours: dict, ref: dict, last: int) -> str:
  """Per-frame table, frames 1..last: each float32 run's box distance (px, IoU) and max-score distance from the
  truth."""
  lines = [f"| {name} frame | ours: box px / IoU / score rel | reference: box px / IoU / score rel |",
           "|---|---|---|"]
  cell = lambda d, t: f"{d['box_px'][t]:.2e} / {d['iou'][t]:.4f} / {d['score_rel'][t]:.1e}"  # noqa: E731
  for t in range(1, last + 1):
    lines.append(f"| {t} | {cell(ours, t)} | {cell(ref, t)} |")
  return "\n".join(lines)


def _float64_tracks(args, work: str, seq_dirs: list[str]) -> dict:
  """Runs this script again with --float64 (own process: JAX's x64 switch is global) over the same sequences;
  returns its `tracking` results (per sequence: ours / reference boxes, max scores, flags)."""
  out = os.path.join(work, "float64_truth.json")
  cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--reference-root", args.reference_root,
         "--arch", args.arch, "--checkpoint", args.checkpoint, "--torch-python", args.torch_python, "--float64",
         "--skip-stages", "--json", out, "--target-not-found-threshold", str(args.target_not_found_threshold),
         "--work-dir", os.path.join(work, "float64")]
  for d in seq_dirs:
    cmd += ["--sequence", d]
  if args.max_frames:
    cmd += ["--max-frames", str(args.max_frames)]
  if args.reference_crop_from:
    cmd += ["--reference-crop-from", args.reference_crop_from]
  if args.arch == "keeptrack":
    cmd += ["--tcm-checkpoint", args.tcm_checkpoint]
    for flag, value in (("--candidate-threshold", args.candidate_threshold),
                        ("--candidate-capacity", args.candidate_capacity)):
      if value is not None:
        cmd += [flag, str(value)]
  res = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if res.returncode not in (0, 1):  # 1 = targets missed, still a complete run
    raise RuntimeError(f"float64 run failed ({' '.join(cmd)}):\n{res.stderr[-4000:]}")
  with open(out) as f:
    return json.load(f)["tracking"]


def report_float64_truth(tracking32: dict, tracking64: dict, iou_threshold: float) -> dict:
  """Prints, per sequence, where each float32 run leaves the float64 truth (the reference's float64 trajectory;
  valid until our float64 run parts from it) and the per-frame distances up to there; returns the numbers."""
  rows, out, frames = [], {}, []
  side = lambda r, who: {"boxes": r[f"{who}_boxes"], "max_scores": r[f"{who}_max_scores"],  # noqa: E731
                         "flags": r[f"{who}_flags"]}
  for name, r32 in tracking32.items():
    truth = side(tracking64[name], "ref")
    d64 = truth_distances(side(tracking64[name], "ours"), truth)
    d_ours, d_ref = truth_distances(side(r32, "ours"), truth), truth_distances(side(r32, "ref"), truth)
    dep64 = first_departure(d64, iou_threshold)
    dep_o, dep_r = first_departure(d_ours, iou_threshold), first_departure(d_ref, iou_threshold)
    n = len(truth["boxes"]) - 1
    rows.append((name, n, dep64, dep_o, dep_r))
    last = min(n, max(t for t in (dep_o[0], dep_r[0], 1) if t is not None) + 2)
    frames.append(format_truth_frames(name, d_ours, d_ref, last))
    out[name] = {"float64_parting": dep64, "ours_departure": dep_o, "reference_departure": dep_r,
                 "first_to_leave": truth_verdict(dep_o, dep_r, dep64[0]),
                 **{f"{who}_{k}": v.tolist() for who, d in (("ours", d_ours), ("ref", d_ref), ("float64", d64))
                    for k, v in d.items()}}
  print("\n## float32 against the float64 truth (the reference's float64 trajectory)\n")
  print(format_truth_table(rows, iou_threshold))
  for table in frames:
    print("\n" + table)
  return out


# ------------------------------------------------------------------------------------------------------------
# Side-by-side speed (`--speed`).

# Reference parts (torch_reference.PARTS, same order) and their table labels.
PART_LABELS: dict[str, str] = {
    "patch": "patch extraction (image -> tensor, crop + resize)",
    "backbone": "backbone (normalisation + ResNet; CIA: + instance encoder)",
    "clf_features": "classification features (CIA: + category encoder)",
    "localisation": "localisation (score map + peak / flags)",
    "iou_refine": "IoU-Net refinement",
    "update": "memory + filter update",
    "other": "rest of track() (bookkeeping)",
}


def cpu_description(cpuinfo: str) -> dict:
  """{'model', 'avx2', 'avx512f', 'cores'} from the text of /proc/cpuinfo (first processor's model and flags)."""
  model, flags, cores = "unknown", set(), 0
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "processor":
      cores += 1
    elif key == "model name" and model == "unknown":
      model = value.strip()
    elif key == "flags" and not flags:
      flags = set(value.split())
  return {"model": model, "avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "cores": cores}


def speed_summary(times_per_round) -> dict:
  """Per-frame seconds of several runs over one sequence (`[T]` each, frame 0 = init) -> medians over the tracked
  frames 1..T-1: `median` of all rounds pooled, `round_medians` one per run, `fps` = 1 / median."""
  rounds = [np.asarray(t, np.float64)[1:] for t in times_per_round]
  if not rounds or any(r.size == 0 for r in rounds):
    raise ValueError("speed_summary: every run needs at least one tracked frame after the init frame")
  med = float(np.median(np.concatenate(rounds)))
  return {"median": med, "fps": 1.0 / med, "round_medians": [float(np.median(r)) for r in rounds]}


def part_breakdown(parts_per_round, times_per_round) -> dict[str, float]:
  """Mean seconds per tracked frame of each reference part (`parts_per_round`: one {part: [T]} per run, frame 0
  excluded) plus 'other' = mean frame time minus the parts' sum; 'total' = the mean frame time."""
  total = float(np.mean(np.concatenate([np.asarray(t, np.float64)[1:] for t in times_per_round])))
  out = {}
  for part in parts_per_round[0]:
    out[part] = float(np.mean(np.concatenate([np.asarray(r[part], np.float64)[1:] for r in parts_per_round])))
  out["other"] = total - sum(out.values())
  out["total"] = total
  return out


def work_ceiling(gflop: float, peak_gflops: float, ours_s: float, ref_s: float) -> dict[str, float]:
  """What the work allows: `gflop` per frame (a lower bound: XLA's cost analysis of a step without filter
  update) at the matmul peak `peak_gflops` takes at least `floor_s`; `ours_pct_peak` is our achieved rate on
  that work (an underestimate), `ceiling` the largest speed ratio over the reference (per-frame `ref_s`) that any
  implementation doing this work at that peak could reach."""
  floor_s = gflop / peak_gflops
  return {"gflop": gflop, "peak_gflops": peak_gflops, "floor_s": floor_s, "ours_pct_peak": 100.0 * floor_s / ours_s,
          "ceiling": ref_s / floor_s}


def format_speed_table(rows) -> str:
  """Markdown table of (sequence, frame size 'WxH', frames, ours summary, reference summary[, work_ceiling])
  rows; 'ours / reference speed' is ours fps / reference fps (> 1: ours faster)."""
  lines = ["| sequence | frame size | tracked frames x runs | ours ms/frame (fps) | reference ms/frame (fps) | "
           "ours / reference speed | per-run medians ours / reference (ms) | GFLOP/frame without update | "
           "ours % of JAX peak (GFLOP/s) | ceiling at JAX peak |", "|---|---|---|---|---|---|---|---|---|---|"]
  for name, size, n, ours, ref, *ceiling in rows:
    per_run = (" ".join(f"{1e3 * m:.0f}" for m in ours["round_medians"]) + " / "
               + " ".join(f"{1e3 * m:.0f}" for m in ref["round_medians"]))
    work = (f"{ceiling[0]['gflop']:.2f} | {ceiling[0]['ours_pct_peak']:.0f}% ({ceiling[0]['peak_gflops']:.0f}) | "
            f"{ceiling[0]['ceiling']:.2f}x"
            if ceiling else "- | - | -")
    lines.append(f"| {name} | {size} | {n} x {len(ours['round_medians'])} | {1e3 * ours['median']:.1f} "
                 f"({ours['fps']:.2f}) | {1e3 * ref['median']:.1f} ({ref['fps']:.2f}) | "
                 f"{ours['fps'] / ref['fps']:.2f}x | {per_run} | {work} |")
  return "\n".join(lines)


def step_gflop_without_update(model, settings, frames: np.ndarray, box) -> float:
  """GFLOP of one compiled tracker step at this frame size with the filter update switched off and the boxes in
  the smallest IoU window (XLA's cost analysis, `bench_common.step_flops`): the work every tracked frame does
  at least."""
  import jax  # pylint: disable=g-import-not-at-top
  from bench_common import step_flops  # pylint: disable=g-import-not-at-top  (scripts/ is on sys.path)

  from cia_jax.track import tracker  # pylint: disable=g-import-not-at-top
  no_update = settings.replace(net_opt_update_iter=0, net_opt_hn_iter=0)
  key = jax.random.key(0)
  state = tracker.init(model, no_update, frames[0], np.asarray(box, np.float32), key)
  return step_flops(model, no_update, state, frames[1], key) / 1e9


def format_breakdown_table(breakdowns: dict[str, dict[str, float]]) -> str:
  """Markdown table: one row per reference part, one column per sequence, mean ms per frame (share of total)."""
  names = list(breakdowns)
  lines = ["| reference part | " + " | ".join(f"{n} ms (share)" for n in names) + " |",
           "|---|" + "---|" * len(names)]
  for part, label in [*PART_LABELS.items(), ("total", "total (mean per frame)")]:
    cells = []
    for n in names:
      b = breakdowns[n]
      cells.append(f"{1e3 * b[part]:.1f} ({100 * b[part] / b['total']:.0f}%)" if part in b else "-")
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


# Our parts (`profile_tracking.py`'s, each jitted alone) grouped as the reference's parts group its methods: CIA's
# instance encoder runs inside the reference's backbone part, its category encoder inside the classification
# features. Our 'update' is the memory write of a frame without filter update (`update_0`); the reference's
# is its mean over all frames, filter updates included.
OUR_PARTS: dict[str, tuple[str, ...]] = {
    "patch": ("patch",), "backbone": ("backbone", "instance"), "clf_features": ("category", "clf_feat"),
    "localisation": ("localize",), "iou_refine": ("iou_refine",), "update": ("update_0",),
}


def our_part_breakdown(profile_rows) -> dict[str, float]:
  """Seconds per frame of each reference part (`OUR_PARTS`) from `profile_tracking.profile` rows (variant, part,
  GFLOP, median ms, GFLOP/s, % peak); 'total' = their sum, a frame without filter update (the profiled 'step'
  runs whatever update its frame's flag asks for, with random weights often a hard-negative one). A part that
  this network lacks (DiMP: instance, category) counts 0."""
  ms = {part: row_ms for _, part, _, row_ms, _, _ in profile_rows}
  out = {key: 1e-3 * sum(ms.get(n, 0.0) for n in names) for key, names in OUR_PARTS.items()}
  out["total"] = sum(out.values())
  return out


def format_parts_beside(ours: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]) -> str:
  """Markdown table: one row per reference part, per sequence 'ours / reference' ms per frame and their ratio (none
  for the update and the total: ours are a frame without filter update, the reference's a mean over all frames)."""
  names = [n for n in reference if n in ours]
  lines = ["| part | " + " | ".join(f"{n}: ours / reference ms (reference / ours)" for n in names) + " |",
           "|---|" + "---|" * len(names)]
  for part, label in [*PART_LABELS.items(), ("total", "total (ours: the parts' sum, a frame without filter update)")]:
    cells = []
    for n in names:
      o, r = ours[n].get(part), reference[n].get(part)
      if o is None or r is None:
        cells.append("-")
      else:
        same_work = part not in ("update", "total") and o > 0
        cells.append(f"{1e3 * o:.1f} / {1e3 * r:.1f}" + (f" ({r / o:.1f}x)" if same_work else ""))
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _our_parts(model, settings, frames: np.ndarray, box, rounds: int) -> dict[str, float]:
  """`our_part_breakdown` of `profile_tracking.profile` on these frames (up to 4 tracked frames, then the parts on
  the next one)."""
  import profile_tracking  # pylint: disable=g-import-not-at-top  (scripts/ is on sys.path)
  args = argparse.Namespace(seed=0, warmup_frames=min(4, len(frames) - 1), rounds=rounds)
  rows = profile_tracking.profile(model, {"-": settings}, frames, np.asarray(box, np.float32), args, None)
  return our_part_breakdown(rows)


def limit_cpus(threads: int) -> list[int]:
  """Restricts this process (and the reference subprocesses it starts) to `threads` CPUs before JAX starts its
  thread pool (XLA sizes it from the affinity mask); returns the CPUs kept."""
  cpus = sorted(os.sched_getaffinity(0))[:max(1, threads)]
  os.sched_setaffinity(0, cpus)
  return cpus


def _time_ours(model, settings, seq, frames: np.ndarray, source=None) -> tuple[np.ndarray, np.ndarray]:
  """(boxes [T, 4], seconds [T]) of `cia-jax track`'s own loop (`runner.track_sequence`, jitted init / step) over
  `frames`, taken from `source` (an iterator over them) when given."""
  from cia_jax.track import runner  # pylint: disable=g-import-not-at-top
  return runner.track_sequence(model, settings, seq, max_frames=len(frames),
                               frames=iter(frames) if source is None else source)


def _time_lockstep(model, settings, seq, frames: np.ndarray, ref_args: list[str], torch_python: str,
                   threads: int, reference_first: bool) -> tuple[np.ndarray, np.ndarray]:
  """`_time_ours` and one reference run (`torch_reference.py track ... --lockstep 1`, writing its own times to
  its `--out`) taking turns frame by frame: reference frame t runs just before our frame t (`reference_first`) or
  just after it, one process at a time (scripts/lockstep.py). Both initialise first, each alone."""
  import lockstep  # pylint: disable=g-import-not-at-top  (scripts/ is on sys.path)
  env = dict(os.environ, PYTHONWARNINGS="ignore", TORCH_REF_THREADS=str(threads))
  leader = lockstep.Leader([torch_python, str(_HERE / "torch_reference.py"), *ref_args, "--lockstep", "1"], env=env)
  try:
    turns = lockstep.interleave(frames, leader.turn, len(frames), follower_first=reference_first)
    out = _time_ours(model, settings, seq, frames, turns)
    for _ in turns:  # the reference's frames still due
      pass
  except BaseException:
    leader.kill()
    raise
  leader.finish()
  return out


def parse_frame_size(text: str) -> tuple[int, int] | None:
  """`--frame-size`: 'WIDTHxHEIGHT' pixels -> (width, height); 'native' -> None (the frames as they are)."""
  if text.strip().lower() == "native":
    return None
  parts = text.lower().split("x")
  if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
    raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels (e.g. 1280x720) or 'native', got {text!r}")
  return int(parts[0]), int(parts[1])


def resized_sequence(frames: np.ndarray, seq, size_wh: tuple[int, int] | None):
  """The same video at another frame size: `frames` `[T, H, W, 3]` uint8 resized to `size_wh` (bilinear) and the
  sequence's boxes scaled with them, so both trackers do the same work on the same content at a new frame size.
  None: unchanged. Returns (frames, seq)."""
  if size_wh is None or size_wh == (frames.shape[2], frames.shape[1]):
    return frames, seq
  import cv2  # pylint: disable=g-import-not-at-top
  w, h = size_wh
  sx, sy = w / frames.shape[2], h / frames.shape[1]
  out = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in frames])
  return out, dataclasses.replace(seq, boxes=np.asarray(seq.boxes, np.float64) * np.array([sx, sy, sx, sy]))


def frame_size_ratios(rows) -> list[tuple[str, str, str, float, float]]:
  """Per sequence tracked at several frame sizes (`format_speed_table` rows, its first size first): (sequence,
  first size, other size, ours per-frame time at the other size / at the first, the reference's likewise)."""
  first, out = {}, []
  for name, size, _, ours, ref, *_ in rows:
    if name not in first:
      first[name] = (size, ours, ref)
      continue
    size0, ours0, ref0 = first[name]
    out.append((name, size0, size, ours["median"] / ours0["median"], ref["median"] / ref0["median"]))
  return out


def run_speed(args, work: str, seq_dirs: list[str], model, settings) -> dict:
  """`--speed`: both trackers over the same frames, `--rounds` alternating runs each, at every `--frame-size`;
  prints both tables and what the work allows at JAX's matmul peak (`work_ceiling`). The peak is measured right
  after each of our runs and its median taken, so the denominator comes from the same minutes as the times (a
  shared VM's matmul rate can swing by a third within minutes)."""
  from cia_jax.track import runner  # pylint: disable=g-import-not-at-top

  rows, breakdowns, ours_parts, results = [], {}, {}, {}
  jobs = []
  for seq_dir in seq_dirs:
    name, frames, box, seq = _load_sequence(seq_dir, args.max_frames or 40)
    for size_wh in args.frame_size or [None]:
      jobs.append((name, *resized_sequence(frames, seq, size_wh)))
  for name, frames, seq in jobs:
    box = runner.first_box(seq)
    size = f"{frames.shape[2]}x{frames.shape[1]}"
    frames_path = os.path.join(work, f"{name}_{size}_frames.npy")
    np.save(frames_path, frames)
    ref_args = ["track", "--reference-root", str(pathlib.Path(args.reference_root).resolve()), "--arch", args.arch,
                "--checkpoint", os.path.abspath(args.checkpoint), "--frames", frames_path,
                "--box", ",".join(repr(float(b)) for b in box), "--timing", "1",
                "--target-not-found-threshold", str(args.target_not_found_threshold), *reference_keeptrack_args(args)]
    t0 = time.perf_counter()
    runner.track_sequence(model, settings, seq, max_frames=2, frames=iter(frames[:2]))  # compile at this size
    compile_s = time.perf_counter() - t0
    ours_t, ref_t, ref_parts, ious, peaks = [], [], [], [], []
    for r in range(args.rounds):
      path = os.path.join(work, f"{name}_{size}_speed_{r}.npz")
      reference_first = r % 2 == 0  # who goes first alternates per round
      run_reference = functools.partial(_run_reference, args.torch_python, [*ref_args, "--out", path], args.verbose,
                                        threads=args.threads)
      if args.lockstep:  # one run of each, frame by frame in turn
        boxes, times = _time_lockstep(model, settings, seq, frames, [*ref_args, "--out", path], args.torch_python,
                                      args.threads, reference_first)
      else:
        if reference_first:
          run_reference()
        boxes, times = _time_ours(model, settings, seq, frames)
      ours_t.append(times)
      peaks.append(_jax_matmul_peak())  # right after our run
      if not args.lockstep and not reference_first:
        run_reference()
      ref = dict(np.load(path))
      ref_t.append(ref["times"])
      ref_parts.append({k.split("/", 1)[1]: v for k, v in ref.items() if k.startswith("parts/")})
      ious.append(float(box_iou_xywh(boxes[1:], ref["boxes"][1:]).min()))
    ours_s, ref_s = speed_summary(ours_t), speed_summary(ref_t)
    peak_gflops = float(np.median(peaks))
    ceiling = work_ceiling(step_gflop_without_update(model, settings, frames, box), peak_gflops, ours_s["median"],
                           ref_s["median"])
    rows.append((name, size, len(frames) - 1, ours_s, ref_s, ceiling))
    label = name if len(args.frame_size or [None]) == 1 else f"{name}@{size}"
    breakdowns[label] = part_breakdown(ref_parts, ref_t)
    if args.our_parts:
      ours_parts[label] = _our_parts(model, settings, frames, box, max(5, 3 * args.rounds))
    print(f"{name} ({size}): ours {1e3 * ours_s['median']:.1f} ms/frame, reference {1e3 * ref_s['median']:.1f} "
          f"ms/frame, ours / reference speed {ours_s['fps'] / ref_s['fps']:.2f}x (our compile + first 2 frames "
          f"{compile_s:.0f} s; min box IoU ours vs reference per run {min(ious):.3f}); work without filter update "
          f"{ceiling['gflop']:.2f} GFLOP/frame = {1e3 * ceiling['floor_s']:.1f} ms at JAX's {peak_gflops:.0f} "
          f"GFLOP/s (median of {', '.join(f'{p:.0f}' for p in peaks)}): ours at {ceiling['ours_pct_peak']:.0f}% "
          f"of peak, ceiling {ceiling['ceiling']:.2f}x the reference", flush=True)
    results[label] = {"size": size, "frames": len(frames), "ours": ours_s, "reference": ref_s,
                      "reference_parts": breakdowns[label], "min_iou": min(ious), "compile_s": compile_s,
                      "work_ceiling": ceiling, "jax_matmul_gflops_per_run": peaks,
                      "ours_times": [t.tolist() for t in ours_t], "reference_times": [t.tolist() for t in ref_t]}
  print(f"\n## Per-frame speed, {args.arch}, side by side (median over tracked frames 2..T of {args.rounds} "
        f"alternating runs each, {args.threads} thread(s) each)\n")
  print(format_speed_table(rows))
  ratios = frame_size_ratios(rows)
  if ratios:
    print("\n## Frame size: the same video resized (median ms per frame at the other size / at the first)\n")
    print("| sequence | sizes | ours | reference |\n|---|---|---:|---:|")
    for name, size0, size1, ours_r, ref_r in ratios:
      print(f"| {name} | {size1} / {size0} | {ours_r:.3f} | {ref_r:.3f} |")
    results["frame_size_ratios"] = [dict(zip(("sequence", "first", "other", "ours", "reference"), r))
                                    for r in ratios]
  print("\n## Where the reference spends a frame (mean ms per tracked frame, exclusive time per part)\n")
  print(format_breakdown_table(breakdowns))
  if ours_parts:
    print("\n## Our parts beside the reference's (ours: median ms of each part jitted alone, `profile_tracking.py`'s "
          "parts grouped as the reference's; update = the memory write of a frame without filter update)\n")
    print(format_parts_beside(ours_parts, breakdowns))
    results["our_parts"] = ours_parts
  return results


def _speed_header(args) -> dict:
  """Prints and returns the machine description: CPU model, AVX2 / AVX-512, CPUs used, load, matmul peaks."""
  with open("/proc/cpuinfo") as f:
    cpu = cpu_description(f.read())
  cpus = limit_cpus(args.threads)
  jax_peak = _jax_matmul_peak()
  res = subprocess.run([args.torch_python, str(_HERE / "torch_reference.py"), "matmul-peak"], capture_output=True,
                       text=True, env=dict(os.environ, TORCH_REF_THREADS=str(args.threads)), check=False)
  torch_peak = res.stdout.strip() or res.stderr.strip()[-300:]
  load = os.getloadavg()
  print(f"# side-by-side speed: {args.arch}, checkpoint {args.checkpoint}"
        f"{', our --set ' + ' '.join(args.set) if args.set else ''}\n\nCPU: {cpu['model']}, "
        f"{cpu['cores']} cores, AVX2 {'yes' if cpu['avx2'] else 'no'}, AVX-512 {'yes' if cpu['avx512f'] else 'no'}; "
        f"runs pinned to CPUs {cpus} ({args.threads} thread(s): JAX via the affinity mask, torch via "
        f"set_num_threads); fp32 matmul peak (2048^3): JAX {jax_peak:.0f} GFLOP/s, {torch_peak}; "
        f"load average before the runs {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}\n", flush=True)
  return {**cpu, "cpus": cpus, "jax_matmul_gflops": jax_peak, "torch_matmul": torch_peak, "load_before": load}


def _jax_matmul_peak(n: int = 2048) -> float:
  """JAX's achieved fp32 GFLOP/s on a jitted n x n x n matmul (median of 5 after a warm-up)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  jax.block_until_ready(f(a, a))
  times = []
  for _ in range(5):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a, a))
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / float(np.median(times)) / 1e9


def ground_truth_summary(seq, ours: dict, ref: dict) -> dict | None:
  """Each side's OTB success AUC against the sequence's ground truth and its median max score over the tracked
  frames (how peaked the score maps are), or None when the sequence has no box for some tracked frame."""
  from cia_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top

  n = len(ours["boxes"])
  gt = np.asarray(seq.boxes, np.float64)[:n]
  if len(gt) < n or not np.all(np.isfinite(gt)):
    return None
  return {"ours_auc": metrics.evaluate_sequence(ours["boxes"], gt)["auc"],
          "ref_auc": metrics.evaluate_sequence(ref["boxes"], gt)["auc"],
          "ours_median_max_score": float(np.median(ours["max_scores"][1:])),
          "ref_median_max_score": float(np.median(ref["max_scores"][1:]))}


# ------------------------------------------------------------------------------------------------------------
# Driver.


def _load_sequence(path: str, max_frames: int | None):
  from cia_jax.data.datasets import load_sequence  # pylint: disable=g-import-not-at-top
  from cia_jax.data.frames import read_frame  # pylint: disable=g-import-not-at-top
  from cia_jax.track.runner import first_box  # pylint: disable=g-import-not-at-top

  seq = load_sequence(path)
  name = os.path.basename(os.path.normpath(path))
  paths = seq.frame_paths[:max_frames] if max_frames else seq.frame_paths
  if not paths:
    raise ValueError(f"--sequence {path}: no frames")
  frames = np.stack([read_frame(p) for p in paths])
  return name, frames, first_box(seq), seq


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--reference-root", required=True, help="pytracking checkout (dimp18, superdimp) or CIA "
                                                                  "checkout (cia18, cia50)")
  p.add_argument("--arch", required=True, choices=ARCHS)
  p.add_argument("--checkpoint", required=True, help="reference-layout .pth (state dict under 'net' or bare); "
                                                     "keeptrack: the SuperDiMP base")
  p.add_argument("--tcm-checkpoint", default=None,
                 help="keeptrack: the target candidate matching net, keep_track.pth.tar layout (written too with "
                      "--create-checkpoint-seed)")
  p.add_argument("--keeptrack-base", default="superdimp", choices=("superdimp", "superdimp_simple"),
                 help="keeptrack with --create-checkpoint-seed: the base network to write (superdimp_simple = "
                      "dimpnet50_simple, the released KeepTrack base); an existing --checkpoint says by its keys")
  p.add_argument("--candidate-threshold", type=float, default=None,
                 help="keeptrack: local_max_candidate_score_th on both sides (default the parameter file's 0.05; "
                      "random-weight score maps peak near 0.02, so matching only runs below that)")
  p.add_argument("--candidate-capacity", type=int, default=None,
                 help="keeptrack: our static number of candidate slots (default the preset's 32)")
  p.add_argument("--record-matches", type=int, default=2,
                 help="keeptrack: association-net calls per sequence compared stage by stage (0: none; not "
                      "affected by --skip-stages, which skips the first-frame base network stages)")
  p.add_argument("--create-checkpoint-seed", type=int, default=None,
                 help="first write --checkpoint: reference random weights under torch.manual_seed(SEED)")
  p.add_argument("--sequence", action="append", default=[], help="sequence folder (repeatable)")
  p.add_argument("--sequences-root", default=None, help="also every sequence folder under this directory")
  p.add_argument("--max-frames", type=int, default=None, help="compare only the first N frames of each sequence")
  p.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON, help="python of a venv with torch + numpy + cv2")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a tracker setting of our side (repeatable), e.g. winograd_convs=False; the reference's "
                      "tracker is unchanged")
  p.add_argument("--tolerance", type=float, default=1e-4, help="target per-stage relative difference")
  p.add_argument("--iou-threshold", type=float, default=0.99, help="target per-frame box IoU")
  p.add_argument("--target-not-found-threshold", type=float, default=0.0)
  p.add_argument("--reference-crop-from", default=None,
                 help="run the reference with the sample_patch of this checkout (e.g. the CIA fork for dimp18: "
                      "upstream pytracking's crop window uses true division, the fork and cia_jax floor division)")
  p.add_argument("--ours-eager", action="store_true",
                 help="run our tracker un-jitted (init_impl / step_impl): separates jit-only effects")
  p.add_argument("--noise-floor-perturb", type=float, default=0.0,
                 help="also run the reference from the initial box shifted right by this many pixels (e.g. 1e-12 "
                      "in a float64 run) and report reference-vs-reference per-frame IoU: how far a perturbation "
                      "at rounding level carries a track (the online filter's sensitivity, not float noise)")
  p.add_argument("--noise-floor-threads", type=int, default=0,
                 help="also run the reference with this many torch threads (other float summation order) and "
                      "report reference-vs-reference per-frame IoU: how far float32 noise alone carries a track")
  p.add_argument("--float64", action="store_true",
                 help="run both sides in float64 (JAX x64 + the parameters cast; torch_reference --float64 1): "
                      "separates float32 rounding from real differences; stage tolerances then mean float64")
  p.add_argument("--speed", action="store_true",
                 help="side-by-side speed instead of parity: per-frame time of our jitted tracker (cia-jax track's "
                      "loop) and of the reference tracker over the same frames (default the first 40), --rounds "
                      "alternating runs each, medians, ratio, and the reference's per-part breakdown")
  p.add_argument("--rounds", type=int, default=3, help="--speed: runs of each tracker per sequence")
  p.add_argument("--lockstep", action="store_true",
                 help="--speed: each round runs both trackers together, taking turns frame by frame (scripts/"
                      "lockstep.py), so a slow spell of a shared machine slows both sides alike")
  p.add_argument("--our-parts", action="store_true",
                 help="--speed: also time our tracker's parts on the same frames (scripts/profile_tracking.py) and "
                      "print them beside the reference's breakdown")
  p.add_argument("--threads", type=int, default=2,
                 help="--speed: CPUs for both sides (affinity mask; torch.set_num_threads in the reference)")
  p.add_argument("--frame-size", action="append", type=parse_frame_size, default=[], metavar="WxH|native",
                 help="--speed: track each sequence at this frame size, the frames resized (bilinear) and the boxes "
                      "scaled (repeatable; 'native' = as they are). Two sizes print the per-frame time ratio on "
                      "the same content")
  p.add_argument("--float64-truth", action="store_true",
                 help="also run both sides in float64 (a second process) and report, per frame, each float32 "
                      "run's distance from the float64 trajectory and the frame and stage where each leaves it first")
  p.add_argument("--skip-stages", action="store_true")
  p.add_argument("--skip-tracking", action="store_true")
  p.add_argument("--json", default=None, help="write all numbers (stages, per-frame IoU) to this file")
  p.add_argument("--work-dir", default=None, help="keep the intermediate .npy/.npz here (default: a temp dir)")
  p.add_argument("--verbose", action="store_true")
  return p.parse_args(argv)


def _check_inputs(args) -> None:
  root = pathlib.Path(args.reference_root)
  if not root.is_dir():
    raise FileNotFoundError(f"--reference-root {root}: not a directory")
  if not os.path.isfile(args.torch_python):
    raise FileNotFoundError(f"--torch-python {args.torch_python}: not found (a venv with torch==2.13.0, numpy, "
                            "opencv-python-headless)")
  if args.create_checkpoint_seed is None and not os.path.isfile(args.checkpoint):
    raise FileNotFoundError(f"--checkpoint {args.checkpoint}: not found (use --create-checkpoint-seed to make one)")
  if args.arch == "keeptrack":
    if not args.tcm_checkpoint:
      raise ValueError("--arch keeptrack needs --tcm-checkpoint (the association net; --checkpoint is the base)")
    if args.create_checkpoint_seed is None and not os.path.isfile(args.tcm_checkpoint):
      raise FileNotFoundError(f"--tcm-checkpoint {args.tcm_checkpoint}: not found (use --create-checkpoint-seed "
                              "to make one)")
    if args.record_matches < 0 or (args.candidate_capacity is not None and args.candidate_capacity < 1):
      raise ValueError("--record-matches must be >= 0 and --candidate-capacity >= 1")
  elif args.tcm_checkpoint or args.candidate_threshold is not None or args.candidate_capacity is not None:
    raise ValueError(f"--tcm-checkpoint / --candidate-threshold / --candidate-capacity: only for --arch keeptrack, "
                     f"not {args.arch}")
  if not args.sequence and not args.sequences_root:
    raise ValueError("give at least one --sequence DIR or --sequences-root DIR")
  for s in args.sequence:
    if not os.path.isdir(s):
      raise FileNotFoundError(f"--sequence {s}: not a directory")
  if args.reference_crop_from and not os.path.isfile(
      os.path.join(args.reference_crop_from, "pytracking", "features", "preprocessing.py")):
    raise FileNotFoundError(f"--reference-crop-from {args.reference_crop_from}: "
                            "no pytracking/features/preprocessing.py")
  if args.sequences_root and not os.path.isdir(args.sequences_root):
    raise FileNotFoundError(f"--sequences-root {args.sequences_root}: not a directory")
  if args.float64_truth and (args.float64 or args.skip_tracking or args.speed):
    raise ValueError("--float64-truth compares float32 tracking runs: not with --float64, --skip-tracking, --speed")
  if (args.frame_size or args.our_parts or args.lockstep) and not args.speed:
    raise ValueError("--frame-size, --our-parts and --lockstep are --speed options")
  if args.speed and (args.rounds < 1 or args.threads < 1 or args.float64):
    raise ValueError("--speed needs --rounds >= 1 and --threads >= 1, and runs float32 only")
  if args.max_frames is not None and args.max_frames < 2:
    raise ValueError(f"--max-frames {args.max_frames}: need at least 2 (the init frame and one tracked frame)")


def main(argv=None) -> int:
  args = parse_args(argv)
  xla_flags.configure()  # what `cia-jax` runs with; before JAX's first computation
  try:
    _check_inputs(args)
  except (FileNotFoundError, ValueError) as e:
    print(f"compare_pytorch: {e}", file=sys.stderr)
    return 2
  try:
    if args.work_dir:
      os.makedirs(args.work_dir, exist_ok=True)
      return _main(args, args.work_dir)
    with tempfile.TemporaryDirectory(prefix="compare_pytorch_") as work:  # decoded frames: hundreds of MB
      return _main(args, work)
  except RuntimeError as e:  # the reference subprocess failed: its stderr is in the message
    print(f"compare_pytorch: {e}", file=sys.stderr)
    return 2


def reference_keeptrack_args(args) -> list[str]:
  """The torch_reference.py arguments of the association net (keeptrack; nothing for the other archs)."""
  if args.arch != "keeptrack":
    return []
  extra = ["--tcm-checkpoint", os.path.abspath(args.tcm_checkpoint)]
  if args.candidate_threshold is not None:
    extra += ["--candidate-threshold", repr(float(args.candidate_threshold))]
  return extra


def _main(args, work: str) -> int:
  ref_common = ["--reference-root", str(pathlib.Path(args.reference_root).resolve()), "--arch", args.arch]
  machine = _speed_header(args) if args.speed else None  # pins the CPUs before JAX starts its thread pool
  if args.float64:
    enable_float64()
  if args.create_checkpoint_seed is not None:
    outs = (["--out", args.tcm_checkpoint, "--base-out", args.checkpoint, "--keeptrack-base", args.keeptrack_base]
            if args.arch == "keeptrack" else ["--out", args.checkpoint])
    _run_reference(args.torch_python, ["make-checkpoint", *ref_common, "--seed", str(args.create_checkpoint_seed),
                                       *outs], args.verbose)
  seq_dirs = list(args.sequence)
  if args.sequences_root:
    seq_dirs += [os.path.join(args.sequences_root, n) for n in sorted(os.listdir(args.sequences_root))
                 if os.path.isdir(os.path.join(args.sequences_root, n))]
  try:
    model, _ = load_our_model(args.checkpoint, args.arch, args.float64, args.tcm_checkpoint)
  except (FileNotFoundError, ValueError) as e:
    print(f"compare_pytorch: {e}", file=sys.stderr)
    return 2
  try:
    settings = our_settings(args.arch, args.target_not_found_threshold, candidate_threshold=args.candidate_threshold,
                            candidate_capacity=args.candidate_capacity, overrides=args.set)
  except ValueError as e:
    print(f"compare_pytorch: {e}", file=sys.stderr)
    return 2
  if args.speed:
    results = {"arch": args.arch, "machine": machine, "speed": run_speed(args, work, seq_dirs, model, settings)}
    if args.json:
      with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    return 0
  results = {"arch": args.arch, "checkpoint": os.path.abspath(args.checkpoint), "stages": {}, "tracking": {}}
  passed = True
  reports, floor_reports, tcm_diffs = [], [], []
  print(f"# {args.arch} vs reference ({args.reference_root}), checkpoint {args.checkpoint}, "
        f"{'float64' if args.float64 else 'float32'}\n")
  for i, seq_dir in enumerate(seq_dirs):
    try:
      name, frames, box, seq = _load_sequence(seq_dir, args.max_frames)
    except (FileNotFoundError, ValueError) as e:
      print(f"compare_pytorch: --sequence {seq_dir}: {e}", file=sys.stderr)
      return 2
    frames_path = os.path.join(work, f"{name}_frames.npy")
    np.save(frames_path, frames)
    ref_seq = [*ref_common, "--checkpoint", os.path.abspath(args.checkpoint), "--frames", frames_path,
               "--box", ",".join(repr(float(b)) for b in box), "--float64", str(int(args.float64))]
    if args.reference_crop_from:
      ref_seq += ["--crop-from", str(pathlib.Path(args.reference_crop_from).resolve())]
    ref_seq += reference_keeptrack_args(args)
    if not args.skip_stages and i == 0:
      stages_path = os.path.join(work, f"{name}_stages.npz")
      _run_reference(args.torch_python, ["stages", *ref_seq, "--out", stages_path], args.verbose)
      ref = dict(np.load(stages_path))
      diffs = compare_stages(our_stages(model, settings, ref, frames[0]), ref)
      print(f"## Network stages, first frame of {name} (init patches of the reference tracker)\n")
      print(format_stage_table(diffs, args.tolerance, {k: d for k, (_, d) in STAGE_KEYS.items()}))
      print()
      # The crop row is a tracker quantity (pixels), not a network stage: reported, not part of the target.
      passed &= all(d.rel <= args.tolerance for d in diffs if d.name != "patches")
      results["stages"][name] = [dataclasses.asdict(d) for d in diffs]
    if args.skip_tracking:
      continue
    track_path = os.path.join(work, f"{name}_track.npz")
    t0 = time.time()
    record = ["--record-matches", str(args.record_matches)] if args.arch == "keeptrack" else []
    _run_reference(args.torch_python, ["track", *ref_seq, "--out", track_path, "--target-not-found-threshold",
                                       str(args.target_not_found_threshold), *record], args.verbose)
    t_ref = time.time() - t0
    ref_tr = dict(np.load(track_path))
    for rec in recorded_matches(ref_tr):
      try:
        ours_tcm = our_tcm_stages(model, settings.candidate_capacity, rec)
      except ValueError as e:
        print(f"{name}, frame {int(rec['frame'])}: association stages skipped: {e}")
        continue
      diffs = compare_tcm_stages(ours_tcm, rec, f"{name} frame {int(rec['frame'])} "
                                 f"({len(rec['scores_0'])} x {len(rec['scores_1'])}): ")
      tcm_diffs += diffs
      results.setdefault("tcm_stages", {}).setdefault(name, []).append([dataclasses.asdict(d) for d in diffs])
    t0 = time.time()
    ours_tr = track_ours(model, settings, frames, box, eager=args.ours_eager)
    t_ours = time.time() - t0
    rep = iou_report(name, ours_tr["boxes"], ref_tr["boxes"], args.iou_threshold, ours_tr["flags"], ref_tr["flags"])
    reports.append(rep)
    floors = []
    if args.noise_floor_threads:
      floors.append((f"threads{args.noise_floor_threads}", f"{args.noise_floor_threads} threads vs 1", ref_seq,
                     args.noise_floor_threads))
    if args.noise_floor_perturb:
      shifted = np.asarray(box, np.float64) + np.array([args.noise_floor_perturb, 0.0, 0.0, 0.0])
      seq_shifted = [*ref_seq]
      seq_shifted[seq_shifted.index("--box") + 1] = ",".join(repr(float(b)) for b in shifted)
      floors.append(("perturbed", f"init box x + {args.noise_floor_perturb:g} px vs unperturbed", seq_shifted, 1))
    for tag, what, seq_args, threads in floors:
      floor_path = os.path.join(work, f"{name}_track_{tag}.npz")
      _run_reference(args.torch_python, ["track", *seq_args, "--out", floor_path, "--target-not-found-threshold",
                                         str(args.target_not_found_threshold)], args.verbose, threads=threads)
      floor_tr = dict(np.load(floor_path))
      floor_reports.append(iou_report(f"{name} (reference, {what})", floor_tr["boxes"], ref_tr["boxes"],
                                      args.iou_threshold, floor_tr["flags"], ref_tr["flags"]))
    passed &= rep.first_below is None
    print(f"{name}: {rep.num_frames} tracked frames, min IoU {rep.min_iou:.4f}, mean {rep.mean_iou:.4f} "
          f"(reference {t_ref:.0f} s, ours {t_ours:.0f} s incl. compile)", flush=True)
    if rep.first_below is not None:
      print("  first frame below threshold: " + frame_detail(rep.first_below, ours_tr, ref_tr))
      if rep.first_below > 1:
        print("  frame before:               " + frame_detail(rep.first_below - 1, ours_tr, ref_tr))
    if rep.first_flag_mismatch is not None:
      print("  first flag mismatch: " + frame_detail(rep.first_flag_mismatch, ours_tr, ref_tr))
    crop = crop_divergence(ours_tr, ref_tr, frames.shape[1:3], settings,
                           np.float64 if args.float64 else np.float32)
    if crop is not None:
      print("  " + format_crop_divergence(crop))
    first_score = first_score_divergence(ours_tr["max_scores"], ref_tr["max_scores"])
    if first_score is not None:
      print("  max scores first differ by > 1e-3 (relative): " + frame_detail(first_score, ours_tr, ref_tr))
    truth = ground_truth_summary(seq, ours_tr, ref_tr)
    if truth:
      print(f"  against the ground truth: AUC ours {truth['ours_auc']:.4f} / reference {truth['ref_auc']:.4f}; "
            f"median max score ours {truth['ours_median_max_score']:.4f} / reference "
            f"{truth['ref_median_max_score']:.4f}")
    score_diff = np.abs(ours_tr["max_scores"][1:] - ref_tr["max_scores"][1:])
    results["tracking"][name] = {
        **{k: v for k, v in dataclasses.asdict(rep).items() if k != "ious"}, "ious": rep.ious.tolist(),
        "ours_boxes": ours_tr["boxes"].tolist(), "ref_boxes": ref_tr["boxes"].tolist(),
        "ours_flags": ours_tr["flags"].tolist(), "ref_flags": ref_tr["flags"].tolist(),
        "ours_max_scores": ours_tr["max_scores"].tolist(), "ref_max_scores": ref_tr["max_scores"].tolist(),
        "max_score_abs_diff": float(np.nanmax(score_diff)) if score_diff.size else 0.0,
        "first_score_divergence": first_score, "crop_divergence": crop, "ground_truth": truth}
  if tcm_diffs:
    print("\n## Association network (KeepTrack target candidate matching) on the reference tracker's candidate sets "
          "(sequence, frame, previous x current candidates)\n")
    print(format_stage_table(tcm_diffs, args.tolerance))
    passed &= all(d.rel <= args.tolerance for d in tcm_diffs)
  if reports:
    print(f"\n## Tracking (deterministic, target_not_found_threshold={args.target_not_found_threshold})\n")
    print(format_iou_table(reports, args.iou_threshold))
  if floor_reports:
    print("\n## Noise floor: the reference against itself (other torch thread count / perturbed init box)\n")
    print(format_iou_table(floor_reports, args.iou_threshold))
    results["noise_floor"] = {r.name: {k: v for k, v in dataclasses.asdict(r).items() if k != "ious"}
                              for r in floor_reports}
  if args.float64_truth:
    results["float64_truth"] = report_float64_truth(results["tracking"], _float64_tracks(args, work, seq_dirs),
                                                    args.iou_threshold)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  print(f"\nresult: {'PASS' if passed else 'targets missed'} (stage rel <= {args.tolerance:g}, "
        f"per-frame IoU >= {args.iou_threshold:g})")
  return 0 if passed else 1


if __name__ == "__main__":
  sys.exit(main())
