"""IoU-Net training targets of a test frame: proposals around the ground truth (design.md §3.4).

`mse_proposals` (DiMP18 / CIA18: IoU targets) and `kl_proposals` (SuperDiMP / CIA50: densities). The
classifier's Gaussian label is `cia_jax.ops.image.gaussian_label`, shared with the tracker side.
"""

from __future__ import annotations

import math
from typing import Any, Sequence as SequenceT

import numpy as np

from cia_jax.data.processing.crop import validated_box
from cia_jax.ops.boxes import iou_xywh


def mse_proposals(box_xywh: Any, rng: np.random.Generator, num_proposals: int = 8, min_iou: float = 0.1,
                  sigma_factors: SequenceT[float] = (0.01, 0.05, 0.1, 0.2, 0.3),
                  max_tries: int = 100) -> tuple[np.ndarray, np.ndarray]:
  """DiMP IoU-Net proposals around a ground-truth box and their IoUs (design.md §3.4, MSE variant).

  Per proposal: sigma ~ uniform choice of `sigma_factors`, std = sqrt(w h) * sigma for each of (cx, cy, w, h);
  draw around the box; a drawn w (h) <= 1 becomes w * U(0.15, 0.5); round the (x, y, w, h) box to integers; a
  rounded w (h) <= 1 becomes w * U(0.15, 0.5); accept if IoU > min_iou, else shrink std by 0.9 and retry
  (at most `max_tries` draws, then keep the last). Proposals are drawn vectorised, each with its own retries.

  Args:
    box_xywh: `[4]` ground truth (crop pixels).
    rng: NumPy generator.
    num_proposals, min_iou, sigma_factors, max_tries: see `ProcessingConfig`.

  Returns:
    (proposals `[P, 4]` float64 xywh, IoU with the ground truth `[P]` float64; the regression target is
    2 IoU - 1).
  """
  box = validated_box(box_xywh)
  p = int(num_proposals)
  std = np.sqrt(box[2] * box[3]) * rng.choice(np.asarray(sigma_factors, np.float64), size=p)
  proposals = np.zeros((p, 4))
  ious = np.zeros(p)
  todo = np.ones(p, bool)
  center = box[:2] + 0.5 * box[2:]
  for _ in range(int(max_tries)):
    idx = np.flatnonzero(todo)
    if idx.size == 0:
      break
    s = std[idx, None]
    c = rng.normal(center, s, size=(idx.size, 2))
    wh = rng.normal(box[2:], s, size=(idx.size, 2))
    wh = np.where(wh <= 1, box[2:] * rng.uniform(0.15, 0.5, size=(idx.size, 2)), wh)
    cand = np.round(np.concatenate([c - 0.5 * wh, wh], axis=1))
    small = box[2:] * rng.uniform(0.15, 0.5, size=(idx.size, 2))
    cand[:, 2:] = np.where(cand[:, 2:] <= 1, small, cand[:, 2:])
    iou = iou_xywh(box[None], cand)
    proposals[idx], ious[idx] = cand, iou
    todo[idx[iou > min_iou]] = False
    std[idx] *= 0.9
  return proposals, ious


def _gauss_density(x: np.ndarray, std: np.ndarray) -> np.ndarray:
  return np.exp(-0.5 * (x / std) ** 2) / (math.sqrt(2.0 * math.pi) * std)


def kl_proposals(box_xywh: Any, rng: np.random.Generator, num_proposals: int = 128,
                 proposal_sigma: SequenceT[SequenceT[float]] = ((0.05, 0.05), (0.5, 0.5)),
                 gt_sigma: SequenceT[float] = (0.05, 0.05)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """SuperDiMP proposals from a Gaussian mixture with their densities (design.md §3.4, KL variant).

  Relative coordinates r = (cx / w0, cy / h0, log w, log h) (w0, h0 = ground-truth size, cx = x + w/2).
  Each proposal picks one of the K equal-weight components (stds (c, c, s, s) per component) and draws
  r = r_gt + offset. proposal density q = mean_k prod_d N(offset_d; 0, std_kd); ground-truth density
  p = prod_d N(offset_d; 0, gt_std_d), gt_std = (c, c, s, s) of `gt_sigma`.

  Args:
    box_xywh: `[4]` ground truth (crop pixels).
    rng: NumPy generator.
    num_proposals: P.
    proposal_sigma: K (centre std, size std) pairs.
    gt_sigma: (centre std, size std) of the ground-truth density.

  Returns:
    (proposals `[P, 4]` float64 xywh, proposal density `[P]`, ground-truth density `[P]`).
  """
  box = validated_box(box_xywh)
  if box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"kl_proposals: box_xywh must have a positive size, got {box.tolist()}")
  wh0 = box[2:]
  mean_rel = np.concatenate([(box[:2] + 0.5 * wh0) / wh0, np.log(wh0)])
  stds = np.asarray([[c, c, s, s] for c, s in proposal_sigma], np.float64)  # [K, 4]
  gc, gs = gt_sigma
  gt_std = np.asarray([gc, gc, gs, gs], np.float64)
  comp = rng.integers(stds.shape[0], size=int(num_proposals))
  offset = rng.standard_normal((int(num_proposals), 4)) * stds[comp]
  rel = mean_rel + offset
  wh = np.exp(rel[:, 2:])
  proposals = np.concatenate([rel[:, :2] * wh0 - 0.5 * wh, wh], axis=1)
  q = np.prod(_gauss_density(offset[:, None, :], stds[None]), axis=-1).mean(axis=-1)
  p = np.prod(_gauss_density(offset, gt_std), axis=-1)
  return proposals, q, p
