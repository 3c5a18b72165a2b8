"""VOT short-term reset-based ("supervised") evaluation: accuracy, failures / robustness and EAO.

    cia-jax evaluate --protocol vot --dataset vot --root /data/vot2018 --results CIA18=res/cia18 --out rep/vot

Definitions follow the VOT toolkit (PyPI `vot-toolkit` 0.9.0, `vot/analysis/supervised.py`,
`vot/experiment/multirun.py`, `vot/region/raster.py`; Kristan et al., "A novel performance evaluation methodology
for single-target trackers", TPAMI 2016), so that our numbers equal the toolkit's on the same raw results:

Raw results and overlap: `cia_jax.vot_regions` (the toolkit's text trajectories, rasterised overlap).

Accuracy (`sequence_accuracy`): mean overlap over the frames that are not `0` or `2` and not within the
`BURNIN` frames that start at each `1` (the initialisation frame included); per sequence the mean over
repetitions; over sequences the mean weighted by sequence length. Failures: the number of `2` frames, per sequence
the mean over repetitions; over sequences the length-weighted mean (failures per sequence, the toolkit's "R").
Robustness: `exp(-SENSITIVITY * F / L)` with F the pooled failures per sequence and L the mean sequence length
(the toolkit's AR-plot robustness).

EAO (`eao_curve`, `eao_score`): every run between an initialisation and the next failure (excluded) is a
segment; a segment that ends in a failure is padded with zeros to the longest segment, one that reaches the end of
the sequence counts only up to its length. The curve at index n is the mean over segments of the average overlap
of frames 1..n of the segment (frame 0, the initialisation, is left out); the EAO is the curve's mean over
n in [low, high] (both included). `EAO_INTERVAL` is the VOT2016-2018 interval [100, 356] of the toolkit's stacks
(`vot/stack/vot2018/shortterm.yaml`); `eao_interval` derives one from a dataset's sequence lengths as the VOT
papers do (the smallest range around the mode of a kernel density estimate of the lengths holding half its mass).
Where the curve is shorter than `high` (short sequences) the mean is over the part that exists, as the toolkit
does; NaN when it is shorter than `low`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping
from collections.abc import Sequence as SequenceABC

import numpy as np

from cia_jax.data import datasets
from cia_jax.data.frames import sequence_image_size
from cia_jax.vot_regions import (FAILURE, INITIALIZATION, UNKNOWN, Region, groundtruth_regions, is_special, overlaps,
                                 read_trajectories)

BURNIN = 10  # frames from each initialisation left out of accuracy (`AccuracyRobustness.burnin` default)
SENSITIVITY = 30.0  # robustness exp(-S * F / L) (stack `sensitivity: 30`)
EAO_INTERVAL = (100, 356)  # VOT2018 stack `supervised_eao_score` low / high


# ------------------------------------------------------------------------------------------------
# Accuracy, failures, EAO.

def accuracy_mask(trajectory: SequenceABC[Region], burnin: int = BURNIN) -> np.ndarray:
  """`[T]` bool: frames that count for accuracy (not `0` / `2`, not within `burnin` frames from a `1`)."""
  mask = np.ones(len(trajectory), bool)
  for i, region in enumerate(trajectory):
    if is_special(region, UNKNOWN) or is_special(region, FAILURE):
      mask[i] = False
    elif is_special(region, INITIALIZATION):
      mask[i:i + burnin] = False
  return mask


def sequence_accuracy(trajectory: SequenceABC[Region], frame_overlaps: np.ndarray, burnin: int = BURNIN
                      ) -> tuple[float, int]:
  """(mean overlap of the `accuracy_mask` frames, their number); (0, 0) when none counts (as the toolkit)."""
  mask = accuracy_mask(trajectory, burnin)
  return (float(np.mean(frame_overlaps[mask])), int(mask.sum())) if mask.any() else (0.0, 0)


def failure_frames(trajectory: SequenceABC[Region]) -> list[int]:
  """Indices of the failure (`2`) frames."""
  return [i for i, r in enumerate(trajectory) if is_special(r, FAILURE)]


def eao_segments(trajectory: SequenceABC[Region], frame_overlaps: np.ndarray) -> list[tuple[np.ndarray, bool]]:
  """(overlaps from an initialisation to the frame before the next failure, reached the end without failing)."""
  fails = failure_frames(trajectory)
  inits = [i for i, r in enumerate(trajectory) if is_special(r, INITIALIZATION)]
  if not fails:
    return [(np.asarray(frame_overlaps, np.float64), True)]
  segments = [(frame_overlaps[inits[i]:fails[i]], False) for i in range(len(fails))]
  if len(inits) > len(fails):
    segments.append((frame_overlaps[inits[-1]:], True))
  return segments


def eao_curve(segments: SequenceABC[tuple[np.ndarray, bool]]) -> np.ndarray:
  """`[L]` expected average overlap per sequence length index (L: the longest segment; see the docstring)."""
  length = max(len(o) for o, _ in segments)
  values = np.zeros((len(segments), length))
  mask = np.zeros((len(segments), length))
  for i, (o, success) in enumerate(segments):
    values[i, :len(o)] = o
    mask[i, :len(o) if success else length] = 1.0  # a failed segment counts with zeros to every length
  average = values.copy()
  for n in range(1, length):
    average[:, n] = values[:, 1:n + 1].mean(axis=1)  # frame 0 is the initialisation
  return np.sum(average * mask, axis=0) / np.sum(mask, axis=0)


def eao_score(curve: np.ndarray, interval: tuple[int, int] = EAO_INTERVAL) -> float:
  """Mean of `curve[low:high + 1]` (the part that exists); NaN when the curve is shorter than `low`."""
  part = np.asarray(curve)[int(interval[0]):int(interval[1]) + 1]
  return float(np.mean(part)) if len(part) else float("nan")


def eao_interval(lengths: SequenceABC[int], mass: float = 0.5) -> tuple[int, int]:
  """[low, high] sequence lengths around the mode of a Gaussian KDE of `lengths` (Silverman bandwidth) holding
  `mass` of the density, grown one length at a time towards the denser side (VOT2015+ interval rule)."""
  lengths = np.asarray(lengths, np.float64)
  grid = np.arange(1, int(lengths.max()) + 1, dtype=np.float64)
  bandwidth = max(1.06 * float(np.std(lengths)) * len(lengths) ** -0.2, 1.0)
  pdf = np.exp(-0.5 * ((grid[:, None] - lengths[None, :]) / bandwidth) ** 2).sum(axis=1)
  pdf /= pdf.sum()
  low = high = int(np.argmax(pdf))
  total = pdf[low]
  while total < mass:
    left = pdf[low - 1] if low > 0 else -1.0
    right = pdf[high + 1] if high + 1 < len(pdf) else -1.0
    if right >= left:
      high += 1
      total += right
    else:
      low -= 1
      total += left
  return int(grid[low]), int(grid[high])


# ------------------------------------------------------------------------------------------------
# Benchmarks.

@dataclasses.dataclass
class SequenceScores:
  """One tracker on one sequence: accuracy and failures averaged over repetitions, the EAO segments of all."""

  name: str
  length: int
  accuracy: float
  failures: float
  segments: list[tuple[np.ndarray, bool]]


def evaluate_sequence(trajectories: SequenceABC[SequenceABC[Region]], groundtruth: SequenceABC[Region],
                      size: tuple[int, int] | None, name: str = "", burnin: int = BURNIN) -> SequenceScores:
  """`SequenceScores` of a sequence's repetitions against its ground truth (image `size` (width, height))."""
  acc, fails, segments = [], [], []
  for traj in trajectories:
    o = overlaps(traj, groundtruth, size)
    acc.append(sequence_accuracy(traj, o, burnin)[0])
    fails.append(len(failure_frames(traj)))
    segments += eao_segments(traj, o)
  return SequenceScores(name, len(groundtruth), float(np.mean(acc)), float(np.mean(fails)), segments)


def summarize(scores: SequenceABC[SequenceScores], interval: tuple[int, int] = EAO_INTERVAL,
              sensitivity: float = SENSITIVITY) -> dict[str, float]:
  """Pooled scores: `accuracy`, `failures` (length-weighted per sequence), `total_failures`, `robustness`
  (exp(-S F / L)), `eao` over `interval`, and the `eao_curve` `[L]`."""
  weights = np.asarray([s.length for s in scores], np.float64)
  failures = float(np.sum(weights * [s.failures for s in scores]) / weights.sum())
  curve = eao_curve([seg for s in scores for seg in s.segments])
  return {"accuracy": float(np.sum(weights * [s.accuracy for s in scores]) / weights.sum()),
          "failures": failures, "total_failures": float(sum(s.failures for s in scores)),
          "robustness": math.exp(-sensitivity * failures / float(weights.mean())),
          "eao": eao_score(curve, interval), "eao_curve": curve}


@dataclasses.dataclass
class VotReport:
  """Every tracker's per-sequence scores and pooled summary (`summarize`)."""

  sequences: list[str]
  interval: tuple[int, int]
  per_sequence: dict[str, list[SequenceScores]]
  summary: dict[str, dict[str, float]]


def evaluate_vot(sequences: SequenceABC, results: Mapping[str, str], interval: tuple[int, int] | None = None,
                 burnin: int = BURNIN, sensitivity: float = SENSITIVITY) -> VotReport:
  """Evaluates the reset-based raw results (`DIR/<seq>/<seq>_NNN.txt`) of each tracker on `sequences`.

  Args:
    sequences: `Sequence` objects (VOT folders: their polygon ground truth is read, `groundtruth_regions`).
    results: tracker name -> results directory.
    interval: EAO [low, high]; None: `EAO_INTERVAL`.
    burnin, sensitivity: see the module docstring.
  """
  interval = tuple(interval or EAO_INTERVAL)
  gts = {s.name: (groundtruth_regions(s), sequence_image_size(s)) for s in sequences}
  per_sequence = {}
  for tracker, d in results.items():
    per_sequence[tracker] = [evaluate_sequence(read_trajectories(d, name), gt, size, name, burnin)
                             for name, (gt, size) in gts.items()]
  summary = {t: summarize(s, interval, sensitivity) for t, s in per_sequence.items()}
  if max(len(c["eao_curve"]) for c in summary.values()) <= interval[0]:
    warnings.warn(f"EAO interval {interval} starts beyond the longest segment: EAO is NaN "
                  "(pass a shorter interval for short sequences)", stacklevel=2)
  return VotReport(list(gts), interval, per_sequence, summary)


def format_markdown(report: VotReport) -> str:
  """The A / failures / R / EAO table with its notes."""
  lo, hi = report.interval
  lines = [f"VOT reset-based protocol, {len(report.sequences)} sequences; EAO over lengths [{lo}, {hi}].", "",
           "| Tracker | A | Failures/seq | Failures | R (exp(-S F/L)) | EAO |", "|---|---|---|---|---|---|"]
  for name, s in sorted(report.summary.items(), key=lambda kv: -np.nan_to_num(kv[1]["eao"], nan=-1.0)):
    lines.append(f"| {name} | {s['accuracy']:.4f} | {s['failures']:.3f} | {s['total_failures']:.1f} | "
                 f"{s['robustness']:.4f} | {s['eao']:.4f} |")
  lines += ["", f"A: mean overlap, burn-in {BURNIN} frames after each (re)initialisation excluded, length-weighted. "
            f"Failures/seq: length-weighted mean; R: robustness with sensitivity S = {SENSITIVITY:g}."]
  return "\n".join(lines) + "\n"


def write_report(report: VotReport, out_dir: str) -> list[str]:
  """`vot_summary.md`, `vot_per_sequence.csv` and `vot_eao_curve.csv` in `out_dir`; returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, n) for n in ("vot_summary.md", "vot_per_sequence.csv", "vot_eao_curve.csv")]
  with open(paths[0], "w", encoding="utf-8") as f:
    f.write(format_markdown(report))
  with open(paths[1], "w", encoding="utf-8") as f:
    f.write("tracker,sequence,frames,accuracy,failures\n")
    f.writelines(f"{t},{s.name},{s.length},{s.accuracy:.6f},{s.failures:.3f}\n"
                 for t, scores in report.per_sequence.items() for s in scores)
  with open(paths[2], "w", encoding="utf-8") as f:
    f.write("tracker,length_index,eao\n")
    f.writelines(f"{t},{n},{v:.6f}\n" for t, s in report.summary.items() for n, v in enumerate(s["eao_curve"]))
  return paths


def parse_interval(text: str | None) -> tuple[int, int] | None:
  """`"LOW,HIGH"` -> (low, high); None stays None; ValueError for anything else."""
  if text is None:
    return None
  parts = text.split(",")
  if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or int(parts[0]) > int(parts[1]):
    raise ValueError(f"--eao-interval: expected LOW,HIGH whole numbers with LOW <= HIGH, got {text!r}")
  return int(parts[0]), int(parts[1])


def evaluate_vot_benchmark(dataset: str, root: str, results: Mapping[str, str], out_dir: str,
                           split: str | None = None, interval: str | tuple[int, int] | None = None) -> VotReport:
  """`cia-jax evaluate --protocol vot`: reads the benchmark, evaluates, writes the report into `out_dir`.

  `interval`: (low, high), `"LOW,HIGH"`, `"auto"` (`eao_interval` of the benchmark's sequence lengths) or None
  (`EAO_INTERVAL`).
  """
  sequences = datasets.load_dataset(dataset, root, split)
  if interval == "auto":
    interval = eao_interval([len(s) for s in sequences])
  elif isinstance(interval, str):
    interval = parse_interval(interval)
  report = evaluate_vot(sequences, results, interval)
  write_report(report, out_dir)
  return report
