"""DiMP's training-sample sampler (pytracking `DiMPSampler`, 'causal' mode; design.md §4.9).

A *sample* is one sequence with 3 train (template) frames and 3 test (search) frames. The sampler is a pure
function of `(seed, index, attempt)`: every draw comes from
`np.random.default_rng([seed, index, attempt, 0])`, so the same seed gives the same samples in any order,
on any number of threads or hosts, and a resumed run replays its samples by starting at the right index.
`attempt` > 0 re-draws a sample whose frames could not be read (see `cia_jax.data.pipeline`).

Rules (design.md §4.9):
* a dataset is chosen with probability proportional to its weight;
* a sequence of that dataset is chosen uniformly among the *usable* ones: a video needs more than
  2 * (num_train + num_test) visible frames and at least `min_length` frames; an image (a one-frame sequence,
  e.g. COCO) needs a visible box. Rejection sampling over all sequences (the reference) and uniform sampling
  over the usable ones give the same distribution; the usable lists are built once here;
* video: base frame ~ visible frames in [num_train - 1, T - num_test); the other num_train - 1 train frames
  ~ visible frames in [base - max_gap - g, base); the num_test test frames ~ visible frames in
  [base + 1, base + max_gap + g); if either window has no visible frame, g += 5 and everything (base
  included) is drawn again. Draws are with replacement and frames are not sorted; train frame 0 is the base;
* image: the single frame is repeated for all train and test frames.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence as SequenceT

import numpy as np

from cia_jax.data.datasets.base import Sequence

# Gap increase per failed window draw, as in the reference.
_GAP_STEP = 5
# Window draws before giving up on a sequence (only reachable with an inconsistent `visible` mask).
_MAX_DRAWS = 100_000


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Sampler settings of the design.md §4.9 table.

  Attributes:
    max_gap: frame gap window (30 for CIA18/DiMP18, 200 for CIA50/SuperDiMP).
    num_train_frames: template frames per sample (3).
    num_test_frames: search frames per sample (3).
    min_length: minimum number of frames of a usable video (20).
    dataset_weights: `(name, weight)` pairs of the reference's training mix, which `configs/*.py` give their
      dataset entries; the sampler itself takes weights aligned with the datasets it is given.
  """

  max_gap: int = 30
  num_train_frames: int = 3
  num_test_frames: int = 3
  min_length: int = 20
  dataset_weights: tuple[tuple[str, float], ...] = ()

  def __post_init__(self):
    if self.max_gap < 1:
      raise ValueError(f"SamplerConfig: max_gap must be >= 1, got {self.max_gap}")
    if self.num_train_frames < 1 or self.num_test_frames < 1:
      raise ValueError(f"SamplerConfig: num_train_frames and num_test_frames must be >= 1, got "
                       f"{self.num_train_frames}, {self.num_test_frames}")
    if self.min_length < 1:
      raise ValueError(f"SamplerConfig: min_length must be >= 1, got {self.min_length}")


# The sampler settings and training mix of the four published trainings: the one home of these values
# (`configs/*.py` and the pipeline benchmarks read them from here).
_TRAIN_SETS = ("lasot_train", "got10k_vottrain", "trackingnet_train_0_3", "coco2017_train")
SAMPLER_PRESETS: dict[str, SamplerConfig] = {
    "cia18": SamplerConfig(max_gap=30, dataset_weights=tuple(zip(_TRAIN_SETS, (0.25, 1.0, 1.0, 1.0)))),
    "cia50": SamplerConfig(max_gap=200, dataset_weights=tuple(zip(_TRAIN_SETS, (1.0, 1.0, 1.0, 1.0)))),
    "dimp18": SamplerConfig(max_gap=30, dataset_weights=tuple(zip(_TRAIN_SETS, (0.25, 1.0, 1.0, 1.0)))),
    "superdimp": SamplerConfig(max_gap=200, dataset_weights=tuple(zip(_TRAIN_SETS, (1.0, 1.0, 1.0, 1.0)))),
}


@dataclasses.dataclass(frozen=True)
class FrameSample:
  """Which frames of which sequence make one training sample.

  Attributes:
    sequence: the chosen sequence.
    dataset_index: index of its dataset in the sampler's list.
    sequence_index: index of the sequence within that dataset.
    train_frame_ids: `num_train` 0-based frame indices (frame 0 = the base frame).
    test_frame_ids: `num_test` 0-based frame indices.
  """

  sequence: Sequence = dataclasses.field(repr=False)
  dataset_index: int
  sequence_index: int
  train_frame_ids: tuple[int, ...]
  test_frame_ids: tuple[int, ...]

  @property
  def category_id(self) -> int:
    """LaSOT class id 0..69 of the sequence, -1 when unlabelled."""
    return self.sequence.category_id


def sample_rng(seed: int, index: int, attempt: int = 0, stream: int = 0) -> np.random.Generator:
  """The generator for draw stream `stream` of sample `index` (attempt `attempt`) under `seed`.

  All four numbers must be non-negative integers; distinct tuples give independent streams.
  """
  for name, v in (("seed", seed), ("index", index), ("attempt", attempt), ("stream", stream)):
    if int(v) < 0:
      raise ValueError(f"sample_rng: {name} must be a non-negative integer, got {v}")
  return np.random.default_rng([int(seed), int(index), int(attempt), int(stream)])


def _visible_in(visible_ids: np.ndarray, lo: int, hi: int) -> np.ndarray:
  """Sorted visible frame ids in [lo, hi)."""
  a, b = np.searchsorted(visible_ids, [lo, hi])
  return visible_ids[a:b]


class DiMPSampler:
  """Draws `FrameSample`s from weighted datasets; `sample(seed, index, attempt)` is a pure function.

  Args:
    datasets: one list of `Sequence`s per dataset. A dataset whose sequences all have one frame is an image
      dataset (its image is repeated for all frames).
    weights: non-negative sampling weight per dataset (normalised here).
    config: a `SamplerConfig`; `max_gap` etc. can also be given as keyword overrides.
  """

  def __init__(self, datasets: SequenceT[SequenceT[Sequence]], weights: SequenceT[float] | None = None,
               config: SamplerConfig | None = None, **overrides):
    config = dataclasses.replace(config or SamplerConfig(), **overrides)
    self.config = config
    datasets = [list(d) for d in datasets]
    if not datasets:
      raise ValueError("DiMPSampler: datasets is empty")
    weights = np.ones(len(datasets)) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (len(datasets),) or np.any(weights < 0) or not np.all(np.isfinite(weights)):
      raise ValueError(f"DiMPSampler: weights must be {len(datasets)} non-negative numbers, got {weights}")
    if weights.sum() <= 0:
      raise ValueError("DiMPSampler: weights sum to zero")
    self.datasets = datasets
    self.is_image_dataset = [bool(d) and all(len(s) == 1 for s in d) for d in datasets]
    min_visible = 2 * (config.num_train_frames + config.num_test_frames)
    self._usable: list[np.ndarray] = []
    self._visible_ids: list[list[np.ndarray | None]] = []
    for k, (d, is_image) in enumerate(zip(datasets, self.is_image_dataset)):
      usable, vis_ids = [], []
      for j, seq in enumerate(d):
        if not isinstance(seq, Sequence):
          raise ValueError(f"DiMPSampler: datasets[{k}][{j}] is a {type(seq).__name__}, expected a Sequence")
        vis = np.flatnonzero(seq.visible)
        if is_image:
          ok = vis.size == 1
        else:
          ok = vis.size > min_visible and len(seq) >= config.min_length
        usable.append(ok)
        vis_ids.append(vis if ok else None)
      self._usable.append(np.flatnonzero(usable))
      self._visible_ids.append(vis_ids)
      if weights[k] > 0 and self._usable[k].size == 0:
        name = d[0].dataset if d else "<empty>"
        raise ValueError(
            f"DiMPSampler: dataset {k} ({name!r}, {len(d)} sequences) has no usable sequence (a video needs "
            f"> {min_visible} visible frames and >= {config.min_length} frames; an image a visible box)")
    self.probs = weights / weights.sum()

  def num_usable(self) -> list[int]:
    """Number of usable sequences per dataset."""
    return [int(u.size) for u in self._usable]

  def sample(self, seed: int, index: int, attempt: int = 0) -> FrameSample:
    """The sample number `index` under `seed` (`attempt` > 0 draws a replacement sample)."""
    rng = sample_rng(seed, index, attempt, stream=0)
    k = int(rng.choice(len(self.datasets), p=self.probs))
    j = int(self._usable[k][rng.integers(self._usable[k].size)])
    seq = self.datasets[k][j]
    ntr, nte = self.config.num_train_frames, self.config.num_test_frames
    if self.is_image_dataset[k]:
      return FrameSample(seq, k, j, (0,) * ntr, (0,) * nte)
    train, test = self._causal_frames(self._visible_ids[k][j], len(seq), rng, seq.name)
    return FrameSample(seq, k, j, train, test)

  def _causal_frames(self, vis: np.ndarray, length: int, rng: np.random.Generator,
                     name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ntr, nte, max_gap = self.config.num_train_frames, self.config.num_test_frames, self.config.max_gap
    base_pool = _visible_in(vis, ntr - 1, length - nte)
    if base_pool.size == 0:
      raise ValueError(f"sequence {name!r}: no visible frame in [{ntr - 1}, {length - nte}) to use as base")
    gap = 0
    for _ in range(_MAX_DRAWS):
      base = int(rng.choice(base_pool))
      prev_pool = _visible_in(vis, base - max_gap - gap, base)
      if ntr > 1 and prev_pool.size == 0:
        gap += _GAP_STEP
        continue
      prev = rng.choice(prev_pool, size=ntr - 1).tolist() if ntr > 1 else []
      test_pool = _visible_in(vis, base + 1, base + max_gap + gap)
      if test_pool.size == 0:
        gap += _GAP_STEP
        continue
      test = rng.choice(test_pool, size=nte).tolist()
      return (base, *map(int, prev)), tuple(map(int, test))
    raise RuntimeError(f"sequence {name!r}: no train/test frames found after {_MAX_DRAWS} draws")
