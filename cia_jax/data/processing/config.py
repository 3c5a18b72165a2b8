"""Every setting of the DiMP training-sample processing (design.md §4.9 table) and the per-network presets."""

from __future__ import annotations

import dataclasses

from cia_jax.ops.image import IMAGENET_MEAN, IMAGENET_STD

CROP_TYPES = ("replicate", "inside", "inside_major")
PROPOSAL_MODES = ("mse", "kl")


@dataclasses.dataclass(frozen=True)
class ProcessingConfig:
  """Every processing setting of the design.md §4.9 table (defaults = CIA18 / DiMP18).

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
