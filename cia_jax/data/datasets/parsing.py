"""Shared parsing of annotation files and frame listings for the dataset readers.

Every error names the file and, where it applies, the 1-based line, so a bad
row in a 3000-line ground-truth file can be found at once.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

import numpy as np

from cia_jax.data.datasets.base import Sequence

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
_SPLIT = re.compile(r"[,\t ;]+")


def _read_text(path: str) -> str:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"annotation file not found: {path}")
  with open(path, encoding="utf-8-sig", errors="replace") as f:
    return f.read()


def _lines(path: str) -> list[str]:
  """Lines of a text file with trailing blank lines dropped (a final newline is optional)."""
  lines = [l.strip() for l in _read_text(path).splitlines()]
  while lines and not lines[-1]:
    lines.pop()
  return lines


def _parse_values(path: str, lineno: int, line: str) -> list[float]:
  if not line:
    raise ValueError(f"{path}:{lineno}: empty line inside the annotations")
  out = []
  for tok in _SPLIT.split(line.strip(",; \t")):
    try:
      out.append(float(tok))
    except ValueError:
      raise ValueError(f"{path}:{lineno}: unreadable number {tok!r} in line {line!r}") from None
  return out


def read_boxes(path: str) -> np.ndarray:
  """Reads an `x, y, w, h` file (one box per line; commas, tabs or spaces; NaN allowed) -> `[N, 4]` float64.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: naming file and line, for a wrong column count, an unreadable number or an empty line
      between boxes.
  """
  lines = _lines(path)
  # Fast path for the common clean file: one vectorised float conversion.
  if lines:
    norm = [_SPLIT.sub(",", l.strip(",; \t")) for l in lines]
    if all(n.count(",") == 3 for n in norm):
      try:
        return np.array(",".join(norm).split(","), dtype=np.float64).reshape(-1, 4)
      except ValueError:
        pass  # fall through to the per-line parser for the error message
  boxes = np.empty((len(lines), 4), np.float64)
  for i, line in enumerate(lines):
    vals = _parse_values(path, i + 1, line)
    if len(vals) != 4:
      raise ValueError(f"{path}:{i + 1}: expected 4 values (x, y, w, h), got {len(vals)}: {line!r}")
    boxes[i] = vals
  return boxes


def polygon_to_xywh(values: Iterable[float]) -> np.ndarray:
  """Axis-aligned `[x, y, w, h]` around a polygon `x1, y1, x2, y2, ...` (min/max of its corners)."""
  v = np.asarray(list(values), np.float64).reshape(-1, 2)
  lo, hi = v.min(axis=0), v.max(axis=0)
  return np.concatenate([lo, hi - lo])


def vot_mask_to_xywh(path: str, lineno: int, line: str) -> np.ndarray:
  """Tight box `[x, y, w, h]` of a VOT RLE mask `m<x0>,<y0>,<w>,<h>,<runs...>` (runs start with zeros).

  Returns NaNs for an empty mask.
  """
  try:
    tokens = [int(t) for t in line[1:].split(",") if t.strip()]
  except ValueError:
    raise ValueError(f"{path}:{lineno}: unreadable VOT mask {line[:40]!r}") from None
  if len(tokens) < 4:
    raise ValueError(f"{path}:{lineno}: VOT mask needs at least x0, y0, w, h, got {len(tokens)} values")
  x0, y0, w, h = tokens[:4]
  runs = np.asarray(tokens[4:], np.int64)
  if runs.sum() > w * h:
    raise ValueError(f"{path}:{lineno}: VOT mask runs cover {runs.sum()} pixels, more than {w}x{h}")
  ends = np.cumsum(runs)
  starts = ends - runs
  ones = np.arange(len(runs)) % 2 == 1
  starts, ends = starts[ones & (runs > 0)], ends[ones & (runs > 0)]
  if starts.size == 0:
    return np.full(4, np.nan)
  rows_a, rows_b = starts // w, (ends - 1) // w
  # A run spanning rows touches every column in between; otherwise its own column range.
  spans = rows_b > rows_a
  cols_lo = np.where(spans, 0, starts % w)
  cols_hi = np.where(spans, w - 1, (ends - 1) % w)
  x1, x2 = cols_lo.min(), cols_hi.max()
  y1, y2 = rows_a.min(), rows_b.max()
  return np.array([x0 + x1, y0 + y1, x2 - x1 + 1, y2 - y1 + 1], np.float64)


def read_regions(path: str) -> np.ndarray:
  """Reads a VOT `groundtruth.txt`: per line 4 values (x, y, w, h), an even number >= 6 (polygon), an RLE
  mask `m...`, or a single value (no region, e.g. `0` / `NaN`) -> `[N, 4]` axis-aligned `[x, y, w, h]`.
  """
  lines = _lines(path)
  boxes = np.empty((len(lines), 4), np.float64)
  for i, line in enumerate(lines):
    if line.startswith("m"):
      boxes[i] = vot_mask_to_xywh(path, i + 1, line)
      continue
    vals = _parse_values(path, i + 1, line)
    if len(vals) == 4:
      boxes[i] = vals
    elif len(vals) >= 6 and len(vals) % 2 == 0:
      boxes[i] = polygon_to_xywh(vals)
    elif len(vals) == 1:
      boxes[i] = np.nan
    else:
      raise ValueError(f"{path}:{i + 1}: expected 4 values (x, y, w, h) or an 8-value polygon, "
                       f"got {len(vals)}: {line!r}")
  return boxes


def read_flags(path: str, expected: int | None = None) -> np.ndarray:
  """Reads 0/1 (or small integer) labels, one per line or comma-separated on one line -> `[N]` int64."""
  text = _read_text(path)
  tokens = [t for t in re.split(r"[,\s]+", text) if t]
  out = np.empty(len(tokens), np.int64)
  # Line numbers for errors: one-line files report line 1 and the value index.
  one_line = len([l for l in text.splitlines() if l.strip()]) <= 1
  for i, tok in enumerate(tokens):
    try:
      out[i] = int(float(tok))
    except ValueError:
      where = f"{path}:1 (value {i + 1})" if one_line else f"{path}:{i + 1}"
      raise ValueError(f"{where}: unreadable label {tok!r}") from None
  if expected is not None and len(out) != expected:
    raise ValueError(f"{path}: {len(out)} labels but the ground truth has {expected} boxes")
  return out


def read_list(path: str) -> list[str]:
  """Non-empty, stripped lines of a list file (split files, `list.txt`)."""
  return [l for l in _lines(path) if l]


def valid_boxes(boxes_xywh: np.ndarray) -> np.ndarray:
  """`[N]` bool: all four values finite and w > 0 and h > 0."""
  return np.isfinite(boxes_xywh).all(axis=1) & (boxes_xywh[:, 2] > 0) & (boxes_xywh[:, 3] > 0)


def natural_key(name: str):
  """Sort key that orders `2.jpg` before `10.jpg`."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_frames(folder: str) -> list[str]:
  """Image files of a folder in natural order (absolute paths); raises if there are none."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"frame folder not found: {folder}")
  names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS) and not n.startswith(".")]
  if not names:
    raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTS)}) in {folder}")
  names.sort(key=natural_key)
  return [os.path.join(os.path.abspath(folder), n) for n in names]


def probe_pattern(folder: str, first: int, digits: Iterable[int], exts: Iterable[str] = (".jpg", ".png")
                  ) -> tuple[int, str]:
  """Finds (digits, ext) such that `folder/<first zero-padded to digits><ext>` exists (a few stats only)."""
  digits, exts = list(digits), list(exts)
  for nz in digits:
    for ext in exts:
      if os.path.isfile(os.path.join(folder, f"{first:0{nz}d}{ext}")):
        return nz, ext
  tried = ", ".join(f"{first:0{nz}d}{ext}" for nz in digits for ext in exts)
  raise FileNotFoundError(f"first frame not found in {folder} (tried {tried})")


def numbered_frames(folder: str, first: int, count: int, digits: int, ext: str,
                    anno_path: str | None = None, exact: bool = True) -> list[str]:
  """Paths `folder/%0{digits}d{ext}` for frame numbers first..first+count-1; the first and last must exist.

  Deriving the paths from the annotation count avoids listing huge folders; checking both ends (and, when
  `exact`, that frame first+count does not exist) catches a frame/annotation count mismatch with three stats.
  `exact=False` is for benchmarks whose folders legitimately hold more frames than annotations (OTB David).
  """
  folder = os.path.abspath(folder)
  paths = [os.path.join(folder, f"{i:0{digits}d}{ext}") for i in range(first, first + count)]
  if count == 0:
    return paths
  for p in (paths[0], paths[-1]):
    if not os.path.isfile(p):
      src = f" ({count} boxes in {anno_path})" if anno_path else ""
      raise FileNotFoundError(f"frame {p} not found: frame count does not match the annotation count{src}")
  nxt = os.path.join(folder, f"{first + count:0{digits}d}{ext}")
  if exact and os.path.isfile(nxt):
    src = anno_path or "the annotations"
    raise ValueError(f"{src}: {count} boxes but {folder} has more frames (found {nxt})")
  return paths


def check_count(anno_path: str, n_boxes: int, frame_paths: list[str], folder: str) -> None:
  """Raises ValueError naming the file when the annotation count differs from the frame count."""
  if n_boxes != len(frame_paths):
    raise ValueError(f"{anno_path}: {n_boxes} boxes but {len(frame_paths)} frames in {folder}")


def make_sequence(name: str, frame_paths: list[str], boxes_xywh: np.ndarray, dataset: str,
                  category: str | None = None, flags_visible: np.ndarray | None = None,
                  attributes: dict | None = None) -> Sequence:
  """Builds a `Sequence` whose `visible` = valid box (finite, w > 0, h > 0) and `flags_visible`."""
  visible = valid_boxes(boxes_xywh)
  if flags_visible is not None:
    visible &= np.asarray(flags_visible, bool)
  return Sequence(name=name, frame_paths=tuple(frame_paths), boxes=boxes_xywh, visible=visible,
                  category=category, dataset=dataset, attributes=attributes or {})


def read_split_file(path: str, all_names: list[str]) -> list[str]:
  """Names selected by a split file: one name per line, or one 0-based integer index into `all_names` per
  line (pytracking's GOT-10k/TrackingNet split files), in file order."""
  entries = read_list(path)
  if entries and all(e.isdigit() for e in entries):
    out = []
    for i, e in enumerate(entries):
      k = int(e)
      if k >= len(all_names):
        raise ValueError(f"{path}:{i + 1}: index {k} out of range for {len(all_names)} sequences")
      out.append(all_names[k])
    return out
  known = set(all_names)
  missing = [e for e in entries if e not in known]
  if missing:
    raise ValueError(f"{path}: {len(missing)} names not found in the dataset, e.g. {missing[:3]}")
  return entries
