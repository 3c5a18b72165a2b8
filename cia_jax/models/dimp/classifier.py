"""The DiMP target classifier (`classifier`, pytracking's `LinearFilter`, design.md §2), shared by DiMP and CIA.

backbone layer3 -> `feature_extractor` (ClassificationFeatures) -> `filter_initializer` (box-pooled filter) ->
`filter_optimizer` (num_iter steepest-descent steps) -> scores = per-sequence correlation (`classify`).

Stage methods (usable with `net.apply(variables, ..., method=...)`, by function or by name):
`extract_classification_feat`, `init_filter`, `optimize_filter`, `get_filter`, `classify`; `__call__` is the
training forward. Training applies with `mutable=['batch_stats']` (R18's residual block has BN).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from cia_jax.models.dimp.features import ClassificationFeatures
from cia_jax.models.dimp.filter import apply_filter
from cia_jax.models.dimp.hinge_optimizer import HingeSteepestDescentGN
from cia_jax.models.dimp.initializer import FilterInitializerLinear
from cia_jax.models.dimp.optimizer import DiMPSteepestDescentGN
from cia_jax.ops.image import gaussian_label

OPTIMIZERS = ("dimp", "hinge")


class LinearFilter(nn.Module):
  """Target classifier with an optimisation-based filter predictor.

  Attributes:
    arch: 'r18' (DiMP18/CIA18 feature block) or 'r50' (SuperDiMP/CIA50).
    out_dim: D, classification feature channels (256 / 512).
    in_dim: backbone channels (None: 256 for r18, 1024 for r50).
    filter_size: filter side in cells (4).
    feat_stride: pixels per feature cell (16).
    num_iter: default optimizer iterations (5 in training).
    init_step_length, init_filter_reg, init_gauss_sigma, num_dist_bins, bin_displacement, mask_init_factor,
    min_filter_reg, alpha_eps: `DiMPSteepestDescentGN` settings (design.md §2.4).
    optimizer: 'dimp' (`DiMPSteepestDescentGN`, DiMP / SuperDiMP / CIA) or 'hinge' (`HingeSteepestDescentGN`,
      SuperDiMP-simple, the KeepTrack base, keeptrack.md §0: labels from the caller; init_filter_reg and
      num_iter apply, hinge_threshold and activation_leak are its own).
    dtype: compute dtype of the feature block and the initializer's conv (None: float32); the classification
      features, the filters, the steepest-descent optimiser and the scores are float32 (design.md §9.1).
  """

  arch: str = "r18"
  out_dim: int = 256
  in_dim: int | None = None
  filter_size: int = 4
  feat_stride: int = 16
  num_iter: int = 5
  init_step_length: float = 0.9
  init_filter_reg: float = 0.1
  init_gauss_sigma: float = 1.0
  num_dist_bins: int = 100
  bin_displacement: float = 0.1
  mask_init_factor: float = 3.0
  min_filter_reg: float = 1e-3
  alpha_eps: float = 0.0
  optimizer: str = "dimp"
  hinge_threshold: float = 0.05
  activation_leak: float = 0.1
  dtype: Any = None
  winograd: int = 0  # 3x3 stride-1 convs of >= this many input channels by Winograd (`layers.Conv2d`)

  def setup(self):
    self.feature_extractor = ClassificationFeatures(self.arch, self.out_dim, self.in_dim, self.filter_size,
                                                    self.dtype, self.winograd)
    self.filter_initializer = FilterInitializerLinear(self.filter_size, self.feat_stride, self.dtype)
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"LinearFilter: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
    if self.optimizer == "hinge":
      self.filter_optimizer = HingeSteepestDescentGN(
          num_iter=self.num_iter, init_filter_reg=self.init_filter_reg, hinge_threshold=self.hinge_threshold,
          activation_leak=self.activation_leak)
      return
    self.filter_optimizer = DiMPSteepestDescentGN(
        num_iter=self.num_iter, feat_stride=self.feat_stride, init_step_length=self.init_step_length,
        init_filter_reg=self.init_filter_reg, init_gauss_sigma=self.init_gauss_sigma,
        num_dist_bins=self.num_dist_bins, bin_displacement=self.bin_displacement,
        mask_init_factor=self.mask_init_factor, min_filter_reg=self.min_filter_reg, alpha_eps=self.alpha_eps)

  def extract_classification_feat(self, feat: jax.Array, train: bool) -> jax.Array:
    """Backbone features `[N, H, W, C]` or `[Nimg, B, H, W, C]` -> `[..., H, W, D]` classification features.

    One call is one BN batch (train=True: batch statistics over all its samples, running stats updated).
    """
    if feat.ndim not in (4, 5):
      raise ValueError(f"LinearFilter.extract_classification_feat: feat must be [N, H, W, C] or "
                       f"[Nimg, B, H, W, C], got shape {feat.shape}")
    lead = feat.shape[:-3]
    out = self.feature_extractor(feat.reshape(-1, *feat.shape[-3:]), train=train)
    return out.reshape(*lead, *out.shape[1:])

  def init_filter(self, feat: jax.Array, box_xywh: jax.Array) -> jax.Array:
    """Initial filter `[B, fs, fs, D]` from classification features `[Nimg, B, H, W, D]` and target boxes
    `[Nimg, B, 4]` (x, y, w, h in crop pixels)."""
    return self.filter_initializer(feat, box_xywh)

  def optimize_filter(self, filt: jax.Array, feat: jax.Array, box_xywh: jax.Array,
                      sample_weight: jax.Array | None = None, num_iter: int | None = None,
                      active_iter: jax.Array | None = None, label: jax.Array | None = None,
                      zero_empty_slots: bool = True):
    """Steepest-descent refinement of `filt` `[B, fs, fs, D]`; see `DiMPSteepestDescentGN.__call__` and
    `HingeSteepestDescentGN.__call__`.

    label: the hinge optimiser's target labels `[Nimg, B, Ho, Wo]` (None: `box_labels`, the training labels);
    the DiMP optimiser predicts its own and refuses them. zero_empty_slots: False when weight-0 samples are
    finite (the tracker's memory), skipping a masked copy of `feat`.

    Returns (filter, iterates `[num_iter + 1, B, fs, fs, D]`, losses `[num_iter + 1]`); with a traced
    `active_iter` (at most `num_iter` iterations) (filter, None, None).
    """
    if self.optimizer == "hinge":
      if label is None:
        label = self.box_labels(feat, filt, box_xywh)
      return self.filter_optimizer(filt, feat, label, sample_weight=sample_weight, num_iter=num_iter,
                                   active_iter=active_iter, zero_empty_slots=zero_empty_slots)
    if label is not None:
      raise ValueError("LinearFilter.optimize_filter: the 'dimp' optimizer predicts its own labels; "
                       "label is only for optimizer='hinge'")
    return self.filter_optimizer(filt, feat, box_xywh, sample_weight=sample_weight, num_iter=num_iter,
                                 active_iter=active_iter, zero_empty_slots=zero_empty_slots)

  def box_labels(self, feat: jax.Array, filt: jax.Array, box_xywh: jax.Array) -> jax.Array:
    """Gaussian labels `[Nimg, B, Ho, Wo]` centred on boxes `[Nimg, B, 4]` (crop pixels): the training labels
    of SuperDiMP-simple (`gaussian_label`, sigma = init_gauss_sigma cells, crop = feat_stride * feature size)."""
    h, w = feat.shape[2:4]
    return gaussian_label(box_xywh, self.init_gauss_sigma / float(h * w) ** 0.5, (h, w),
                          (self.feat_stride * h, self.feat_stride * w), filt.shape[1])

  def get_filter(self, feat: jax.Array, box_xywh: jax.Array, num_iter: int | None = None,
                 sample_weight: jax.Array | None = None):
    """Initialiser then optimizer on classification features `[Nimg, B, H, W, D]` with boxes `[Nimg, B, 4]`.

    num_iter: static int (None: the module default). sample_weight: None, `[Nimg, B]` or `[Nimg]`.
    Returns (filter `[B, fs, fs, D]`, iterates `[num_iter + 1, B, fs, fs, D]`, losses `[num_iter + 1]`).
    """
    filt = self.init_filter(feat, box_xywh)
    return self.optimize_filter(filt, feat, box_xywh, sample_weight=sample_weight, num_iter=num_iter)

  def classify(self, filt: jax.Array, feat: jax.Array) -> jax.Array:
    """Scores `[Nimg, B, H + 1, W + 1]` of filters `[B, fs, fs, D]` on classification features
    `[Nimg, B, H, W, D]`."""
    return apply_filter(feat, filt)

  def __call__(self, train_feat: jax.Array, test_feat: jax.Array, train_box_xywh: jax.Array, train: bool,
               num_iter: int | None = None) -> jax.Array:
    """Training forward: test-frame scores of every filter iterate.

    Args:
      train_feat: `[Ntr, B, H, W, C]` backbone features of the train (template) frames.
      test_feat: `[Nte, B, H', W', C]` backbone features of the test (search) frames.
      train_box_xywh: `[Ntr, B, 4]` target boxes in train-crop pixels.
      train: batch statistics in the feature block (two BN batches: train frames, then test frames).
      num_iter: static optimizer iterations (None: module default).

    Returns:
      `[num_iter + 1, Nte, B, H' + 1, W' + 1]` scores (f0 = initialiser output first).
    """
    for name, f in (("train_feat", train_feat), ("test_feat", test_feat)):
      if f.ndim != 5:
        raise ValueError(f"LinearFilter: {name} must be [Nimg, B, H, W, C] (rank 5), got shape {f.shape}")
    if train_feat.shape[1] != test_feat.shape[1]:
      raise ValueError(f"LinearFilter: train_feat {train_feat.shape} and test_feat {test_feat.shape} have "
                       "different numbers of sequences (axis 1)")
    train_clf = self.extract_classification_feat(train_feat, train)
    test_clf = self.extract_classification_feat(test_feat, train)
    _, iterates, _ = self.get_filter(train_clf, train_box_xywh, num_iter=num_iter)
    return jax.vmap(lambda f: apply_filter(test_clf, f))(iterates)
