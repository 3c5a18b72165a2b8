"""`cia-jax track` on damaged benchmarks: one bad sequence never costs the good ones, and is reported.

Each test damages its own copy of three synthetic 5-frame sequences (seq001..seq003, 96x80) and tracks them
through the CLI with a tiny random-weight network (the model loader is monkeypatched); the good sequences'
box files must be byte-identical to a clean run's.
"""

import json
import os
import shutil

import cv2
import numpy as np
import pytest

from cia_jax import cli
from cia_jax import results
from cia_jax.track import runner

NAMES = ("seq001", "seq002", "seq003")
# The tiny network's tracker settings (as in test_runner.py), given the way a user would.
SETTINGS = ["--set", "image_sample_size=64", "--set", "search_area_scale=4.0", "--set", "box_refinement_iter=2",
            "--set", "target_not_found_threshold=0.0"]


def _track(root, results_dir, *extra):
  return cli.main(["track", "--tracker", "cia18", "--random-weights", "--dataset", "folder", "--root", str(root),
                   "--results", str(results_dir), "--seed", "5", "--no-progress", *SETTINGS, *extra])


def _boxes(results_dir, name):
  with open(os.path.join(results_dir, f"{name}.txt"), "rb") as f:
    return f.read()


def _failures(results_dir):
  with open(results.failures_path(str(results_dir)), encoding="utf-8") as f:
    return json.load(f)["failed"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
  """(tiny model, clean data root, {K: clean results dir}) with K = 1 and K = 3 sequences in lockstep."""
  import jax

  from cia_jax.data.synthetic import generate
  from cia_jax.models.cia import CIANet
  from cia_jax.models.cia import init_variables
  from cia_jax.track.tracker import TrackingModel

  base = tmp_path_factory.mktemp("clean")
  root = base / "seqs"
  assert tuple(generate(str(root), "folder", num_sequences=3, num_frames=5, image_size=(96, 80), seed=3)) == NAMES
  net = CIANet(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)
  model = TrackingModel(net=net, variables=init_variables(net, jax.random.key(0)))
  dirs = {}
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(runner, "load_model", lambda *args, **kwargs: model)
    for k in (1, 3):
      dirs[k] = str(base / f"k{k}")
      assert _track(root, dirs[k], "--batch-sequences", str(k)) == 0
  return model, root, dirs


@pytest.fixture
def damaged(clean, tmp_path, monkeypatch):
  """A fresh copy of the clean sequences to damage, with the model loader patched to the tiny model."""
  model, root, _ = clean
  calls = []

  def load_model(*args, **kwargs):
    calls.append(args)
    return model

  monkeypatch.setattr(runner, "load_model", load_model)
  copy = tmp_path / "seqs"
  shutil.copytree(root, copy)
  return copy, calls


def _frame(root, name, index):
  return os.path.join(root, name, f"{index:06d}.jpg")


def _assert_good_ones_as_clean(results_dir, clean_dir, failed_name):
  for name in NAMES:
    if name != failed_name:
      assert _boxes(results_dir, name) == _boxes(clean_dir, name), name
  assert not results.is_finished(str(results_dir), failed_name, 5)
  assert not os.path.exists(os.path.join(results_dir, f"{failed_name}.txt"))


def test_short_ground_truth_fails_its_sequence_and_a_rerun_retries_only_it(clean, damaged, tmp_path, capsys):
  _, _, clean_dirs = clean
  root, _ = damaged
  gt = root / "seq002" / "groundtruth.txt"
  full = gt.read_text()
  gt.write_text("".join(full.splitlines(keepends=True)[:3]))
  out = tmp_path / "res"
  assert _track(root, out) == 1
  printed = capsys.readouterr()
  assert str(gt) in printed.err and "seq002" in printed.err  # the table names the file
  assert str(gt) in _failures(out)["seq002"] and list(_failures(out)) == ["seq002"]
  assert "compiling the tracker for 1 lane(s) (1 device(s) x 1) of 128x128 frames" in printed.out
  assert "seq001: 5 frames" in printed.out
  _assert_good_ones_as_clean(out, clean_dirs[1], "seq002")

  gt.write_text(full)  # fixed: the rerun tracks only the missing sequence and clears the failure file
  assert _track(root, out) == 0
  assert "tracked 1 sequence(s), skipped 2 finished, 0 failed" in capsys.readouterr().out
  assert not os.path.exists(results.failures_path(str(out)))
  assert _boxes(out, "seq002") == _boxes(clean_dirs[1], "seq002")


@pytest.mark.parametrize("k", [1, 3])
def test_corrupt_middle_frame_fails_only_its_sequence(clean, damaged, tmp_path, capsys, k):
  _, clean_root, clean_dirs = clean
  root, _ = damaged
  bad = _frame(root, "seq002", 3)
  with open(bad, "wb") as f:
    f.write(b"not a jpeg")
  out = tmp_path / "res"
  assert _track(root, out, "--batch-sequences", str(k)) == 1
  assert bad in capsys.readouterr().err
  assert bad in _failures(out)["seq002"]
  _assert_good_ones_as_clean(out, clean_dirs[k], "seq002")

  # `evaluate` reports the failed sequence as missing with its reason, or skips and lists it.
  argv = ["evaluate", "--dataset", "folder", "--root", str(clean_root), "--out", str(tmp_path / "rep"),
          "--no-plots", "--results", f"T={out}"]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert "'seq002'" in err and "tracking it failed" in err and bad in err
  assert cli.main(argv + ["--skip-missing"]) == 0
  printed = capsys.readouterr().out
  assert "(1 skipped" in printed and f"`seq002`: T: frame could not be decoded as an image: {bad}" in printed


def test_frame_size_change_names_the_frame(clean, damaged, tmp_path, capsys):
  _, _, clean_dirs = clean
  root, _ = damaged
  smaller = _frame(root, "seq002", 4)
  cv2.imwrite(smaller, np.full((48, 64, 3), 128, np.uint8))
  out = tmp_path / "res"
  assert _track(root, out) == 1
  assert smaller in capsys.readouterr().err
  assert "frame size 64x48 differs" in _failures(out)["seq002"]
  _assert_good_ones_as_clean(out, clean_dirs[1], "seq002")


def test_bad_first_boxes_are_reported_before_the_model_is_built(clean, damaged, tmp_path, capsys, monkeypatch):
  _, _, clean_dirs = clean
  root, calls = damaged
  for name, first in (("seq001", "nan,nan,nan,nan"), ("seq003", "500,10,20,20")):  # seq003: right of the image
    gt = root / name / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    gt.write_text("\n".join([first] + lines[1:]) + "\n")
  printed_before_build = []
  load = runner.load_model
  monkeypatch.setattr(runner, "load_model",
                      lambda *a, **kw: printed_before_build.append(capsys.readouterr().out) or load(*a, **kw))
  out = tmp_path / "res"
  assert _track(root, out) == 1
  assert len(calls) == 1 and "seq001: FAILED" in printed_before_build[0] and "seq003: FAILED" in printed_before_build[0]
  failed = _failures(out)
  assert "no valid box" in failed["seq001"] and "entirely outside the 96x80" in failed["seq003"]
  assert _boxes(out, "seq002") == _boxes(clean_dirs[1], "seq002")
  # Nothing left to track: the network is not built at all.
  assert _track(root, tmp_path / "res2", "--sequences", "seq001,seq003") == 1
  assert len(calls) == 1


def test_broken_folders_are_named_with_the_readers_error(damaged, tmp_path, capsys):
  root, calls = damaged
  for name in NAMES:
    os.remove(root / name / "groundtruth.txt")
  assert _track(root, tmp_path / "res", "--sequences", "seq002") == 1  # not "unknown sequence"
  err = capsys.readouterr().err
  assert "seq002" in err and "ground-truth file" in err and "unknown" not in err
  assert _track(root, tmp_path / "res") == 1  # every folder broken: each reason is shown
  err = capsys.readouterr().err
  assert all(f"{root / name}" in err for name in NAMES)
  assert sorted(_failures(tmp_path / "res")) == list(NAMES) and not calls


def test_fail_fast_stops_at_the_first_failure(clean, damaged, tmp_path, capsys):
  _, _, clean_dirs = clean
  root, _ = damaged
  with open(_frame(root, "seq002", 2), "wb") as f:
    f.write(b"")
  out = tmp_path / "res"
  assert _track(root, out, "--fail-fast") == 1
  assert _boxes(out, "seq001") == _boxes(clean_dirs[1], "seq001")
  assert not os.path.exists(os.path.join(out, "seq003.txt"))  # never tracked
  assert list(_failures(out)) == ["seq002"]
  assert "tracked 1 sequence(s), skipped 0 finished, 1 failed" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value", [("--max-frames", "0"), ("--max-frames", "-1"), ("--batch-sequences", "0"),
                                         ("--chunk-frames", "0"), ("--devices", "0")])
def test_counts_below_one_name_the_flag(damaged, tmp_path, capsys, flag, value):
  root, calls = damaged
  with pytest.raises(SystemExit) as e:
    _track(root, tmp_path / "res", flag, value)
  assert e.value.code == 2
  assert f"argument {flag}: must be at least 1, got {int(value)}" in capsys.readouterr().err
  assert not calls and not os.path.exists(tmp_path / "res")


def test_results_path_that_is_a_file_fails_before_tracking(damaged, tmp_path, capsys):
  root, calls = damaged
  target = tmp_path / "results.txt"
  target.write_text("not a folder\n")
  assert _track(root, target) == 2
  err = capsys.readouterr().err
  assert f"results directory {target} is an existing file" in err and "Traceback" not in err
  assert not calls and target.read_text() == "not a folder\n"


def test_more_devices_than_the_process_has_fail_before_tracking(damaged, tmp_path, capsys):
  import jax

  root, calls = damaged
  n = jax.local_device_count() + 1
  assert _track(root, tmp_path / "res", "--devices", str(n)) == 2
  assert f"--devices {n}: this process has {n - 1} local device(s)" in capsys.readouterr().err
  assert not calls and not os.path.exists(tmp_path / "res")
