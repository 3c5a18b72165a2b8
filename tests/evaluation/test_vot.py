"""VOT reset-based evaluation (`cia_jax.evaluation.vot`, `cia_jax.vot_regions`): overlaps, accuracy, failures,
robustness and EAO against values computed by hand from the definitions (float64 NumPy), and the overlap against
the VOT toolkit's own rasteriser when the `vot` extra is installed."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from cia_jax.data.datasets.base import Sequence
from cia_jax import vot_regions as regions
from cia_jax.evaluation import vot

SIZE = (100, 100)  # width, height
GT = np.array([10, 10, 20, 20], np.float32)  # pixels 10..29 in x and y


def _shifted(dx: int) -> np.ndarray:
  return np.array([10 + dx, 10, 20, 20], np.float32)


def test_overlap_rectangles_polygons_and_specials():
  assert regions.overlap(GT, GT, SIZE) == 1.0
  assert regions.overlap(_shifted(10), GT, SIZE) == pytest.approx(200 / 600)  # 10 of 20 columns shared
  assert regions.overlap(_shifted(20), GT, SIZE) == 0.0  # adjacent, no shared pixel
  square = np.array([[10, 10], [29, 10], [29, 29], [10, 29]], np.float32)  # the same 20x20 pixels as GT
  assert regions.overlap(GT, square, SIZE) == 1.0
  assert regions.overlap(regions.FAILURE, GT, SIZE) == 0.0  # a special line is an empty region
  clipped = np.array([-10, 10, 40, 20], np.float32)  # only x 0..29 lies in the image
  assert regions.overlap(clipped, GT, SIZE) == pytest.approx(400 / 600)
  # Unbounded, the toolkit's rectangle raster clips at the raster's right bound taken as relative (a quirk of
  # `rasterize_rectangle` when the raster starts left of 0), reproduced: 10 shared columns of 30, not 20 of 40.
  assert regions.overlap(clipped, GT, None) == pytest.approx(1 / 3)


def test_parse_and_format_regions(tmp_path):
  lines = ["1", "2", "0", "nan", "10.5,20,30,40", "1,2,3,4,5,6,7,8"]
  parsed = [regions.parse_region(s) for s in lines]
  assert parsed[:4] == [1, 2, 0, 0]
  np.testing.assert_allclose(parsed[4], [10.5, 20, 30, 40])
  assert parsed[5].shape == (4, 2)
  np.testing.assert_allclose(regions.region_to_box(parsed[5]), [1, 2, 6, 6])
  path = str(tmp_path / "s" / "s_001.txt")
  regions.write_trajectory(path, parsed, times=[0.1] * 6)
  back = regions.read_trajectories(str(tmp_path), "s")
  assert len(back) == 1 and back[0][:4] == [1, 2, 0, 0]
  assert os.path.isfile(str(tmp_path / "s" / "s_001_time.value"))
  with pytest.raises(ValueError, match="mask"):
    regions.parse_region("m1,2,3")


def _constructed_run():
  """30 frames: init at 0, exact boxes 1..11, a 1/3 overlap at 12, failure at 13, frames 14..17 skipped,
  re-init at 18, then alternating overlaps 1 and 1/3 to the end."""
  traj = [regions.INITIALIZATION] + [GT] * 11 + [_shifted(10), regions.FAILURE]
  traj += [regions.UNKNOWN] * 4 + [regions.INITIALIZATION]
  traj += [GT if k % 2 == 0 else _shifted(10) for k in range(11)]
  o = np.zeros(30)
  o[1:12] = 1.0
  o[12] = 1 / 3
  o[19:30] = [1.0 if k % 2 == 0 else 1 / 3 for k in range(11)]
  return traj, o


def test_accuracy_failures_and_eao_by_hand():
  traj, expected = _constructed_run()
  gt = [GT] * 30
  o = regions.overlaps(traj, gt, SIZE)
  np.testing.assert_allclose(o, expected, atol=1e-12)
  # Accuracy: burn-in 10 from frame 0 (0..9) and from 18 (18..27), the failure 13 and skipped 14..17 out.
  counted = [10, 11, 12, 28, 29]
  assert vot.sequence_accuracy(traj, o) == (pytest.approx(np.mean(expected[counted])), 5)
  assert vot.sequence_accuracy(traj, o)[0] == pytest.approx((1 + 1 + 1 / 3 + expected[28] + expected[29]) / 5)
  assert vot.failure_frames(traj) == [13]
  # EAO segments: frames 0..12 (failed: zeros beyond), 18..29 (reached the end: 12 frames).
  segs = vot.eao_segments(traj, o)
  assert [(len(s), ok) for s, ok in segs] == [(13, False), (12, True)]
  curve = vot.eao_curve(segs)
  s1, s2 = expected[0:13], expected[18:30]
  assert len(curve) == 13
  for n in range(1, 13):
    a1 = np.mean(s1[1:n + 1])
    if n < 12:  # the finished segment counts up to its own length only
      assert curve[n] == pytest.approx((a1 + np.mean(s2[1:n + 1])) / 2)
    else:
      assert curve[n] == pytest.approx(a1)
  assert curve[12] == pytest.approx((11 + 1 / 3) / 12)
  assert curve[3] == pytest.approx((1.0 + (1 + 1 / 3 + 1) / 3) / 2)  # frames 19..21 of the second run
  assert vot.eao_score(curve, (2, 5)) == pytest.approx(np.mean(curve[2:6]))
  assert math.isnan(vot.eao_score(curve, (100, 356)))  # shorter than the interval


def test_failed_segment_counts_with_zeros_to_every_length():
  # Two runs: one fails after 3 frames of overlap 1, one runs 6 frames of overlap 0.5 to the end.
  segs = [(np.array([0, 1, 1, 1.0]), False), (np.array([0, .5, .5, .5, .5, .5]), True)]
  curve = vot.eao_curve(segs)
  assert curve[5] == pytest.approx((3 / 5 + 0.5) / 2)
  assert curve[4] == pytest.approx((3 / 4 + 0.5) / 2)


def _sequence(name: str, n: int) -> Sequence:
  return Sequence(name=name, frame_paths=[f"/nonexistent/{name}/{i:08d}.jpg" for i in range(n)],
                  boxes=np.tile(GT.astype(np.float64), (n, 1)), visible=np.ones(n, bool), dataset="vot",
                  attributes={"resolution": SIZE})


def test_benchmark_summary_by_hand(tmp_path):
  traj, o = _constructed_run()
  regions.write_trajectory(regions.trajectory_path(str(tmp_path), "a"), traj)
  clean = [regions.INITIALIZATION] + [GT] * 19  # 20 frames, no failure
  regions.write_trajectory(regions.trajectory_path(str(tmp_path), "b"), clean)
  rep = vot.evaluate_vot([_sequence("a", 30), _sequence("b", 20)], {"T": str(tmp_path)}, interval=(2, 10))
  s = rep.summary["T"]
  acc_a = np.mean(o[[10, 11, 12, 28, 29]])
  assert s["accuracy"] == pytest.approx((30 * acc_a + 20 * 1.0) / 50)  # length-weighted
  assert s["failures"] == pytest.approx((30 * 1 + 20 * 0) / 50)
  assert s["total_failures"] == 1
  assert s["robustness"] == pytest.approx(math.exp(-30 * 0.6 / 25))
  # EAO: segments a[0:13] (failed), a[18:30], b[0:20] (finished); curve up to 20.
  segs = [(o[0:13], False), (o[18:30], True), (np.r_[0.0, np.ones(19)], True)]
  expected = []
  for n in range(2, 11):
    vals = [np.mean(np.r_[seg, np.zeros(20)][1:n + 1]) for seg, ok in segs if not ok or n < len(seg)]
    expected.append(np.mean(vals))
  assert s["eao"] == pytest.approx(np.mean(expected))
  md = vot.format_markdown(rep)
  assert "| T |" in md and "EAO over lengths [2, 10]" in md
  assert {os.path.basename(p) for p in vot.write_report(rep, str(tmp_path / "out"))} == {
      "vot_summary.md", "vot_per_sequence.csv", "vot_eao_curve.csv"}


def test_eao_interval_and_parse():
  low, high = vot.eao_interval([50] * 5 + [100] * 10 + [150] * 5 + [600])
  assert low < 100 < high and high < 600
  assert vot.parse_interval("5,20") == (5, 20)
  with pytest.raises(ValueError):
    vot.parse_interval("20,5")


def test_overlap_equals_the_toolkit_rasteriser():
  raster = pytest.importorskip("vot.region.raster", reason="the `vot` extra (vot-toolkit) is not installed")
  shapes = pytest.importorskip("vot.region.shapes")
  rng = np.random.default_rng(0)
  for _ in range(200):
    a = rng.uniform([-20, -20, 1, 1], [90, 90, 60, 60]).astype(np.float32)
    center, half = rng.uniform(0, 100, 2), rng.uniform(3, 30, 2)
    angle = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = (np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half) @ rot.T + center
    poly = corners.astype(np.float32)
    theirs = raster.calculate_overlap(shapes.Rectangle(*a), shapes.Polygon([tuple(p) for p in poly]), SIZE)
    assert regions.overlap(a, poly, SIZE) == pytest.approx(theirs, abs=1e-12)
    b = rng.uniform([-20, -20, 1, 1], [90, 90, 60, 60]).astype(np.float32)
    theirs = raster.calculate_overlap(shapes.Rectangle(*a), shapes.Rectangle(*b), SIZE)
    assert regions.overlap(a, b, SIZE) == pytest.approx(theirs, abs=1e-12)
