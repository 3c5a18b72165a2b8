"""Sequence attributes for the per-attribute analysis of `cia-jax evaluate --by-attribute`.

Where a sequence's attributes come from (`sequence_attributes`), from what the dataset readers parsed:
  `Sequence.attributes["attributes"]`: sequence-level tags, a list of names or {name: truthy} (UAV123's
    `anno/<set>/att/<seq>.txt` 12 flags, read by `cia_jax.data.datasets.uav`; hand-built sequences);
  LaSOT's per-frame `full_occlusion` / `out_of_view` flags (`cia_jax.data.datasets.lasot`): the sequence has
    "full occlusion" / "out of view" when at least one frame is flagged;
  VOT's per-frame tags (`attributes["frame_tags"]`, `cia_jax.data.datasets.vot`): the sequence has the tag
    (underscores as spaces: "camera motion", "occlusion", ...) when at least one frame carries it.
The rule "any frame" is the sequence-level reading the OTB / LaSOT attribute tables use (an attribute is a
property of the video, not a per-frame subset); per-frame scores would need frame-wise success curves no
benchmark reports.

A user table (`load_attribute_table`, `--attributes FILE`) replaces all of that: a JSON object sequence ->
[attribute, ...] (or pysot's dataset JSON, sequence -> {"attr": [...], ...}).

Every sequence is accounted for (`AttributeIndex`): under each attribute it has, under "(none)" when its
attribute information lists none, under "(no information)" when there is none (not in the user table, or a
dataset without attribute files); the latter are named in the table's notes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LASOT_FLAGS = {"full_occlusion": "full occlusion", "out_of_view": "out of view"}
NONE_ROW = "(none)"
UNKNOWN_ROW = "(no information)"


@dataclasses.dataclass(frozen=True)
class AttributeIndex:
  """Which evaluated sequences carry which attribute.

  Attributes:
    by_attribute: attribute -> indices into the report's sequence list, attributes sorted by name.
    none: indices of sequences whose attribute information lists no attribute.
    unknown: indices of sequences without attribute information.
  """

  by_attribute: dict[str, list[int]]
  none: list[int]
  unknown: list[int]

  def rows(self) -> list[tuple[str, list[int]]]:
    """(row name, indices) of every non-empty row: the attributes, then "(none)" and "(no information)"."""
    rows = list(self.by_attribute.items())
    rows += [(name, idx) for name, idx in ((NONE_ROW, self.none), (UNKNOWN_ROW, self.unknown)) if idx]
    return rows


def _tag_names(tags: Any) -> set[str]:
  if isinstance(tags, Mapping):
    return {str(k) for k, v in tags.items() if v}
  if isinstance(tags, str):
    return {tags}
  return {str(t) for t in tags}


def sequence_attributes(seq) -> set[str] | None:
  """The attributes of a `Sequence` from what its reader parsed (module docstring); None without information."""
  data = seq.attributes or {}
  found, names = False, set()
  if data.get("attributes") is not None:
    found, names = True, _tag_names(data["attributes"])
  for key, name in LASOT_FLAGS.items():
    if key in data:
      found = True
      if np.any(data[key]):
        names.add(name)
  for tag, flags in (data.get("frame_tags") or {}).items():
    found = True
    if np.any(flags):
      names.add(str(tag).replace("_", " "))
  return names if found else None


def load_attribute_table(path: str) -> dict[str, list[str]]:
  """Reads a user attribute table: JSON {sequence: [attribute, ...]} or pysot's {sequence: {"attr": [...]}}.

  Raises:
    FileNotFoundError: no such file.
    ValueError: naming the file (and the sequence) when it is not such a table.
  """
  try:
    with open(path, encoding="utf-8") as f:
      table = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"attribute table not found: {path}") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not JSON ({e})") from None
  if not isinstance(table, dict):
    raise ValueError(f"{path}: expected a JSON object sequence -> [attribute, ...]")
  out = {}
  for seq, attrs in table.items():
    if isinstance(attrs, dict):
      attrs = attrs.get("attr")
    if not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs):
      raise ValueError(f"{path}: sequence {seq!r}: expected a list of attribute names, got {attrs!r}")
    out[str(seq)] = list(attrs)
  return out


def attribute_index(sequences: Sequence, table: Mapping[str, Sequence[str]] | None = None) -> AttributeIndex:
  """Indexes `sequences` (`Sequence` objects) by attribute, from `table` when given, else from the readers."""
  by_attribute: dict[str, list[int]] = {}
  none, unknown = [], []
  for i, seq in enumerate(sequences):
    if table is not None:
      names = set(table[seq.name]) if seq.name in table else None
    else:
      names = sequence_attributes(seq)
    if names is None:
      unknown.append(i)
    elif not names:
      none.append(i)
    for name in sorted(names or ()):
      by_attribute.setdefault(name, []).append(i)
  return AttributeIndex(dict(sorted(by_attribute.items())), none, unknown)
