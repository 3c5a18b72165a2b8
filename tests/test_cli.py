"""The `cia-jax` entry point: a flag never swallows the next flag as its value, user errors are one line."""

import os
import signal
import subprocess
import sys

import pytest

from cia_jax import cli
from cia_jax.data.synthetic import generate


@pytest.mark.parametrize("argv, flag, got", [
    (["track", "--tracker", "cia18", "--dataset", "folder", "--root", "r", "--results", "--format", "raw"],
     "--results", "--format"),
    (["evaluate", "--dataset", "otb", "--root", "--results", "A=x", "--out", "o"], "--root", "--results"),
    (["synth", "--out", "--format", "got10k"], "--out", "--format"),
])
def test_a_flag_without_its_value_is_refused_naming_it(argv, flag, got, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert f"argument {flag}: expected a value, got the flag {got}" in err or (
      f"argument {flag}" in err and "expected one argument" in err), err
  assert "Traceback" not in err


def test_negative_numbers_are_values_not_flags(tmp_path, capsys):
  # `-1` must reach the command's own check (one line, exit 2), not be mistaken for a flag.
  assert cli.main(["synth", "--out", str(tmp_path), "--num-sequences", "-1"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("cia-jax synth: error:") and "num_sequences" in err and "Traceback" not in err


def test_config_overrides_are_split_before_argparse():
  rest, overrides = cli.split_config_overrides(
      ["train", "--config", "c.py", "--config.optim.epochs=2", "--config.data.seed", "3", "--workdir", "w"])
  assert rest == ["train", "--config", "c.py", "--workdir", "w"]
  assert overrides == ["optim.epochs=2", "data.seed=3"]
  with pytest.raises(ValueError, match="has no value"):
    cli.split_config_overrides(["--config.optim.epochs", "--workdir", "w"])


def test_sigterm_during_a_command_is_announced(tmp_path):
  """SIGTERM before a command's own handler (here: while `track` compiles) ends with a message, exit 143."""
  generate(str(tmp_path / "seqs"), "got10k", 1, 4, (96, 72), 0, split="val")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.Popen(
      [sys.executable, "-m", "cia_jax.cli", "--compilation-cache", "none", "track", "--tracker", "dimp18",
       "--random-weights", "--dataset", "got10k", "--root", str(tmp_path / "seqs"), "--split", "val",
       "--results", str(tmp_path / "res"), "--no-progress"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  for line in proc.stdout:  # wait until it is busy compiling, well after start-up
    if "compiling" in line:
      proc.send_signal(signal.SIGTERM)
      break
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM
  assert "cia-jax track: stopped by SIGTERM" in err and "Traceback" not in err, err
