"""`cia-jax convert --arch superdimp_simple`: pytracking's `dimpnet50_simple` (the KeepTrack base,
super_dimp_simple.pth.tar; keeptrack.md §0) in and out, on a full-size torch file with the reference's layout
(`tests/data/interop/reference_keys.json.gz`, written by the reference constructor)."""

from __future__ import annotations

import gzip
import json
import pathlib

import jax
import numpy as np
import pytest

from cia_jax import cli
from cia_jax.checkpoints import load_variables
from cia_jax.interop.torch_pickle import load_torch_file, save_torch_file

ARCH = "superdimp_simple"
OPT = "classifier.filter_optimizer."
# SuperDiMP's (dimpnet50) optimiser keys, which dimpnet50_simple has not.
DIMP_OPT_KEYS = {"filter_reg": (1,), "log_step_length": (1,), "label_map_predictor.weight": (1, 100, 1, 1),
                 "target_mask_predictor.0.weight": (1, 100, 1, 1), "spatial_weight_predictor.weight": (1, 100, 1, 1)}


def _layout(arch: str) -> dict[str, tuple[int, ...]]:
  path = pathlib.Path(__file__).resolve().parents[1] / "data" / "interop" / "reference_keys.json.gz"
  with gzip.open(path, "rt") as f:
    return {k: tuple(v) for k, v in json.load(f)["layouts"][arch].items()}


@pytest.fixture(scope="module")
def simple_file(tmp_path_factory):
  """A full-size dimpnet50_simple state dict (every key and shape of the reference constructor; random values,
  filter_reg 0.37) saved in torch's zip format. Returns (path, state)."""
  layout = _layout(ARCH)
  rng = np.random.default_rng(0)
  state = {}
  for k, shape in layout.items():
    state[k] = (np.zeros(shape, np.int64) if k.endswith("num_batches_tracked")
                else rng.standard_normal(shape).astype(np.float32))
  state[OPT + "residual_module.filter_reg"] = np.asarray([0.37], np.float32)
  path = tmp_path_factory.mktemp("torch") / "super_dimp_simple.pth"
  save_torch_file(path, {"net": state})
  return path, state


def test_layout_differs_from_superdimp_only_in_the_optimiser():
  simple, dimp = _layout(ARCH), _layout("superdimp")
  assert set(simple) - set(dimp) == {OPT + "residual_module.filter_reg"}
  assert {k[len(OPT):]: v for k, v in dimp.items() if k not in simple} == DIMP_OPT_KEYS


def test_convert_and_back_is_lossless(tmp_path, simple_file, capsys):
  src, state = simple_file
  out = tmp_path / "ckpt"
  assert cli.main(["convert", "--arch", ARCH, str(src), str(out)]) == 0
  variables, meta = load_variables(str(out))
  assert meta["arch"] == ARCH and meta["model"]["clf_optimizer"] == "hinge"
  opt = variables["params"]["classifier"]["filter_optimizer"]
  assert jax.tree.map(np.shape, opt) == {"residual_module": {"filter_reg": (1,)}}
  np.testing.assert_array_equal(opt["residual_module"]["filter_reg"], np.float32([0.37]))
  conv = np.asarray(variables["params"]["classifier"]["feature_extractor"]["0"]["kernel"])
  np.testing.assert_array_equal(conv, state["classifier.feature_extractor.0.weight"].transpose(2, 3, 1, 0))

  back = tmp_path / "back.pth"
  assert cli.main(["convert", "--from", "cia-jax", "--arch", ARCH, str(out), str(back)]) == 0
  capsys.readouterr()
  exported = load_torch_file(back)["net"]
  # Exactly the reference constructor's keys and shapes (what its strict load_state_dict needs); every tensor
  # the tracker uses comes back unchanged (layer4 / fc are filled, design.md §6.2).
  assert {k: tuple(v.shape) for k, v in exported.items()} == _layout(ARCH)
  for k, v in exported.items():
    if ".layer4." not in k and ".fc." not in k and not k.endswith("num_batches_tracked"):
      np.testing.assert_array_equal(v, state[k], err_msg=k)


def test_wrong_base_names_the_missing_keys(tmp_path, simple_file, capsys):
  """A SuperDiMP (dimpnet50) file read as superdimp_simple, and the other way round: one error, naming the
  optimiser keys that are missing and those that are unknown, and nothing written."""
  src, state = simple_file
  dimp_state = {k: v for k, v in state.items() if k != OPT + "residual_module.filter_reg"}
  dimp_state.update({OPT + k: np.ones(s, np.float32) for k, s in DIMP_OPT_KEYS.items()})
  dimp_src = tmp_path / "super_dimp.pth"
  save_torch_file(dimp_src, {"net": dimp_state})
  assert cli.main(["convert", "--arch", ARCH, str(dimp_src), str(tmp_path / "o1")]) == 2
  err = capsys.readouterr().err
  assert f"{dimp_src}: state dict does not match arch '{ARCH}': 1 missing, 5 unknown" in err
  assert OPT + "residual_module.filter_reg" in err and OPT + "label_map_predictor.weight" in err
  assert cli.main(["convert", "--arch", "superdimp", str(src), str(tmp_path / "o2")]) == 2
  err = capsys.readouterr().err
  assert "does not match arch 'superdimp': 5 missing, 1 unknown" in err and OPT + "log_step_length" in err
  assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_export_refuses_the_other_base(tmp_path, simple_file, capsys):
  src, _ = simple_file
  out = tmp_path / "ckpt"
  assert cli.main(["convert", "--arch", ARCH, str(src), str(out)]) == 0
  assert cli.main(["convert", "--from", "cia-jax", "--arch", "superdimp", str(out), str(tmp_path / "x.pth")]) == 2
  err = capsys.readouterr().err
  assert "holds a 'superdimp_simple' network, not 'superdimp'" in err and "clf_optimizer='hinge'" in err
