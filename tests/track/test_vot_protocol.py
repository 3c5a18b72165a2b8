"""The VOT reset-based experiment (`cia_jax.track.vot_protocol`) with a stand-in tracker: failures at known frames,
the 5-frame skip, re-initialisation on the ground truth, the raw codes written, and the CLI route."""

from __future__ import annotations

import numpy as np

from cia_jax import cli
from cia_jax.data.synthetic import writers
from cia_jax import vot_regions as vot
from cia_jax.track import vot_protocol

SIZE = (100, 100)
GT = np.array([10, 10, 20, 20], np.float32)
FAR = np.array([60, 60, 20, 20], np.float32)  # no pixel shared with GT


class _Scripted:
  """A tracker that reports the ground truth except on `lost` frames; records what it was given."""

  def __init__(self, lost):
    self.lost, self.inits, self.read = set(lost), [], []

  def init(self, image, box, i):
    self.inits.append((i, box.tolist()))
    return i

  def step(self, state, image, i):
    return state, FAR if i in self.lost else GT

  def frame(self, i):
    self.read.append(i)
    return np.zeros((100, 100, 3), np.uint8)


def test_failures_skip_and_reinitialise():
  t = _Scripted(lost={7, 20, 29})
  polygon = np.array([[10, 10], [29, 10], [29, 29], [10, 29]], np.float32)  # VOT 8-value ground truth
  regions, times = vot_protocol.run_supervised(t.init, t.step, t.frame, [polygon] * 30, SIZE)
  codes = [r if vot.is_special(r) else "box" for r in regions]
  # Init 0, boxes 1..6, failure 7, skipped 8..11, re-init 12, boxes 13..19, failure 20, skipped 21..24,
  # re-init 25, boxes 26..28, failure 29.
  assert codes == ([1] + ["box"] * 6 + [2] + [0] * 4 + [1] + ["box"] * 7 + [2] + [0] * 4 + [1] + ["box"] * 3 + [2])
  assert [i for i, _ in t.inits] == [0, 12, 25]
  assert t.inits[0][1] == [10, 10, 19, 19]  # axis-aligned box around the polygon's corners
  assert set(t.read) == set(range(30)) - {8, 9, 10, 11, 21, 22, 23, 24}  # skipped frames are never read
  assert times.shape == (30,) and np.all(times[[8, 21]] == 0)


def test_failure_at_the_end_and_no_failure():
  t = _Scripted(lost={27})
  regions, _ = vot_protocol.run_supervised(t.init, t.step, t.frame, [GT] * 30, SIZE)
  assert regions[27] == vot.FAILURE and regions[28:] == [0, 0]  # no frame left to re-initialise on
  t = _Scripted(lost=())
  regions, _ = vot_protocol.run_supervised(t.init, t.step, t.frame, [GT] * 5, SIZE)
  assert regions[0] == 1 and all(not vot.is_special(r) for r in regions[1:])


def test_cli_track_protocol_vot_then_evaluate(tmp_path, monkeypatch, capsys):
  """`track --protocol vot` on synthetic VOT folders (a stand-in tracker, no network), then `evaluate`."""
  root, res, out = str(tmp_path / "vot"), str(tmp_path / "res"), str(tmp_path / "rep")
  writers.generate(root, "vot", num_sequences=2, num_frames=12, seed=0)

  def stand_in(model, settings, seed, name):
    """A static tracker: reports its initialisation box on every frame."""
    del model, settings, seed, name
    return (lambda image, box, i: box), (lambda state, image, i: (state, state))

  monkeypatch.setattr(vot_protocol, "model_tracker", stand_in)
  monkeypatch.setattr(vot_protocol.runner, "load_model", lambda *a, **k: None)
  argv = ["track", "--protocol", "vot", "--tracker", "dimp18", "--random-weights", "--dataset", "vot",
          "--root", root, "--results", res]
  assert cli.main(argv) == 0
  assert "synth2: 12 frames" in capsys.readouterr().out
  lines = open(vot.trajectory_path(res, "synth1"), encoding="utf-8").read().split()
  assert len(lines) == 12 and lines[0] == "1"
  assert cli.main(argv + ["--batch-sequences", "2"]) == 2
  assert cli.main(["evaluate", "--protocol", "vot", "--dataset", "vot", "--root", root, "--out", out,
                   "--results", f"S={res}", "--eao-interval", "1,5"]) == 0
  printed = capsys.readouterr().out
  assert "| S |" in printed and "EAO over lengths [1, 5]" in printed


def test_real_tiny_tracker_on_a_polygon_sequence(tmp_path):
  """`track_sequence_vot` with the jitted tracker (tiny random network): the raw codes and finite boxes."""
  import jax  # pylint: disable=g-import-not-at-top  (only this test builds a network)

  from cia_jax.data.datasets import vot as vot_reader  # pylint: disable=g-import-not-at-top
  from cia_jax.models.cia import CIANet, init_variables  # pylint: disable=g-import-not-at-top
  from cia_jax.track import params  # pylint: disable=g-import-not-at-top
  from cia_jax.track.tracker import TrackingModel  # pylint: disable=g-import-not-at-top

  writers.generate(str(tmp_path), "vot", num_sequences=1, num_frames=6, image_size=(96, 80), seed=3)
  seq = vot_reader.load_sequence(str(tmp_path / "synth1"))  # polygon ground truth (even sequences)
  net = CIANet(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)
  model = TrackingModel(net=net, variables=init_variables(net, jax.random.key(0)))
  settings = params.get_settings("cia18", image_sample_size=64, search_area_scale=4.0, box_refinement_iter=2)
  regions, times = vot_protocol.track_sequence_vot(model, settings, seq, seed=0)
  assert len(regions) == 6 and regions[0] == vot.INITIALIZATION and times[0] > 0
  for r in regions:
    assert vot.is_special(r) or (r.shape == (4,) and np.all(np.isfinite(r)))
