"""The architecture rules of scripts/check_structure.py hold for this checkout, and the checker catches each."""

import os
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import check_structure  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def test_repository_has_no_violations():
  assert check_structure.check(ROOT) == []


def _write(root, rel, text):
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(textwrap.dedent(text))


def test_checker_finds_each_kind_of_violation(tmp_path):
  root = str(tmp_path)
  for pkg in ("cia_jax", "cia_jax/track", "cia_jax/evaluation", "cia_jax/train", "cia_jax/cli"):
    _write(root, f"{pkg}/__init__.py", "")
  _write(root, "cia_jax/evaluation/report.py", "def _size():\n  return 1\n")
  _write(root, "cia_jax/train/step.py", "X = 1\n")
  _write(root, "cia_jax/track/runner.py", """\
      from cia_jax.evaluation import report
      from cia_jax.train.step import X

      def f():
        import os
        return report._size() + X + len(os.sep)
      """)
  _write(root, "cia_jax/track/long.py", "def g():\n" + "  x = 1\n" * 90 + "  return x\n")
  _write(root, "cia_jax/cli/track.py", "def run():\n  from cia_jax.train.step import X\n  return X\n")
  _write(root, "configs/c.py", "from cia_jax.evaluation.report import _size\n")
  found = check_structure.check(root)
  kinds = sorted((v.split(":")[0], v.split(": ")[1]) for v in found)
  assert kinds == [("cia_jax/track/long.py", "length"),
                   ("cia_jax/track/runner.py", "layers"), ("cia_jax/track/runner.py", "layers"),
                   ("cia_jax/track/runner.py", "lazy-import"), ("cia_jax/track/runner.py", "private"),
                   ("configs/c.py", "private")], found
