"""One-pass-evaluation metrics of the standard tracking benchmarks (vectorised NumPy, float64).

Boxes are `[T, 4]` arrays `[x, y, w, h]` in 0-based pixels (see `cia_jax.ops.boxes`).

Per frame: IoU in the pytracking inclusive-pixel convention (`iou_inclusive`) or the GOT-10k toolkit's
continuous convention (`iou_continuous`), centre error in pixels and normalised centre error (`center_error`,
`normalized_center_error`, centres `x + (w - 1) / 2`).

Per sequence (`evaluate_sequence`): success curve on 21 IoU thresholds 0, 0.05, ..., 1 (strict `IoU > t`) and
its AUC (mean of the 21 rates); precision curve on 0..50 px (`err <= t`) and its value at 20 px; normalised
precision curve on 0, 0.01, ..., 0.5 (`err <= t`), its value at 0.2 and its area (mean of the 51 rates, the
LaSOT / TrackingNet toolkit's "normalised precision"); OP50 / OP75 (success curve at 0.5 / 0.75); AO (mean IoU
over the evaluated frames) and SR0.5 / SR0.75 (fraction of evaluated frames with IoU > 0.5 / 0.75). All rates
in [0, 1].

Over a dataset (`summarize`): curves averaged over runs, then over sequences (pytracking's AUC / P / NP), and
AO / SR pooled over all evaluated frames of all sequences and runs (the GOT-10k toolkit's definition).

The protocol is an explicit argument (`PROTOCOLS`, `get_protocol`); see `evaluate_sequence` for the table of
what each one does, and `Protocol` for the individual switches.

Where this differs from pytracking's `calc_seq_err_robust` (CIA fork): NaN ground-truth rows make an invalid
frame in every protocol (pytracking raises outside UAV); `exclude_invalid_frames=True` drops invalid frames
from the numerators too. pytracking versions that call a frame valid only when all four GT values are > 0 (a
box touching x = 0 invalid) are not reproduced; the CIA fork's w > 0 and h > 0 is.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cia_jax.ops import boxes as box_ops

# Threshold sets. `i * step` reproduces torch.arange(0, 1.05, 0.05) exactly (0.15 -> 0.15000000000000002),
# which matters for the strict `>` at ties; linspace would give slightly different floats.
SUCCESS_THRESHOLDS = np.arange(21, dtype=np.float64) * 0.05
PRECISION_THRESHOLDS = np.arange(51, dtype=np.float64)  # pixels
NORM_PRECISION_THRESHOLDS = np.arange(51, dtype=np.float64) / 100.0
GOT10K_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # the GOT-10k toolkit's success curve
OP50_INDEX, OP75_INDEX = 10, 15  # SUCCESS_THRESHOLDS[10] == 0.5, [15] == 0.75
PRECISION_INDEX = 20  # 20 px
NORM_PRECISION_INDEX = 20  # 0.2

CURVE_KEYS = ("success_curve", "precision_curve", "norm_precision_curve")
SCALAR_KEYS = ("auc", "precision20", "norm_precision20", "norm_precision_auc", "op50", "op75", "ao", "sr50",
               "sr75")


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How one benchmark turns predictions and ground truth into per-frame errors.

  Attributes:
    name: protocol name.
    iou: "inclusive" (pytracking: side = min(x + w - 1) - max(x) + 1) or "continuous" (GOT-10k toolkit).
    first_frame: "ground_truth" (prediction frame 0 := GT frame 0 and counted, pytracking) or "exclude"
      (frame 0 not evaluated, GOT-10k toolkit).
    fill_zero_size: replace a prediction with w == 0 or h == 0 by the previous frame's (where the GT row
      has no NaN), as pytracking does before overwriting frame 0.
    length_mismatch: "pad" (longer: truncate; shorter: zero rows, which score as failures; both warn),
      "truncate_only" (longer: truncate with a warning; shorter: ValueError; pytracking's LaSOT) or "error".
    size_valid: a frame needs GT w > 0 and h > 0 to be valid (pytracking); the GOT-10k toolkit only uses the
      visibility (cover) flag.
    invalid_center_error: centre error written on invalid frames: +inf (a miss at every threshold) or -1
      (pytracking's UAV setting: `-1 <= t` makes invalid frames hits of the precision curve).
    invisible_inf: LaSOT: frames with visible == False get +inf centre and normalised centre errors (so they
      are misses), after the -1 of invalid frames.
    clip_to_image: clip both boxes to the image as the GOT-10k toolkit does (needs `image_size`).
    uses_visible: the benchmark's visibility flags take part (LaSOT occlusion / out-of-view, GOT-10k cover);
      pytracking ignores them for the other datasets.
  """

  name: str
  iou: str = "inclusive"
  first_frame: str = "ground_truth"
  fill_zero_size: bool = True
  length_mismatch: str = "pad"
  size_valid: bool = True
  invalid_center_error: float = math.inf
  invisible_inf: bool = False
  clip_to_image: bool = False
  uses_visible: bool = False

  @property
  def frame_pooled(self) -> bool:
    """True where the benchmark's headline numbers are AO / SR pooled over frames (GOT-10k)."""
    return self.first_frame == "exclude"


_PYTRACKING = Protocol(name="otb")
PROTOCOLS: dict[str, Protocol] = {
    # pytracking's generic protocol: OTB, NFS, TNL2K, TrackingNet (local), DTB70, VOT (as OPE), ...
    "otb": _PYTRACKING,
    "uav": dataclasses.replace(_PYTRACKING, name="uav", invalid_center_error=-1.0),
    "lasot": dataclasses.replace(
        _PYTRACKING, name="lasot", length_mismatch="truncate_only", invisible_inf=True, uses_visible=True),
    "got10k": Protocol(
        name="got10k", iou="continuous", first_frame="exclude", fill_zero_size=False, length_mismatch="error",
        size_valid=False, clip_to_image=True, uses_visible=True),
}
_ALIASES = {
    "pytracking": "otb", "otb100": "otb", "otb2015": "otb", "nfs": "otb", "nfs30": "otb", "tnl2k": "otb",
    "trackingnet": "otb", "dtb70": "otb", "vot": "otb", "tc128": "otb", "tcolor128": "otb", "uav123": "uav",
    "uav20l": "uav", "uav123_10fps": "uav", "lasot_extension_subset": "lasot", "lasot_ext": "lasot",
    "got-10k": "got10k", "got10k_val": "got10k",
}


def get_protocol(protocol: str | Protocol) -> Protocol:
  """The `Protocol` of a name: "otb", "uav", "lasot", "got10k" or an alias such as "nfs", "uav123"."""
  if isinstance(protocol, Protocol):
    return protocol
  key = str(protocol).lower()
  key = _ALIASES.get(key, key)
  if key not in PROTOCOLS:
    raise ValueError(
        f"protocol: unknown {protocol!r}; expected one of {sorted(PROTOCOLS)} or an alias {sorted(_ALIASES)}")
  return PROTOCOLS[key]


def _as_boxes(boxes: Any, arg: str) -> np.ndarray:
  boxes = np.array(boxes, dtype=np.float64)  # a copy: callers' arrays are never modified
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError(f"{arg}: expected [T, 4] boxes (x, y, w, h), got shape {boxes.shape}")
  return boxes


def iou_inclusive(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
  """pytracking IoU `[T]` of `[T, 4]` boxes, inclusive pixels: a box covers x .. x + w - 1.

  Intersection side = min(x + w - 1) - max(x) + 1 clamped at 0; union = w h + w' h' - intersection.
  NaN where the union is 0 or a box has NaN. As in pytracking, rounding in `x + w - 1 - x + 1` can put the IoU
  of identical boxes with non-integer coordinates a hair above 1 (a hit at the threshold 1.0).
  """
  tl = np.maximum(pred_xywh[:, :2], gt_xywh[:, :2])
  br = np.minimum(pred_xywh[:, :2] + pred_xywh[:, 2:] - 1.0, gt_xywh[:, :2] + gt_xywh[:, 2:] - 1.0)
  inter = np.prod(np.maximum(br - tl + 1.0, 0.0), axis=1)
  union = np.prod(pred_xywh[:, 2:], axis=1) + np.prod(gt_xywh[:, 2:], axis=1) - inter
  with np.errstate(invalid="ignore", divide="ignore"):
    return inter / union


def clip_boxes_to_image(box_xywh: np.ndarray, image_size: tuple[float, float]) -> np.ndarray:
  """GOT-10k toolkit clipping of `[T, 4]` boxes to an image of `image_size = (width, height)` pixels.

  x is clipped to [0, W], then w to [0, W - x] (same for y, h). Quirk reproduced: a box sticking out on the
  left keeps its width (x = -10, w = 20 becomes x = 0, w = 20, not w = 10).
  """
  width, height = float(image_size[0]), float(image_size[1])
  out = np.array(box_xywh, dtype=np.float64)
  out[:, 0] = np.clip(out[:, 0], 0.0, width)
  out[:, 1] = np.clip(out[:, 1], 0.0, height)
  out[:, 2] = np.clip(out[:, 2], 0.0, width - out[:, 0])
  out[:, 3] = np.clip(out[:, 3], 0.0, height - out[:, 1])
  return out


def iou_continuous(pred_xywh: np.ndarray, gt_xywh: np.ndarray,
                   image_size: tuple[float, float] | None = None) -> np.ndarray:
  """GOT-10k toolkit IoU `[T]` of `[T, 4]` boxes: continuous corners x2 = x + w, 0 for an empty union.

  With `image_size = (width, height)` both boxes are first clipped as the toolkit does
  (`clip_boxes_to_image`).
  """
  if image_size is not None:
    pred_xywh, gt_xywh = clip_boxes_to_image(pred_xywh, image_size), clip_boxes_to_image(gt_xywh, image_size)
  return np.clip(box_ops.iou_xywh(pred_xywh, gt_xywh), 0.0, 1.0)


def center_error(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
  """Euclidean distance `[T]` in pixels between the centres x + (w - 1) / 2 of `[T, 4]` boxes."""
  return np.linalg.norm(box_ops.center_xywh(pred_xywh) - box_ops.center_xywh(gt_xywh), axis=1)


def normalized_center_error(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
  """Centre distance `[T]` after dividing both centres by the GT (w, h) per axis (unitless)."""
  with np.errstate(invalid="ignore", divide="ignore"):
    diff = (box_ops.center_xywh(pred_xywh) - box_ops.center_xywh(gt_xywh)) / gt_xywh[:, 2:]
  return np.linalg.norm(diff, axis=1)


def success_curve(iou: np.ndarray, thresholds: np.ndarray = SUCCESS_THRESHOLDS,
                  num_frames: int | None = None) -> np.ndarray:
  """Rates `[K]` = #(iou > t) / num_frames per threshold (strict `>`); num_frames defaults to len(iou)."""
  iou = np.asarray(iou, dtype=np.float64)
  count = (iou[:, None] > thresholds[None, :]).sum(axis=0)
  return count / float(len(iou) if num_frames is None else num_frames)


def precision_curve(error: np.ndarray, thresholds: np.ndarray = PRECISION_THRESHOLDS,
                    num_frames: int | None = None) -> np.ndarray:
  """Rates `[K]` = #(error <= t) / num_frames for each threshold; num_frames defaults to len(error)."""
  error = np.asarray(error, dtype=np.float64)
  count = (error[:, None] <= thresholds[None, :]).sum(axis=0)
  return count / float(len(error) if num_frames is None else num_frames)


def prepare_predictions(pred_xywh: Any, gt_xywh: Any, protocol: str | Protocol = "otb",
                        name: str = "sequence") -> np.ndarray:
  """Applies the protocol's length handling, zero-size fill and first-frame rule; returns `[T, 4]` boxes.

  Order as in pytracking: truncate a longer prediction, fill zero-size rows from the previous row (the
  original frame 0 can be a source), zero-pad a shorter prediction (padded rows stay failures), then
  overwrite frame 0 with the ground truth. Non-finite values or negative sizes in the frames that are
  evaluated raise a ValueError naming the sequence and the frame.
  """
  proto = get_protocol(protocol)
  pred = _as_boxes(pred_xywh, f"{name}: predictions")
  gt = _as_boxes(gt_xywh, f"{name}: ground truth")
  num_gt, num_pred = len(gt), len(pred)
  if num_gt == 0:
    raise ValueError(f"{name}: empty ground truth")
  if num_pred != num_gt:
    what = f"{name}: the prediction has {num_pred} rows, the ground truth {num_gt}"
    if proto.length_mismatch == "error" or (proto.length_mismatch == "truncate_only" and num_pred < num_gt):
      raise ValueError(f"{what}; protocol {proto.name!r} needs one prediction per ground-truth frame")
    action = "extra rows dropped" if num_pred > num_gt else "missing frames count as failures (zero boxes)"
    warnings.warn(f"{what}; {action} (protocol {proto.name!r})", stacklevel=2)
    pred = pred[:num_gt]
  first = 1  # frame 0 is overwritten or excluded in every protocol
  bad = ~np.isfinite(pred[first:]).all(axis=1) | (pred[first:, 2:] < 0.0).any(axis=1)
  if bad.any():
    i = int(np.argmax(bad)) + first
    raise ValueError(f"{name}: prediction frame {i} (0-based) is not a valid box: {pred[i].tolist()}")
  if proto.fill_zero_size and len(pred) > 1:
    replace = (pred[:, 2:] == 0.0).any(axis=1) & ~np.isnan(gt[:len(pred)]).any(axis=1)
    replace[0] = False
    source = np.maximum.accumulate(np.where(replace, 0, np.arange(len(pred))))
    pred = pred[source]
  if len(pred) < num_gt:
    pred = np.concatenate([pred, np.zeros((num_gt - len(pred), 4))], axis=0)
  if proto.first_frame == "ground_truth":
    pred[0] = gt[0]
  return pred


def evaluate_sequence(pred_xywh: Any, gt_xywh: Any, valid: Any = None, protocol: str | Protocol = "otb", *,
                      exclude_invalid_frames: bool = False, image_size: tuple[float, float] | None = None,
                      name: str = "sequence") -> dict[str, Any]:
  """Per-sequence metrics of one tracker run.

  Args:
    pred_xywh: `[N, 4]` predicted boxes (x, y, w, h) in pixels, one row per frame (N may differ from T,
      see the table).
    gt_xywh: `[T, 4]` ground truth; NaN rows where the benchmark has no box.
    valid: optional `[T]` bool visibility flags (LaSOT: not full_occlusion and not out_of_view; GOT-10k:
      cover > 0). A frame is valid when its GT row is finite, has w > 0 and h > 0 (not for got10k) and its
      flag is True.
    protocol: a name in `PROTOCOLS` (or alias) or a `Protocol`:

      | protocol | IoU | frame 0 | invalid frame: IoU / centre err / norm err | denominator (default) |
      |----------|-----|---------|--------------------------------------------|-----------------------|
      | otb (nfs, tnl2k, trackingnet, dtb70, ...) | inclusive | := GT, counted | -1 / +inf / -1 | T |
      | uav (uav123, uav20l) | inclusive | := GT, counted | -1 / -1 / -1 | T |
      | lasot | inclusive | := GT, counted | -1 / +inf / -1; not visible: +inf / +inf | T |
      | got10k | continuous, clipped to image | excluded | excluded from everything | evaluated frames |

      Length mismatch: otb/uav truncate or zero-pad with a warning, lasot truncates but raises when the
      prediction is shorter, got10k raises. Zero-size predictions are replaced by the previous frame's
      (not got10k). Quirks reproduced from pytracking (exclude_invalid_frames=False): invalid frames stay
      in the denominator, so they are misses of the success curve; but an error of -1 satisfies
      `err <= t` for every t >= 0, so they are *hits* of the normalised-precision curve (all but lasot's
      invisible frames) and of uav's precision curve.
    exclude_invalid_frames: drop invalid frames from numerator and denominator of every curve (pytracking's
      own flag of that name only shrinks the denominator and keeps the -1 hits; this one does not).
      got10k always excludes them.
    image_size: (width, height) in pixels, for got10k's clipping; None skips the clipping.
    name: sequence name for error messages.

  Returns:
    dict with `success_curve` [21], `auc`, `precision_curve` [51], `precision20`, `norm_precision_curve` [51],
    `norm_precision20`, `norm_precision_auc`, `op50`, `op75`, `ao`, `sr50`, `sr75` (rates in [0, 1]; ao / sr
    over the valid frames, NaN if there are none), `num_frames`, `num_valid`, and per frame `iou` [T],
    `center_error` [T], `norm_center_error` [T] (with the invalid-frame values above) and `valid` [T].
  """
  proto = get_protocol(protocol)
  gt = _as_boxes(gt_xywh, f"{name}: ground truth")
  pred = prepare_predictions(pred_xywh, gt, proto, name=name)
  num_frames = len(gt)
  visible, ok = _evaluated_frames(gt, valid, proto, name)
  if proto.iou == "inclusive":
    iou = iou_inclusive(pred, gt)
  else:
    iou = iou_continuous(pred, gt, image_size if proto.clip_to_image else None)
  cerr = center_error(pred, gt)
  nerr = normalized_center_error(pred, gt)
  iou[~ok] = -1.0
  cerr[~ok] = proto.invalid_center_error
  nerr[~ok] = -1.0
  if proto.invisible_inf:
    cerr[~visible] = np.inf
    nerr[~visible] = np.inf

  num_valid = int(ok.sum())
  if exclude_invalid_frames or proto.frame_pooled:
    curve_iou, curve_cerr, curve_nerr, denominator = iou[ok], cerr[ok], nerr[ok], num_valid
  else:
    curve_iou, curve_cerr, curve_nerr, denominator = iou, cerr, nerr, num_frames
  if denominator == 0:
    raise ValueError(f"{name}: no valid frame to evaluate (protocol {proto.name!r})")

  scores = _scores(curve_iou, curve_cerr, curve_nerr, denominator, iou[ok])
  return {**scores, "num_frames": num_frames, "num_valid": num_valid, "iou": iou, "center_error": cerr,
          "norm_center_error": nerr, "valid": ok}


def _evaluated_frames(gt: np.ndarray, valid: Any, proto: Protocol, name: str) -> tuple[np.ndarray, np.ndarray]:
  """(visible `[T]`, evaluated `[T]`) bools of ground truth `[T, 4]`; see `evaluate_sequence` for the rules."""
  num_frames = len(gt)
  if valid is None:
    visible = np.ones(num_frames, dtype=bool)
  else:
    visible = np.asarray(valid, dtype=bool)
    if visible.shape != (num_frames,):
      raise ValueError(f"{name}: valid must be [{num_frames}] bools, got shape {visible.shape}")
  ok = np.isfinite(gt).all(axis=1) & visible
  if proto.size_valid:
    ok &= (gt[:, 2] > 0.0) & (gt[:, 3] > 0.0)
  if proto.first_frame == "exclude":
    ok[0] = False
  return visible, ok


def _scores(curve_iou: np.ndarray, curve_cerr: np.ndarray, curve_nerr: np.ndarray, denominator: int,
            valid_iou: np.ndarray) -> dict[str, Any]:
  """The curves and scalar scores of `evaluate_sequence` from the per-frame values that enter the curves."""
  succ = success_curve(curve_iou, SUCCESS_THRESHOLDS, denominator)
  prec = precision_curve(curve_cerr, PRECISION_THRESHOLDS, denominator)
  nprec = precision_curve(curve_nerr, NORM_PRECISION_THRESHOLDS, denominator)
  empty = len(valid_iou) == 0
  return {
      "success_curve": succ,
      "auc": float(succ.mean()),
      "precision_curve": prec,
      "precision20": float(prec[PRECISION_INDEX]),
      "norm_precision_curve": nprec,
      "norm_precision20": float(nprec[NORM_PRECISION_INDEX]),
      "norm_precision_auc": float(nprec.mean()),
      "op50": float(succ[OP50_INDEX]),
      "op75": float(succ[OP75_INDEX]),
      "ao": math.nan if empty else float(valid_iou.mean()),
      "sr50": math.nan if empty else float((valid_iou > 0.5).mean()),
      "sr75": math.nan if empty else float((valid_iou > 0.75).mean()),
  }


def _runs(entry: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
  runs = [entry] if isinstance(entry, Mapping) else list(entry)
  if not runs:
    raise ValueError("summarize: a sequence has no runs")
  return runs


def merge_runs(entry: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Averages the curves and scalars of several runs of one sequence (pytracking's `merge_results`)."""
  runs = _runs(entry)
  merged = {k: np.mean([r[k] for r in runs], axis=0) for k in CURVE_KEYS}
  for k in SCALAR_KEYS:
    merged[k] = float(np.mean([r[k] for r in runs]))
  merged["num_frames"] = runs[0]["num_frames"]
  merged["num_valid"] = runs[0]["num_valid"]
  merged["num_runs"] = len(runs)
  return merged


def summarize(results: Sequence[Mapping[str, Any] | Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
  """Dataset metrics from `evaluate_sequence` outputs, one entry per sequence (a dict, or a list of runs).

  Curves are averaged over runs, then over sequences; `auc`, `precision20`, `norm_precision20`,
  `norm_precision_auc`, `op50`, `op75` are read off the averaged curves (pytracking's report). `ao`, `sr50`,
  `sr75` and `pooled_success_curve` [101] (thresholds `GOT10K_THRESHOLDS`) pool the IoUs of the valid frames
  of every sequence and run (the GOT-10k toolkit). All in [0, 1].
  """
  if not results:
    raise ValueError("summarize: no sequences")
  per_seq = [merge_runs(e) for e in results]
  curves = {k: np.mean([s[k] for s in per_seq], axis=0) for k in CURVE_KEYS}
  pooled = np.concatenate([np.asarray(r["iou"])[np.asarray(r["valid"])] for e in results for r in _runs(e)])
  empty = len(pooled) == 0
  nan = math.nan
  return {
      **curves,
      "auc": float(curves["success_curve"].mean()),
      "precision20": float(curves["precision_curve"][PRECISION_INDEX]),
      "norm_precision20": float(curves["norm_precision_curve"][NORM_PRECISION_INDEX]),
      "norm_precision_auc": float(curves["norm_precision_curve"].mean()),
      "op50": float(curves["success_curve"][OP50_INDEX]),
      "op75": float(curves["success_curve"][OP75_INDEX]),
      "ao": nan if empty else float(pooled.mean()),
      "sr50": nan if empty else float((pooled > 0.5).mean()),
      "sr75": nan if empty else float((pooled > 0.75).mean()),
      "pooled_success_curve": np.full(len(GOT10K_THRESHOLDS), nan) if empty else
                              success_curve(pooled, GOT10K_THRESHOLDS),
      "num_sequences": len(per_seq),
  }
