"""The lint configuration of pyproject.toml ([tool.ruff]: pyflakes + pycodestyle, 120 columns) holds everywhere."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff() -> list[str]:
  exe = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
  if exe is None:
    pytest.fail("ruff is not installed: it is part of the dev extra (pip install -e '.[dev]')")
  return [exe]


def test_ruff_check_is_clean():
  proc = subprocess.run(_ruff() + ["check", "--no-cache", "--output-format", "concise", ROOT], capture_output=True,
                        text=True, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_flags_what_the_configuration_selects(tmp_path):
  # The configuration must select rules that fire: an unused import and a 121-column line are reported.
  bad = tmp_path / "bad.py"
  bad.write_text("import os\n" + "x = '" + "a" * 115 + "'\n")
  proc = subprocess.run(_ruff() + ["check", "--no-cache", "--output-format", "concise", "--config",
                                   os.path.join(ROOT, "pyproject.toml"), str(bad)],
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 1
  assert "F401" in proc.stdout and "E501" in proc.stdout, proc.stdout
