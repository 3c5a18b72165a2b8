"""Tracking speed from the `_time.txt` files next to the results (the FPS column of `cia-jax evaluate`).

Frames per second = timed frames / their summed seconds, pooled over all sequences and runs of a tracker, with
frame 0 (initialisation: the first filter optimisation, and the compilation of `init`) left out of both;
non-finite or negative times are left out too. The compilation of `step` lands in frame 1 of the first sequence
of each frame size of a `cia-jax track` process and is counted: negligible over a full benchmark, visible on a
few short sequences. Pooling frames and seconds weighs every frame equally (the
GOT-10k toolkit instead averages per-frame speeds, which long frames barely move). A tracker without time files
has no speed ("n/a"); one with time files for only some sequences gets the speed of those, and the table says how
many were timed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from cia_jax.results import load_times, time_file


@dataclasses.dataclass(frozen=True)
class Speed:
  """Timed frames and seconds of one tracker (or one sequence).

  Attributes:
    frames: frames with a time, frame 0 of every sequence and run excluded.
    seconds: their summed time.
    timed_sequences: sequences with a time file.
    num_sequences: sequences considered.
  """

  frames: int = 0
  seconds: float = 0.0
  timed_sequences: int = 0
  num_sequences: int = 0

  @property
  def fps(self) -> float | None:
    """Frames per second, None without timed frames (or with a zero total time)."""
    return self.frames / self.seconds if self.frames and self.seconds > 0.0 else None

  def label(self) -> str:
    """`"12.3"`, `"12.3 (4/5 seq.)"` when only some sequences are timed, or `"n/a"`."""
    fps = self.fps
    if fps is None:
      return "n/a"
    partial = f" ({self.timed_sequences}/{self.num_sequences} seq.)" \
        if self.timed_sequences < self.num_sequences else ""
    return f"{fps:.1f}{partial}"


def times_speed(times: np.ndarray) -> tuple[int, float]:
  """(timed frames, seconds) of a `[T, R]` (or `[T]`) time array: row 0 dropped, non-finite / negative skipped."""
  times = np.asarray(times, np.float64)
  times = times.reshape(len(times), -1)[1:]
  ok = np.isfinite(times) & (times >= 0.0)
  return int(ok.sum()), float(times[ok].sum())


def sequence_speed(results_dirs: Iterable[str], seq_name: str, dataset: str | None = None) -> Speed:
  """Speed of one sequence over a tracker's results directories (runs); no time file -> zero frames."""
  frames, seconds, timed = 0, 0.0, False
  for d in results_dirs:
    path = time_file(d, seq_name, dataset)
    if path is None:
      continue
    f, s = times_speed(load_times(path))
    frames, seconds, timed = frames + f, seconds + s, True
  return Speed(frames, seconds, int(timed), 1)


def combine(speeds: Sequence[Speed]) -> Speed:
  """The pooled speed of several sequences."""
  return Speed(sum(s.frames for s in speeds), float(sum(s.seconds for s in speeds)),
               sum(s.timed_sequences for s in speeds), sum(s.num_sequences for s in speeds))
