"""`cia-jax pack`: GOT-10k / TrackingNet server zips round-trip, and every defect is refused by sequence and line."""

import os
import zipfile

import numpy as np
import pytest

from cia_jax import cli
from cia_jax.cli import pack as pack_cli
from cia_jax.evaluation import pack
from cia_jax.results import write_results

NAMES = [f"GOT-10k_Test_{i:06d}" for i in (1, 2, 3)]
FRAMES = {NAMES[0]: 10, NAMES[1]: 7, NAMES[2]: 12}


def _boxes(n, seed):
  rng = np.random.default_rng(seed)
  boxes = np.concatenate([rng.uniform(0, 300, (n, 2)), rng.uniform(5, 80, (n, 2))], axis=1)
  return np.round(boxes, rng.integers(0, 5))  # a few decimals, some whole numbers


@pytest.fixture
def got10k_test(tmp_path):
  """A GOT-10k test split (first box only, empty frame files) and our raw results with times for it."""
  split = tmp_path / "GOT-10k" / "test"
  os.makedirs(split)
  (split / "list.txt").write_text("\n".join(NAMES) + "\n")
  results = str(tmp_path / "results")
  boxes, times = {}, {}
  for i, name in enumerate(NAMES):
    os.makedirs(split / name)
    for j in range(FRAMES[name]):
      (split / name / f"{j + 1:08d}.jpg").write_bytes(b"")
    boxes[name] = _boxes(FRAMES[name], i)
    times[name] = np.round(np.random.default_rng(i).uniform(0.01, 0.1, FRAMES[name]), 6)
    np.savetxt(split / name / "groundtruth.txt", boxes[name][:1], delimiter=",", fmt="%.4f")
    write_results(results, name, boxes[name], times[name])
  return str(tmp_path / "GOT-10k"), results, boxes, times


def _read_zip(path):
  with zipfile.ZipFile(path) as zf:
    return {n: zf.read(n).decode() for n in zf.namelist()}


def _array(text):
  return np.loadtxt(text.splitlines(), delimiter=",", ndmin=2)


def test_got10k_round_trip_from_the_dataset(tmp_path, got10k_test, capsys):
  root, results, boxes, times = got10k_test
  out = str(tmp_path / "sub.zip")
  assert pack_cli.FORMATS == pack.PACK_FORMATS
  assert cli.main(["pack", "--format", "got10k", "--dataset-root", root, results, out]) == 0
  printed = capsys.readouterr().out
  assert "3 sequences" in printed and "written as all 3 GOT-10k repetitions" in printed
  files = _read_zip(out)
  expected = set()
  for name in NAMES:
    expected |= {f"{name}/", f"{name}/{name}_time.txt"} | {f"{name}/{name}_{r:03d}.txt" for r in (1, 2, 3)}
  assert set(files) == expected
  for name in NAMES:
    for r in (1, 2, 3):  # one deterministic run, repeated; read back exactly equal to the input
      np.testing.assert_array_equal(_array(files[f"{name}/{name}_{r:03d}.txt"]), boxes[name])
    np.testing.assert_array_equal(_array(files[f"{name}/{name}_time.txt"])[:, 0], times[name])
  first = open(out, "rb").read()
  assert cli.main(["pack", "--format", "got10k", "--dataset-root", root, results, out]) == 0
  assert open(out, "rb").read() == first  # reproducible bytes


def test_got10k_three_runs_toolkit_layout(tmp_path, got10k_test):
  root, _, boxes, _ = got10k_test
  toolkit = tmp_path / "toolkit"
  runs = {}
  for name in NAMES:  # the toolkit's layout: 3 runs, one time column per run
    os.makedirs(toolkit / name)
    runs[name] = [_boxes(FRAMES[name], 10 * r + 7) for r in range(3)]
    for r, run in enumerate(runs[name]):
      np.savetxt(toolkit / name / f"{name}_{r + 1:03d}.txt", run, delimiter=",", fmt="%.3f")
    np.savetxt(toolkit / name / f"{name}_time.txt", np.full((FRAMES[name], 3), 0.02), delimiter=",", fmt="%.8f")
  summary = pack.pack_results(str(toolkit), str(tmp_path / "t.zip"), "got10k",
                              pack.expected_from_dataset("got10k", root))
  assert summary.sequences == NAMES and summary.repeated == []
  files = _read_zip(summary.path)
  for name in NAMES:
    for r in range(3):
      written = np.loadtxt(toolkit / name / f"{name}_{r + 1:03d}.txt", delimiter=",")  # the input, as read
      np.testing.assert_array_equal(_array(files[f"{name}/{name}_{r + 1:03d}.txt"]), written)
    assert _array(files[f"{name}/{name}_time.txt"]).shape == (FRAMES[name], 3)


def test_trackingnet_round_trip_from_a_list(tmp_path):
  results = tmp_path / "tn"
  os.makedirs(results)
  boxes = {f"seq{i}": _boxes(5 + i, i) for i in range(3)}
  for name, b in boxes.items():  # pytracking's raw results: tab-separated
    np.savetxt(results / f"{name}.txt", b, delimiter="\t", fmt="%.2f")
  (results / "extra.txt").write_text("1,2,3,4\n")
  listing = tmp_path / "list.txt"
  listing.write_text("seq0 5\nseq1,6\nseq2\n")  # seq2: no frame count, the line count is not checked
  assert pack.expected_from_list(str(listing)) == {"seq0": 5, "seq1": 6, "seq2": None}
  out = str(tmp_path / "tn.zip")
  summary = pack.pack_results(str(results), out, "trackingnet", pack.expected_from_list(str(listing)))
  assert summary.ignored == ["extra"]
  files = _read_zip(out)
  assert sorted(files) == ["seq0.txt", "seq1.txt", "seq2.txt"]
  for name, b in boxes.items():
    assert "\t" not in files[f"{name}.txt"]
    np.testing.assert_array_equal(_array(files[f"{name}.txt"]), np.loadtxt(results / f"{name}.txt", delimiter="\t"))


def _defect(results, name, edit):
  path = os.path.join(results, f"{name}.txt")
  with open(path) as f:
    lines = f.read().splitlines()
  with open(path, "w") as f:
    f.write("\n".join(edit(lines)) + "\n")


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:-1], r"GOT-10k_Test_000002 \(.*\): 6 lines, the sequence has 7 frames"),
    (lambda lines: lines[:3] + ["nan,nan,nan,nan"] + lines[4:], r"GOT-10k_Test_000002 \(.*\), line 4: not a finite"),
    (lambda lines: lines[:5] + ["10,20,-3,40"] + lines[6:], r"GOT-10k_Test_000002 \(.*\), line 6: negative width"),
    (lambda lines: lines[:2] + [lines[2].replace(",", "\t")] + lines[3:],
     r"GOT-10k_Test_000002 \(.*\), line 3: separated by tabs, the first line by commas"),
    (lambda lines: [lines[0].replace(",", "\t", 1)] + lines[1:], r"GOT-10k_Test_000002 \(.*\), line 1: mixed sep"),
    (lambda lines: lines[:1] + ["1,2,3"] + lines[2:], r"GOT-10k_Test_000002 \(.*\), line 2: expected 4 numbers"),
    (lambda lines: lines[:1] + [""] + lines[1:-1], r"GOT-10k_Test_000002 \(.*\), line 2: empty line"),
])
def test_defects_are_refused_by_sequence_and_line(tmp_path, got10k_test, edit, message):
  root, results, _, _ = got10k_test
  _defect(results, NAMES[1], edit)
  out = str(tmp_path / "bad.zip")
  with pytest.raises(ValueError, match=message):
    pack.pack_results(results, out, "got10k", pack.expected_from_dataset("got10k", root))
  assert not os.path.exists(out)


def test_missing_sequence_time_file_and_runs(tmp_path, got10k_test, capsys):
  root, results, _, _ = got10k_test
  out = str(tmp_path / "bad.zip")
  os.remove(os.path.join(results, f"{NAMES[2]}.txt"))
  os.remove(os.path.join(results, f"{NAMES[0]}_time.txt"))
  assert cli.main(["pack", "--format", "got10k", "--dataset-root", root, results, out]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "2 problem(s), nothing written" in err
  assert f"{NAMES[0]}: no time file" in err and f"{NAMES[2]}: no results in {results}" in err
  assert not os.path.exists(out)
  # Two runs are neither a deterministic run nor the server's three repetitions.
  second = str(tmp_path / "second")
  os.makedirs(second)
  for name in NAMES:
    open(os.path.join(second, f"{name}.txt"), "w").close()
  with pytest.raises(ValueError, match=f"{NAMES[1]}: 2 runs"):
    pack.pack_results([results, second], out, "got10k", {NAMES[1]: None})
  with pytest.raises(ValueError, match=f"{NAMES[1]}: 2 runs .* trackingnet takes one"):
    pack.pack_results([results, second], out, "trackingnet", {NAMES[1]: None})
