"""The readers on the real benchmark sequences in `../shared/data/real/` (beside the repository).

For every folder: the guessed format, frame count == annotation line count, every frame file exists, the
boxes equal an independent NumPy parse of the file, and visible boxes lie inside the image (1 pixel of
slack: OTB, UAV123 and DTB70 boxes come from 1-based MATLAB tools, see the folder's README.txt).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from cia_jax.data import datasets

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
pytestmark = pytest.mark.skipif(
    not REAL.is_dir(), reason=f"real benchmark sequences not found at {REAL} (clone the repo beside shared/)")

# folder -> (guessed format, annotation file, frames, separator for np.loadtxt (None = whitespace))
CASES = {
    "OTB_Crossing": ("otb", "groundtruth_rect.txt", 120, None),
    "OTB_MotorRolling": ("otb", "groundtruth_rect.txt", 164, ","),
    "OTB_Human3": ("otb", "groundtruth_rect.txt", 199, ","),
    "VOT_bag": ("vot", "groundtruth.txt", 196, ","),
    "UAV123-10fps_wakeboard7": ("uav", "wakeboard7.txt", 67, ","),
    "DTB70_Surfing06": ("dtb70", "groundtruth_rect.txt", 106, ","),
    "LaSOT_airplane-1": ("lasot", "groundtruth.txt", 300, ","),
}


def test_every_real_folder_is_covered():
  found = sorted(p.name for p in REAL.iterdir() if p.is_dir())
  assert found == sorted(CASES), "a new real sequence folder needs an entry in CASES"


def _independent_boxes(path: Path, sep: str | None) -> np.ndarray:
  raw = np.loadtxt(path, delimiter=sep, dtype=np.float64, ndmin=2)
  if raw.shape[1] == 8:  # VOT polygon -> axis-aligned box around the corners
    xs, ys = raw[:, 0::2], raw[:, 1::2]
    return np.stack([xs.min(1), ys.min(1), xs.max(1) - xs.min(1), ys.max(1) - ys.min(1)], axis=1)
  return raw


@pytest.mark.parametrize("folder", sorted(CASES))
def test_real_sequence(folder):
  fmt, anno, n_frames, sep = CASES[folder]
  path = REAL / folder
  assert datasets.guess_format(str(path)) == fmt
  s = datasets.load_sequence(str(path))
  assert s.dataset == fmt
  with open(path / anno) as f:
    n_lines = sum(1 for line in f if line.strip())
  assert len(s) == n_lines == n_frames
  assert all(os.path.isfile(p) for p in s.frame_paths)
  on_disk = sorted(p for p in (path / "img" if (path / "img").is_dir() else path).iterdir()
                   if p.suffix == ".jpg")
  assert [Path(p).name for p in s.frame_paths] == [p.name for p in on_disk]
  np.testing.assert_allclose(s.boxes, _independent_boxes(path / anno, sep), rtol=0, atol=1e-9)
  # No NaN rows and no zero-size boxes in these sequences (README), and LaSOT's flags are all 0.
  assert s.visible.all()
  h, w = cv2.imread(s.frame_paths[0]).shape[:2]
  assert cv2.imread(s.frame_paths[-1]).shape[:2] == (h, w)
  b = s.boxes
  assert np.all(b[:, 2:] > 0)
  assert np.all(b[:, 0] >= -1) and np.all(b[:, 1] >= -1)
  assert np.all(b[:, 0] + b[:, 2] <= w + 1) and np.all(b[:, 1] + b[:, 3] <= h + 1)


def test_real_lasot_details():
  s = datasets.load_sequence(str(REAL / "LaSOT_airplane-1"), format="lasot")
  assert s.category == "airplane" and s.category_id == 0
  assert s.attributes["nlp"].startswith("white airplane")
  assert s.attributes["full_occlusion"].shape == (300,) and not s.attributes["out_of_view"].any()


def test_real_otb_folders_as_a_dataset():
  names = ["OTB_Crossing", "OTB_Human3", "OTB_MotorRolling"]
  seqs = datasets.load_dataset("otb", str(REAL), sequences=names)
  assert [s.name for s in seqs] == names
  assert [len(s) for s in seqs] == [120, 199, 164]
