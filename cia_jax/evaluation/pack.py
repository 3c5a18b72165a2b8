"""Submission packages for the GOT-10k and TrackingNet evaluation servers (`cia-jax pack`), checked before writing.

    cia-jax pack --format got10k --dataset-root /data/GOT-10k res/cia18_got10k cia18_got10k.zip
    cia-jax pack --format trackingnet --sequences test_list.txt res/cia18_tn cia18_trackingnet.zip

Input: one or more results directories of one tracker, in any layout `cia_jax.results` reads (our raw layout,
pytracking's raw results, the GOT-10k toolkit's `<seq>/<seq>_NNN.txt`); several directories are repeated runs,
taken in the given order.

Output (the zip's root):
  got10k       `<seq>/<seq>_001.txt`, `<seq>_002.txt`, `<seq>_003.txt` (the server's three repetitions) and
               `<seq>/<seq>_time.txt`. A sequence with one run is written three times: the trackers here are
               deterministic for a seed, and the GOT-10k toolkit itself stops after one run of a deterministic
               tracker (pytracking's packer repeats it the same way). Two runs, or more than three, are refused.
               The time file is the first results directory's (per-frame seconds, one line per frame).
  trackingnet  `<seq>.txt`, one run per sequence.
Boxes are written `x,y,w,h`, comma-separated, each value in the shortest form that reads back as the same float
(so unzipping gives back exactly the input); entries are sorted and time-stamped 1980-01-01, so the same results
give the same bytes.

Checks (every problem is collected; one ValueError lists them, naming the sequence and the 1-based line, and
nothing is written): every expected sequence has results; a box file has one line per frame; every line is four
numbers, finite, with width and height >= 0; one separator per file (commas, tabs or spaces, not mixed within a
line or between lines); GOT-10k time files exist with one finite, non-negative time per frame. The expected
sequences and their frame counts come from the dataset (`expected_from_dataset`) or a list file
(`expected_from_list`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np

from cia_jax.data import datasets
from cia_jax.results import load_times, result_files, time_file

PACK_FORMATS = ("got10k", "trackingnet")
GOT10K_RUNS = 3
_SEPARATOR = re.compile(r"[,\t ]+")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_MAX_LISTED = 8


@dataclasses.dataclass
class PackSummary:
  """What `pack_results` wrote.

  Attributes:
    path: the zip file.
    fmt: "got10k" or "trackingnet".
    sequences: packed sequences, sorted.
    repeated: sequences with one run, written as all three GOT-10k repetitions.
    ignored: result sequences found in the first directory that are not expected (not packed).
  """

  path: str
  fmt: str
  sequences: list[str]
  repeated: list[str]
  ignored: list[str]


def _fmt(value: float) -> str:
  return np.format_float_positional(value, trim="-")


def _line_kind(line: str) -> str | None:
  """"comma", "tab" or "space" (spaces next to commas allowed), "mixed", or None for a single field."""
  seps = _SEPARATOR.findall(line)
  if not seps:
    return None
  kinds = {"comma" if "," in s else "tab" if "\t" in s else "space" for s in seps}
  if len(kinds) > 1 or any("," in s and "\t" in s for s in seps):
    return "mixed"
  return kinds.pop()


def read_box_file(path: str, seq_name: str, num_frames: int | None) -> tuple[np.ndarray, list[str]]:
  """Strictly reads one result file: (`[N, 4]` boxes of the readable lines, problems naming sequence and line)."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  where = f"{seq_name} ({path})"
  problems, rows, first_kind = [], [], None
  for number, raw in enumerate(lines, start=1):
    line = raw.strip()
    kind = _line_kind(line)
    if not line:
      problems.append(f"{where}, line {number}: empty line")
      continue
    if kind == "mixed":
      problems.append(f"{where}, line {number}: mixed separators in {raw!r}")
      continue
    if kind is not None and first_kind is None:
      first_kind = kind
    elif kind is not None and kind != first_kind:
      problems.append(f"{where}, line {number}: separated by {kind}s, the first line by {first_kind}s")
      continue
    try:
      values = [float(v) for v in _SEPARATOR.split(line)]
    except ValueError:
      values = []
    if len(values) != 4:
      problems.append(f"{where}, line {number}: expected 4 numbers x, y, w, h, got {raw!r}")
    elif not np.isfinite(values).all():
      problems.append(f"{where}, line {number}: not a finite box: {raw!r}")
    elif values[2] < 0 or values[3] < 0:
      problems.append(f"{where}, line {number}: negative width or height: {raw!r}")
    else:
      rows.append(values)
  if num_frames is not None and len(lines) != num_frames:
    problems.append(f"{where}: {len(lines)} lines, the sequence has {num_frames} frames")
  return np.asarray(rows, np.float64).reshape(-1, 4), problems


def _read_times(path: str | None, seq_name: str, num_frames: int | None) -> tuple[np.ndarray | None, list[str]]:
  if path is None:
    return None, [f"{seq_name}: no time file (<seq>_time.txt); the GOT-10k server takes one per sequence"]
  try:
    times = load_times(path)
  except ValueError as e:
    return None, [f"{seq_name}: {e}"]
  problems = []
  bad = ~(np.isfinite(times) & (times >= 0.0)).all(axis=1)
  if bad.any():
    problems.append(f"{seq_name} ({path}), line {int(np.argmax(bad)) + 1}: not a non-negative time")
  if num_frames is not None and len(times) != num_frames:
    problems.append(f"{seq_name} ({path}): {len(times)} times, the sequence has {num_frames} frames")
  return times, problems


def _sequence_runs(results_dirs: Sequence[str], seq_name: str) -> list[str]:
  """Result files of one sequence over all directories (FileNotFoundError naming the sequence when none)."""
  files = []
  for d in results_dirs:
    try:
      files += result_files(d, seq_name)
    except FileNotFoundError:
      continue
  if not files:
    raise FileNotFoundError(f"{seq_name}: no results in {', '.join(results_dirs)}")
  return files


def _collect(results_dirs: Sequence[str], expected: Mapping[str, int | None], fmt: str
             ) -> tuple[dict[str, tuple[list[np.ndarray], np.ndarray | None]], list[str]]:
  """seq -> (runs `[T, 4]`, times `[T, R]` or None), and the problems found."""
  packed, problems = {}, []
  for seq_name, num_frames in expected.items():
    try:
      files = _sequence_runs(results_dirs, seq_name)
    except FileNotFoundError as e:
      problems.append(f"{e}")
      continue
    allowed = (1, GOT10K_RUNS) if fmt == "got10k" else (1,)
    if len(files) not in allowed:
      problems.append(f"{seq_name}: {len(files)} runs ({', '.join(files)}); {fmt} takes "
                      + ("1 (repeated) or 3" if fmt == "got10k" else "one"))
      continue
    runs = []
    for path in files:
      boxes, found = read_box_file(path, seq_name, num_frames)
      runs.append(boxes)
      problems += found
    times = None
    if fmt == "got10k":
      path = next((p for p in (time_file(d, seq_name) for d in results_dirs) if p is not None), None)
      times, found = _read_times(path, seq_name, num_frames)
      problems += found
    packed[seq_name] = (runs, times)
  return packed, problems


def _text(rows: np.ndarray) -> str:
  return "".join(",".join(_fmt(v) for v in row) + "\n" for row in np.asarray(rows).reshape(len(rows), -1))


def _zip_entries(packed: Mapping[str, tuple[list[np.ndarray], np.ndarray | None]], fmt: str) -> dict[str, str]:
  entries = {}
  for seq_name, (runs, times) in sorted(packed.items()):
    if fmt == "trackingnet":
      entries[f"{seq_name}.txt"] = _text(runs[0])
      continue
    entries[f"{seq_name}/"] = ""
    for r in range(GOT10K_RUNS):
      entries[f"{seq_name}/{seq_name}_{r + 1:03d}.txt"] = _text(runs[r % len(runs)])
    entries[f"{seq_name}/{seq_name}_time.txt"] = _text(times)
  return entries


def write_zip(path: str, entries: Mapping[str, str]) -> None:
  """Writes `entries` (name -> text; names ending in / are folders) to a zip, atomically and reproducibly."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
    for name, text in entries.items():
      info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
      info.compress_type = zipfile.ZIP_DEFLATED
      info.external_attr = (0o40755 if name.endswith("/") else 0o100644) << 16
      zf.writestr(info, text)
  os.replace(tmp, path)


def expected_from_dataset(fmt: str, root: str, split: str | None = "test") -> dict[str, int]:
  """{sequence: frame count} of a GOT-10k / TrackingNet split read with the dataset readers."""
  return {seq.name: len(seq) for seq in datasets.load_dataset(fmt, root, split or "test")}


def expected_from_list(path: str) -> dict[str, int | None]:
  """{sequence: frame count or None} from a list file: `<seq>` or `<seq> <frames>` (comma / tab / space) lines."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"sequence list not found: {path}")
  out: dict[str, int | None] = {}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      fields = [v for v in _SEPARATOR.split(line.strip()) if v]
      if not fields:
        continue
      if len(fields) > 2 or (len(fields) == 2 and not fields[1].isdigit()):
        raise ValueError(f"{path}, line {number}: expected '<sequence>' or '<sequence> <frames>', got {line!r}")
      out[fields[0]] = int(fields[1]) if len(fields) == 2 else None
  if not out:
    raise ValueError(f"{path}: no sequences")
  return out


def pack_results(results_dirs: str | Sequence[str], out_path: str, fmt: str,
                 expected: Mapping[str, int | None]) -> PackSummary:
  """Checks a tracker's results against the expected sequences and writes the server's zip.

  Args:
    results_dirs: results directory, or several (repeated runs, in order).
    out_path: the zip file to write.
    fmt: "got10k" or "trackingnet" (see the module docstring for the layouts).
    expected: {sequence: frame count, or None to skip the line-count check} (`expected_from_dataset`,
      `expected_from_list`).

  Returns:
    A `PackSummary`.

  Raises:
    ValueError: listing the problems (sequence and line), nothing written; FileNotFoundError: a missing
      results directory.
  """
  if fmt not in PACK_FORMATS:
    raise ValueError(f"unknown pack format {fmt!r}; expected one of {PACK_FORMATS}")
  dirs = [results_dirs] if isinstance(results_dirs, str) else list(results_dirs)
  for d in dirs:
    if not os.path.isdir(d):
      raise FileNotFoundError(f"results directory not found: {d}")
  if not expected:
    raise ValueError("no expected sequences")
  packed, problems = _collect(dirs, expected, fmt)
  if problems:
    more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
    raise ValueError(f"{len(problems)} problem(s), nothing written: " + "; ".join(problems[:_MAX_LISTED]) + more)
  write_zip(out_path, _zip_entries(packed, fmt))
  found = {n[:-4] if n.endswith(".txt") else n for n in os.listdir(dirs[0])
           if not n.endswith("_time.txt") and n != "failures.json"}
  return PackSummary(path=out_path, fmt=fmt, sequences=sorted(packed),
                     repeated=sorted(n for n, (runs, _) in packed.items() if fmt == "got10k" and len(runs) == 1),
                     ignored=sorted(found - set(expected)))
