"""A shortened quickstart (one training step, two short test sequences) runs end to end and writes every output."""

import json
import os

import pytest

from cia_jax import quickstart

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "real")


@pytest.mark.slow
def test_short_quickstart_writes_every_output(tmp_path, monkeypatch):
  # Smaller synthetic sets than the default (same code path): 2 + 2 training sequences, 2 x 8 test frames; one
  # category-encoder layer and one training filter iteration (every module still on): compiling the training and
  # validation steps is most of this test's time.
  monkeypatch.setattr(quickstart, "TRAIN_SETS", {k: dict(v, num_sequences=2, num_frames=24)
                                                 for k, v in quickstart.TRAIN_SETS.items()})
  out = quickstart.run_quickstart(
      str(tmp_path), minutes=1e-4, test_sequences=2, test_frames=8, progress=False, gif_frames=8,
      overrides=["data.batch_size=2", "val.num_batches=1", "data.processing.output_sz=64",
                 "data.processing.feature_sz=4", "model.encoder_layers=1", "model.num_iter=1"])
  for rel in ("report_synthetic/summary.md", "report_synthetic/summary.csv", "report_synthetic/per_sequence.csv",
              "report_synthetic/success_plot.png", "report_synthetic/precision_plot.png", "tracking.gif",
              "tsne.png", "quickstart.json", "train/model/meta.json", "train/config.json"):
    path = tmp_path / rel
    assert path.is_file() and path.stat().st_size > 0, rel
  table = (tmp_path / "report_synthetic" / "summary.md").read_text()
  for name in ("CIA-tiny (trained)", "CIA-tiny (random weights)", "OpenCV MIL"):
    assert name in table
  summary = json.loads((tmp_path / "quickstart.json").read_text())["summaries"]["synthetic"]
  assert set(summary) == {"CIA-tiny (trained)", "CIA-tiny (random weights)", "OpenCV MIL"}
  assert all(0.0 <= v["auc"] <= 1.0 for v in summary.values())
  assert set(out["tsne_knn"]) == {"backbone", "instance", "category"}
  # Every test sequence has a result file per tracker, one line per frame (our tracker's runs also leave the run
  # summary of cia_jax.track.distributed beside them).
  for d in ("cia_tiny", "cia_tiny_random", "opencv_mil"):
    names = os.listdir(tmp_path / "results" / "synthetic" / d)
    files = [f for f in names if f.endswith(".txt") and not f.endswith("_time.txt")]
    timings = {f[:-len(".txt")] + "_time.txt" for f in files}
    assert len(files) == 2 and set(names) - set(files) <= timings | {"run_summary.json"}, names
    for f in files:
      assert len((tmp_path / "results" / "synthetic" / d / f).read_text().splitlines()) == 8
