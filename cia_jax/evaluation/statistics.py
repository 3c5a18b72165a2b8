"""Bootstrap confidence intervals over sequences and paired bootstrap tests between trackers (NumPy only).

A benchmark score is a ratio of sums over sequences, `sum_s num[s] / sum_s den[s]`:
  AUC (and P, NP, OP50, ...): num[s] = the sequence's score (mean over its runs), den[s] = 1, i.e. the mean over
    sequences, which is exactly pytracking's dataset AUC (`metrics.summarize` averages curves over sequences);
  AO / SR (GOT-10k): num[s] = sum of the IoUs of the sequence's evaluated frames over all its runs, den[s] = the
    number of those frames, so the ratio is the frame-pooled AO of the GOT-10k toolkit.
Resampling draws the S sequences with replacement (`samples` times, S draws each) and recomputes the ratio;
sequences, not frames, are the unit because frames of one video are strongly correlated.

`bootstrap_ci`: the percentile interval (the 2.5% and 97.5% quantiles of the resampled scores for 95%).
`paired_bootstrap`: the same resampled sequence sets for both trackers, so the per-sequence pairing (both ran on
the same videos) is kept; the interval of the difference A - B and a two-sided p-value
`p = min(1, 2 * min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (samples + 1))` (the bootstrap test that inverts the
percentile interval: p < 1 - confidence when, up to one sample, the interval excludes 0; identical trackers give
p = 1, a tracker better on every sequence p = 2 / (samples + 1)).

Everything is deterministic: the indices come from `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_SAMPLES = 10000
DEFAULT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Interval:
  """A score and its bootstrap interval (same units as the score, e.g. AUC in [0, 1])."""

  value: float
  low: float
  high: float
  confidence: float


@dataclasses.dataclass(frozen=True)
class PairedTest:
  """Paired bootstrap comparison of trackers `a` and `b` on the same sequences.

  Attributes:
    a, b: tracker names.
    difference: score(a) - score(b) with its bootstrap interval.
    p_value: two-sided p-value of "no difference" (see the module docstring).
    num_sequences: S, the number of paired sequences.
  """

  a: str
  b: str
  difference: Interval
  p_value: float
  num_sequences: int


def resample_indices(num_sequences: int, samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
  """`[samples, num_sequences]` int indices of sequences drawn with replacement (seeded, deterministic)."""
  if num_sequences < 1:
    raise ValueError("bootstrap: no sequences")
  if samples < 1:
    raise ValueError(f"bootstrap: samples must be at least 1, got {samples}")
  return np.random.default_rng(seed).integers(0, num_sequences, size=(samples, num_sequences))


def _as_ratio(numerators, denominators) -> tuple[np.ndarray, np.ndarray]:
  num = np.asarray(numerators, np.float64)
  den = np.ones_like(num) if denominators is None else np.asarray(denominators, np.float64)
  if num.ndim != 1 or den.shape != num.shape:
    raise ValueError(f"bootstrap: expected [S] numerators and denominators, got {num.shape} and {den.shape}")
  if not np.isfinite(num).all() or not (den > 0).all():
    raise ValueError("bootstrap: per-sequence values must be finite with positive denominators")
  return num, den


def _resampled(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> np.ndarray:
  """`[B]` ratios sum(num[idx]) / sum(den[idx]) of each resampled set."""
  return num[idx].sum(axis=1) / den[idx].sum(axis=1)


def _interval(value: float, draws: np.ndarray, confidence: float) -> Interval:
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  tail = 100.0 * (1.0 - confidence) / 2.0
  low, high = np.percentile(draws, [tail, 100.0 - tail])
  return Interval(float(value), float(low), float(high), confidence)


def bootstrap_ci(numerators, denominators=None, *, samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED,
                 confidence: float = 0.95, indices: np.ndarray | None = None) -> Interval:
  """Percentile bootstrap interval of `sum(num) / sum(den)` over sequences.

  Args:
    numerators: `[S]` per-sequence numerators (per-sequence AUC, or summed IoUs for AO).
    denominators: `[S]` positive denominators (frame counts for AO); None for a plain mean over sequences.
    samples, seed: number of resampled sets and the seed of their indices.
    confidence: interval coverage, e.g. 0.95.
    indices: `[B, S]` resampling indices to use instead of drawing them (`resample_indices`), so several
      trackers' intervals come from the same resampled sets.

  Returns:
    `Interval` with the score on all sequences and the interval bounds.
  """
  num, den = _as_ratio(numerators, denominators)
  idx = resample_indices(len(num), samples, seed) if indices is None else indices
  return _interval(num.sum() / den.sum(), _resampled(num, den, idx), confidence)


def paired_bootstrap(a_numerators, b_numerators, a_denominators=None, b_denominators=None, *, names=("A", "B"),
                     samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED, confidence: float = 0.95,
                     indices: np.ndarray | None = None) -> PairedTest:
  """Paired bootstrap test of score(A) - score(B) on the same S sequences (same order in both).

  Args:
    a_numerators, b_numerators: `[S]` per-sequence numerators of A and B (see `bootstrap_ci`).
    a_denominators, b_denominators: `[S]` denominators, or None for plain means.
    names: (name of A, name of B) for the result.
    samples, seed, confidence, indices: as in `bootstrap_ci`.

  Returns:
    `PairedTest` with the difference, its interval and the two-sided p-value.
  """
  a_num, a_den = _as_ratio(a_numerators, a_denominators)
  b_num, b_den = _as_ratio(b_numerators, b_denominators)
  if a_num.shape != b_num.shape:
    raise ValueError(f"paired bootstrap: {names[0]} has {len(a_num)} sequences, {names[1]} {len(b_num)}")
  idx = resample_indices(len(a_num), samples, seed) if indices is None else indices
  draws = _resampled(a_num, a_den, idx) - _resampled(b_num, b_den, idx)
  observed = a_num.sum() / a_den.sum() - b_num.sum() / b_den.sum()
  below, above = int((draws <= 0.0).sum()), int((draws >= 0.0).sum())
  p_value = min(1.0, 2.0 * (min(below, above) + 1) / (len(draws) + 1))
  return PairedTest(a=names[0], b=names[1], difference=_interval(observed, draws, confidence), p_value=p_value,
                    num_sequences=len(a_num))
