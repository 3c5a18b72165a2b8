"""Bootstrap intervals and paired tests (cia_jax.evaluation.statistics), alone and inside `evaluate`'s report."""

import csv
import dataclasses
import os

import numpy as np
import pytest
from test_evaluation_report import make_sequences, write_flat

from cia_jax import cli
from cia_jax.evaluation import metrics
from cia_jax.evaluation import report as report_lib
from cia_jax.evaluation import statistics as stats


def test_identical_trackers_difference_is_zero_with_p_one():
  rng = np.random.default_rng(1)
  auc = rng.uniform(0.2, 0.8, 30)
  test = stats.paired_bootstrap(auc, auc.copy(), samples=2000, seed=3)
  assert test.difference.value == 0.0
  assert test.difference.low <= 0.0 <= test.difference.high
  assert test.p_value >= 0.9 and test.p_value == 1.0
  # Frame-pooled (AO) form: ratio of sums, identical too.
  frames = rng.integers(50, 300, 30).astype(float)
  test = stats.paired_bootstrap(auc * frames, auc * frames, frames, frames, samples=2000)
  assert test.p_value == 1.0 and test.difference.low <= 0.0 <= test.difference.high


def test_tracker_better_on_every_sequence_is_significant():
  rng = np.random.default_rng(2)
  b = rng.uniform(0.2, 0.7, 25)
  a = b + rng.uniform(0.005, 0.05, 25)  # better on every sequence, by a small and varying margin
  test = stats.paired_bootstrap(a, b, names=("A", "B"), samples=5000, seed=0)
  assert test.p_value < 0.05
  assert test.p_value == pytest.approx(2.0 / 5001)  # no resampled difference <= 0
  assert test.difference.value == pytest.approx(np.mean(a - b))
  assert 0.0 < test.difference.low <= test.difference.value <= test.difference.high
  # The unpaired intervals overlap widely: the pairing is what makes the difference visible.
  ia, ib = stats.bootstrap_ci(a, samples=5000), stats.bootstrap_ci(b, samples=5000)
  assert ia.low < ib.high
  # Swapping A and B mirrors the difference, same p.
  swapped = stats.paired_bootstrap(b, a, samples=5000, seed=0)
  assert swapped.p_value == test.p_value and swapped.difference.high == pytest.approx(-test.difference.low)


def test_interval_covers_the_true_mean_at_about_the_nominal_rate():
  # 300 benchmarks of 40 sequences with Beta(2, 5) AUCs (true mean 2/7), each with its own seed: a loose check
  # that the 95% percentile interval covers the mean about 95% of the time (binomial sd ~1.3 points; the
  # percentile bootstrap under-covers a little at small S).
  true_mean = 2.0 / 7.0
  covered = 0
  for draw in range(300):
    values = np.random.default_rng(1000 + draw).beta(2.0, 5.0, 40)
    ci = stats.bootstrap_ci(values, samples=1000, seed=draw)
    covered += ci.low <= true_mean <= ci.high
  assert 0.88 <= covered / 300 <= 0.99


def test_deterministic_and_checked():
  values = np.linspace(0.1, 0.9, 12)
  assert stats.bootstrap_ci(values, seed=5) == stats.bootstrap_ci(values, seed=5)
  assert stats.bootstrap_ci(values, seed=5) != stats.bootstrap_ci(values, seed=6)
  ci = stats.bootstrap_ci(values, confidence=0.5)
  assert ci.value == pytest.approx(0.5) and ci.low < 0.5 < ci.high and ci.confidence == 0.5
  with pytest.raises(ValueError, match="no sequences"):
    stats.bootstrap_ci([])
  with pytest.raises(ValueError, match="positive denominators"):
    stats.bootstrap_ci([1.0, 2.0], [1.0, 0.0])
  with pytest.raises(ValueError, match="A has 2 sequences, B 3"):
    stats.paired_bootstrap([0.1, 0.2], [0.1, 0.2, 0.3])


def test_report_intervals_and_comparisons(tmp_path):
  seqs = make_sequences(num=8, length=20, seed=7)
  rng = np.random.default_rng(0)
  noisy = [s.boxes + np.concatenate([rng.normal(0, 3, (20, 2)), np.zeros((20, 2))], axis=1) for s in seqs]
  results = {"Ref": write_flat(tmp_path / "ref", seqs, 0.0)}
  for name, boxes in (("Noisy", noisy), ("Copy", [s.boxes for s in seqs])):
    os.makedirs(tmp_path / name)
    for s, b in zip(seqs, boxes):
      np.savetxt(tmp_path / name / f"{s.name}.txt", b, delimiter=",", fmt="%.6f")
    results[name] = str(tmp_path / name)
  rep = report_lib.evaluate_trackers(seqs, results, bootstrap_samples=3000, seed=1)
  # The interval is the one of the per-sequence AUCs (their mean is pytracking's dataset AUC).
  per_seq = np.array([metrics.merge_runs(r)["auc"] for r in rep.runs["Noisy"]])
  assert rep.summary["Noisy"]["auc"] == pytest.approx(per_seq.mean(), abs=1e-12)
  assert rep.intervals["Noisy"] == stats.bootstrap_ci(per_seq, samples=3000, seed=1)
  # Default pairs: every tracker against the first given.
  assert [(t.a, t.b) for t in rep.comparisons] == [("Noisy", "Ref"), ("Copy", "Ref")]
  noisy_vs_ref, copy_vs_ref = rep.comparisons
  assert noisy_vs_ref.p_value < 0.05 and noisy_vs_ref.difference.high < 0.0
  assert copy_vs_ref.p_value == 1.0 and copy_vs_ref.difference.value == 0.0
  rep = report_lib.evaluate_trackers(seqs, results, compare=[("Copy", "Noisy")], bootstrap_samples=3000)
  assert [(t.a, t.b) for t in rep.comparisons] == [("Copy", "Noisy")]
  with pytest.raises(ValueError, match="no tracker 'X'"):
    report_lib.evaluate_trackers(seqs, results, compare=[("X", "Ref")])

  # Through the CLI: the interval column and comparisons.csv.
  import cia_jax.data.datasets as datasets  # pylint: disable=g-import-not-at-top
  original = datasets.load_dataset
  datasets.load_dataset = lambda name, root, split=None: seqs
  try:
    out = str(tmp_path / "out")
    argv = ["evaluate", "--dataset", "otb", "--root", "/x", "--out", out, "--no-plots", "--bootstrap-samples",
            "500", "--compare", "Noisy", "Ref", "--results"] + [f"{k}={v}" for k, v in results.items()]
    assert cli.main(argv) == 0
  finally:
    datasets.load_dataset = original
  with open(os.path.join(out, "comparisons.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [(r["A"], r["B"]) for r in rows] == [("Noisy", "Ref")] and float(rows[0]["p"]) < 0.05
  with open(os.path.join(out, "summary.md")) as f:
    assert "AUC 95% CI: percentile bootstrap over the sequences (500 resampled sets, seed 0)" in f.read()


def test_got10k_interval_is_over_pooled_frames(tmp_path):
  seqs = [dataclasses.replace(s, attributes={"resolution": (400, 400)})
          for s in make_sequences("got10k", num=5, length=15, seed=2)]
  folder = write_flat(tmp_path / "r", seqs, [2.0, 1.0, 0, 0])
  rep = report_lib.evaluate_trackers(seqs, {"A": folder}, bootstrap_samples=2000)
  assert rep.protocol.frame_pooled
  num, den = report_lib.score_ratios(rep, "A")
  assert den.tolist() == [14.0] * 5  # frame 0 is not evaluated
  assert rep.intervals["A"].value == pytest.approx(rep.summary["A"]["ao"], abs=1e-12)
  assert rep.intervals["A"] == stats.bootstrap_ci(num, den, samples=2000)
