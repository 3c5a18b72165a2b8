"""The 70 LaSOT classes used as CIA's category labels (design.md §4.5).

Ids follow the alphabetical order of LaSOT's class folders (Python's default
string sort, so `rubicCube` sits between `robot` and `sepia`). Any dataset's
class name maps to an id by exact string match; anything else is -1
("unlabelled", ignored by the category loss).
"""

from __future__ import annotations

LASOT_CLASSES: tuple[str, ...] = (
    "airplane", "basketball", "bear", "bicycle", "bird", "boat", "book", "bottle", "bus", "car",
    "cat", "cattle", "chameleon", "coin", "crab", "crocodile", "cup", "deer", "dog", "drone",
    "electricfan", "elephant", "flag", "fox", "frog", "gametarget", "gecko", "giraffe", "goldfish",
    "gorilla", "guitar", "hand", "hat", "helmet", "hippo", "horse", "kangaroo", "kite", "leopard",
    "licenseplate", "lion", "lizard", "microphone", "monkey", "motorcycle", "mouse", "person", "pig",
    "pool", "rabbit", "racing", "robot", "rubicCube", "sepia", "shark", "sheep", "skateboard",
    "spider", "squirrel", "surfboard", "swing", "tank", "tiger", "train", "truck", "turtle",
    "umbrella", "volleyball", "yoyo", "zebra",
)
NUM_CATEGORIES = len(LASOT_CLASSES)
_INDEX = {name: i for i, name in enumerate(LASOT_CLASSES)}


def category_id(name: str | None) -> int:
  """Exact-match id in 0..69 of a class name, or -1 when unknown or None."""
  if name is None:
    return -1
  return _INDEX.get(name, -1)
