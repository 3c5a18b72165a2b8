"""`scripts/compare_pytorch.py --arch keeptrack` without torch: the association-stage path (`our_tcm_stages`,
`compare_tcm_stages`, `recorded_matches`) against pytracking's own outputs, and the keeptrack CLI boundary.

Reference: `tests/data/interop/keeptrack_matcher.npz` (scripts/make_tcm_fixture.py ran pytracking's
DescriptorExtractor + SuperGlue with the tracker's keypoint convention on weights given by
scripts/tcm_fixture_values.py). Here each batch element is turned into one call record as
`torch_reference.py track --record-matches` writes it, and our side must reproduce the reference's descriptors,
log-assignment and matches through the same padding to the tracker's candidate capacity.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest

from cia_jax.interop import keeptrack
from cia_jax.models.tcm import TargetCandidateMatchingNet
from cia_jax.track.tracker import TrackingModel

_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load(name: str, path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  sys.modules.setdefault(name, mod)  # dataclasses look their module up by name
  spec.loader.exec_module(mod)
  return sys.modules[name]


cp = _load("compare_pytorch", _ROOT / "scripts" / "compare_pytorch.py")
fv = _load("tcm_fixture_values", _ROOT / "scripts" / "tcm_fixture_values.py")


@pytest.fixture(scope="module")
def golden():
  return np.load(_ROOT / "tests" / "data" / "interop" / "keeptrack_matcher.npz")


@pytest.fixture(scope="module")
def model(golden):
  layout = json.loads(str(golden["layout"]))
  state = {k: (fv.tensor_value(i, k, tuple(s)) if not k.endswith("num_batches_tracked") else np.zeros((), np.int64))
           for i, (k, s) in enumerate(layout.items())}
  return TrackingModel(net=None, variables=None, tcm_net=TargetCandidateMatchingNet(),
                       tcm_variables=keeptrack.torch_to_tcm(state))


def records(golden) -> list[dict]:
  """One record per fixture batch element, in torch_reference.record_matches' layout and key names."""
  x = fv.inputs()
  out = []
  for b in range(fv.B):
    out.append({"layer3_0": x["layer3_0"][b:b + 1], "layer3_1": x["layer3_1"][b:b + 1],
                "tsm_coords_0": x["cells0"][b], "tsm_coords_1": x["cells1"][b],
                "img_coords_0": x["coords0"][b], "img_coords_1": x["coords1"][b],
                "scores_0": x["scores0"][b], "scores_1": x["scores1"][b],
                "descriptors_0": golden["descriptors0"][b:b + 1].transpose(0, 2, 1),
                "descriptors_1": golden["descriptors1"][b:b + 1].transpose(0, 2, 1),
                "image_hw": np.asarray(x["image_hw"], np.int64), "frame": np.asarray(b + 1),
                **{k: golden[f"tracker/{k}"][b:b + 1] for k in ("log_assignment", "matches0", "matches1",
                                                                "match_scores0", "match_scores1")}})
  return out


def test_recorded_matches_groups_calls_in_order():
  track = {"boxes": np.zeros((3, 4)), "match/1/frame": np.asarray(5), "match/0/frame": np.asarray(2),
           "match/0/scores_0": np.ones(3), "match/10/frame": np.asarray(9)}
  calls = cp.recorded_matches(track)
  assert [int(c["frame"]) for c in calls] == [2, 5, 9]
  assert set(calls[0]) == {"frame", "scores_0"}


def test_our_tcm_stages_reproduce_the_reference(golden, model):
  """Padded to 6 slots as in the tracker, our net gives pytracking's numbers on the real slots."""
  saw_match = False
  for rec in records(golden):
    ours = cp.our_tcm_stages(model, 6, rec)
    assert ours["log_assignment"].shape == (1, fv.M + 1, fv.N + 1)
    assert ours["descriptors_1"].shape == (1, 256, fv.N)
    diffs = cp.compare_tcm_stages(ours, rec, "b: ")
    assert [d.name for d in diffs] == ["b: " + k for k in ("descriptors_0", "descriptors_1", "log_assignment",
                                                          "assignment", "match_scores0", "match_scores1",
                                                          "matches0", "matches1")]
    for d in diffs:
      assert d.rel <= 1e-4, d
    saw_match |= bool(np.any(rec["matches1"] >= 0))
  assert saw_match  # the fixture has real matches: the integer rows compare something


def test_compare_tcm_stages_catches_a_wrong_dustbin_and_match(golden, model):
  rec = records(golden)[0]
  ours = cp.our_tcm_stages(model, 6, rec)
  bad = dict(ours, log_assignment=ours["log_assignment"][:, ::-1], matches1=ours["matches1"] + 1)
  by_name = {d.name: d for d in cp.compare_tcm_stages(bad, rec)}
  assert by_name["log_assignment"].rel > 1e-2 and by_name["matches1"].rel > 0
  assert by_name["descriptors_0"].rel <= 1e-4


def test_our_tcm_stages_reject_sets_over_capacity(golden, model):
  with pytest.raises(ValueError, match="exceed candidate_capacity 3"):
    cp.our_tcm_stages(model, 3, records(golden)[0])  # set 1 has 4 candidates


def test_keeptrack_cli_rejects_bad_inputs(tmp_path, capsys):
  ckpt = tmp_path / "c.pth"
  ckpt.write_bytes(b"x")
  fake_python = tmp_path / "python"
  fake_python.write_text("")
  common = ["--torch-python", str(fake_python), "--reference-root", str(tmp_path), "--checkpoint", str(ckpt),
            "--sequence", str(tmp_path)]
  cases = [
      (["--arch", "keeptrack"], "--tcm-checkpoint"),
      (["--arch", "keeptrack", "--tcm-checkpoint", str(tmp_path / "kt_missing.pth")], "kt_missing.pth"),
      (["--arch", "keeptrack", "--tcm-checkpoint", str(ckpt), "--candidate-capacity", "0"], "--candidate-capacity"),
      (["--arch", "superdimp", "--tcm-checkpoint", str(ckpt)], "only for --arch keeptrack"),
      (["--arch", "dimp18", "--candidate-threshold", "0.01"], "only for --arch keeptrack"),
  ]
  for argv, needle in cases:
    assert cp.main(common + argv) == 2, argv
    assert needle in capsys.readouterr().err
