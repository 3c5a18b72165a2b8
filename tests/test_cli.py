"""The `cia-jax` entry point: a flag never swallows the next flag as its value, user errors are one line."""

import pytest

from cia_jax import cli


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
