"""`process_sample`: the composed per-sample processing of the reference's DiMP training (design.md §4.9).

Order of the random draws (all from the one `np.random.Generator`, so a sample is a pure function of its seed):
the joint rolls (grayscale, then the full-frame flip), then per train frame and per test frame in turn: the box
jitter (`jitter_box`), the brightness factor and the per-crop flip; then the test frames' proposals.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence as SequenceT

import numpy as np

from cia_jax.data.processing.config import ProcessingConfig
from cia_jax.data.processing.crop import crop_with_jitter
from cia_jax.data.processing.photometric import grayscale, hflip_box_xywh, hflip_image, normalize
from cia_jax.data.processing.targets import kl_proposals, mse_proposals
from cia_jax.ops.dtypes import to_float32_ftz
from cia_jax.ops.image import gaussian_label


def output_specs(cfg: ProcessingConfig, num_train: int = 3,
                 num_test: int = 3) -> dict[str, tuple[tuple, Any]]:
  """Name -> (shape, dtype) of the arrays `process_sample` returns (one sample, frames first)."""
  s, n, l = int(cfg.output_sz), int(cfg.proposals_per_frame), cfg.label_sz
  specs = {
      "train_images": ((num_train, s, s, 3), np.float32),
      "test_images": ((num_test, s, s, 3), np.float32),
      "train_box_xywh": ((num_train, 4), np.float32),
      "test_box_xywh": ((num_test, 4), np.float32),
      "test_label": ((num_test, l, l), np.float32),
      "test_proposals_xywh": ((num_test, n, 4), np.float32),
  }
  if cfg.proposal_mode == "mse":
    specs["proposal_iou"] = ((num_test, n), np.float32)
  else:
    specs["proposal_density"] = ((num_test, n), np.float32)
    specs["gt_density"] = ((num_test, n), np.float32)
  return specs


@dataclasses.dataclass
class _JointRolls:
  """The transforms rolled once per sample and shared by all its frames.

  Attributes:
    grayscale: convert every crop to grayscale.
    hflip: mirror every full frame (and its box) before cropping.
    flipped: id(frame) -> its mirrored copy, so a frame used twice in a sample is flipped once.
  """

  grayscale: bool
  hflip: bool
  flipped: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

  @classmethod
  def roll(cls, rng: np.random.Generator, cfg: ProcessingConfig) -> _JointRolls:
    # Both are always drawn, so the random streams of samples stay aligned whatever the probabilities.
    gray = rng.random() < cfg.grayscale_prob
    return cls(grayscale=gray, hflip=rng.random() < cfg.joint_hflip_prob)

  def frame(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not self.hflip:
      return image, box
    key = id(image)
    if key not in self.flipped:
      self.flipped[key] = hflip_image(image)
    return self.flipped[key], hflip_box_xywh(box, image.shape[1])


def _crops(images: SequenceT[np.ndarray], boxes: np.ndarray, center_jitter: float, scale_jitter: float,
           joint: _JointRolls, rng: np.random.Generator, cfg: ProcessingConfig) -> tuple[np.ndarray, np.ndarray]:
  """Normalised `[N, S, S, 3]` float32 crops of the frames and their `[N, 4]` float64 boxes in crop pixels."""
  s = int(cfg.output_sz)
  crops = np.empty((len(images), s, s, 3), np.float32)  # filled in place: no stacking copy
  out_boxes = []
  for i, (image, box) in enumerate(zip(images, boxes)):
    image, box = joint.frame(image, box)
    crop, box_c, _ = crop_with_jitter(
        image, box, rng, search_area_factor=cfg.search_area_factor, output_sz=s, center_jitter=center_jitter,
        scale_jitter=scale_jitter, crop_type=cfg.crop_type, max_scale_change=cfg.max_scale_change)
    if joint.grayscale:
      crop = grayscale(crop)
    b = cfg.brightness_jitter
    brightness = rng.uniform(max(0.0, 1.0 - b), 1.0 + b)
    if rng.random() < cfg.hflip_prob:
      crop, box_c = hflip_image(crop), hflip_box_xywh(box_c, s)
    normalize(crop, brightness, cfg.mean, cfg.std, out=crops[i])
    out_boxes.append(box_c)
  return crops, np.stack(out_boxes)


def _proposal_targets(test_boxes: np.ndarray, rng: np.random.Generator,
                      cfg: ProcessingConfig) -> dict[str, np.ndarray]:
  """IoU-Net proposals of the test frames (crop pixels) and their 'mse' or 'kl' targets, float32."""
  if cfg.proposal_mode == "mse":
    props = [mse_proposals(b, rng, cfg.proposals_per_frame, cfg.proposal_min_iou, cfg.proposal_sigma_factors,
                           cfg.proposal_max_tries) for b in test_boxes]
    return {"test_proposals_xywh": to_float32_ftz(np.stack([p for p, _ in props])),
            "proposal_iou": to_float32_ftz(np.stack([2.0 * iou - 1.0 for _, iou in props]))}
  props = [kl_proposals(b, rng, cfg.proposals_per_frame, cfg.kl_proposal_sigma, cfg.kl_gt_sigma)
           for b in test_boxes]
  return {"test_proposals_xywh": to_float32_ftz(np.stack([p for p, _, _ in props])),
          "proposal_density": to_float32_ftz(np.stack([q for _, q, _ in props])),
          "gt_density": to_float32_ftz(np.stack([g for _, _, g in props]))}


def process_sample(train_images: SequenceT[np.ndarray], train_boxes_xywh: Any,
                   test_images: SequenceT[np.ndarray], test_boxes_xywh: Any, rng: np.random.Generator,
                   cfg: ProcessingConfig) -> dict[str, np.ndarray]:
  """Turn the frames of one sample into network inputs and targets (the reference's DiMP processing).

  Args:
    train_images, test_images: lists of `[H, W, 3]` uint8 RGB full frames (sizes may differ; the same
      array may appear several times).
    train_boxes_xywh, test_boxes_xywh: `[N, 4]` ground-truth boxes in image pixels.
    rng: NumPy generator; the result is a pure function of its state and the inputs.
    cfg: `ProcessingConfig`.

  Returns:
    dict of float32 arrays, frames first (see `output_specs`):
      train_images / test_images `[N, S, S, 3]` normalised crops; train_box_xywh / test_box_xywh `[N, 4]`
      in crop pixels; test_label `[N, L, L]`; test_proposals_xywh `[N, P, 4]` in crop pixels; and
      'mse': proposal_iou `[N, P]` = the regression target 2 IoU - 1 in [-1, 1] (the reference's
      `proposal_iou`); 'kl': proposal_density and gt_density `[N, P]`.
  """
  train_boxes = np.asarray(train_boxes_xywh, np.float64).reshape(-1, 4)
  test_boxes = np.asarray(test_boxes_xywh, np.float64).reshape(-1, 4)
  if len(train_images) != len(train_boxes) or len(test_images) != len(test_boxes):
    raise ValueError(f"process_sample: {len(train_images)} train / {len(test_images)} test images but "
                     f"{len(train_boxes)} / {len(test_boxes)} boxes")
  joint = _JointRolls.roll(rng, cfg)
  train_x, train_b = _crops(train_images, train_boxes, cfg.center_jitter_train, cfg.scale_jitter_train, joint,
                            rng, cfg)
  test_x, test_b = _crops(test_images, test_boxes, cfg.center_jitter_test, cfg.scale_jitter_test, joint, rng, cfg)
  out = {
      "train_images": train_x,
      "test_images": test_x,
      "train_box_xywh": to_float32_ftz(train_b),
      "test_box_xywh": to_float32_ftz(test_b),
      "test_label": gaussian_label(test_b, cfg.label_sigma_factor, cfg.feature_sz, int(cfg.output_sz),
                                   cfg.label_kernel_sz, cfg.label_end_pad),
  }
  out.update(_proposal_targets(test_b, rng, cfg))
  return out
