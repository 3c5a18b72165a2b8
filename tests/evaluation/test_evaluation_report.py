"""Reports on hand-built sequences and result folders in the three layouts; the CLI; the GOT-10k toolkit."""

import csv
import os

import eval_reference as ref
import numpy as np
import pytest

from cia_jax import cli
from cia_jax.data.datasets import load_dataset
from cia_jax.data.datasets.base import Sequence
from cia_jax.evaluation import metrics
from cia_jax.evaluation import report as report_lib


def make_sequences(dataset="otb", num=3, length=30, seed=0):
  rng = np.random.default_rng(seed)
  seqs = []
  for i in range(num):
    xy = rng.integers(50, 200, 2) + np.cumsum(rng.integers(-3, 4, (length, 2)), axis=0)
    wh = np.tile(rng.integers(10, 40, 2), (length, 1))
    boxes = np.concatenate([xy, wh], axis=1).astype(float)
    seqs.append(Sequence(name=f"seq{i}", frame_paths=[f"/nonexistent/{j:04d}.jpg" for j in range(length)],
                         boxes=boxes, visible=np.ones(length, bool), dataset=dataset,
                         attributes={"attributes": ["IV", "SV"] if i == 0 else {"IV": 1, "OCC": 0}}))
  return seqs


def write_flat(folder, seqs, shift, sep=","):
  os.makedirs(folder, exist_ok=True)
  for s in seqs:
    np.savetxt(os.path.join(folder, f"{s.name}.txt"), s.boxes + shift, delimiter=sep, fmt="%.2f")
  return str(folder)


def write_got10k_layout(folder, seqs, shifts):
  for s in seqs:
    os.makedirs(os.path.join(folder, s.name), exist_ok=True)
    for r, shift in enumerate(shifts, start=1):
      np.savetxt(os.path.join(folder, s.name, f"{s.name}_{r:03d}.txt"), s.boxes + shift, delimiter=",",
                 fmt="%.4f")
  return str(folder)


@pytest.fixture
def trackers(tmp_path):
  seqs = make_sequences()
  results = {
      "Lost": write_got10k_layout(tmp_path / "lost", seqs, [[300.0, 300.0, 0, 0], [0.0, 400.0, 0, 0]]),
      "Perfect": write_flat(tmp_path / "perfect", seqs, 0.0),
      # pytracking raw results (tabs), 2 runs
      "Offset": [write_flat(tmp_path / "offset_000", seqs, [3.0, 0, 0, 0], sep="\t"),
                 write_flat(tmp_path / "offset_001", seqs, [5.0, 2.0, 0, 0], sep="\t")],
  }
  return seqs, results


def test_report_orders_and_matches_metrics(tmp_path, trackers):
  seqs, results = trackers
  out = str(tmp_path / "out")
  rep = report_lib.run_evaluation(seqs, results, out, formats=("png",), by_attribute=True)
  assert rep.protocol.name == "otb" and rep.sequences == ["seq0", "seq1", "seq2"]
  assert rep.ranking() == ["Perfect", "Offset", "Lost"]

  # Numbers equal the metrics of the individual runs, averaged as pytracking does.
  expected = {}
  for name in ("Perfect", "Offset", "Lost"):
    per_seq = []
    for s in seqs:
      dirs = results[name] if isinstance(results[name], list) else [results[name]]
      runs = []
      for d in dirs:
        if os.path.isdir(os.path.join(d, s.name)):
          files = sorted(os.listdir(os.path.join(d, s.name)))
          runs += [np.loadtxt(os.path.join(d, s.name, f), delimiter=",") for f in files]
        else:
          sep = "\t" if name == "Offset" else ","
          runs.append(np.loadtxt(os.path.join(d, f"{s.name}.txt"), delimiter=sep))
      per_seq.append([metrics.evaluate_sequence(r, s.boxes) for r in runs])
    expected[name] = metrics.summarize(per_seq)
    assert [len(r) for r in rep.runs[name]] == [len(r) for r in per_seq]
    for k in ("auc", "precision20", "norm_precision20", "op50", "op75"):
      assert rep.summary[name][k] == pytest.approx(expected[name][k], abs=1e-12), (name, k)
  assert expected["Perfect"]["auc"] == pytest.approx(20 / 21)

  with open(os.path.join(out, "summary.csv")) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["Tracker", "AUC", "P", "NP", "NP-AUC", "OP50", "OP75", "AUC CI low", "AUC CI high", "FPS"]
  assert [r[0] for r in rows[1:]] == ["Perfect", "Offset", "Lost"]
  assert float(rows[2][1]) == pytest.approx(100 * expected["Offset"]["auc"], abs=0.006)
  assert float(rows[2][2]) == pytest.approx(100 * expected["Offset"]["precision20"], abs=0.006)
  with open(os.path.join(out, "summary.md")) as f:
    md = f.read()
  assert md.index("| Perfect |") < md.index("| Offset |") < md.index("| Lost |")
  assert "Protocol `otb`, 3 sequences." in md

  with open(os.path.join(out, "per_sequence.csv")) as f:
    per = list(csv.DictReader(f))
  assert len(per) == 9
  row = next(r for r in per if r["sequence"] == "seq1" and r["tracker"] == "Offset")
  assert row["num_runs"] == "2" and row["num_frames"] == "30"
  assert float(row["auc"]) == pytest.approx(metrics.merge_runs(rep.runs["Offset"][1])["auc"], abs=1e-6)

  for stem in ("success_plot", "precision_plot", "norm_precision_plot"):
    assert os.path.getsize(os.path.join(out, f"{stem}.png")) > 5000
  # Attribute plots: IV has all 3 sequences, SV only seq0; OCC is flagged 0 and gets none.
  assert rep.attributes == {"IV": [0, 1, 2], "SV": [0]}
  assert os.path.getsize(os.path.join(out, "attributes", "SV_success_plot.png")) > 5000
  assert not os.path.exists(os.path.join(out, "attributes", "OCC_success_plot.png"))


def test_missing_results(tmp_path, trackers):
  seqs, results = trackers
  os.remove(os.path.join(results["Perfect"], "seq1.txt"))
  with pytest.raises(FileNotFoundError, match="no results for sequence 'seq1'"):
    report_lib.evaluate_trackers(seqs, results)
  rep = report_lib.evaluate_trackers(seqs, results, skip_missing=True)
  assert rep.sequences == ["seq0", "seq2"] and rep.skipped == ["seq1"]
  assert rep.summary["Offset"]["num_sequences"] == 2
  assert "(1 skipped" in report_lib.format_markdown(rep)
  with pytest.raises(FileNotFoundError, match="directory not found"):
    report_lib.evaluate_trackers(seqs, {"X": str(tmp_path / "nowhere")})


def test_protocol_from_dataset_and_withheld_ground_truth(tmp_path):
  seqs = make_sequences("lasot", num=1, length=10)
  seq = seqs[0]
  visible = np.ones(10, bool)
  visible[3:6] = False
  seq = Sequence(name=seq.name, frame_paths=seq.frame_paths, boxes=seq.boxes, visible=visible,
                 dataset="lasot")
  folder = write_flat(tmp_path / "p", [seq], 0.0)
  rep = report_lib.evaluate_trackers([seq], {"P": folder})
  assert rep.protocol.name == "lasot"
  assert rep.summary["P"]["success_curve"][0] == pytest.approx(0.7)  # invisible frames count as failures
  assert report_lib.protocol_for_dataset("UAV123_10fps").name == "uav"
  assert report_lib.protocol_for_dataset("GOT-10k").name == "got10k"
  assert report_lib.protocol_for_dataset("nfs").name == "otb"
  test_seq = Sequence(name="t", frame_paths=["a", "b"], boxes=[[1, 2, 3, 4], [np.nan] * 4],
                      visible=[True, False])
  with pytest.raises(ValueError, match="'t': no ground truth after frame 0"):
    report_lib.evaluate_trackers([test_seq], {"P": folder})


def test_cli(tmp_path, trackers, monkeypatch, capsys):
  seqs, results = trackers
  import cia_jax.data.datasets as datasets  # pylint: disable=g-import-not-at-top
  calls = []

  def fake_load_dataset(name, root, split=None):
    calls.append((name, root, split))
    return seqs

  # The dataset readers are written separately; the CLI only needs load_dataset's signature.
  monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset, raising=False)
  out = str(tmp_path / "cli_out")
  argv = ["evaluate", "--dataset", "otb", "--root", "/data/otb", "--out", out, "--no-plots", "--results",
          f"Lost={results['Lost']}", f"Offset={results['Offset'][0]}", f"Offset={results['Offset'][1]}",
          f"Perfect={results['Perfect']}"]
  assert cli.main(argv) == 0
  assert calls == [("otb", "/data/otb", None)]
  printed = capsys.readouterr().out
  assert printed.index("| Perfect |") < printed.index("| Offset |") < printed.index("| Lost |")
  assert sorted(os.listdir(out)) == ["comparisons.csv", "per_sequence.csv", "summary.csv", "summary.md"]
  assert cli.main(argv[:-4] + ["nonsense"]) == 2
  assert "expected NAME=DIR, got 'nonsense'" in capsys.readouterr().err
  assert cli.main(argv + ["--protocol", "otb"]) == 0
  assert cli.main(argv + ["--protocol", "vot"]) == 2  # reset-based: these one-pass results are not VOT trajectories
  assert cli.main(argv + ["--protocol", "eao"]) == 2


def _write_fake_got10k_val(root, seqs, covers, size):
  """The GOT-10k val folder structure the toolkit reads (frames are empty files: only their count is used)."""
  val = os.path.join(root, "val")
  os.makedirs(val)
  with open(os.path.join(val, "list.txt"), "w") as f:
    f.write("\n".join(s.name for s in seqs))
  for s, cover in zip(seqs, covers):
    d = os.path.join(val, s.name)
    os.makedirs(d)
    np.savetxt(os.path.join(d, "groundtruth.txt"), s.boxes, delimiter=",", fmt="%.4f")
    with open(os.path.join(d, "meta_info.ini"), "w") as f:
      f.write(f"[METAINFO]\nobject_class: thing\nresolution: ({size[0]}, {size[1]})\n")
    np.savetxt(os.path.join(d, "cover.label"), cover, fmt="%d")
    np.savetxt(os.path.join(d, "absence.label"), (cover == 0).astype(int), fmt="%d")
    np.savetxt(os.path.join(d, "cut_by_image.label"), np.zeros_like(cover), fmt="%d")
    for j in range(len(s.boxes)):
      open(os.path.join(d, f"{j + 1:08d}.jpg"), "w").close()


@pytest.fixture
def got10k_val(tmp_path):
  """A fake GOT-10k val split (3 sequences, boxes partly outside the image) and results of trackers A (3 runs)
  and B (1 run, noisier) in the toolkit layout; returns (root, sequences, covers, size, results)."""
  size = (240, 200)
  rng = np.random.default_rng(3)
  seqs, covers = [], []
  for i, s in enumerate(make_sequences("got10k", num=3, length=25, seed=4)):
    boxes = s.boxes.copy()
    boxes[5, 0] = -8.0  # partly outside the image: exercises the toolkit's clipping
    boxes[6, 0] = size[0] - 5.0
    cover = rng.integers(0, 9, len(boxes))
    covers.append(cover)
    seqs.append(Sequence(name=f"GOT-10k_Val_{i + 1:06d}", frame_paths=s.frame_paths, boxes=boxes,
                         visible=cover > 0, dataset="got10k", attributes={"resolution": size}))
  root = str(tmp_path / "data")
  _write_fake_got10k_val(root, seqs, covers, size)
  result_dir = tmp_path / "results" / "GOT-10k"
  noise = lambda: np.concatenate([rng.normal(0, 4, (25, 2)), rng.uniform(-2, 3, (25, 2))], axis=1)
  results = {}
  for name, runs in (("A", 3), ("B", 1)):
    for s in seqs:
      os.makedirs(result_dir / name / s.name)
      for r in range(runs):
        pred = s.boxes + noise() * (1 if name == "A" else 3)
        pred[7] += [150.0, 0, 0, 0]
        np.savetxt(result_dir / name / s.name / f"{s.name}_{r + 1:03d}.txt", pred, delimiter=",", fmt="%.3f")
      # The toolkit needs a time file (and it must not be taken for a run).
      np.savetxt(result_dir / name / s.name / f"{s.name}_time.txt", np.full(25, 0.02), fmt="%.3f")
    results[name] = str(result_dir / name)
  return root, seqs, covers, size, results


def test_got10k_through_reader_and_cli(tmp_path, got10k_val):
  root, seqs, covers, size, results = got10k_val
  # Ground truth, cover flags and resolution through our GOT-10k reader, as `cia-jax evaluate` reads them.
  loaded = load_dataset("got10k", root, "val")
  assert [s.name for s in loaded] == [s.name for s in seqs]
  ours = report_lib.evaluate_trackers(loaded, results)
  assert ours.protocol.name == "got10k" and ours.score_key == "ao"
  for name, runs in (("A", 3), ("B", 1)):
    pooled = []
    for s, cover in zip(seqs, covers):
      for r in range(runs):
        pred = np.loadtxt(os.path.join(results[name], s.name, f"{s.name}_{r + 1:03d}.txt"), delimiter=",")
        pooled += ref.got10k_frame_ious(pred, s.boxes, cover, size)
    assert ours.summary[name]["ao"] == pytest.approx(np.mean(pooled), abs=1e-9)
    assert ours.summary[name]["sr50"] == pytest.approx(np.mean(np.array(pooled) > 0.5))
    assert ours.summary[name]["sr75"] == pytest.approx(np.mean(np.array(pooled) > 0.75))
  assert ours.ranking() == ["A", "B"]
  assert report_lib.summary_rows(ours)[0] == ["Tracker", "AO", "SR0.5", "SR0.75", "AO 95% CI", "FPS"]
  out = str(tmp_path / "cli")
  assert cli.main(["evaluate", "--dataset", "got10k", "--root", root, "--split", "val",
                   "--results", f"B={results['B']}", f"A={results['A']}", "--out", out,
                   "--plot-formats", "png"]) == 0
  with open(os.path.join(out, "summary.csv")) as f:
    rows = list(csv.reader(f))
  assert [r[0] for r in rows] == ["Tracker", "A", "B"]
  assert float(rows[1][1]) == pytest.approx(100 * ours.summary["A"]["ao"], abs=0.006)
  assert sorted(os.listdir(out)) == ["comparisons.csv", "per_sequence.csv", "success_plot.png", "summary.csv",
                                     "summary.md"]


def test_got10k_toolkit_cross_check(tmp_path, got10k_val):
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")  # the toolkit plots through pyplot
    from got10k.experiments import ExperimentGOT10k  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # optional dev dependency
    pytest.skip(f"got10k toolkit not importable ({e}); pip install got10k six")
  root, seqs, _, _, results = got10k_val
  experiment = ExperimentGOT10k(root, subset="val", result_dir=str(tmp_path / "results"),
                                report_dir=str(tmp_path / "reports"))
  toolkit = experiment.report(["A", "B"])
  ours = report_lib.evaluate_trackers(load_dataset("got10k", root, "val"), results)
  for name in ("A", "B"):
    overall = toolkit[name]["overall"]
    assert ours.summary[name]["ao"] == pytest.approx(overall["ao"], abs=1e-9)
    assert ours.summary[name]["sr50"] == pytest.approx(overall["sr"], abs=1e-12)
    np.testing.assert_allclose(ours.summary[name]["pooled_success_curve"], overall["succ_curve"], atol=1e-12)
    for i, s in enumerate(seqs):
      merged = metrics.merge_runs(ours.runs[name][i])
      assert merged["ao"] == pytest.approx(toolkit[name]["seq_wise"][s.name]["ao"], abs=1e-9)
      assert merged["sr50"] == pytest.approx(toolkit[name]["seq_wise"][s.name]["sr"], abs=1e-12)
