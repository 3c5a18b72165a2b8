"""Tests of the dataset readers on generated data in each benchmark's layout, on hand-built irregular
cases (OTB's odd sequences, UAV123 pieces, NFS 240 fps files, VOT polygons and masks, test splits) and on
bad data, which must fail with errors naming the file and line."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from cia_jax.data import datasets
from cia_jax.data import synthetic
from cia_jax.data.categories import category_id

W, H, T, N = 64, 48, 12, 2

# format -> (dataset name, split to write/read, which flags the format can carry)
LAYOUTS = {
    "got10k": ("got10k", "train", "full"),
    "lasot": ("lasot", None, "full"),
    "otb": ("otb", None, "box"),
    "trackingnet": ("trackingnet", "train", "box"),
    "uav": ("uav", None, "box"),
    "nfs": ("nfs", None, "box"),
    "vot": ("vot", None, "box"),
    "tnl2k": ("tnl2k", None, "box"),
    "dtb70": ("dtb70", None, "box"),
    "folder": ("folder", None, "box"),
}


def _touch(path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  open(path, "wb").close()


def _write(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  """{format: (root, names, rendered sequences)} written once for the module."""
  base = tmp_path_factory.mktemp("synth")
  out = {}
  for fmt, (_, split, _) in LAYOUTS.items():
    root = str(base / fmt)
    names = synthetic.generate(root, fmt, N, T, (W, H), seed=11, split=split or "train", out_of_view=True,
                               occlusion=True)
    rendered = [synthetic.render_sequence([11, i], T, (W, H), out_of_view=True, occlusion=True)
                for i in range(N)]
    out[fmt] = (root, names, rendered)
  return out


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
def test_reader_on_generated_layout(generated, fmt):
  root, names, rendered = generated[fmt]
  name, split, flags = LAYOUTS[fmt]
  seqs = datasets.load_dataset(name, root, split)
  assert [s.name for s in seqs] == names
  for s, r in zip(seqs, rendered):
    assert len(s) == T and s.boxes.shape == (T, 4) and s.visible.shape == (T,)
    assert all(os.path.isfile(p) for p in s.frame_paths)
    assert s.dataset == name
    # Frames are in temporal order: each decoded end frame is closer to its own rendered frame than to the
    # other end (JPEG error on these small noisy frames is ~10 grey levels).
    first = cv2.imread(s.frame_paths[0])[..., ::-1].astype(float)
    last = cv2.imread(s.frame_paths[-1])[..., ::-1].astype(float)
    err = lambda a, b: np.abs(a - b).mean()  # noqa: E731
    assert err(first, r.frames[0]) < min(15, err(first, r.frames[-1]))
    assert err(last, r.frames[-1]) < min(15, err(last, r.frames[0]))
    expected_visible = r.visible if flags == "full" else ~r.out_of_view
    np.testing.assert_array_equal(s.visible, expected_visible)
    np.testing.assert_allclose(s.boxes[s.visible], r.boxes_xywh[s.visible], atol=1e-6)
    if fmt in ("lasot", "got10k", "nfs", "trackingnet"):
      assert s.category == r.category and s.category_id == category_id(r.category) >= 0
    # The single-folder entry point guesses the same layout and reads the same sequence.
    folder = {"got10k": os.path.join(root, "train", s.name),
              "lasot": os.path.join(root, str(s.category), s.name),
              "trackingnet": os.path.join(root, "TRAIN_0", "frames", s.name),
              "uav": os.path.join(root, "data_seq", "UAV123", s.name)}.get(fmt, os.path.join(root, s.name))
    assert datasets.guess_format(folder) == fmt
    one = datasets.load_sequence(folder)
    assert one.name == s.name and one.frame_paths == s.frame_paths
    np.testing.assert_array_equal(one.visible, s.visible)


def test_coco_reader_on_generated_layout(generated, tmp_path):
  synthetic.generate(str(tmp_path), "coco", 3, 1, (W, H), seed=2, categories=["cat", "person", "kite"])
  seqs = datasets.load_dataset("coco", str(tmp_path))
  # One non-crowd, non-tiny annotation per image survives; crowd regions and 1.5 px boxes are dropped.
  assert len(seqs) == 3
  assert [s.category for s in seqs] == ["cat", "person", "kite"]
  assert all(len(s) == 1 and s.visible.all() and os.path.isfile(s.frame_paths[0]) for s in seqs)
  assert [s.category_id for s in seqs] == [category_id("cat"), category_id("person"), category_id("kite")]
  assert len(datasets.load_dataset("coco", str(tmp_path), min_size=1.0)) == 6  # tiny boxes back in
  with pytest.raises(ValueError, match="coco"):
    datasets.load_sequence(str(tmp_path / "train2017"), format="coco")


def test_got10k_splits(tmp_path):
  root = str(tmp_path)
  train = synthetic.generate(root, "got10k", 3, 4, (W, H), seed=0, split="train")
  test = synthetic.generate(root, "got10k", 1, 4, (W, H), seed=0, split="test")
  seqs = datasets.load_dataset("got10k", root, "test")
  assert [s.name for s in seqs] == test
  s = seqs[0]
  assert len(s) == 4 and s.visible.tolist() == [True, False, False, False]
  assert np.isfinite(s.boxes[0]).all() and np.isnan(s.boxes[1:]).all()
  # vottrain-style split files hold 0-based indices into list.txt; names work too.
  _write(str(tmp_path / "ids.txt"), "2\n0\n")
  ids = datasets.load_dataset("got10k", root, "vottrain", split_file=str(tmp_path / "ids.txt"))
  assert [s.name for s in ids] == [train[2], train[0]]
  _write(str(tmp_path / "names.txt"), f"{train[1]}\n")
  named = datasets.load_dataset("got10k", root, "train", split_file=str(tmp_path / "names.txt"))
  assert [s.name for s in named] == [train[1]]
  with pytest.raises(ValueError, match="split_file"):
    datasets.load_dataset("got10k", root, "votval")
  # The split folder itself works as the root.
  assert len(datasets.load_dataset("got10k", os.path.join(root, "train"))) == 3


def test_got10k_visibility_from_labels(tmp_path):
  seq = tmp_path / "GOT-10k_Train_000001"
  for i in range(1, 5):
    _touch(str(seq / f"{i:08d}.jpg"))
  _write(str(seq / "groundtruth.txt"), "1,2,3,4\n1,2,3,4\n1,2,3,4\n0,0,0,0\n")
  _write(str(seq / "absence.label"), "0\n1\n0\n0\n")
  _write(str(seq / "cover.label"), "8\n0\n0\n8\n")
  _write(str(seq / "meta_info.ini"), "[METAINFO]\nurl: x\nobject_class: person\nmotion_class: walking\n")
  s = datasets.load_sequence(str(seq))
  assert s.visible.tolist() == [True, False, False, False]
  assert s.category == "person" and s.category_id == category_id("person")
  assert s.attributes["cover"].tolist() == [8, 0, 0, 8]


def test_lasot_splits_and_flags(tmp_path):
  root = str(tmp_path)
  names = synthetic.generate(root, "lasot", 3, 4, (W, H), seed=0, categories=["bear", "bear", "yoyo"])
  assert names == ["bear-1", "bear-2", "yoyo-1"]
  _write(os.path.join(root, "testing_set.txt"), "bear-2\n")
  assert [s.name for s in datasets.load_dataset("lasot", root, "test")] == ["bear-2"]
  assert [s.name for s in datasets.load_dataset("lasot", root, "train")] == ["bear-1", "yoyo-1"]
  assert [s.name for s in datasets.load_dataset("lasot", root, classes=["yoyo"])] == ["yoyo-1"]
  seq = os.path.join(root, "bear", "bear-1")
  _write(os.path.join(seq, "full_occlusion.txt"), "0,1,0,0")
  _write(os.path.join(seq, "out_of_view.txt"), "0,0,1,0")
  _write(os.path.join(seq, "groundtruth.txt"), "1,1,5,5\n1,1,5,5\n1,1,5,5\n1,1,5,5\n")
  s = datasets.load_sequence(seq)
  assert s.visible.tolist() == [True, False, False, True] and s.category == "bear"


def test_trackingnet_chunks_and_test(tmp_path):
  root = str(tmp_path)
  names = synthetic.generate(root, "trackingnet", 2, 4, (W, H), seed=0)
  os.rename(os.path.join(root, "TRAIN_0"), os.path.join(root, "TRAIN_3"))
  assert [s.name for s in datasets.load_dataset("trackingnet", root, chunks=[3])] == names
  with pytest.raises(FileNotFoundError, match="TRAIN_1"):
    datasets.load_dataset("trackingnet", root, chunks=[1])
  test_names = synthetic.generate(root, "trackingnet", 1, 5, (W, H), seed=1, split="test")
  s = datasets.load_dataset("trackingnet", root, "test")[0]
  assert s.name == test_names[0] and len(s) == 5 and s.visible.tolist() == [True] + [False] * 4
  assert os.path.basename(s.frame_paths[-1]) == "4.jpg"


def _otb_seq(root, name, numbers, lines, digits=4, anno="groundtruth_rect.txt"):
  for i in numbers:
    _touch(os.path.join(root, name, "img", f"{i:0{digits}d}.jpg"))
  _write(os.path.join(root, name, anno), lines)


def test_otb_irregular_sequences(tmp_path):
  root = str(tmp_path)
  rows = lambda n, sep=",": "".join(f"{i}{sep}2{sep}3{sep}4\n" for i in range(1, n + 1))  # noqa: E731
  _otb_seq(root, "David", range(1, 11), rows(4))  # frames 1..10 on disk, boxes for 300.. -> remapped below
  for i in range(1, 11):
    os.remove(os.path.join(root, "David", "img", f"{i:04d}.jpg"))
  for i in range(295, 304):
    _touch(os.path.join(root, "David", "img", f"{i:04d}.jpg"))
  _otb_seq(root, "Tiger1", range(1, 13), rows(12, "\t"))
  _otb_seq(root, "BlurCar1", range(247, 252), rows(5))
  _otb_seq(root, "Board", range(1, 4), rows(3).replace(",", " "), digits=5)
  _otb_seq(root, "Jogging", range(1, 4), rows(3), anno="groundtruth_rect.1.txt")
  _write(os.path.join(root, "Jogging", "groundtruth_rect.2.txt"), rows(3, "\t"))
  _otb_seq(root, "Human4", range(1, 4), rows(3), anno="groundtruth_rect.2.txt")
  _write(os.path.join(root, "Human4", "groundtruth_rect1.txt"), "")
  _otb_seq(root, "Mixed", range(1, 4), "1,2,3,4\n5\t6\t7\t8\n9 10 11 12")  # mixed separators, no newline
  seqs = {s.name: s for s in datasets.load_dataset("otb", root)}
  assert sorted(seqs) == ["BlurCar1", "Board", "David", "Human4_2", "Jogging_1", "Jogging_2", "Mixed",
                          "Tiger1"]
  base = lambda p: os.path.basename(p)  # noqa: E731
  assert [base(p) for p in seqs["David"].frame_paths] == ["0300.jpg", "0301.jpg", "0302.jpg", "0303.jpg"]
  assert [base(p) for p in seqs["Tiger1"].frame_paths] == [f"{i:04d}.jpg" for i in range(6, 13)]
  np.testing.assert_array_equal(seqs["Tiger1"].boxes[:, 0], np.arange(6, 13))  # boxes 1-5 skipped too
  assert base(seqs["BlurCar1"].frame_paths[0]) == "0247.jpg" and len(seqs["BlurCar1"]) == 5
  assert base(seqs["Board"].frame_paths[0]) == "00001.jpg"
  np.testing.assert_array_equal(seqs["Mixed"].boxes, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
  assert seqs["Jogging_1"].frame_paths == seqs["Jogging_2"].frame_paths
  # A multi-target folder needs the annotation file to pick a target.
  with pytest.raises(ValueError, match="groundtruth_rect.1.txt"):
    datasets.load_sequence(os.path.join(root, "Jogging"))
  assert datasets.load_sequence(os.path.join(root, "Jogging", "groundtruth_rect.2.txt")).name == "Jogging_2"
  # An ordinary OTB folder must have exactly as many frames as boxes.
  _touch(os.path.join(root, "Mixed", "img", "0004.jpg"))
  with pytest.raises(ValueError, match=r"Mixed.*groundtruth_rect.txt: 3 boxes"):
    datasets.load_sequence(os.path.join(root, "Mixed"))


def test_uav_pieces_nan_rows_and_10fps(tmp_path):
  root = str(tmp_path)
  _write(os.path.join(root, "anno", "UAV123", "bird1_2.txt"), "1,2,3,4\nNaN,NaN,NaN,NaN\n5,6,7,8\n")
  for i in range(770, 780):
    _touch(os.path.join(root, "data_seq", "UAV123", "bird1", f"{i:06d}.jpg"))
  _write(os.path.join(root, "anno", "UAV123", "car1_s.txt"), "1,2,3,4\n")
  _touch(os.path.join(root, "data_seq", "UAV123", "car1_s", "000001.jpg"))
  seqs = datasets.load_dataset("uav", root)
  assert [s.name for s in seqs] == ["bird1_2", "car1_s"]
  s = seqs[0]
  assert [os.path.basename(p) for p in s.frame_paths] == ["000775.jpg", "000776.jpg", "000777.jpg"]
  assert s.visible.tolist() == [True, False, True] and np.isnan(s.boxes[1]).all()
  assert s.category == "bird" and seqs[1].category == "car"
  _write(os.path.join(root, "anno", "UAV123_10fps", "bird1_2.txt"), "1,2,3,4\n")
  _touch(os.path.join(root, "data_seq", "UAV123_10fps", "bird1", "000259.jpg"))
  s10 = datasets.load_dataset("uav", root, "UAV123_10fps")[0]
  assert os.path.basename(s10.frame_paths[0]) == "000259.jpg"  # (775 - 1) / 3 + 1
  _write(os.path.join(root, "anno", "UAV123", "odd_7.txt"), "1,2,3,4\n")
  with pytest.raises(FileNotFoundError, match="frame_ranges"):
    datasets.load_dataset("uav", root)
  os.makedirs(os.path.join(root, "data_seq", "UAV123", "odd"))
  _touch(os.path.join(root, "data_seq", "UAV123", "odd", "000040.jpg"))
  seqs = datasets.load_dataset("uav", root, frame_ranges={"odd_7": ("odd", 40)})
  assert os.path.basename(seqs[-1].frame_paths[0]) == "000040.jpg"


def test_nfs_240fps_rows_and_off_by_one(tmp_path):
  root = str(tmp_path)
  seq = os.path.join(root, "Gymnastics")
  for i in range(1, 4):
    _touch(os.path.join(seq, "30", "Gymnastics", f"{i:05d}.jpg"))
  rows = []
  for k in range(23):  # 240 fps rows: 23 = 8 * 3 - 1 -> rows 0, 8, 16 are the 30 fps frames
    lost = 1 if k == 8 else 0
    rows.append(f'1 {10 + k} 20 {40 + k} 60 {k + 1} {lost} 0 {int(k % 8 != 0)} "person"')
  _write(os.path.join(seq, "30", "Gymnastics.txt"), "\n".join(rows) + "\n")
  s = datasets.load_sequence(seq)
  np.testing.assert_array_equal(s.boxes, [[10, 20, 30, 40], [18, 20, 30, 40], [26, 20, 30, 40]])
  assert s.visible.tolist() == [True, False, True] and s.category == "person"
  # One annotation fewer than frames: both cut to the shorter length (the benchmark has such sequences).
  _touch(os.path.join(seq, "30", "Gymnastics", "00004.jpg"))
  assert len(datasets.load_sequence(seq)) == 3
  for i in (5, 6):
    _touch(os.path.join(seq, "30", "Gymnastics", f"{i:05d}.jpg"))
  with pytest.raises(ValueError, match=r"Gymnastics.txt: 23 annotation rows \(3 at 30 fps.* but 6 frames"):
    datasets.load_sequence(seq)


def _rle(mask: np.ndarray) -> list[int]:
  """Independent VOT RLE encoder: run lengths of the row-major mask, starting with a run of zeros."""
  flat = mask.reshape(-1).astype(int)
  runs, cur, n = [], 0, 0
  for v in flat:
    if v == cur:
      n += 1
    else:
      runs.append(n)
      cur, n = v, 1
  runs.append(n)
  return runs


def test_vot_regions(tmp_path):
  seq = tmp_path / "ball"
  for i in range(1, 5):
    _touch(str(seq / "color" / f"{i:08d}.jpg"))
  mask = np.zeros((7, 9), bool)
  mask[2:5, 3:8] = True
  mask[5, 1] = True  # an isolated pixel widens the box to the left
  rle = ",".join(str(v) for v in [10, 20, 9, 7] + _rle(mask))
  _write(str(seq / "groundtruth.txt"),
         "334.02,128.36,438.19,188.78,396.39,260.83,292.23,200.41\n"  # rotated rectangle
         "10,20,30,40\n"
         f"m{rle}\n"
         "0\n")
  s = datasets.load_sequence(str(seq))
  ys, xs = np.nonzero(mask)
  expected_mask_box = [10 + xs.min(), 20 + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
  np.testing.assert_allclose(s.boxes[0], [292.23, 128.36, 438.19 - 292.23, 260.83 - 128.36])
  np.testing.assert_allclose(s.boxes[1], [10, 20, 30, 40])
  np.testing.assert_allclose(s.boxes[2], expected_mask_box)
  assert s.visible.tolist() == [True, True, True, False]
  _write(str(seq / "groundtruth.txt"), "1,2,3,4,5\n1,2,3,4\n1,2,3,4\n1,2,3,4\n")
  with pytest.raises(ValueError, match=r"groundtruth.txt:1: expected 4 values .* got 5"):
    datasets.load_sequence(str(seq))


# ---------------------------------------------------------------------------------------------------
# Bad data: errors name the file and the line.


@pytest.fixture
def small_lasot(tmp_path):
  seq = tmp_path / "cat" / "cat-1"
  for i in range(1, 4):
    _touch(str(seq / "img" / f"{i:08d}.jpg"))
  _write(str(seq / "full_occlusion.txt"), "0,0,0")
  _write(str(seq / "out_of_view.txt"), "0,0,0")
  return seq


@pytest.mark.parametrize("text,pattern", [
    ("1,2,3,4\n1,2,3\n1,2,3,4\n", r"groundtruth.txt:2: expected 4 values \(x, y, w, h\), got 3"),
    ("1,2,3,4\n1,2,3,4\n1,2,abc,4\n", r"groundtruth.txt:3: unreadable number 'abc'"),
    ("1,2,3,4\n\n1,2,3,4\n", r"groundtruth.txt:2: empty line"),
    ("1,2,3,4\n1,2,3,4\n", r"groundtruth.txt: 2 boxes but .*img has more frames \(found .*00000003.jpg\)"),
    ("1,2,3,4\n1,2,3,4\n1,2,3,4\n1,2,3,4\n",
     r"frame .*00000004.jpg not found.* \(4 boxes in .*groundtruth.txt\)"),
])
def test_bad_groundtruth_names_file_and_line(small_lasot, text, pattern):
  _write(str(small_lasot / "groundtruth.txt"), text)
  with pytest.raises((ValueError, FileNotFoundError), match=pattern):
    datasets.load_sequence(str(small_lasot))


def test_bad_flag_files(small_lasot):
  _write(str(small_lasot / "groundtruth.txt"), "1,2,3,4\n1,2,3,4\n1,2,3,4\n")
  assert datasets.load_sequence(str(small_lasot)).visible.all()
  _write(str(small_lasot / "out_of_view.txt"), "0,1")
  with pytest.raises(ValueError, match=r"out_of_view.txt: 2 labels but the ground truth has 3 boxes"):
    datasets.load_sequence(str(small_lasot))
  _write(str(small_lasot / "out_of_view.txt"), "0,x,0")
  with pytest.raises(ValueError, match=r"out_of_view.txt:1 \(value 2\): unreadable label 'x'"):
    datasets.load_sequence(str(small_lasot))


def test_missing_things(tmp_path):
  with pytest.raises(FileNotFoundError, match="sequence path not found"):
    datasets.load_sequence(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="root not found"):
    datasets.load_dataset("otb", str(tmp_path / "nope"))
  with pytest.raises(ValueError, match="unknown dataset format 'kitti'"):
    datasets.load_dataset("kitti", str(tmp_path))
  seq = tmp_path / "x"
  _touch(str(seq / "img" / "0001.jpg"))
  _write(str(seq / "groundtruth_rect.txt"), "1,2,3,4\n")
  with pytest.raises(ValueError, match="no split"):
    datasets.load_dataset("otb", str(tmp_path), "train")
  # A generic folder with two candidate annotation files is ambiguous.
  os.remove(str(seq / "groundtruth_rect.txt"))
  _write(str(seq / "a.txt"), "1,2,3,4\n")
  _write(str(seq / "b.txt"), "1,2,3,4\n")
  with pytest.raises(FileNotFoundError, match=r"cannot tell the ground-truth file .*\['a.txt', 'b.txt'\]"):
    datasets.load_sequence(str(seq), format="folder")


def test_bad_coco_annotations(tmp_path):
  synthetic.generate(str(tmp_path), "coco", 1, 1, (W, H), seed=0)
  path = tmp_path / "annotations" / "instances_train2017.json"
  data = json.loads(path.read_text())
  data["annotations"][0]["bbox"] = [1, 2, 3]
  path.write_text(json.dumps(data))
  with pytest.raises(ValueError, match=r"instances_train2017.json: annotation id 1 has bbox \[1, 2, 3\]"):
    datasets.load_dataset("coco", str(tmp_path))
  path.write_text('{"images": [\n  1,\n  oops]}')
  with pytest.raises(ValueError, match=r"instances_train2017.json:3: invalid JSON"):
    datasets.load_dataset("coco", str(tmp_path))


def test_frame_count_mismatch_listed_folders(tmp_path):
  seq = tmp_path / "Seq_video"
  for i in range(1, 4):
    _touch(str(seq / "imgs" / f"img{i}.png"))
  _write(str(seq / "groundtruth.txt"), "1,2,3,4\n1,2,3,4\n")
  with pytest.raises(ValueError, match=r"groundtruth.txt: 2 boxes but 3 frames"):
    datasets.load_sequence(str(seq))
  _write(str(seq / "groundtruth.txt"), "1,2,3,4\n1,2,3,4\n1,2,3,4\n")
  s = datasets.load_sequence(str(seq))
  assert s.dataset == "tnl2k"
  assert [os.path.basename(p) for p in s.frame_paths] == ["img1.png", "img2.png", "img3.png"]
