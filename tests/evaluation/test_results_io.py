"""Result-file reading: separators, layouts, clear errors."""

import os

import numpy as np
import pytest

from cia_jax import results

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "real")


@pytest.mark.parametrize("text", [
    "1,2,3,4\n5.5,6,7,8\n",
    "1\t2\t3\t4\n5.5\t6\t7\t8",  # pytracking raw results: tabs, no final newline
    "1 2 3 4\n\n5.5  6 7 8\n\n",
    "1, 2, 3, 4\r\n5.5, 6, 7, 8\r\n",
])
def test_load_boxes_separators(tmp_path, text):
  path = tmp_path / "seq.txt"
  path.write_bytes(text.encode())
  np.testing.assert_array_equal(results.load_boxes(str(path)), [[1, 2, 3, 4], [5.5, 6, 7, 8]])


def test_load_boxes_single_line_nan_and_empty(tmp_path):
  (tmp_path / "a.txt").write_text("1,2,3,4")
  assert results.load_boxes(str(tmp_path / "a.txt")).shape == (1, 4)
  (tmp_path / "b.txt").write_text("1,2,3,4\nnan,nan,nan,nan\n")
  assert np.isnan(results.load_boxes(str(tmp_path / "b.txt"))[1]).all()
  (tmp_path / "c.txt").write_text("\n")
  assert results.load_boxes(str(tmp_path / "c.txt")).shape == (0, 4)


def test_load_boxes_errors(tmp_path):
  path = tmp_path / "bad.txt"
  path.write_text("1,2,3,4\n1,2,3\n")
  with pytest.raises(ValueError, match=r"bad.txt, line 2: expected 4 numbers"):
    results.load_boxes(str(path))
  path.write_text("1,2,3,4\n\n1,2,x,4\n")
  with pytest.raises(ValueError, match=r"line 3"):
    results.load_boxes(str(path))
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    results.load_boxes(str(tmp_path / "nope.txt"))


def test_real_ground_truth_file_reads_as_results():
  path = os.path.join(REAL, "OTB_Crossing", "groundtruth_rect.txt")  # tab-separated, 120 frames
  if not os.path.isfile(path):
    pytest.skip(f"shared real data not present: {path}")
  boxes = results.load_boxes(path)
  assert boxes.shape == (120, 4) and (boxes[:, 2:] > 0).all()


def test_layouts(tmp_path):
  ours = tmp_path / "ours"
  ours.mkdir()
  (ours / "car.txt").write_text("1,2,3,4\n")
  (ours / "car_time.txt").write_text("0.01\n")
  assert results.result_files(str(ours), "car") == [str(ours / "car.txt")]
  got = tmp_path / "got" / "GOT-10k_Val_000001"
  got.mkdir(parents=True)
  for name in ("GOT-10k_Val_000001_002.txt", "GOT-10k_Val_000001_001.txt", "GOT-10k_Val_000001_time.txt"):
    (got / name).write_text("1,2,3,4\n")
  runs = results.result_files(str(tmp_path / "got"), "GOT-10k_Val_000001")
  assert [os.path.basename(p) for p in runs] == ["GOT-10k_Val_000001_001.txt", "GOT-10k_Val_000001_002.txt"]
  assert len(results.load_results(str(tmp_path / "got"), "GOT-10k_Val_000001")) == 2
  with pytest.raises(FileNotFoundError, match="no results for sequence 'bike'"):
    results.result_files(str(ours), "bike")
  (ours / "uav_bike1.txt").write_text("1,2,3,4\n")  # pytracking's UAV123 naming
  assert results.result_files(str(ours), "bike1", "uav") == [str(ours / "uav_bike1.txt")]
  with pytest.raises(FileNotFoundError):
    results.result_files(str(ours), "bike1")
