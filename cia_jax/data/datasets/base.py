"""The one sequence interface every dataset reader returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cia_jax.data.categories import category_id


@dataclasses.dataclass(frozen=True)
class Sequence:
  """One video (or one image, for COCO) with its ground truth.

  Attributes:
    name: sequence name, unique within its dataset.
    frame_paths: absolute paths of the T frames, in temporal order.
    boxes: `[T, 4]` float64 ground truth `[x, y, w, h]` in 0-based pixels;
      NaN rows where the benchmark has no box for that frame.
    visible: `[T]` bool, True where the target is visible and annotated
      (False for NaN rows, zero-size boxes, occlusion / out-of-view flags).
    category: class name as the dataset spells it, or None.
    dataset: short dataset name ("got10k", "lasot", "otb", ...).
    attributes: optional extra per-sequence data (e.g. OTB attributes, GOT-10k cover labels).
  """

  name: str
  frame_paths: tuple[str, ...]
  boxes: np.ndarray
  visible: np.ndarray
  category: str | None = None
  dataset: str = ""
  attributes: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    boxes = np.asarray(self.boxes, dtype=np.float64)
    visible = np.asarray(self.visible, dtype=bool)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
      raise ValueError(f"sequence {self.name!r}: boxes must be [T, 4], got {boxes.shape}")
    if visible.shape != (boxes.shape[0],):
      raise ValueError(
          f"sequence {self.name!r}: visible must be [{boxes.shape[0]}], got {visible.shape}")
    object.__setattr__(self, "boxes", boxes)
    object.__setattr__(self, "visible", visible)
    object.__setattr__(self, "frame_paths", tuple(str(p) for p in self.frame_paths))

  def __len__(self) -> int:
    return len(self.frame_paths)

  @property
  def category_id(self) -> int:
    """LaSOT class id 0..69 by exact name match, -1 otherwise."""
    return category_id(self.category)
