"""Independent float64 references of the benchmark metrics, written frame by frame from spec section 7.

Plain Python loops over frames and thresholds (no vectorisation, no code shared with cia_jax.evaluation),
so the vectorised implementation is checked against a second reading of the equations.
"""

from __future__ import annotations

import math

SUCCESS_T = [0.05 * i for i in range(21)]
PRECISION_T = [float(i) for i in range(51)]
NORM_T = [i / 100.0 for i in range(51)]


def _isnan_row(row):
  return any(math.isnan(v) for v in row)


def pytracking_errors(pred, gt, dataset="otb", visible=None):
  """Per-frame (iou, centre error, normalised error, valid) lists with pytracking's conventions.

  `dataset` is "otb" (generic), "uav" or "lasot". `pred` must not be shorter than `gt` for lasot.
  """
  pred = [list(map(float, r)) for r in pred]
  gt = [list(map(float, r)) for r in gt]
  n = len(gt)
  pred = pred[:n]
  for i in range(1, len(pred)):  # zero-size fill before padding and before frame 0 is overwritten
    if (pred[i][2] == 0.0 or pred[i][3] == 0.0) and not _isnan_row(gt[i]):
      pred[i] = list(pred[i - 1])
  while len(pred) < n:
    pred.append([0.0, 0.0, 0.0, 0.0])
  pred[0] = list(gt[0])
  ious, cerrs, nerrs, valids = [], [], [], []
  for i in range(n):
    x, y, w, h = pred[i]
    gx, gy, gw, gh = gt[i]
    vis = True if visible is None else bool(visible[i])
    valid = (gw > 0.0) and (gh > 0.0) and vis  # NaN > 0 is False
    if valid:
      ix = max(0.0, min(x + w - 1.0, gx + gw - 1.0) - max(x, gx) + 1.0)
      iy = max(0.0, min(y + h - 1.0, gy + gh - 1.0) - max(y, gy) + 1.0)
      inter = ix * iy
      iou = inter / (w * h + gw * gh - inter)
      pcx, pcy = x + (w - 1.0) / 2.0, y + (h - 1.0) / 2.0
      gcx, gcy = gx + (gw - 1.0) / 2.0, gy + (gh - 1.0) / 2.0
      cerr = math.hypot(pcx - gcx, pcy - gcy)
      nerr = math.hypot(pcx / gw - gcx / gw, pcy / gh - gcy / gh)
    else:
      iou, nerr = -1.0, -1.0
      cerr = -1.0 if dataset == "uav" else math.inf
    if dataset == "lasot" and not vis:
      cerr, nerr = math.inf, math.inf
    ious.append(iou)
    cerrs.append(cerr)
    nerrs.append(nerr)
    valids.append(valid)
  return ious, cerrs, nerrs, valids


def rates(values, thresholds, keep, denominator, success):
  out = []
  for t in thresholds:
    hits = 0
    for v, k in zip(values, keep):
      if k and ((v > t) if success else (v <= t)):
        hits += 1
    out.append(hits / denominator)
  return out


def pytracking_sequence(pred, gt, dataset="otb", visible=None, exclude_invalid=False):
  """Curves and scalars of one sequence: dict like `evaluate_sequence` (lists instead of arrays)."""
  ious, cerrs, nerrs, valids = pytracking_errors(pred, gt, dataset, visible)
  keep = valids if exclude_invalid else [True] * len(ious)
  den = sum(keep)
  succ = rates(ious, SUCCESS_T, keep, den, True)
  prec = rates(cerrs, PRECISION_T, keep, den, False)
  norm = rates(nerrs, NORM_T, keep, den, False)
  vi = [v for v, ok in zip(ious, valids) if ok]
  return {
      "success_curve": succ, "auc": sum(succ) / len(succ), "precision_curve": prec, "precision20": prec[20],
      "norm_precision_curve": norm, "norm_precision20": norm[20], "norm_precision_auc": sum(norm) / len(norm),
      "op50": succ[10], "op75": succ[15],
      "ao": sum(vi) / len(vi) if vi else math.nan,
      "sr50": sum(v > 0.5 for v in vi) / len(vi) if vi else math.nan,
      "sr75": sum(v > 0.75 for v in vi) / len(vi) if vi else math.nan,
      "iou": ious, "valid": valids,
  }


def got10k_iou(a, b, size=None):
  """Toolkit IoU of two boxes with continuous corners, after its clipping rule when `size` = (W, H)."""
  a, b = list(map(float, a)), list(map(float, b))
  if size is not None:
    for r in (a, b):
      r[0] = min(max(r[0], 0.0), size[0])
      r[1] = min(max(r[1], 0.0), size[1])
      r[2] = min(max(r[2], 0.0), size[0] - r[0])
      r[3] = min(max(r[3], 0.0), size[1] - r[1])
  iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
  inter = iw * ih
  union = a[2] * a[3] + b[2] * b[3] - inter
  return inter / union if union > 0 else 0.0


def got10k_frame_ious(pred, gt, cover, size=None):
  """IoUs of the evaluated frames of one sequence: frame 0 and cover == 0 frames left out."""
  return [got10k_iou(pred[i], gt[i], size) for i in range(1, len(gt)) if cover[i] > 0]
