"""Reading tracker result files in the layouts the benchmarks' tools write.

Layouts of a results directory DIR (one tracker):
* ours and pytracking's raw results: `DIR/<seq>.txt`, one `x,y,w,h` line per frame (comma-, tab- or
  space-separated), optionally `DIR/<seq>_time.txt`; pytracking prefixes UAV123 / NFS names (`uav_bike1.txt`);
* GOT-10k toolkit: `DIR/<seq>/<seq>_001.txt`, `_002.txt`, ... one file per repetition (run), plus
  `DIR/<seq>/<seq>_time.txt`.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np

_SEPARATORS = re.compile(r"[,\t ]+")


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
  `uav_bike1`, `nfs_Gymnastics`. Raises FileNotFoundError naming the layouts when none exists.
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
    raise FileNotFoundError(
        f"no results for sequence {seq_name!r}: neither {flat} nor {os.path.join(seq_dir, seq_name)}_NNN.txt")
  return runs


def load_results(results_dir: str, seq_name: str, dataset: str | None = None) -> list[np.ndarray]:
  """The `[N, 4]` predicted boxes of every run of one sequence found in `results_dir` (see `result_files`)."""
  return [load_boxes(p) for p in result_files(results_dir, seq_name, dataset)]
