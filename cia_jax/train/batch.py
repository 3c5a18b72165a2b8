"""Random batches with exactly the training-step layout (for tests and benchmarks; no image decoding).

Boxes are plausible target boxes near the crop centre, labels are the real Gaussian labels of those
boxes, and proposals are jittered boxes with their true IoU targets, so the losses are meaningful.
"""

from __future__ import annotations

import numpy as np

from cia_jax.ops import boxes as box_ops
from cia_jax.ops.image import gaussian_label


def random_batch(seed: int, batch_size: int, image_size: int, feature_stride: int = 16,
                 num_train: int = 3, num_test: int = 3, num_proposals: int = 8, proposal_mode: str = "mse",
                 search_area_factor: float = 5.0, num_classes: int = 70) -> dict[str, np.ndarray]:
  """A batch of `batch_size` sequences in the sequence-major layout of `cia_jax.train.step`.

  Returns NumPy arrays: train/test images `[B, N, S, S, 3]` (standard normal, i.e. already normalised),
  boxes `[B, N, 4]` (xywh, crop pixels), `test_label [B, Nte, f+1, f+1]`, proposals `[B, Nte, P, 4]` with
  `proposal_iou` (2 IoU - 1) or KL densities, and `category_id [B]` (some -1).
  """
  rng = np.random.default_rng(seed)
  s = image_size
  feat = s // feature_stride
  n = num_train + num_test
  size = rng.uniform(0.15, 0.3, size=(batch_size, n, 2)) * s
  centre = s / 2 + rng.uniform(-0.15, 0.15, size=(batch_size, n, 2)) * s
  box = np.concatenate([centre - size / 2, size], axis=-1).astype(np.float32)
  # Images with a bright blob on the target so the classifier has something to find.
  yy, xx = np.mgrid[0:s, 0:s]
  images = rng.normal(size=(batch_size, n, s, s, 3)).astype(np.float32) * 0.5
  cx, cy = centre[..., 0], centre[..., 1]
  blob = np.exp(-(((xx - cx[..., None, None]) / (size[..., 0, None, None] / 2)) ** 2
                  + ((yy - cy[..., None, None]) / (size[..., 1, None, None] / 2)) ** 2))
  images += 2.0 * blob[..., None].astype(np.float32)
  test_box = box[:, num_train:]
  sigma = 0.25 / search_area_factor
  label = np.asarray(gaussian_label(test_box, sigma, feat, s), dtype=np.float32)
  jitter = rng.normal(size=(batch_size, num_test, num_proposals, 4)) * 0.1
  wh = test_box[..., None, 2:]
  prop = np.concatenate([test_box[..., None, :2] + jitter[..., :2] * wh, wh * np.exp(jitter[..., 2:])], axis=-1)
  prop = prop.astype(np.float32)
  iou = box_ops.iou_xywh(prop, test_box[..., None, :]).astype(np.float32)
  out = {
      "train_images": images[:, :num_train], "test_images": images[:, num_train:],
      "train_box_xywh": box[:, :num_train], "test_box_xywh": test_box, "test_label": label,
      "test_proposals_xywh": prop,
      "category_id": rng.integers(-1, num_classes, size=batch_size).astype(np.int32),
  }
  if proposal_mode == "mse":
    out["proposal_iou"] = 2.0 * iou - 1.0
  elif proposal_mode == "kl":
    out["proposal_density"] = np.full(iou.shape, 1.0, np.float32)
    out["gt_density"] = np.exp(-np.sum(jitter ** 2, axis=-1) / (2 * 0.05 ** 2)).astype(np.float32)
  else:
    raise ValueError(f"random_batch: proposal_mode must be 'mse' or 'kl', got {proposal_mode!r}")
  return out
