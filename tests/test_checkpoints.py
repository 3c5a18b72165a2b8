"""cia_jax.checkpoints: variables checkpoints, reading training checkpoints for tracking, damaged and mismatched
checkpoints (each damage made here by truncating one kind of file), through `load_for_tracking` and `cia-jax track`.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from cia_jax import checkpoints
from cia_jax.checkpoints import CheckpointMismatchError, DamagedCheckpointError
from cia_jax.data.synthetic import generate
from cia_jax.interop import mapping
from cia_jax.train import checkpoint as train_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)  # configs/tiny.py's network
# Array data files are the large files of an OCDBT database; its B-tree nodes are a few KiB.
DATA_FILE_MIN_BYTES = 16 * 1024


def _random_variables(seed: int) -> dict:
  rng = np.random.default_rng(seed)
  template = mapping.model_template("cia18", **TINY)
  return jax.tree.map(lambda leaf: rng.standard_normal(leaf.shape).astype(leaf.dtype), template)


def _truncate(path: str, fraction: float = 0.5) -> str:
  with open(path, "r+b") as f:
    f.truncate(int(os.path.getsize(path) * fraction))
  return path


def _truncate_data_files(item_dir: str) -> None:
  """Cuts every array data file of an orbax item to 10%: some bytes of every large subtree are lost."""
  files = [p for p in glob.glob(os.path.join(item_dir, "**", "d", "*"), recursive=True)
           if os.path.getsize(p) >= DATA_FILE_MIN_BYTES]
  assert files, item_dir
  for p in files:
    _truncate(p, 0.1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A training workdir as the training loop leaves it: checkpoints/2, checkpoints/4 and the step-4 export.

  Returns (workdir, {step: variables}).
  """
  root = tmp_path_factory.mktemp("workdir")
  model = mapping.model_kwargs("cia18", **TINY)
  manager = train_checkpoint.make_checkpoint_manager(str(root / "checkpoints"), keep=3, async_save=False)
  variables = {}
  for step in (2, 4):
    variables[step] = v = _random_variables(step)
    # The optimiser state stands in as one more copy of the params: the tracker must never read it.
    state = types.SimpleNamespace(step=np.int32(step), params=v["params"], batch_stats=v["batch_stats"],
                                  momentum_params=v["params"], momentum_batch_stats=v["batch_stats"],
                                  opt_state={"mu": v["params"]}, rng=np.zeros((2,), np.uint32))
    train_checkpoint.save_train_state(manager, state, {"step": step, "config": {"model": model}})
  manager.wait_until_finished()
  manager.close()
  checkpoints.save_variables(str(root / "model"), variables[4], {"model": model, "step": 4})
  return root, variables


def _assert_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_training_checkpoint_loads_only_params_and_batch_stats(workdir, monkeypatch):
  root, variables = workdir
  opened = []
  real_open = checkpoints.ts.open

  def spy(spec, **kwargs):
    opened.append(spec["kvstore"]["path"])
    return real_open(spec, **kwargs)

  monkeypatch.setattr(checkpoints.ts, "open", spy)
  net, loaded, meta = checkpoints.load_for_tracking(str(root / "checkpoints" / "4"))
  assert meta["step"] == 4 and meta["source"] == str(root / "checkpoints" / "4") and net.clf_dim == TINY["clf_dim"]
  _assert_equal(loaded, variables[4])
  assert opened and all(p.startswith(("params.", "batch_stats.")) for p in opened), sorted(set(opened))[:5]


def test_workdir_loads_the_export_on_a_tie_and_an_older_step_without_it(workdir, tmp_path):
  root, variables = workdir
  _, loaded, meta = checkpoints.load_for_tracking(str(root))
  assert meta["step"] == 4 and "source" not in meta  # the export (meta.json) wins the tie with checkpoints/4
  _assert_equal(loaded, variables[4])
  copy = tmp_path / "w"
  shutil.copytree(root / "checkpoints", copy / "checkpoints")
  shutil.rmtree(copy / "checkpoints" / "4")
  _, loaded, meta = checkpoints.load_for_tracking(str(copy))
  assert meta["step"] == 2
  _assert_equal(loaded, variables[2])


# Each damage: (file(s) to damage, the path the error names, the step a workdir falls back to).
DAMAGES = {
    "step_data": (lambda w: _truncate_data_files(str(w / "checkpoints" / "4" / "state")),
                  "checkpoints/4/state", 2),
    "step_tree_metadata": (lambda w: _truncate(str(w / "checkpoints" / "4" / "state" / "_METADATA")),
                           "checkpoints/4/state/_METADATA", 2),
    "step_meta": (lambda w: _truncate(str(w / "checkpoints" / "4" / "meta" / "metadata")),
                  "checkpoints/4/meta/metadata", 2),
    "export_meta": (lambda w: _truncate(str(w / "model" / "meta.json")), "model/meta.json", 4),
    "export_data": (lambda w: _truncate_data_files(str(w / "model" / "variables")), "model/variables", 4),
    "export_tree_metadata": (lambda w: _truncate(str(w / "model" / "variables" / "_METADATA")),
                             "model/variables/_METADATA", 4),
}


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_damaged_checkpoint_is_named_and_a_workdir_falls_back(workdir, tmp_path, caplog, kind):
  root, variables = workdir
  damage, named, fallback_step = DAMAGES[kind]
  copy = tmp_path / "w"
  shutil.copytree(root, copy)
  if kind.startswith("step_"):
    shutil.rmtree(copy / "model")  # the newest candidate is then checkpoints/4
  damage(copy)
  damaged_dir = copy / ("model" if kind.startswith("export_") else "checkpoints/4")
  with pytest.raises(DamagedCheckpointError, match="damaged checkpoint") as e:
    checkpoints.load_for_tracking(str(damaged_dir))
  assert str(copy / named) in str(e.value) and "does not match" not in str(e.value)
  with caplog.at_level(logging.WARNING, logger="cia_jax.checkpoints"):
    _, loaded, meta = checkpoints.load_for_tracking(str(copy))
  assert meta["step"] == fallback_step
  _assert_equal(loaded, variables[fallback_step])
  assert str(copy / named) in caplog.text
  assert os.path.isdir(damaged_dir)  # never deleted


def test_every_checkpoint_damaged_names_each(workdir, tmp_path):
  root, _ = workdir
  copy = tmp_path / "w"
  shutil.copytree(root, copy)
  for rel in ("checkpoints/2/state/_METADATA", "checkpoints/4/meta/metadata", "model/meta.json"):
    _truncate(str(copy / rel))
  with pytest.raises(DamagedCheckpointError) as e:
    checkpoints.load_for_tracking(str(copy))
  for rel in ("checkpoints/2/state/_METADATA", "checkpoints/4/meta/metadata", "model/meta.json"):
    assert str(copy / rel) in str(e.value)


def test_read_tree_checks_the_template_before_reading(workdir):
  root, variables = workdir
  item = str(root / "model" / "variables")
  tree = checkpoints.read_tree(item, template=variables[4])
  _assert_equal(tree, variables[4])
  wrong = jax.tree.map(lambda x: x, variables[4])
  wrong["params"]["classifier"] = dict(wrong["params"]["classifier"], extra=np.zeros((3,), np.float32))
  with pytest.raises(CheckpointMismatchError, match=r"params/classifier/extra: missing from the checkpoint"):
    checkpoints.read_tree(item, template=wrong)
  wrong = jax.tree.map(lambda x: x, variables[4])
  kernel = wrong["params"]["bb_regressor"]["iou_predictor"]["kernel"]
  wrong["params"]["bb_regressor"]["iou_predictor"]["kernel"] = np.zeros(kernel.shape + (1,), np.float32)
  with pytest.raises(CheckpointMismatchError,
                     match=rf"{re.escape(item)} does not match.*iou_predictor/kernel: checkpoint.*--workdir"):
    checkpoints.read_tree(item, template=wrong)


def _track(checkpoint: str, seqs: str, results: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "cia_jax.cli", "track", "--tracker", "cia18", "--checkpoint", checkpoint,
         "--dataset", "folder", "--root", seqs, "--results", results, "--no-progress"]
  return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("kind", ["export_data", "export_meta"])
def test_track_cli_reports_a_damaged_checkpoint_in_one_line(workdir, tmp_path, kind):
  """The message names the file; no traceback (TensorStore's, or asyncio's "Event loop is closed") follows."""
  root, _ = workdir
  generate(str(tmp_path / "seqs"), "folder", num_sequences=1, num_frames=3, image_size=(96, 80), seed=0)
  copy = tmp_path / "w"
  shutil.copytree(root / "model", copy / "model")
  damage, named, _ = DAMAGES[kind]
  damage(copy)
  proc = _track(str(copy / "model"), str(tmp_path / "seqs"), str(tmp_path / "results"))
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "cia-jax track: error: damaged checkpoint" in proc.stderr and str(copy / named) in proc.stderr
  assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr, proc.stderr[-3000:]
