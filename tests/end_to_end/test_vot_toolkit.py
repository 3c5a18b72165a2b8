"""The real VOT toolkit against `cia_jax.evaluation.vot` (`scripts/vot_toolkit_check.py --stand-in`): a local
workspace of synthetic VOT sequences (polygon and rectangle ground truth), `vot evaluate` driving our TraX server
(`cia_jax.track.vot_server` with a drifting stand-in tracker: failures and re-initialisations, no network),
`vot analysis`, and our A / failures / robustness / EAO on the toolkit's raw results. Skipped without the `vot`
extra (`pip install '.[vot]'`)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

import pytest

pytest.importorskip("vot", reason="the `vot` extra (vot-toolkit, vot-trax) is not installed")
pytest.importorskip("trax", reason="the `vot` extra (vot-trax) is not installed")

_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "vot_toolkit_check.py"
_spec = importlib.util.spec_from_file_location("vot_toolkit_check", _SCRIPT)
check = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("vot_toolkit_check", check)
_spec.loader.exec_module(check)


def test_toolkit_scores_equal_ours_on_the_same_raw_results(tmp_path, capsys):
  ws = str(tmp_path / "ws")
  argv = ["--workspace", ws, "--stand-in", "--no-real", "--sequences", "2", "--frames", "30", "--eao-interval", "5,25"]
  assert check.main(argv) == 0
  printed = capsys.readouterr().out
  assert "MISMATCH" not in printed and "eao" in printed
  # The toolkit wrote text trajectories, with failures (2) and re-initialisations (1).
  codes = []
  for name in ("synth1", "synth2"):
    lines = open(os.path.join(ws, "results", check.STAND_IN, "baseline", name, f"{name}_001.txt"),
                 encoding="utf-8").read().split()
    assert len(lines) == 30 and lines[0] == "1"
    codes += lines
  assert "2" in codes and codes.count("1") > 2


def test_cli_vot_refuses_bad_options(capsys):
  from cia_jax import cli  # pylint: disable=g-import-not-at-top

  assert cli.main(["vot", "--tracker", "cia18"]) == 2  # neither --checkpoint nor --random-weights
  assert "random weights" in capsys.readouterr().err
  assert cli.main(["vot", "--tracker", "cia18", "--random-weights", "--warmup-size", "640-480"]) == 2
  assert "WIDTHxHEIGHT" in capsys.readouterr().err
