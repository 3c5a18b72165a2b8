"""`cia-jax convert --arch keeptrack` (cia_jax.interop.keeptrack, keeptrack.md §6) against the torch reference.

Golden: `tests/data/interop/keeptrack_matcher.npz` (scripts/make_tcm_fixture.py) ran pytracking's
DescriptorExtractor + SuperGlue (the KeepTrack constructor's conf) on weights given by a formula
(scripts/tcm_fixture_values.py); here the same state dict is rebuilt under the reference's key names, written as
a real torch file with SuperDiMP's ResNet-50 `feature_extractor.*` keys beside it (keep_track.pth.tar's layout),
converted through the CLI, and our network must reproduce the reference outputs.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from cia_jax import cli
from cia_jax.interop import keeptrack
from cia_jax.interop.torch_pickle import load_torch_file, save_torch_file, state_dict_from_checkpoint
from cia_jax.models.tcm import CandidateSet
from cia_jax.tcm.weights import load_tcm

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_DATA = _ROOT / "tests" / "data" / "interop"
_spec = importlib.util.spec_from_file_location("tcm_fixture_values", _ROOT / "scripts" / "tcm_fixture_values.py")
fv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fv)


@pytest.fixture(scope="module")
def golden():
  return np.load(_DATA / "keeptrack_matcher.npz")


def reference_state(golden) -> dict:
  layout = json.loads(str(golden["layout"]))
  return {k: (fv.tensor_value(i, k, tuple(s)) if not k.endswith("num_batches_tracked") else np.zeros((), np.int64))
          for i, (k, s) in enumerate(layout.items())}


def superdimp_backbone() -> dict:
  with gzip.open(_DATA / "reference_keys.json.gz", "rt") as f:
    layout = json.load(f)["layouts"]["superdimp"]
  # The small entries only (BN, conv1, ...): the file stays a few MB; the converter must skip all of them.
  return {k: np.zeros(s, np.float32) for k, s in layout.items()
          if k.startswith("feature_extractor.") and np.prod(s) <= 16384}


def run_net(net, variables, x):
  hw = np.tile(x["image_hw"], (fv.B, 1))
  set0 = CandidateSet(x["coords0"], x["scores0"], np.ones(x["scores0"].shape, bool), hw)
  set1 = CandidateSet(x["coords1"], x["scores1"], np.ones(x["scores1"].shape, bool), hw)
  return net.apply(variables, x["layer3_0"].transpose(0, 2, 3, 1), x["cells0"], set0,
                   x["layer3_1"].transpose(0, 2, 3, 1), x["cells1"], set1)


def test_convert_cli_reproduces_the_reference_network(golden, tmp_path):
  state = {**superdimp_backbone(), **reference_state(golden)}
  assert sum(k.startswith("feature_extractor.layer3") for k in state) > 50
  pth = tmp_path / "keep_track.pth.tar"
  save_torch_file(str(pth), {"epoch": 15, "net_type": "TargetCandidateMatchingNetwork", "net": state})
  out = tmp_path / "keeptrack"
  assert cli.main(["--compilation-cache", "none", "convert", "--arch", "keeptrack", str(pth), str(out)]) == 0
  net, variables, meta = load_tcm(str(out))
  assert meta["arch"] == "keeptrack" and meta["layer3_channels"] == 1024
  x = fv.inputs()
  for center in ("training", "tracker"):
    pred = run_net(net.clone(keypoint_center=center), variables, x)
    np.testing.assert_allclose(pred.log_assignment, golden[f"{center}/log_assignment"], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(pred.matches0, golden[f"{center}/matches0"])
    np.testing.assert_array_equal(pred.matches1, golden[f"{center}/matches1"])
    np.testing.assert_allclose(pred.match_scores1, golden[f"{center}/match_scores1"], rtol=1e-4, atol=1e-5)
  back = tmp_path / "back.pth"  # and the reverse: our checkpoint as the reference's state dict
  assert cli.main(["--compilation-cache", "none", "convert", "--from", "cia-jax", "--arch", "keeptrack", str(out),
                   str(back)]) == 0
  written = state_dict_from_checkpoint(load_torch_file(str(back)))
  for k, v in reference_state(golden).items():
    np.testing.assert_array_equal(written[k], v, err_msg=k)
  desc = net.apply(variables, x["layer3_0"].transpose(0, 2, 3, 1), x["cells0"], np.ones((fv.B, 3), bool),
                   method=lambda m, *a: m.descriptors(*a))
  np.testing.assert_allclose(desc, golden["descriptors0"], rtol=1e-4, atol=1e-4)


def test_round_trip_to_the_reference_layout(golden):
  state = reference_state(golden)
  variables = keeptrack.torch_to_tcm(state)
  back = keeptrack.tcm_to_torch(variables)
  assert set(back) == set(state)
  for k, v in state.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_bad_state_dicts_are_named(golden):
  state = reference_state(golden)
  del state["matcher.bin_score"]
  state["matcher.extra.weight"] = np.zeros(3, np.float32)
  state["matcher.final_proj.weight"] = np.zeros((256, 255, 1), np.float32)
  with pytest.raises(ValueError, match=r"missing \(1\): matcher.bin_score; unknown \(1\): matcher.extra.weight; "
                                       r"wrong shape \(1\): matcher.final_proj.weight \[256, 255, 1\]"):
    keeptrack.torch_to_tcm(state)


def test_layout_equals_our_reference_keys(golden):
  """Every key (and torch shape) the reference constructor makes is one our network converts, and no more."""
  layout = {k: tuple(s) for k, s in json.loads(str(golden["layout"])).items() if not k.endswith("num_batches_tracked")}
  ours = {k: v.shape for k, v in keeptrack.tcm_to_torch(
      jax.tree.map(np.asarray, keeptrack.torch_to_tcm(reference_state(golden)))).items()
      if not k.endswith("num_batches_tracked")}
  assert ours == layout
