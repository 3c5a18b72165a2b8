"""The FPS column of `cia-jax evaluate` from `_time.txt` files (cia_jax.evaluation.speed, cia_jax.results)."""

import csv
import os

import numpy as np
import pytest
from test_evaluation_report import make_sequences, write_flat

from cia_jax.evaluation import report as report_lib
from cia_jax.evaluation import speed as speed_lib
from cia_jax.results import load_times, time_file


def _times(length, seed):
  t = np.random.default_rng(seed).uniform(0.01, 0.05, length)
  t[0] = 7.5  # the initialisation (and compilation) frame: must not count
  return t


def test_fps_excludes_the_init_frame_and_pools_frames(tmp_path):
  seqs = make_sequences(num=3, length=20)
  raw = write_flat(tmp_path / "raw", seqs, 0.0)
  times = {s.name: _times(20, i) for i, s in enumerate(seqs)}
  for s in seqs:
    np.savetxt(os.path.join(raw, f"{s.name}_time.txt"), times[s.name], fmt="%.6f")
  # GOT-10k toolkit layout: one column per repetition, in the sequence folder.
  got = tmp_path / "got"
  got_times = {}
  for i, s in enumerate(seqs):
    os.makedirs(got / s.name)
    np.savetxt(got / s.name / f"{s.name}_001.txt", s.boxes, delimiter=",", fmt="%.2f")
    got_times[s.name] = np.stack([_times(20, 10 + i), _times(20, 20 + i)], axis=1)
    np.savetxt(got / s.name / f"{s.name}_time.txt", got_times[s.name], delimiter=",", fmt="%.8f")
  rep = report_lib.evaluate_trackers(seqs, {"Raw": raw, "Got": str(got)})

  expected = 3 * 19 / sum(np.round(t[1:], 6).sum() for t in times.values())
  assert rep.speed["Raw"].fps == pytest.approx(expected, rel=1e-9)
  assert rep.speed["Raw"].frames == 57 and rep.speed["Raw"].timed_sequences == 3
  assert rep.speed["Got"].fps == pytest.approx(6 * 19 / sum(t[1:].sum() for t in got_times.values()), rel=1e-6)
  assert rep.sequence_speed["Raw"][1].fps == pytest.approx(19 / np.round(times["seq1"][1:], 6).sum(), rel=1e-9)
  row = next(r for r in report_lib.summary_rows(rep) if r[0] == "Raw")
  assert row[-1] == f"{expected:.1f}"
  assert report_lib.SPEED_NOTE in report_lib.format_markdown(rep)
  assert "initialisation frame (frame 0) excluded" in report_lib.SPEED_NOTE


def test_missing_or_partial_time_files_are_not_errors(tmp_path):
  seqs = make_sequences(num=3, length=10)
  none = write_flat(tmp_path / "none", seqs, 0.0)
  some = write_flat(tmp_path / "some", seqs, 0.0)
  for s in seqs[:2]:
    np.savetxt(os.path.join(some, f"{s.name}_time.txt"), np.r_[1.0, np.full(9, 0.1)])
  out = str(tmp_path / "out")
  rep = report_lib.run_evaluation(seqs, {"None": none, "Some": some}, out, plots=False)
  assert rep.speed["None"].fps is None and rep.speed["None"].label() == "n/a"
  assert rep.speed["Some"].label() == "10.0 (2/3 seq.)"
  with open(os.path.join(out, "summary.csv")) as f:
    rows = {r["Tracker"]: r for r in csv.DictReader(f)}
  assert rows["None"]["FPS"] == "n/a" and rows["Some"]["FPS"] == "10.0 (2/3 seq.)"
  with open(os.path.join(out, "per_sequence.csv")) as f:
    per = {(r["tracker"], r["sequence"]): r["fps"] for r in csv.DictReader(f)}
  assert per[("Some", "seq0")] == "10.000" and per[("Some", "seq2")] == "n/a" and per[("None", "seq1")] == "n/a"


def test_time_file_layouts_and_errors(tmp_path):
  d = str(tmp_path)
  assert time_file(d, "a") is None
  with open(os.path.join(d, "uav_a_time.txt"), "w") as f:
    f.write("0.5\n0.1\nnan\n\n0.3\n")  # pytracking's prefixed UAV name; a NaN time is skipped
  assert time_file(d, "a") is None and time_file(d, "a", "uav") == os.path.join(d, "uav_a_time.txt")
  times = load_times(time_file(d, "a", "uav"))
  assert times.shape == (4, 1)
  assert speed_lib.times_speed(times) == (2, pytest.approx(0.4))
  with open(os.path.join(d, "b_time.txt"), "w") as f:
    f.write("0.1,0.2\n0.1\n")
  with pytest.raises(ValueError, match=r"b_time.txt, line 2: 1 values"):
    load_times(os.path.join(d, "b_time.txt"))
  with open(os.path.join(d, "c_time.txt"), "w") as f:
    f.write("0.1\nfast\n")
  with pytest.raises(ValueError, match=r"c_time.txt, line 2: expected seconds"):
    load_times(os.path.join(d, "c_time.txt"))
