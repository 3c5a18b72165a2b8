"""Tracker settings (design.md §5.1): one frozen, hashable dataclass, the presets, string overrides.

`TrackerSettings` is a static argument of the jitted tracker functions, so every field is a hashable
Python value (tuples, not lists). The presets are the reference tracker parameter files (design.md §D6:
CIA18 tracks with 352 px crops, scale 6, inside_major). Names follow the reference's parameter names,
except `displacement_scale` (the reference spells it `dispalcement_scale`) and the augmentation dict,
which is split into `aug_*` fields.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

from cia_jax import config_lib


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
  """Every parameter of the DiMP / CIA online tracker (design.md §5.1, plus the implicit defaults listed there).

  Sizes are in pixels; `image_sample_size` S is the side of the square patch fed to the network (the
  classification feature map is S / 16 cells, the score map S / 16 + 1).
  """

  # Patch.
  image_sample_size: int = 352
  search_area_scale: float = 6.0
  border_mode: str = "inside_major"  # 'replicate' | 'inside' | 'inside_major'
  patch_max_scale_change: Optional[float] = 1.5
  # Crop rounding of `sample_patch` (see `cia_jax.ops.crop.crop_window`): 'cia' (the CIA fork's floor division)
  # or 'pytracking' (upstream's true division; half-pixel patch coordinates). DiMP18 / SuperDiMP use upstream's.
  crop_rule: str = "cia"
  # Memory and online learning.
  sample_memory_size: int = 50
  learning_rate: float = 0.01
  init_samples_minimum_weight: float = 0.25
  train_skipping: int = 20
  net_opt_iter: int = 10
  net_opt_update_iter: int = 2
  net_opt_hn_iter: int = 1
  # Sigma of the tracker's Gaussian sample labels, output_sigma_factor * sqrt(target area in cells); used only by
  # networks whose filter optimiser takes labels (SuperDiMP-simple, the KeepTrack base, keeptrack.md §0).
  output_sigma_factor: float = 0.25
  hard_negative_learning_rate: float = 0.02
  train_sample_interval: int = 1
  low_score_opt_threshold: Optional[float] = None  # Not supported (None only), as in all four presets.
  # Initial augmentation (design.md §5.4).
  aug_fliplr: bool = True
  aug_rotate: tuple = (10.0, -10.0, 45.0, -45.0)  # degrees
  aug_blur: tuple = ((3.0, 1.0), (1.0, 3.0), (2.0, 2.0))  # (sigma_y, sigma_x)
  aug_relativeshift: tuple = ((0.6, 0.6), (-0.6, 0.6), (0.6, -0.6), (-0.6, -0.6))  # (y, x) * S / 2
  aug_dropout_num: int = 2
  aug_dropout_prob: float = 0.2
  augmentation_expansion_factor: float = 2.0
  random_shift_factor: float = 1.0 / 3.0
  # Localisation (design.md §5.5).
  window_output: bool = False  # Not supported (False only).
  advanced_localization: bool = True
  score_preprocess: str = "none"  # Not supported ('none' only).
  scale_factors: tuple = (1.0,)  # Not supported ((1.0,) only).
  target_not_found_threshold: float = 0.25
  uncertain_threshold: float = -math.inf
  hard_sample_threshold: float = -math.inf
  distractor_threshold: float = 0.8
  hard_negative_threshold: float = 0.5
  target_neighborhood_scale: float = 2.2
  displacement_scale: float = 0.8
  target_inside_ratio: float = 0.2
  update_scale_when_uncertain: bool = True
  output_not_found_box: bool = False
  # IoU-Net refinement (design.md §5.6).
  box_refinement_space: str = "default"  # 'default' | 'relative'
  iounet_k: int = 3
  num_init_random_boxes: int = 9
  box_jitter_pos: float = 0.1
  box_jitter_sz: float = 0.5
  maximal_aspect_ratio: float = 6.0
  box_refinement_iter: int = 5
  box_refinement_step_length: float = 1.0
  box_refinement_step_decay: float = 1.0
  iounet_augmentation: bool = False  # Not supported (False only).
  use_iounet_pos_for_learning: bool = True
  use_upper_classifier: bool = False  # Debug output only in the reference; no effect here.
  # KeepTrack's target candidate matching (keeptrack.md §1, 4; `cia_jax.track.keeptrack`). Off in the DiMP /
  # CIA presets; on in keeptrack / keeptrack_fast / cia50_tcm, which also need the association network.
  use_tcm: bool = False
  local_max_candidate_score_th: float = 0.05  # candidate threshold and fallback threshold (fast: 0.1)
  candidate_capacity: int = 32  # cia_jax: static number of candidate slots (the reference has no cap)
  use_certainty_for_weight_computation: bool = False  # certainty-weighted memory (keeptrack.md §4.6); only with use_tcm
  certainty_for_weight_computation_ths: float = 0.5
  # cia_jax additions.
  deterministic: bool = False  # No random shifts, no dropout copies, only the unjittered IoU box.
  return_score_map: bool = False  # Add the raw score map to `step`'s output.
  # Compute dtype of the network's backbone and heads: 'float32' or 'bfloat16' (mixed precision, design.md §9.1;
  # the filter optimiser, box refinement and every output stay float32). `runner.load_model` builds the network
  # with it, whatever dtype the checkpoint was trained in.
  compute_dtype: str = "float32"
  # How a `vmap`-batched step (several sequences, the lanes of `batching`) runs the filter update: 'sequential'
  # (one sequence after the other, each its own iteration count; faster on CPU, BENCHMARKS.md issue #14) or
  # 'vmap' (one batched update running the batch's largest count for every sequence; may suit accelerators,
  # unmeasured). No effect on a single sequence, and none on the boxes.
  batched_filter_update: str = "sequential"
  # Window sizes for the IoU-Net test features (design.md §5.6): (stride-8 side, stride-16 side) pairs in patch
  # pixels, multiples of 16, smallest first. The box ascent computes the features on the first pair of square
  # windows around the frame's boxes that holds them, on the whole maps when none does or the ascent leaves the
  # windows. (): always the whole maps. No effect on the boxes.
  iou_feature_windows: tuple = ((128, 160), (160, 192), (192, 224))
  # The network's 3x3 stride-1 convolutions of >= `winograd_min_channels` input channels by Winograd's F(2x2, 3x3)
  # (`ops/winograd.py`, design.md §9.2): 2.25x fewer multiplications at the float32 rounding of the direct
  # convolutions. False: direct. 128 leaves ResNet's 64-channel layer1 direct, faster on the Intel CPUs measured;
  # 64 takes layer1 too, faster on AMD EPYC (BENCHMARKS.md "On an AMD EPYC").
  winograd_convs: bool = True
  winograd_min_channels: int = 128
  # Memory prefix sizes (slots) for the filter update: it runs on the smallest one that holds every filled slot
  # (the memory fills in order), so an update early in a sequence costs about what the reference's partly
  # filled memory costs. Each size compiles one more copy of the optimiser (about 0.7 s for CIA18 on a 2-core
  # CPU), hence one by default; () or sizes outside (initial samples, capacity): always the whole memory.
  # No effect on the boxes (float summation order aside). BENCHMARKS.md "Capacity buckets".
  memory_buckets: tuple = (30,)

  def __post_init__(self):
    validate(self)

  @property
  def num_init_samples(self) -> int:
    """Memory slots taken by the initial samples: 1 + shifts + flip + blurs + rotations + dropout copies."""
    return (1 + len(self.aug_relativeshift) + int(self.aug_fliplr) + len(self.aug_blur) + len(self.aug_rotate)
            + self.aug_dropout_num)

  def replace(self, **kw) -> "TrackerSettings":
    return dataclasses.replace(self, **kw)


def validate(s: TrackerSettings) -> None:
  """ValueError naming the field for values the tracker cannot run with."""
  def bad(name, why):
    raise ValueError(f"TrackerSettings.{name}={getattr(s, name)!r}: {why}")
  if s.border_mode not in ("replicate", "inside", "inside_major"):
    bad("border_mode", "must be 'replicate', 'inside' or 'inside_major'")
  if s.crop_rule not in ("cia", "pytracking"):
    bad("crop_rule", "must be 'cia' or 'pytracking'")
  if s.box_refinement_space not in ("default", "relative"):
    bad("box_refinement_space", "must be 'default' or 'relative'")
  if s.image_sample_size < 32 or s.image_sample_size % 16:
    bad("image_sample_size", "must be a multiple of 16 (feature stride) and >= 32")
  if (s.image_sample_size // 16) % 2:
    bad("image_sample_size", "S / 16 must be even (the reference's sample-centre parity correction is not ported)")
  if s.search_area_scale <= 0:
    bad("search_area_scale", "must be > 0")
  if s.sample_memory_size < s.num_init_samples + 1:
    bad("sample_memory_size", f"must exceed the {s.num_init_samples} initial samples")
  for name in ("learning_rate", "hard_negative_learning_rate"):
    if not 0 < getattr(s, name) < 1:
      bad(name, "must be in (0, 1)")
  for name in ("net_opt_iter", "net_opt_update_iter", "net_opt_hn_iter", "box_refinement_iter",
               "num_init_random_boxes", "aug_dropout_num"):
    if getattr(s, name) < 0:
      bad(name, "must be >= 0")
  for name in ("train_skipping", "train_sample_interval", "iounet_k"):
    if getattr(s, name) < 1:
      bad(name, "must be >= 1")
  if s.window_output:
    bad("window_output", "output windowing is not implemented (no preset uses it)")
  if s.score_preprocess != "none":
    bad("score_preprocess", "only 'none' is implemented (as in all presets)")
  if tuple(s.scale_factors) != (1.0,):
    bad("scale_factors", "only single-scale tracking (1.0,) is implemented")
  if s.iounet_augmentation:
    bad("iounet_augmentation", "not implemented (no preset uses it)")
  if s.low_score_opt_threshold is not None:
    bad("low_score_opt_threshold", "not implemented (no preset uses it)")
  if not 0 <= s.aug_dropout_prob < 1:
    bad("aug_dropout_prob", "must be in [0, 1)")
  if s.augmentation_expansion_factor < 1:
    bad("augmentation_expansion_factor", "must be >= 1")
  if s.candidate_capacity < 1:
    bad("candidate_capacity", "must be >= 1")
  if s.compute_dtype not in ("float32", "bfloat16"):
    bad("compute_dtype", "must be 'float32' or 'bfloat16'")
  if s.batched_filter_update not in ("sequential", "vmap"):
    bad("batched_filter_update", "must be 'sequential' or 'vmap'")
  if not isinstance(s.winograd_convs, bool):
    bad("winograd_convs", "must be True or False")
  if isinstance(s.winograd_min_channels, bool) or not isinstance(s.winograd_min_channels, int) or (
      s.winograd_min_channels < 1):
    bad("winograd_min_channels", "must be an integer >= 1")
  if not isinstance(s.memory_buckets, tuple) or any(
      isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in s.memory_buckets):
    bad("memory_buckets", "must be a tuple of positive integers (memory slots), e.g. (20, 30, 40), or ()")
  if not isinstance(s.iou_feature_windows, tuple) or any(
      not isinstance(w, tuple) or len(w) != 2 or any(not isinstance(v, int) or v <= 0 or v % 16 for v in w)
      for w in s.iou_feature_windows):
    bad("iou_feature_windows", "must be a tuple of (stride-8 side, stride-16 side) pairs of positive multiples of "
        "16 (patch pixels), e.g. ((128, 160), (192, 224)), or () for the whole maps")


_DIMP18 = dict(image_sample_size=288, search_area_scale=5.0, border_mode="replicate", patch_max_scale_change=None,
               box_refinement_space="default", box_refinement_iter=5, box_refinement_step_length=1.0,
               crop_rule="pytracking")
_SUPERDIMP = dict(image_sample_size=352, search_area_scale=6.0, border_mode="inside_major",
                  patch_max_scale_change=1.5, box_refinement_space="relative", box_refinement_iter=10,
                  box_refinement_step_length=2.5e-3, crop_rule="pytracking")

_KEEPTRACK = dict(_SUPERDIMP, image_sample_size=480, search_area_scale=8.0, use_tcm=True,
                  use_certainty_for_weight_computation=True)

PRESETS: dict[str, TrackerSettings] = {
    "dimp18": TrackerSettings(**_DIMP18),
    "superdimp": TrackerSettings(**_SUPERDIMP),
    # design.md §D6: CIA18 tracks with 352 / scale 6 / inside_major, but refines boxes like DiMP18.
    "cia18": TrackerSettings(**{**_SUPERDIMP, "box_refinement_space": "default", "box_refinement_iter": 5,
                                "box_refinement_step_length": 1.0, "use_upper_classifier": True,
                                "crop_rule": "cia"}),
    "cia50": TrackerSettings(**{**_SUPERDIMP, "crop_rule": "cia"}),
}

KEEPTRACK_PRESETS: dict[str, TrackerSettings] = {
    # KeepTrack (keeptrack.md §4.7, `default.py` / `default_fast.py`): SuperDiMP network, 480 px / scale 8 (fast:
    # 352 / 6, 3 refinement steps, candidate threshold 0.1). CIA50-tcm: the same parameters on the CIA50 network,
    # with the CIA fork's crop rounding.
    "keeptrack": TrackerSettings(**_KEEPTRACK),
    "keeptrack_fast": TrackerSettings(**{**_KEEPTRACK, "image_sample_size": 352, "search_area_scale": 6.0,
                                         "box_refinement_iter": 3, "local_max_candidate_score_th": 0.1}),
    "cia50_tcm": TrackerSettings(**{**_KEEPTRACK, "crop_rule": "cia"}),
}


def get_settings(name: str, **overrides) -> TrackerSettings:
  """Preset `name` ('dimp18', 'superdimp', 'cia18', 'cia50', 'keeptrack', 'keeptrack_fast', 'cia50_tcm') with
  keyword overrides.

  Unknown preset or field names raise a ValueError listing the valid ones.
  """
  presets = {**PRESETS, **KEEPTRACK_PRESETS}
  if name not in presets:
    raise ValueError(f"unknown tracker preset {name!r}; valid: {sorted(presets)}")
  _check_keys(overrides)
  return dataclasses.replace(presets[name], **overrides)


def _check_keys(keys) -> None:
  valid = [f.name for f in dataclasses.fields(TrackerSettings)]
  unknown = [k for k in keys if k not in valid]
  if unknown:
    raise ValueError(f"unknown tracker setting(s) {unknown}; valid: {valid}")


def apply_overrides(settings: TrackerSettings, overrides: Sequence[str]) -> TrackerSettings:
  """Applies `["key=value", ...]` strings (`cia-jax track --set`) to `settings`, parsing values by the field's
  type with the shared override parser (`cia_jax.config_lib`).

  A malformed item, an unknown key or an invalid value raises a ValueError naming it.
  """
  return config_lib.replace_fields(settings, overrides, what="tracker setting")
