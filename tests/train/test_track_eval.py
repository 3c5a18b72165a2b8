"""Tracking accuracy while training (`config.val.tracking`, `cia_jax.train.track_eval`) on the tiny config."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from cia_jax import checkpoints, config_lib
from cia_jax.data.datasets import load_dataset
from cia_jax.evaluation import metrics
from cia_jax.track import runner
from cia_jax.track.params import get_settings
from cia_jax.track.tracker import TrackingModel
from cia_jax.train import checkpoint as ckpt
from cia_jax.train import track_eval, trainer

# The session's synthetic data (2 GOT-10k val sequences) and the tiny config of the training-program tests, and
# their tree comparison (tests/train is on sys.path).
from test_loop import ROOT, _assert_trees_equal, _np, data_root  # noqa: F401  pylint: disable=unused-import
from test_loop import tiny_config as _loop_config


def tiny_config(data_root, **extra):  # noqa: F811  (the imported fixture's value)
  """configs/tiny.py on the shared data, 2 steps, tracking check after every step (both val sequences)."""
  items = {"optim.total_steps": 2, "val.enabled": "true", "val.tracking.enabled": "true", "val.every_steps": 1000,
           "val.num_batches": 1, "val.tracking.every_steps": 1, "val.tracking.max_frames": 5}
  items.update(extra)
  return _loop_config(data_root, **items)


def _event_steps(workdir, tag):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  out = []
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      out += [(event.step, float(tf.make_ndarray(v.tensor))) for v in event.summary.value if v.tag == tag]
  return out


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):  # noqa: F811
  """(workdir with the check on, its state, the state of the same run with the check off)."""
  on = tmp_path_factory.mktemp("track_on")
  state_on = trainer.train_and_evaluate(tiny_config(data_root), str(on))
  off = tmp_path_factory.mktemp("track_off")
  state_off = trainer.train_and_evaluate(tiny_config(data_root, **{"val.tracking.enabled": "false"}), str(off))
  return on, state_on, off, state_off


def test_check_runs_at_its_steps_and_logs_auc(runs, capsys):
  workdir, _, off, _ = runs
  lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  tracked = [m for m in lines if "track_auc" in m]
  assert [(m["split"], m["step"]) for m in tracked] == [("val", 1), ("val", 2)]
  for m in tracked:
    assert 0.0 <= m["track_auc"] <= 1.0 and 0.0 <= m["track_precision"] <= 1.0
    assert m["track_sequences"] == 2 and m["track_frames"] == 2 * 5 and m["track_failed"] == 0
    assert m["track_seconds"] > 0
  assert [s for s, _ in _event_steps(str(workdir), "val/track_auc")] == [1, 2]
  assert [s for s, _ in _event_steps(str(workdir), "val/track_seconds")] == [1, 2]
  assert not [json.loads(line) for line in open(off / "metrics.jsonl") if "track_auc" in line]


def test_check_does_not_change_training(runs):
  """Every field of the final TrainState (params, BN statistics, EMA, optimiser, step, rng) is bit-identical."""
  _, state_on, _, state_off = runs
  assert int(jax.device_get(state_on.step)) == 2
  for field in ckpt.STATE_FIELDS:
    _assert_trees_equal(_np(ckpt.state_to_tree(state_on)[field]), _np(ckpt.state_to_tree(state_off)[field]))


def test_logged_auc_equals_tracking_the_export_directly(runs, data_root):  # noqa: F811
  """The step-2 AUC == the runner + metrics on the exported step-2 model, sequences and settings built anew."""
  workdir, _, _, _ = runs
  net, variables, meta = checkpoints.load_for_tracking(str(workdir / "model"))
  assert meta["step"] == 2
  settings = get_settings("cia18", image_sample_size=64, search_area_scale=4.0, box_refinement_iter=2)
  seqs = sorted(load_dataset("got10k", str(data_root / "got10k"), split="val"), key=lambda s: s.name)[:2]
  tracked = runner.track_batch(TrackingModel(net=net, variables=variables), settings, seqs, seed=0, max_frames=5)
  per_seq = [metrics.evaluate_sequence(t.boxes, s.boxes[:5], s.visible[:5], "otb") for t, s in zip(tracked, seqs)]
  expected = metrics.summarize(per_seq)
  logged = [json.loads(line) for line in open(workdir / "metrics.jsonl") if "track_auc" in line][-1]
  assert logged["step"] == 2
  np.testing.assert_allclose(logged["track_auc"], expected["auc"], rtol=1e-12)
  np.testing.assert_allclose(logged["track_precision"], expected["precision20"], rtol=1e-12)
  # The pure function on the same weights gives the same numbers.
  direct = track_eval.tracking_auc(net, variables, settings, seqs, max_frames=5, batch_sequences=2)
  assert direct["track_auc"] == logged["track_auc"] and direct["track_sequences"] == 2


def test_configs_and_bad_settings(data_root, tmp_path):  # noqa: F811
  for name in ("cia18", "cia50", "dimp18", "superdimp"):
    config = config_lib.load_config(os.path.join(ROOT, "configs", f"{name}.py"))
    assert not config.val.tracking.enabled and config.val.tracking.tracker == name
    assert track_eval.build(config, str(tmp_path)) is None
  tiny = config_lib.load_config(os.path.join(ROOT, "configs", "tiny.py"))
  assert tiny.val.tracking.enabled and track_eval.tracker_settings(tiny.val.tracking).image_sample_size == 64
  # val.enabled is the switch of all validation.
  assert track_eval.build(tiny_config(data_root, **{"val.enabled": "false"}), str(tmp_path)) is None
  check = track_eval.build(tiny_config(data_root, **{"val.tracking.every_steps": "None"}), str(tmp_path))
  assert check.every_steps == 1000 and [s.name for s in check.sequences] == ["GOT-10k_Val_000001",
                                                                            "GOT-10k_Val_000002"]
  with pytest.raises(ValueError, match=r"config\.val\.tracking\.batch_sequences must be >= 1"):
    track_eval.build(tiny_config(data_root, **{"val.tracking.batch_sequences": 0}), str(tmp_path))
  with pytest.raises(ValueError, match=r"config\.val\.tracking\.tracker/overrides.*image_sample_siz"):
    track_eval.build(tiny_config(data_root, **{"val.tracking.overrides": "('image_sample_siz=64',)"}),
                     str(tmp_path))
  with pytest.raises(ValueError, match=r"config\.val\.tracking\.tracker/overrides.*no_such"):
    track_eval.build(tiny_config(data_root, **{"val.tracking.tracker": "no_such"}), str(tmp_path))
