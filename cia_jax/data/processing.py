"""DiMP training-sample processing as small named NumPy/OpenCV ops (spec 4.9, 2.5, 3.4).

Every op is a pure function of its inputs and an explicit `np.random.Generator`; `process_sample` composes
them in the reference's order:

1. joint transforms, rolled once per sample and applied to all 6 frames: grayscale (p = 0.05) and, for
   CIA50/SuperDiMP, a horizontal flip of the full frames (p = 0.5);
2. per frame: `jitter_box` (train or test jitter) -> `crop_box_xywh` (square crop of side
   ceil(sqrt(w h) * search_area_factor), 'replicate' / 'inside' / 'inside_major' modes) -> `crop_and_resize`
   (replicate padding, cv2 bilinear) and `box_to_crop` for the ground truth;
3. per crop, rolled independently: grayscale (the joint decision), brightness factor U(0.8, 1.2), horizontal
   flip (CIA50/SuperDiMP, p = 0.5), `normalize`;
4. test frames: `gaussian_label` (spec 2.5) and IoU-Net proposals, `mse_proposals` (8, target 2 IoU - 1) or
   `kl_proposals` (128, proposal and ground-truth densities) (spec 3.4).

Conventions: images are `[H, W, 3]` uint8 RGB; boxes are `[x, y, w, h]` in 0-based pixels with continuous
corners (x2 = x + w, centre x + w / 2) for crops, labels and IoUs (`cia_jax.ops.boxes`). A horizontal flip of
an image of width W maps u -> W - 1 - u, so a box's x becomes W - 1 - x - w (spec 4.9).

Grayscale is applied to the crop rather than to the full frame (the reference's order): the conversion is per
pixel, so the two differ only by uint8 rounding inside the bilinear resize, and the crop is ~10x cheaper.

`as_tf_op` wraps any op as a TensorFlow op (`tf.numpy_function` with static output shapes) so the ops run the
same way eagerly and inside `tf.data.Dataset.map`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence as SequenceT

import cv2
import numpy as np

from cia_jax.ops.boxes import iou_xywh
from cia_jax.ops.dtypes import to_float32_ftz
from cia_jax.ops.image import IMAGENET_MEAN, IMAGENET_STD, gaussian_label
CROP_TYPES = ("replicate", "inside", "inside_major")
PROPOSAL_MODES = ("mse", "kl")


@dataclasses.dataclass(frozen=True)
class ProcessingConfig:
  """Every processing setting of the spec 4.9 table (defaults = CIA18 / DiMP18).

  Attributes:
    search_area_factor: crop side / sqrt(w h) of the jittered box (5.0; 6.0 for CIA50).
    output_sz: crop side in pixels after resizing (288; 352).
    center_jitter_train, center_jitter_test: centre jitter factors (3 / 4.5; 3 / 5.5).
    scale_jitter_train, scale_jitter_test: log-size jitter std (0.25 / 0.5).
    crop_type: 'replicate' (pad outside), 'inside' or 'inside_major' (shrink the crop into the image by at
      most `max_scale_change`).
    max_scale_change: largest shrink factor for the inside modes (None = unbounded; 1.5 for CIA50).
    grayscale_prob: probability of the joint grayscale transform (0.05).
    joint_hflip_prob: probability of the joint horizontal flip of the full frames (0; 0.5 for CIA50).
    hflip_prob: per-crop horizontal flip probability (0; 0.5 for CIA50).
    brightness_jitter: brightness factor ~ U(max(0, 1 - b), 1 + b) per crop (0.2).
    mean, std: per-channel normalisation of [0, 1] RGB.
    proposal_mode: 'mse' (DiMP IoU-Net targets) or 'kl' (SuperDiMP densities).
    proposals_per_frame: 8 (mse) or 128 (kl).
    proposal_min_iou: acceptance IoU of an mse proposal (0.1).
    proposal_sigma_factors: mse noise std factors, one drawn per proposal.
    proposal_max_tries: mse retries (each shrinking the std by 0.9) before keeping the last draw.
    kl_proposal_sigma: (centre std, size std) of each equal-weight mixture component (kl).
    kl_gt_sigma: (centre std, size std) of the ground-truth density (kl).
    output_sigma_factor: Gaussian label sigma = output_sigma_factor / search_area_factor * feature_sz cells.
    feature_sz: classification feature size in cells (output_sz / 16: 18; 22).
    label_kernel_sz: classifier filter size (4); the label grid has feature_sz + 1 cells for an even kernel.
    label_end_pad: add the extra end row/col for even kernels.
  """

  search_area_factor: float = 5.0
  output_sz: int = 288
  center_jitter_train: float = 3.0
  center_jitter_test: float = 4.5
  scale_jitter_train: float = 0.25
  scale_jitter_test: float = 0.5
  crop_type: str = "replicate"
  max_scale_change: float | None = None
  grayscale_prob: float = 0.05
  joint_hflip_prob: float = 0.0
  hflip_prob: float = 0.0
  brightness_jitter: float = 0.2
  mean: tuple[float, float, float] = IMAGENET_MEAN
  std: tuple[float, float, float] = IMAGENET_STD
  proposal_mode: str = "mse"
  proposals_per_frame: int = 8
  proposal_min_iou: float = 0.1
  proposal_sigma_factors: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.3)
  proposal_max_tries: int = 100
  kl_proposal_sigma: tuple[tuple[float, float], ...] = ((0.05, 0.05), (0.5, 0.5))
  kl_gt_sigma: tuple[float, float] = (0.05, 0.05)
  output_sigma_factor: float = 0.25
  feature_sz: int = 18
  label_kernel_sz: int = 4
  label_end_pad: bool = True

  def __post_init__(self):
    def bad(name, expected):
      raise ValueError(f"ProcessingConfig: {name} must be {expected}, got {getattr(self, name)!r}")
    if not self.search_area_factor > 0:
      bad("search_area_factor", "> 0")
    if int(self.output_sz) < 1:
      bad("output_sz", ">= 1")
    for name in ("center_jitter_train", "center_jitter_test", "scale_jitter_train", "scale_jitter_test",
                 "brightness_jitter"):
      if not getattr(self, name) >= 0:
        bad(name, ">= 0")
    if self.crop_type not in CROP_TYPES:
      bad("crop_type", f"one of {CROP_TYPES}")
    if self.max_scale_change is not None and not self.max_scale_change >= 1:
      bad("max_scale_change", "None or >= 1")
    for name in ("grayscale_prob", "joint_hflip_prob", "hflip_prob"):
      if not 0 <= getattr(self, name) <= 1:
        bad(name, "a probability in [0, 1]")
    if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
      bad("std", "3 positive numbers (with 3 means)")
    if self.proposal_mode not in PROPOSAL_MODES:
      bad("proposal_mode", f"one of {PROPOSAL_MODES}")
    if int(self.proposals_per_frame) < 1:
      bad("proposals_per_frame", ">= 1")
    if not self.proposal_sigma_factors or min(self.proposal_sigma_factors) <= 0:
      bad("proposal_sigma_factors", "a non-empty tuple of positive numbers")
    if int(self.proposal_max_tries) < 1:
      bad("proposal_max_tries", ">= 1")
    if not self.kl_proposal_sigma or any(len(s) != 2 or min(s) <= 0 for s in self.kl_proposal_sigma):
      bad("kl_proposal_sigma", "a non-empty tuple of positive (centre, size) std pairs")
    if len(self.kl_gt_sigma) != 2 or min(self.kl_gt_sigma) <= 0:
      bad("kl_gt_sigma", "a positive (centre, size) std pair")
    if not self.output_sigma_factor > 0:
      bad("output_sigma_factor", "> 0")
    if int(self.feature_sz) < 1 or int(self.label_kernel_sz) < 1:
      bad("feature_sz", ">= 1 (and label_kernel_sz >= 1)")

  @property
  def label_sigma_factor(self) -> float:
    """sigma_factor of `gaussian_label`: output_sigma_factor / search_area_factor (0.25 / 5 for CIA18)."""
    return self.output_sigma_factor / self.search_area_factor

  @property
  def label_sz(self) -> int:
    """Side of the label grid in cells: feature_sz + 1 for an even kernel with end padding."""
    return int(self.feature_sz) + int(self.label_end_pad and int(self.label_kernel_sz) % 2 == 0)


PROCESSING_PRESETS: dict[str, ProcessingConfig] = {
    "cia18": ProcessingConfig(),
    "dimp18": ProcessingConfig(),
    "cia50": ProcessingConfig(
        search_area_factor=6.0, output_sz=352, center_jitter_test=5.5, crop_type="inside_major",
        max_scale_change=1.5, joint_hflip_prob=0.5, hflip_prob=0.5, proposal_mode="kl",
        proposals_per_frame=128, feature_sz=22),
}
PROCESSING_PRESETS["superdimp"] = PROCESSING_PRESETS["cia50"]


def _box(box_xywh: Any, name: str = "box_xywh") -> np.ndarray:
  box = np.asarray(box_xywh, dtype=np.float64)
  if box.shape != (4,) or not np.all(np.isfinite(box)):
    raise ValueError(f"{name} must be 4 finite numbers [x, y, w, h], got {box_xywh!r}")
  return box


# ----------------------------------------------------------------------------------------------------------
# Geometry: jitter, crop rectangle, crop, box mapping.


def jitter_box(box_xywh: Any, center_jitter: float, scale_jitter: float,
               rng: np.random.Generator) -> np.ndarray:
  """Randomly moved and resized box around which the crop is taken (spec 4.9).

  size = wh * exp(N(0, 1) * scale_jitter) per axis; centre = (x + w/2, y + h/2) + sqrt(prod(size)) *
  center_jitter * (U(0, 1) - 0.5) per axis.

  Args:
    box_xywh: `[4]` ground-truth box in image pixels.
    center_jitter, scale_jitter: jitter factors.
    rng: NumPy generator (draws 2 normals, then 2 uniforms).

  Returns:
    `[4]` float64 jittered box (x, y, w, h) in image pixels.
  """
  box = _box(box_xywh)
  size = box[2:] * np.exp(rng.standard_normal(2) * scale_jitter)
  max_offset = np.sqrt(np.prod(size)) * center_jitter
  center = box[:2] + 0.5 * box[2:] + max_offset * (rng.random(2) - 0.5)
  return np.concatenate([center - 0.5 * size, size])


def crop_box_xywh(box_xywh: Any, image_hw: SequenceT[int], search_area_factor: float,
                  crop_type: str = "replicate", max_scale_change: float | None = None) -> np.ndarray:
  """Integer crop rectangle of `sample_target_adaptive` around a (jittered) box (spec 4.9).

  Side = ceil(sqrt(w h) * search_area_factor); for 'inside' / 'inside_major' the side is divided by
  clamp(max / min over axes of side / image_size, 1, max_scale_change) and floored. The crop is centred on the
  box centre (x + w/2, rounded half to even), shifted to lie inside the image (all crop types), and centred
  on the image in an axis where it is still larger than the image.

  Args:
    box_xywh: `[4]` box in image pixels.
    image_hw: (H, W) of the image.
    search_area_factor: crop side / sqrt(box area).
    crop_type: 'replicate', 'inside' or 'inside_major'.
    max_scale_change: largest shrink factor of the inside modes (None = unbounded).

  Returns:
    `[4]` int64 crop (x1, y1, w, h) in image pixels; it may extend outside the image (replicate padding).
  """
  box = _box(box_xywh)
  if crop_type not in CROP_TYPES:
    raise ValueError(f"crop_type must be one of {CROP_TYPES}, got {crop_type!r}")
  im_h, im_w = int(image_hw[0]), int(image_hw[1])
  if im_h < 1 or im_w < 1:
    raise ValueError(f"image_hw must be positive, got {tuple(image_hw)}")
  if box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"box_xywh must have positive width and height, got {box.tolist()}")
  side = math.ceil(math.sqrt(box[2] * box[3]) * search_area_factor)
  sz_x = sz_y = side
  if crop_type != "replicate":
    ratios = (side / im_w, side / im_h)
    shrink = max(ratios) if crop_type == "inside" else min(ratios)
    shrink = min(max(1.0, shrink), math.inf if max_scale_change is None else max_scale_change)
    sz_x, sz_y = math.floor(side / shrink), math.floor(side / shrink)
  sz_x, sz_y = max(sz_x, 1), max(sz_y, 1)

  def place(c: float, sz: int, limit: int) -> int:
    x1 = int(round(float(c) - 0.5 * sz))
    x1 += max(0, -x1) + min(0, limit - (x1 + sz))  # shift inside the image
    overflow = (sz - limit) // 2  # still larger than the image: equal overflow on both sides
    return -overflow if overflow > 0 else x1

  x1 = place(box[0] + 0.5 * box[2], sz_x, im_w)
  y1 = place(box[1] + 0.5 * box[3], sz_y, im_h)
  return np.array([x1, y1, sz_x, sz_y], dtype=np.int64)


def crop_and_resize(image: np.ndarray, crop_xywh: Any, output_sz: int) -> np.ndarray:
  """Cut `crop_xywh` out of `image` with replicate padding and resize it to `output_sz` (cv2 bilinear).

  Args:
    image: `[H, W, C]` image (uint8 or float32).
    crop_xywh: `[4]` integer crop rectangle (x1, y1, w, h) in image pixels (from `crop_box_xywh`).
    output_sz: output side in pixels.

  Returns:
    `[output_sz, output_sz, C]` crop, same dtype as `image`.

  Note: the reference pads one pixel too many on the right/bottom whenever the crop reaches the image's last
  column/row (it drops that column and replicates the one before); this op pads exactly the out-of-image part.
  """
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
  x1, y1, cw, ch = (int(v) for v in np.asarray(crop_xywh).tolist())
  if cw < 1 or ch < 1:
    raise ValueError(f"crop_xywh must have a positive size, got {(x1, y1, cw, ch)}")
  im_h, im_w = image.shape[:2]
  x2, y2 = x1 + cw, y1 + ch
  ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, im_w), min(y2, im_h)
  if ix1 < ix2 and iy1 < iy2:
    patch = image[iy1:iy2, ix1:ix2]
    pads = (iy1 - y1, y2 - iy2, ix1 - x1, x2 - ix2)
    if any(pads):
      patch = cv2.copyMakeBorder(patch, *pads, cv2.BORDER_REPLICATE)
  else:  # no overlap with the image: every pixel replicates an edge pixel
    patch = image[np.ix_(np.clip(np.arange(y1, y2), 0, im_h - 1), np.clip(np.arange(x1, x2), 0, im_w - 1))]
  size = (int(output_sz), int(output_sz))
  out = cv2.resize(np.ascontiguousarray(patch), size, interpolation=cv2.INTER_LINEAR)
  return out.reshape(int(output_sz), int(output_sz), image.shape[2])


def box_to_crop(box_xywh: Any, crop_xywh: Any, output_sz: int) -> np.ndarray:
  """Map `[..., 4]` image-pixel boxes into the coordinates of a crop resized to `output_sz` (float64)."""
  box = np.asarray(box_xywh, np.float64)
  crop = np.asarray(crop_xywh, np.float64)
  scale = output_sz / crop[2:]
  return np.concatenate([(box[..., :2] - crop[:2]) * scale, box[..., 2:] * scale], axis=-1)


def box_from_crop(box_xywh: Any, crop_xywh: Any, output_sz: int) -> np.ndarray:
  """Inverse of `box_to_crop`: `[..., 4]` crop-coordinate boxes back to image pixels (float64)."""
  box = np.asarray(box_xywh, np.float64)
  crop = np.asarray(crop_xywh, np.float64)
  scale = crop[2:] / output_sz
  return np.concatenate([box[..., :2] * scale + crop[:2], box[..., 2:] * scale], axis=-1)


def crop_with_jitter(image: np.ndarray, box_xywh: Any, rng: np.random.Generator, *, search_area_factor: float,
                     output_sz: int, center_jitter: float, scale_jitter: float, crop_type: str = "replicate",
                     max_scale_change: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Jitter the box, crop around the jittered box and map the ground truth into the crop.

  Args:
    image: `[H, W, 3]` uint8 RGB frame.
    box_xywh: `[4]` ground-truth box in image pixels.
    rng: NumPy generator (used by `jitter_box`).
    search_area_factor, output_sz, center_jitter, scale_jitter, crop_type, max_scale_change: see
      `ProcessingConfig`.

  Returns:
    (crop `[S, S, 3]` uint8, box `[4]` float64 in crop pixels, crop rectangle `[4]` int64 in image pixels).
  """
  jittered = jitter_box(box_xywh, center_jitter, scale_jitter, rng)
  crop_rect = crop_box_xywh(jittered, np.shape(image)[:2], search_area_factor, crop_type, max_scale_change)
  crop = crop_and_resize(image, crop_rect, output_sz)
  return crop, box_to_crop(_box(box_xywh), crop_rect, output_sz), crop_rect


# ----------------------------------------------------------------------------------------------------------
# Photometric and flip ops.


def grayscale(image: np.ndarray) -> np.ndarray:
  """`[H, W, 3]` uint8 RGB -> the same shape, cv2 RGB2GRAY replicated to 3 channels."""
  gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
  return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def hflip_image(image: np.ndarray) -> np.ndarray:
  """Mirror `[H, W, C]` left-right (pixel column u -> W - 1 - u)."""
  return np.ascontiguousarray(np.asarray(image)[:, ::-1])


def hflip_box_xywh(box_xywh: Any, width: int) -> np.ndarray:
  """Box `[..., 4]` of an image of `width` pixels after `hflip_image`: x -> width - 1 - x - w (spec 4.9)."""
  box = np.array(box_xywh, np.float64)
  box[..., 0] = width - 1 - box[..., 0] - box[..., 2]
  return box


def normalize(image: np.ndarray, brightness: float = 1.0, mean: SequenceT[float] = IMAGENET_MEAN,
              std: SequenceT[float] = IMAGENET_STD, out: np.ndarray | None = None) -> np.ndarray:
  """uint8 RGB `[H, W, 3]` -> float32 `(min(x * brightness / 255, 1) - mean) / std` per channel.

  Computed through a 256-entry float32 lookup table per channel (cv2.LUT): the same float32 arithmetic as
  the elementwise formula, ~10x faster. `out`: optional C-contiguous float32 `[H, W, 3]` array written in
  place.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"normalize: image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
  if not brightness >= 0:
    raise ValueError(f"normalize: brightness must be >= 0, got {brightness}")
  v = np.arange(256, dtype=np.float32)[:, None]
  x = np.minimum(v * np.float32(brightness / 255.0), np.float32(1.0))
  table = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)  # [256, 3]
  image = np.ascontiguousarray(image)
  if out is None:
    return cv2.LUT(image, table.reshape(1, 256, 3))
  if out.shape != image.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
    raise ValueError(
        f"normalize: out must be C-contiguous float32 {image.shape}, got {out.shape} {out.dtype}")
  res = cv2.LUT(image, table.reshape(1, 256, 3), dst=out)
  if not np.shares_memory(res, out):  # cv2 reallocated; keep the contract
    out[...] = res
  return out


# ----------------------------------------------------------------------------------------------------------
# Labels and IoU-Net proposals.


def mse_proposals(box_xywh: Any, rng: np.random.Generator, num_proposals: int = 8, min_iou: float = 0.1,
                  sigma_factors: SequenceT[float] = (0.01, 0.05, 0.1, 0.2, 0.3),
                  max_tries: int = 100) -> tuple[np.ndarray, np.ndarray]:
  """DiMP IoU-Net proposals around a ground-truth box and their IoUs (spec 3.4, MSE variant).

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
  box = _box(box_xywh)
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
  """SuperDiMP proposals from a Gaussian mixture with their densities (spec 3.4, KL variant).

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
  box = _box(box_xywh)
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


# ----------------------------------------------------------------------------------------------------------
# The composition.


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
  s = int(cfg.output_sz)
  # Joint transforms: one roll per sample, shared by all frames (always drawn, so streams stay aligned).
  gray = rng.random() < cfg.grayscale_prob
  joint_flip = rng.random() < cfg.joint_hflip_prob
  flipped: dict[int, np.ndarray] = {}

  def frames(images, boxes, center_jitter, scale_jitter):
    crops = np.empty((len(images), s, s, 3), np.float32)  # filled in place: no stacking copy
    out_boxes = []
    for i, (image, box) in enumerate(zip(images, boxes)):
      if joint_flip:
        key = id(image)
        if key not in flipped:
          flipped[key] = hflip_image(image)
        box = hflip_box_xywh(box, image.shape[1])
        image = flipped[key]
      crop, box_c, _ = crop_with_jitter(
          image, box, rng, search_area_factor=cfg.search_area_factor, output_sz=s,
          center_jitter=center_jitter, scale_jitter=scale_jitter, crop_type=cfg.crop_type,
          max_scale_change=cfg.max_scale_change)
      if gray:
        crop = grayscale(crop)
      b = cfg.brightness_jitter
      brightness = rng.uniform(max(0.0, 1.0 - b), 1.0 + b)
      if rng.random() < cfg.hflip_prob:
        crop, box_c = hflip_image(crop), hflip_box_xywh(box_c, s)
      normalize(crop, brightness, cfg.mean, cfg.std, out=crops[i])
      out_boxes.append(box_c)
    return crops, np.stack(out_boxes)

  train_x, train_b = frames(train_images, train_boxes, cfg.center_jitter_train, cfg.scale_jitter_train)
  test_x, test_b = frames(test_images, test_boxes, cfg.center_jitter_test, cfg.scale_jitter_test)
  out = {
      "train_images": train_x,
      "test_images": test_x,
      "train_box_xywh": to_float32_ftz(train_b),
      "test_box_xywh": to_float32_ftz(test_b),
      "test_label": gaussian_label(test_b, cfg.label_sigma_factor, cfg.feature_sz, s, cfg.label_kernel_sz,
                                   cfg.label_end_pad),
  }
  if cfg.proposal_mode == "mse":
    props = [mse_proposals(b, rng, cfg.proposals_per_frame, cfg.proposal_min_iou, cfg.proposal_sigma_factors,
                           cfg.proposal_max_tries) for b in test_b]
    out["test_proposals_xywh"] = to_float32_ftz(np.stack([p for p, _ in props]))
    out["proposal_iou"] = to_float32_ftz(np.stack([2.0 * iou - 1.0 for _, iou in props]))
  else:
    props = [kl_proposals(b, rng, cfg.proposals_per_frame, cfg.kl_proposal_sigma, cfg.kl_gt_sigma)
             for b in test_b]
    out["test_proposals_xywh"] = to_float32_ftz(np.stack([p for p, _, _ in props]))
    out["proposal_density"] = to_float32_ftz(np.stack([q for _, q, _ in props]))
    out["gt_density"] = to_float32_ftz(np.stack([g for _, _, g in props]))
  return out


# ----------------------------------------------------------------------------------------------------------
# TensorFlow wrapper.


def as_tf_op(fn: Callable[..., Any], out_specs: SequenceT[tuple[tuple, Any]], name: str | None = None):
  """Wrap a NumPy op as a TensorFlow op with static output shapes (`tf.numpy_function`).

  Args:
    fn: NumPy function of array arguments returning one array or a tuple of arrays.
    out_specs: one (shape, dtype) per output of `fn`.
    name: op name.

  Returns:
    A function of tensors that returns a tuple of tensors with the given static shapes; it runs the same
    NumPy code eagerly and inside `tf.data.Dataset.map` / `tf.function`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  dtypes = [tf.as_dtype(np.dtype(d)) for _, d in out_specs]

  def call_np(*args):
    res = fn(*args)
    res = res if isinstance(res, tuple) else (res,)
    if len(res) != len(out_specs):
      raise ValueError(f"{name or fn.__name__}: returned {len(res)} outputs, expected {len(out_specs)}")
    return tuple(np.asarray(r, dtype=np.dtype(d)).reshape(shape) for r, (shape, d) in zip(res, out_specs))

  def op(*tensors):
    outs = tf.numpy_function(call_np, list(tensors), dtypes, stateful=False, name=name)
    if not isinstance(outs, (list, tuple)):  # one output: TF may return the tensor itself
      outs = [outs]
    for t, (shape, _) in zip(outs, out_specs):
      t.set_shape(shape)
    return tuple(outs)

  return op
