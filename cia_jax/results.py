"""Tracker result files: the one place that knows their layouts, writes them and reads them back.

Layouts written by `cia-jax track` (`fmt`, see `RESULT_FORMATS`) in a results directory DIR (one tracker):
  raw          `DIR/<seq>.txt`, one `x,y,w,h` line per frame, and `DIR/<seq>_time.txt` (seconds per frame);
               what `cia-jax evaluate` and pytracking's analysis read.
  got10k       the GOT-10k toolkit / server layout: `DIR/<seq>/<seq>_001.txt` and `DIR/<seq>/<seq>_time.txt`.
  trackingnet  the TrackingNet server layout: `DIR/<seq>.txt` (comma-separated `x,y,w,h`); zip the folder's
               .txt files to submit.
Files are written atomically (temporary name, then rename) once a sequence is complete, so a killed run never
leaves a partial result; a sequence is finished when its box file has one line per frame (`is_finished`).

Layouts read (`load_results`): the above, pytracking's raw results (comma-, tab- or space-separated; UAV123 /
NFS names prefixed, `uav_bike1.txt`), and the GOT-10k toolkit's repetitions `DIR/<seq>/<seq>_001.txt`,
`_002.txt`, ... (one file per run).

Time files (`load_times`, found by `time_file`): `DIR/<seq>_time.txt` (also `DIR/<dataset>_<seq>_time.txt`) or
`DIR/<seq>/<seq>_time.txt`, one line per frame, seconds; the GOT-10k toolkit appends one comma-separated column
per repetition.

`DIR/failures.json` lists the sequences a `track` run could not track and why (`{"failed": {seq: reason}}`);
`evaluate` reports them as missing with that reason, and a rerun retries them and updates the file (removing
it once nothing is left failed).
"""

from __future__ import annotations

import io
import json
import os
import re
from typing import Iterable, Mapping

import numpy as np

RESULT_FORMATS = ("raw", "got10k", "trackingnet")
FAILURES_FILE = "failures.json"

_SEPARATORS = re.compile(r"[,\t ]+")


# ------------------------------------------------------------------------------------------------
# Writing.

def result_paths(results_dir: str, seq_name: str, fmt: str = "raw") -> tuple[str, str]:
  """(box file, time file) of one sequence in layout `fmt` (see the module docstring)."""
  if fmt not in RESULT_FORMATS:
    raise ValueError(f"unknown result format {fmt!r}; expected one of {RESULT_FORMATS}")
  if fmt == "got10k":
    d = os.path.join(results_dir, seq_name)
    return os.path.join(d, f"{seq_name}_001.txt"), os.path.join(d, f"{seq_name}_time.txt")
  return os.path.join(results_dir, f"{seq_name}.txt"), os.path.join(results_dir, f"{seq_name}_time.txt")


def is_finished(results_dir: str, seq_name: str, num_frames: int, fmt: str = "raw") -> bool:
  """True when the sequence's box file exists with exactly `num_frames` non-empty lines."""
  box_path, _ = result_paths(results_dir, seq_name, fmt)
  if not os.path.isfile(box_path):
    return False
  with open(box_path, encoding="utf-8") as f:
    return sum(1 for line in f if line.strip()) == num_frames


def check_results_dir(results_dir: str) -> None:
  """Creates the results directory; ValueError naming it when it cannot hold results (an existing file).

  Called before any tracking, so a bad path fails in a second rather than after the whole benchmark.
  """
  if os.path.exists(results_dir) and not os.path.isdir(results_dir):
    raise ValueError(f"results directory {results_dir} is an existing file, not a directory")
  try:
    os.makedirs(results_dir, exist_ok=True)
  except OSError as e:  # e.g. a parent that is a file, no permission
    raise ValueError(f"cannot create the results directory {results_dir}: {e.strerror or e}") from e


def _atomic_write(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def write_results(results_dir: str, seq_name: str, boxes_xywh: np.ndarray, times: np.ndarray,
                  fmt: str = "raw") -> tuple[str, str]:
  """Writes `[T, 4]` boxes (x, y, w, h pixels) and `[T]` per-frame seconds of one sequence; returns the paths.

  The time file is written first and the box file last, so a box file (what `is_finished` checks) only exists
  for complete sequences.
  """
  boxes_xywh = np.asarray(boxes_xywh, np.float64)
  if boxes_xywh.ndim != 2 or boxes_xywh.shape[1] != 4:
    raise ValueError(f"write_results({seq_name!r}): boxes must be [T, 4], got {boxes_xywh.shape}")
  box_path, time_path = result_paths(results_dir, seq_name, fmt)
  _atomic_write(time_path, "".join(f"{t:.6f}\n" for t in np.asarray(times, np.float64)))
  _atomic_write(box_path, "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in boxes_xywh))
  return box_path, time_path


# ------------------------------------------------------------------------------------------------
# Failed sequences.

def failures_path(results_dir: str) -> str:
  """`<results_dir>/failures.json`."""
  return os.path.join(results_dir, FAILURES_FILE)


def read_failures(results_dir: str) -> dict[str, str]:
  """{sequence name: reason} of `failures.json` ({} without one); ValueError naming the file if unreadable."""
  path = failures_path(results_dir)
  if not os.path.isfile(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      failed = json.load(f)["failed"]
    return {str(name): str(reason) for name, reason in failed.items()}
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"{path}: not a failure list of `cia-jax track` ({e}); delete it to start afresh") from e


def update_failures(results_dir: str, resolved: Iterable[str], failed: Mapping[str, str]) -> dict[str, str]:
  """Rewrites `failures.json` after a run; returns what it now lists.

  Args:
    results_dir: the run's results directory.
    resolved: every sequence this run settled (finished now, already finished, or failed): their old
      entries are dropped. Entries of sequences the run did not reach stay (still missing).
    failed: {sequence: reason} of this run's failures.

  The file is written atomically, and removed when nothing is left failed.
  """
  resolved = set(resolved) | set(failed)
  merged = {name: reason for name, reason in read_failures(results_dir).items() if name not in resolved}
  merged.update(failed)
  path = failures_path(results_dir)
  if merged:
    _atomic_write(path, json.dumps({"failed": dict(sorted(merged.items()))}, indent=1) + "\n")
  elif os.path.isfile(path):
    os.remove(path)
  return merged


# ------------------------------------------------------------------------------------------------
# Reading.

def load_boxes(path: str) -> np.ndarray:
  """Reads a box file into `[N, 4]` float64 (x, y, w, h); separators may be commas, tabs or spaces.

  Blank lines are skipped. Raises FileNotFoundError for a missing file and ValueError naming the file and
  line for a row that is not four numbers.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"result file not found: {path}")
  with open(path, encoding="utf-8") as f:
    lines = [line.strip() for line in f]
  rows = [_SEPARATORS.sub(" ", line) for line in lines if line]
  if not rows:
    return np.zeros((0, 4))
  try:
    boxes = np.loadtxt(io.StringIO("\n".join(rows)), dtype=np.float64, ndmin=2)
  except ValueError:
    boxes = None
  if boxes is None or boxes.shape[1] != 4:
    # Slow path only to name the offending line.
    for number, line in enumerate(lines, start=1):
      if not line:
        continue
      fields = _SEPARATORS.split(line)
      try:
        values = [float(v) for v in fields]
      except ValueError:
        values = []
      if len(values) != 4:
        raise ValueError(f"{path}, line {number}: expected 4 numbers x, y, w, h, got {line!r}")
    raise ValueError(f"{path}: could not read as [N, 4] boxes")  # unreachable in practice
  return boxes


def result_files(results_dir: str, seq_name: str, dataset: str | None = None) -> list[str]:
  """Result files of one sequence: `[DIR/<seq>.txt]`, or the GOT-10k runs `DIR/<seq>/<seq>_NNN.txt`.

  With `dataset`, `DIR/<dataset>_<seq>.txt` is tried too: pytracking names UAV123 and NFS sequences
  `uav_bike1`, `nfs_Gymnastics`. Raises FileNotFoundError naming the layouts when none exists (and the
  reason when `failures.json` lists the sequence as failed).
  """
  flat = os.path.join(results_dir, f"{seq_name}.txt")
  if os.path.isfile(flat):
    return [flat]
  if dataset:
    prefixed = os.path.join(results_dir, f"{dataset}_{seq_name}.txt")
    if os.path.isfile(prefixed):
      return [prefixed]
  seq_dir = os.path.join(results_dir, seq_name)
  pattern = re.compile(re.escape(seq_name) + r"_[0-9]+\.txt")
  runs = sorted(os.path.join(seq_dir, f) for f in os.listdir(seq_dir) if pattern.fullmatch(f)) \
      if os.path.isdir(seq_dir) else []
  if not runs:
    reason = read_failures(results_dir).get(seq_name)
    if reason is not None:
      raise FileNotFoundError(f"no results for sequence {seq_name!r}: tracking it failed ({reason}; listed in "
                              f"{failures_path(results_dir)}); rerun `cia-jax track` to retry it")
    raise FileNotFoundError(
        f"no results for sequence {seq_name!r}: neither {flat} nor {os.path.join(seq_dir, seq_name)}_NNN.txt")
  return runs


def load_results(results_dir: str, seq_name: str, dataset: str | None = None) -> list[np.ndarray]:
  """The `[N, 4]` predicted boxes of every run of one sequence found in `results_dir` (see `result_files`)."""
  return [load_boxes(p) for p in result_files(results_dir, seq_name, dataset)]


def time_file(results_dir: str, seq_name: str, dataset: str | None = None) -> str | None:
  """The time file of one sequence in any layout of `result_files` (see the module docstring); None if none."""
  candidates = [os.path.join(results_dir, f"{seq_name}_time.txt")]
  if dataset:
    candidates.append(os.path.join(results_dir, f"{dataset}_{seq_name}_time.txt"))
  candidates.append(os.path.join(results_dir, seq_name, f"{seq_name}_time.txt"))
  return next((p for p in candidates if os.path.isfile(p)), None)


def load_times(path: str) -> np.ndarray:
  """Reads a time file into `[T, R]` float64 seconds (T frames, R runs: one column, or one per GOT-10k repetition).

  Separators may be commas, tabs or spaces. ValueError naming the file and line for a row that is not R numbers.
  """
  with open(path, encoding="utf-8") as f:
    lines = [line.strip() for line in f]
  rows = []
  for number, line in enumerate(lines, start=1):
    if not line:
      continue
    try:
      rows.append([float(v) for v in _SEPARATORS.split(line)])
    except ValueError:
      raise ValueError(f"{path}, line {number}: expected seconds, got {line!r}") from None
    if len(rows[-1]) != len(rows[0]):
      raise ValueError(f"{path}, line {number}: {len(rows[-1])} values, the first line {len(rows[0])}")
  return np.asarray(rows, np.float64).reshape(len(rows), len(rows[0]) if rows else 1)
