"""Tests of the synthetic sequence generator (`cia_jax.data.synthetic`) and `cia-jax synth`."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from cia_jax import cli
from cia_jax.data import synthetic
from cia_jax.data.categories import LASOT_CLASSES

W, H = 96, 72


def _tree_digest(root: str) -> dict[str, str]:
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = hashlib.sha1(fh.read()).hexdigest()
  return out


def test_generate_is_deterministic_and_seed_dependent(tmp_path):
  a = synthetic.generate(str(tmp_path / "a"), "got10k", 2, 8, (W, H), seed=3)
  b = synthetic.generate(str(tmp_path / "b"), "got10k", 2, 8, (W, H), seed=3)
  c = synthetic.generate(str(tmp_path / "c"), "got10k", 2, 8, (W, H), seed=4)
  assert a == b == c == ["GOT-10k_Train_000001", "GOT-10k_Train_000002"]
  da, db, dc = (_tree_digest(str(tmp_path / k)) for k in "abc")
  assert da == db
  assert da.keys() == dc.keys() and da != dc


def test_sequence_i_does_not_depend_on_the_number_of_sequences():
  one = synthetic.render_sequence([5, 1], 6, (W, H))
  again = synthetic.render_sequence([5, 1], 6, (W, H))
  np.testing.assert_array_equal(one.frames, again.frames)
  np.testing.assert_array_equal(one.boxes_xywh, again.boxes_xywh)


@pytest.mark.parametrize("seed", range(6))
def test_render_ground_truth_is_consistent(seed):
  t = 40
  s = synthetic.render_sequence([seed, 0], t, (W, H), occlusion=True, out_of_view=(seed % 2 == 0))
  assert s.frames.shape == (t, H, W, 3) and s.frames.dtype == np.uint8
  assert s.category in LASOT_CLASSES
  b = s.boxes_xywh
  # In-view boxes are inside the image with positive size; out-of-view rows are all zero.
  vis = ~s.out_of_view
  assert np.all(b[vis, 2:] > 0)
  assert np.all(b[vis, :2] >= 0) and np.all(b[vis, 0] + b[vis, 2] <= W) and np.all(b[vis, 1] + b[vis, 3] <= H)
  assert np.all(b[~vis] == 0)
  # Initialisation frames are clean: fully visible, not occluded.
  assert s.visible[:2].all() and np.all(s.visible_ratio[:2] > 0.99)
  # Whole-in-image frames: the in-image box is the whole-object box.
  inside = vis & ~s.cut_by_image
  np.testing.assert_array_equal(b[inside], s.amodal_xywh[inside])
  # The in-image box lies within the whole-object box.
  a = s.amodal_xywh
  assert np.all(b[vis, :2] >= a[vis, :2]) and np.all(b[vis, :2] + b[vis, 2:] <= a[vis, :2] + a[vis, 2:])
  assert np.all((s.visible_ratio >= 0) & (s.visible_ratio <= 1 + 1e-9))
  assert not np.any(s.full_occlusion & s.out_of_view)
  if seed % 2 == 0:
    assert s.out_of_view.any(), "an out-of-view excursion was requested"


def test_target_changes_the_pixels_inside_its_box():
  # The same seed without the target is not exposed, so compare against the scene's texture statistics:
  # the box region of an unoccluded frame differs from the frame average by a clear colour margin.
  s = synthetic.render_sequence([0, 2], 4, (160, 120), num_distractors=0, occlusion=False, out_of_view=False)
  x, y, w, h = s.boxes_xywh[0].astype(int)
  patch = s.frames[0, y:y + h, x:x + w].astype(float)
  rest = s.frames[0].astype(float)
  assert np.abs(patch.mean(axis=(0, 1)) - rest.mean(axis=(0, 1))).max() > 8.0


def test_motion_scale_and_category_choice():
  s = synthetic.render_sequence([1, 0], 60, (160, 120), category="zebra", num_distractors=1,
                                occlusion=False, out_of_view=False)
  assert s.category == "zebra"
  centres = s.boxes_xywh[:, :2] + s.boxes_xywh[:, 2:] / 2
  assert np.ptp(centres[:, 0]) > 5 or np.ptp(centres[:, 1]) > 5  # the target moves
  area = s.amodal_xywh[:, 2] * s.amodal_xywh[:, 3]
  assert area.max() / area.min() > 1.2  # its size changes


def test_bad_arguments():
  with pytest.raises(ValueError, match="format"):
    synthetic.generate("/tmp/never", "kitti", 1, 2)
  with pytest.raises(ValueError, match="category"):
    synthetic.render_sequence(0, 3, (W, H), category="dragon")
  with pytest.raises(ValueError, match="image_size"):
    synthetic.render_sequence(0, 3, (16, 16))
  with pytest.raises(ValueError, match="num_frames"):
    synthetic.render_sequence(0, 0, (W, H))


def test_layouts_on_disk(tmp_path):
  root = str(tmp_path)
  names = synthetic.generate(os.path.join(root, "lasot"), "lasot", 2, 5, (W, H), seed=0,
                             categories=["cat", "cat"])
  assert names == ["cat-1", "cat-2"]
  seq = os.path.join(root, "lasot", "cat", "cat-2")
  assert sorted(os.listdir(os.path.join(seq, "img"))) == [f"{i:08d}.jpg" for i in range(1, 6)]
  with open(os.path.join(seq, "full_occlusion.txt")) as f:
    assert len(f.read().split(",")) == 5
  names = synthetic.generate(os.path.join(root, "otb"), "otb", 2, 4, (W, H), seed=0)
  with open(os.path.join(root, "otb", names[1], "groundtruth_rect.txt")) as f:
    assert "\t" in f.readline()  # odd sequences use tabs, like part of OTB
  assert os.path.isfile(os.path.join(root, "otb", names[0], "img", "0004.jpg"))
  names = synthetic.generate(os.path.join(root, "got"), "got10k", 1, 3, (W, H), seed=0, split="test",
                             categories=["bear"])
  gdir = os.path.join(root, "got", "test", names[0])
  with open(os.path.join(gdir, "groundtruth.txt")) as f:
    assert len(f.read().split()) == 1  # test split: first box only
  with open(os.path.join(gdir, "meta_info.ini")) as f:
    assert "object_class: bear" in f.read()
  with open(os.path.join(root, "got", "test", "list.txt")) as f:
    assert f.read().split() == names


def test_cli_synth(tmp_path, capsys):
  out = str(tmp_path / "cli")
  assert cli.main(["synth", "--format", "otb", "--out", out, "--num-sequences", "2", "--num-frames", "3",
                   "--width", "64", "--height", "48", "--seed", "1"]) == 0
  assert "wrote 2 otb sequences" in capsys.readouterr().out
  assert sorted(os.listdir(out)) == ["Synth001", "Synth002"]


@pytest.mark.parametrize("argv, message", [
    (["--format", "kitti"], "format must be one of"),
    (["--num-sequences", "0"], "num_sequences must be >= 1"),
    (["--width", "16"], "image_size"),
    (["--format", "got10k", "--split", "dev"], "got10k split"),
    (["--out-is-a-file"], "cannot write to --out"),
])
def test_cli_synth_bad_arguments_give_one_line(tmp_path, capsys, argv, message):
  out = tmp_path / "out"
  if argv == ["--out-is-a-file"]:
    out.write_text("not a folder")
    argv = []
  assert cli.main(["synth", "--out", str(out), "--num-frames", "2", *argv]) == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err
  assert err.startswith("cia-jax synth: error: ") and message in err and err.count("\n") == 1, err


def test_cli_synth_unparsable_number_is_an_argparse_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["synth", "--out", str(tmp_path), "--num-frames", "many"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err and "invalid int value: 'many'" in err
