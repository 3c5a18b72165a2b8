"""`cia-jax evaluate --by-attribute` on generated LaSOT / UAV123 / VOT folders and a user JSON table.

Per-attribute scores are checked against a direct NumPy computation over the attribute's subset, from the
per-frame errors of the independent reference (eval_reference.py).
"""

import csv
import json
import os

import eval_reference as ref
import numpy as np
import pytest

from cia_jax import cli
from cia_jax.data.datasets import load_dataset
from cia_jax.evaluation import attributes as attr_lib
from cia_jax.evaluation import report as report_lib

LENGTH = 12


def _boxes(rng):
  xy = rng.integers(40, 120, 2) + np.cumsum(rng.integers(-3, 4, (LENGTH, 2)), axis=0)
  return np.concatenate([xy, np.tile(rng.integers(15, 40, 2), (LENGTH, 1))], axis=1).astype(float)


def _frames(folder, digits, count=LENGTH):
  os.makedirs(folder, exist_ok=True)
  for i in range(1, count + 1):
    open(os.path.join(folder, f"{i:0{digits}d}.jpg"), "w").close()  # only the names are read


def _flags(frames):
  flags = np.zeros(LENGTH, int)
  flags[list(frames)] = 1
  return flags


def write_lasot(root, rng):
  """4 LaSOT sequences: full occlusion / out of view / both / neither (flags on a few frames)."""
  flags = {"cat-1": ({5}, set()), "cat-2": (set(), {3, 4}), "cat-3": ({8}, {9}), "cat-4": (set(), set())}
  gt = {}
  for name, (occ, oov) in flags.items():
    d = os.path.join(root, "cat", name)
    _frames(os.path.join(d, "img"), 8)
    gt[name] = _boxes(rng)
    np.savetxt(os.path.join(d, "groundtruth.txt"), gt[name], delimiter=",", fmt="%d")
    for fname, frames in (("full_occlusion.txt", occ), ("out_of_view.txt", oov)):
      with open(os.path.join(d, fname), "w") as f:
        f.write(",".join(str(v) for v in _flags(frames)))
  return gt


def write_uav(root, rng):
  """3 UAV123 sequences; `car1` has no attribute file."""
  anno = os.path.join(root, "anno", "UAV123")
  os.makedirs(os.path.join(anno, "att"))
  att = {"bike1": [1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], "boat2": [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]}
  gt = {}
  for name in ("bike1", "boat2", "car1"):
    _frames(os.path.join(root, "data_seq", "UAV123", name), 6)
    gt[name] = _boxes(rng)
    np.savetxt(os.path.join(anno, f"{name}.txt"), gt[name], delimiter=",", fmt="%d")
    if name in att:
      with open(os.path.join(anno, "att", f"{name}.txt"), "w") as f:
        f.write(",".join(map(str, att[name])) + "\n")
  return gt


def write_vot(root, rng):
  """3 VOT sequences with per-frame tags; `c` has none; `a`'s occlusion.tag is shorter than the sequence."""
  tags = {"a": {"occlusion": [0, 0, 1], "camera_motion": [0] * LENGTH}, "b": {"camera_motion": [0, 1] + [0] * 10},
          "c": {}}
  gt = {}
  for name, seq_tags in tags.items():
    d = os.path.join(root, name)
    _frames(os.path.join(d, "color"), 8)
    gt[name] = _boxes(rng)
    np.savetxt(os.path.join(d, "groundtruth.txt"), gt[name], delimiter=",", fmt="%d")
    for tag, values in seq_tags.items():
      with open(os.path.join(d, f"{tag}.tag"), "w") as f:
        f.write("".join(f"{v}\n" for v in values))
  with open(os.path.join(root, "list.txt"), "w") as f:
    f.write("a\nb\nc\n")
  return gt


def write_results(folder, gt, rng, noise):
  os.makedirs(folder, exist_ok=True)
  preds = {}
  for name, boxes in gt.items():
    preds[name] = boxes + np.concatenate([rng.normal(0, noise, (LENGTH, 2)), np.zeros((LENGTH, 2))], axis=1)
    np.savetxt(os.path.join(folder, f"{name}.txt"), preds[name], delimiter=",", fmt="%.3f")
  return str(folder), preds


def direct_scores(preds, gt, names, dataset, visible=None):
  """AUC and precision at 20 px over the sequences `names`, by NumPy from the reference's per-frame errors."""
  aucs, precs = [], []
  for name in names:
    iou, cerr, _, _ = ref.pytracking_errors(preds[name], gt[name], dataset, None if visible is None else
                                            visible[name])
    iou, cerr = np.asarray(iou), np.asarray(cerr)
    aucs.append(np.mean(iou[:, None] > np.asarray(ref.SUCCESS_T)[None, :]))
    precs.append(np.mean(cerr <= 20.0))
  return np.mean(aucs), np.mean(precs)


def _table(out):
  with open(os.path.join(out, "attributes.csv")) as f:
    return {r["Attribute"]: r for r in csv.DictReader(f)}


def _check(table, trackers, preds, gt, rows, dataset, visible=None):
  for row, names in rows.items():
    assert int(table[row]["Sequences"]) == len(names), row
    for tracker in trackers:
      auc, prec = direct_scores(preds[tracker], gt, names, dataset, visible)
      assert float(table[row][f"{tracker} AUC"]) == pytest.approx(100 * auc, abs=0.006), (row, tracker)
      assert float(table[row][f"{tracker} P"]) == pytest.approx(100 * prec, abs=0.006), (row, tracker)


def test_lasot_flags_any_frame_rule(tmp_path):
  rng = np.random.default_rng(0)
  root = str(tmp_path / "lasot")
  gt = write_lasot(root, rng)
  seqs = load_dataset("lasot", root)
  assert {s.name: attr_lib.sequence_attributes(s) for s in seqs} == {
      "cat-1": {"full occlusion"}, "cat-2": {"out of view"}, "cat-3": {"full occlusion", "out of view"},
      "cat-4": set()}
  visible = {s.name: s.visible for s in seqs}
  dirs, preds = {}, {}
  for tracker, noise in (("A", 2.0), ("B", 6.0)):
    dirs[tracker], preds[tracker] = write_results(tmp_path / tracker, gt, rng, noise)
  out = str(tmp_path / "out")
  report_lib.run_evaluation(seqs, dirs, out, by_attribute=True, plots=False)
  rows = {"all": list(gt), "full occlusion": ["cat-1", "cat-3"], "out of view": ["cat-2", "cat-3"],
          attr_lib.NONE_ROW: ["cat-4"]}
  table = _table(out)
  assert list(table) == list(rows)
  _check(table, ("A", "B"), preds, gt, rows, "lasot", visible)


def test_uav_attribute_files_and_cli(tmp_path, capsys):
  rng = np.random.default_rng(1)
  root = str(tmp_path / "uav")
  gt = write_uav(root, rng)
  seqs = load_dataset("uav", root)
  assert seqs[0].attributes["attributes"]["fast motion"] and not seqs[1].attributes["attributes"]["fast motion"]
  assert "attributes" not in seqs[2].attributes
  dirs, preds = {}, {}
  for tracker, noise in (("A", 1.0), ("B", 5.0)):
    dirs[tracker], preds[tracker] = write_results(tmp_path / tracker, gt, rng, noise)
  out = str(tmp_path / "out")
  argv = ["evaluate", "--dataset", "uav", "--root", root, "--out", out, "--by-attribute", "--plot-formats", "png",
          "--results", f"A={dirs['A']}", f"B={dirs['B']}"]
  assert cli.main(argv) == 0
  printed = capsys.readouterr().out
  assert "| scale variation | 2 |" in printed and "No attribute information (1): `car1`" in printed
  rows = {"all": ["bike1", "boat2", "car1"], "fast motion": ["bike1"], "out of view": ["boat2"],
          "scale variation": ["bike1", "boat2"], attr_lib.UNKNOWN_ROW: ["car1"]}
  table = _table(out)
  assert list(table) == list(rows)
  _check(table, ("A", "B"), preds, gt, rows, "uav")
  with open(os.path.join(out, "attributes.md")) as f:
    assert "No attribute information (1): `car1`" in f.read()
  assert os.path.getsize(os.path.join(out, "attributes_plot.png")) > 5000
  assert os.path.isfile(os.path.join(out, "attributes", "fast_motion_success_plot.png"))
  assert os.path.isfile(os.path.join(out, "attributes", "_no_information__success_plot.png"))


def test_vot_tags(tmp_path):
  rng = np.random.default_rng(2)
  root = str(tmp_path / "vot")
  gt = write_vot(root, rng)
  seqs = load_dataset("vot", root)
  occlusion = seqs[0].attributes["frame_tags"]["occlusion"]
  assert occlusion.shape == (LENGTH,) and occlusion.tolist() == [False, False, True] + [False] * 9  # padded
  assert [attr_lib.sequence_attributes(s) for s in seqs] == [{"occlusion"}, {"camera motion"}, None]
  dirs, preds = {}, {}
  dirs["A"], preds["A"] = write_results(tmp_path / "A", gt, rng, 3.0)
  out = str(tmp_path / "out")
  report_lib.run_evaluation(seqs, dirs, out, by_attribute=True, plots=False)
  rows = {"all": ["a", "b", "c"], "camera motion": ["b"], "occlusion": ["a"], attr_lib.UNKNOWN_ROW: ["c"]}
  _check(_table(out), ("A",), preds, gt, rows, "otb")
  with open(os.path.join(root, "a", "occlusion.tag"), "w") as f:
    f.write("0\n" * (LENGTH + 1))
  with pytest.raises(ValueError, match=r"occlusion.tag: 13 tag values but the ground truth has 12 frames"):
    load_dataset("vot", root)


def test_user_json_table_replaces_dataset_attributes(tmp_path, capsys):
  rng = np.random.default_rng(3)
  root = str(tmp_path / "lasot")
  gt = write_lasot(root, rng)
  dirs, preds = {}, {}
  dirs["A"], preds["A"] = write_results(tmp_path / "A", gt, rng, 3.0)
  table_path = str(tmp_path / "attributes.json")
  with open(table_path, "w") as f:  # plain lists, and pysot's dataset JSON form; cat-4 is not listed
    json.dump({"cat-1": ["dark", "small"], "cat-2": {"attr": ["dark"], "init_rect": [0, 0, 1, 1]}, "cat-3": []}, f)
  assert attr_lib.load_attribute_table(table_path) == {"cat-1": ["dark", "small"], "cat-2": ["dark"], "cat-3": []}
  out = str(tmp_path / "out")
  assert cli.main(["evaluate", "--dataset", "lasot", "--root", root, "--out", out, "--no-plots",
                   "--attributes", table_path, "--results", f"A={dirs['A']}"]) == 0
  assert "No attribute information (1): `cat-4`" in capsys.readouterr().out
  visible = {s.name: s.visible for s in load_dataset("lasot", root)}
  rows = {"all": list(gt), "dark": ["cat-1", "cat-2"], "small": ["cat-1"], attr_lib.NONE_ROW: ["cat-3"],
          attr_lib.UNKNOWN_ROW: ["cat-4"]}
  table = _table(out)
  assert list(table) == list(rows)
  _check(table, ("A",), preds, gt, rows, "lasot", visible)
  with open(table_path, "w") as f:
    json.dump({"cat-1": "dark"}, f)
  assert cli.main(["evaluate", "--dataset", "lasot", "--root", root, "--out", out, "--no-plots",
                   "--attributes", table_path, "--results", f"A={dirs['A']}"]) == 2
  assert "sequence 'cat-1': expected a list of attribute names" in capsys.readouterr().err
