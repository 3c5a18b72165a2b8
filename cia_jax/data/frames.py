"""Benchmark frames: decoding one frame loudly, the image size from a file header, missing frame files.

Used by tracking (`cia_jax.track.runner`) and evaluation (GOT-10k's clipping, the t-SNE crops), so it lives
below both. Decoding is the training pipeline's (`cia_jax.data.pipeline.load_image`: OpenCV, as the reference,
and TFDS frame URIs), but a frame that cannot be read raises here instead of being skipped.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np
from PIL import Image

from cia_jax.data.pipeline import load_image

TFDS_PREFIX = "tfds:"


def read_frame(path: str) -> np.ndarray:
  """Decodes one frame to `[H, W, 3]` uint8 RGB; FileNotFoundError / ValueError naming the file otherwise.

  A benchmark frame that cannot be read must not be skipped silently (the training pipeline skips them).
  """
  if not path.startswith(TFDS_PREFIX) and not os.path.isfile(path):
    raise FileNotFoundError(f"frame not found: {path}")
  image = load_image(path)
  if image is None:
    raise ValueError(f"frame could not be decoded as an image: {path}")
  return image


def image_size(path: str) -> tuple[int, int]:
  """(width, height) in pixels of an image file, from its header when PIL can read it (no full decode).

  Falls back to decoding the frame (TFDS URIs, formats PIL does not know); raises as `read_frame` when the
  file is missing or not an image.
  """
  if not path.startswith(TFDS_PREFIX):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"frame not found: {path}")
    try:
      with Image.open(path) as im:  # reads the header only
        return int(im.size[0]), int(im.size[1])
    except OSError:  # not a format PIL reads (or a damaged header): let the real decoder decide
      pass
  height, width = read_frame(path).shape[:2]
  return int(width), int(height)


def sequence_image_size(seq) -> tuple[float, float] | None:
  """(width, height) of a sequence's frames, or None when unknown.

  From `attributes["resolution"]` (width, height), GOT-10k's `attributes["meta"]["resolution"]` string
  "(W, H)", or else the first frame (`image_size`); None when there is no readable first frame. ValueError naming
  the sequence for a resolution that is not two numbers.
  """
  attrs = seq.attributes or {}
  size = attrs.get("resolution", (attrs.get("meta") or {}).get("resolution"))
  if isinstance(size, str):
    size = size.strip("()[] ").split(",")
  if size is not None:
    try:
      return float(size[0]), float(size[1])
    except (ValueError, IndexError, TypeError) as e:
      raise ValueError(f"sequence {seq.name!r}: resolution {size!r} is not (width, height)") from e
  if not seq.frame_paths or not os.path.isfile(seq.frame_paths[0]):
    return None
  try:
    width, height = image_size(seq.frame_paths[0])
  except (OSError, ValueError):  # not an image: the caller decides (evaluation: no clipping, with a warning)
    return None
  return float(width), float(height)


def missing_frames(paths: Iterable[str]) -> list[str]:
  """The paths among `paths` whose file does not exist, in order (TFDS URIs are not checked).

  Lists each folder once instead of one `stat` per frame, so checking a whole benchmark up front stays cheap.
  """
  listings: dict[str, set[str]] = {}
  missing = []
  for path in paths:
    if path.startswith(TFDS_PREFIX):
      continue
    folder, name = os.path.split(path)
    if folder not in listings:
      try:
        listings[folder] = set(os.listdir(folder or "."))
      except OSError:  # the folder itself is missing or unreadable: every frame in it is missing
        listings[folder] = set()
    if name not in listings[folder]:
      missing.append(path)
  return missing
