"""Training checkpoints (cia_jax.train.checkpoint) on the tiny config: resume skips a damaged newest step and ends
bit-identical to an uninterrupted run; every step damaged, or another tree, is reported as such."""

import glob
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from cia_jax.checkpoints import CheckpointMismatchError, DamagedCheckpointError
from cia_jax.train import checkpoint as ckpt
from cia_jax.train import trainer
# The session's synthetic data and the tiny config of the training-program tests (tests/train is on sys.path).
from test_loop import data_root, tiny_config  # noqa: F401  pylint: disable=unused-import

STEPS = 6


def _config(data_root):  # noqa: F811  (the imported fixture's value)
  return tiny_config(data_root, **{"optim.total_steps": STEPS, "checkpoint.every_steps": 2, "checkpoint.keep": 3})


def _host(state) -> dict:
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), ckpt.state_to_tree(state))


@pytest.fixture(scope="module")
def straight(data_root, tmp_path_factory):  # noqa: F811
  """6 uninterrupted steps, checkpoints at 2, 4 and 6."""
  workdir = tmp_path_factory.mktemp("straight6")
  state = trainer.train_and_evaluate(_config(data_root), str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]
  return workdir, _host(state)


def _truncate_largest_data_file(step_dir) -> str:
  path = max(glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True), key=os.path.getsize)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  return path


def test_resume_skips_a_damaged_newest_checkpoint_and_ends_identical(data_root, straight, tmp_path,  # noqa: F811
                                                                     caplog):
  src, reference = straight
  workdir = tmp_path / "damaged"
  shutil.copytree(src, workdir)
  shutil.rmtree(workdir / "model")
  _truncate_largest_data_file(workdir / "checkpoints" / "6")
  with caplog.at_level(logging.WARNING, logger="cia_jax.train.checkpoint"):
    state = trainer.train_and_evaluate(_config(data_root), str(workdir))
  assert int(jax.device_get(state.step)) == STEPS
  assert f"damaged checkpoint {workdir / 'checkpoints' / '6' / 'state'}" in caplog.text
  # Resumed from step 4 (steps 5 and 6 trained again): every TrainState field equals the uninterrupted run's.
  resumed = _host(state)
  for field in ckpt.STATE_FIELDS:
    for (path, x), (_, y) in zip(jax.tree_util.tree_leaves_with_path(resumed[field]),
                                 jax.tree_util.tree_leaves_with_path(reference[field])):
      np.testing.assert_array_equal(x, y, err_msg=f"{field}{jax.tree_util.keystr(path)}")
  # The damaged step is kept aside, never deleted; step 6 was written again.
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6", "6.damaged"]
  assert (workdir / "model").is_dir()


def test_every_step_damaged_is_reported_as_damage_not_as_another_config(data_root, straight, tmp_path):  # noqa: F811
  src, _ = straight
  workdir = tmp_path / "all_damaged"
  shutil.copytree(src, workdir)
  for step in ("2", "4", "6"):
    with open(workdir / "checkpoints" / step / "state" / "_METADATA", "r+b") as f:
      f.truncate(100)
  with pytest.raises(DamagedCheckpointError) as e:
    trainer.train_and_evaluate(_config(data_root), str(workdir))
  for step in ("2", "4", "6"):
    assert str(workdir / "checkpoints" / step / "state" / "_METADATA") in str(e.value)
  assert "does not match" not in str(e.value)
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]  # nothing renamed or deleted


def test_restore_into_another_tree_is_a_mismatch_naming_the_step(straight):
  src, reference = straight
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), reference)
  manager = ckpt.make_checkpoint_manager(str(src / "checkpoints"))
  try:
    restored, meta = ckpt.restore_train_state(manager, _StateLike(**shapes), step=4)
    assert meta["step"] == 4 and int(restored.step) == 4
    shapes["params"]["classifier"] = dict(shapes["params"]["classifier"])
    shapes["params"]["classifier"]["extra"] = jax.ShapeDtypeStruct((2,), np.float32)
    with pytest.raises(CheckpointMismatchError, match=r"checkpoints/6/state does not match.*"
                                                      r"params/classifier/extra: missing from the checkpoint"):
      ckpt.restore_train_state(manager, _StateLike(**shapes))
  finally:
    manager.close()


class _StateLike:
  """The fields of a TrainState (`replace` as flax.struct has it), for templates without an optimiser."""

  def __init__(self, **fields):
    self.__dict__.update(fields)

  def replace(self, **fields):
    return _StateLike(**{**self.__dict__, **fields})
