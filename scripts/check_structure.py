"""Checks the package's architecture rules (docs/design.md "Code map"); run in CI by tests/test_structure.py.

    python scripts/check_structure.py            # exit 1 and one line per violation

Rules (all in `cia_jax/`; the private rule also in `configs/` and `scripts/`):
  private      no module imports a `_private` name of another module (`from m import _x`, `m._x`);
  layers       `cia_jax.track` and `cia_jax.evaluation` do not import each other; nothing outside
               `cia_jax/train/` imports `cia_jax.train` (the CLI and the quickstart, which run training, excepted);
  length       no function longer than MAX_FUNCTION_LINES lines (the exceptions below say why);
  lazy-import  function-local imports only in `cia_jax/cli/` (the exceptions below say why).
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "cia_jax"
MAX_FUNCTION_LINES = 80

# "path:function" -> why it may be longer than MAX_FUNCTION_LINES.
LONG_FUNCTION_EXCEPTIONS: dict[str, str] = {}
# "path" -> why it may import inside functions.
LAZY_IMPORT_EXCEPTIONS: dict[str, str] = {
    "cia_jax/data/processing/tf_op.py": "TensorFlow costs ~4 s to import and only the tf.data path needs it; the "
                                        "processing tables and ops are imported by tracking and evaluation too",
}
# Modules outside cia_jax/train/ that may import cia_jax.train.
TRAIN_IMPORTERS = ("cia_jax/cli/", "cia_jax/quickstart.py")


def _module_name(rel: str) -> str:
  name = rel[:-3].replace(os.sep, ".")
  return name[:-len(".__init__")] if name.endswith(".__init__") else name


def _is_module(dotted: str, root: str) -> bool:
  path = os.path.join(root, *dotted.split("."))
  return os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__init__.py"))


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
  if not node.level:
    return node.module or ""
  base = module.split(".")
  base = base[:len(base) - node.level + (1 if is_package else 0)]
  return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
  return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def check_file(rel: str, root: str = ROOT) -> list[str]:
  """Violations of one file (`rel` relative to `root`, e.g. 'cia_jax/track/runner.py')."""
  with open(os.path.join(root, rel), encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=rel)
  module = _module_name(rel)
  is_package = rel.endswith("__init__.py")
  out = []
  module_aliases: set[str] = set()
  imported: list[tuple[int, str]] = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        imported.append((node.lineno, a.name))
        if a.name.startswith(PACKAGE):
          module_aliases.add(a.asname or a.name.split(".")[0])
    elif isinstance(node, ast.ImportFrom):
      source = _resolve(node, module, is_package)
      for a in node.names:
        imported.append((node.lineno, f"{source}.{a.name}"))
        if _private(a.name):
          out.append(f"{rel}:{node.lineno}: private: imports {a.name} from {source}")
        if source.startswith(PACKAGE) and _is_module(f"{source}.{a.name}", root):
          module_aliases.add(a.asname or a.name)
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
        and node.value.id in module_aliases):
      out.append(f"{rel}:{node.lineno}: private: uses {node.value.id}.{node.attr}")
  out += _layer_violations(rel, module, imported)
  out += _function_violations(rel, tree)
  return out


def _layer_violations(rel: str, module: str, imported: list[tuple[int, str]]) -> list[str]:
  out = []
  for lineno, target in imported:
    for a, b in (("track", "evaluation"), ("evaluation", "track")):
      if module.startswith(f"{PACKAGE}.{a}") and target.startswith(f"{PACKAGE}.{b}"):
        out.append(f"{rel}:{lineno}: layers: {PACKAGE}.{a} imports {target}")
    if (target.startswith(f"{PACKAGE}.train") and not module.startswith(f"{PACKAGE}.train")
        and not rel.startswith(TRAIN_IMPORTERS)):
      out.append(f"{rel}:{lineno}: layers: imports {target} from outside {PACKAGE}/train/")
  return out


def _function_violations(rel: str, tree: ast.AST) -> list[str]:
  out = []
  lazy_ok = rel.startswith(f"{PACKAGE}/cli/") or rel in LAZY_IMPORT_EXCEPTIONS
  for node in ast.walk(tree):
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    length = node.end_lineno - node.lineno + 1
    key = f"{rel}:{node.name}"
    if length > MAX_FUNCTION_LINES and key not in LONG_FUNCTION_EXCEPTIONS:
      out.append(f"{rel}:{node.lineno}: length: {node.name} has {length} lines (> {MAX_FUNCTION_LINES})")
    if not lazy_ok:
      for inner in ast.walk(node):
        if isinstance(inner, (ast.Import, ast.ImportFrom)):
          out.append(f"{rel}:{inner.lineno}: lazy-import: import inside {node.name}")
  return out


def _python_files(root: str, folder: str) -> list[str]:
  return [os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(os.path.join(root, folder))
          for f in files if f.endswith(".py")]


def check(root: str = ROOT) -> list[str]:
  """All violations, sorted: every rule in `cia_jax/`, the private-name rule in `configs/` and `scripts/`."""
  out = [v for rel in _python_files(root, PACKAGE) for v in check_file(rel, root)]
  out += [v for folder in ("configs", "scripts") for rel in _python_files(root, folder)
          for v in check_file(rel, root) if ": private: " in v]
  return sorted(out)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default=ROOT, help="repository root (default: this checkout)")
  args = parser.parse_args(argv)
  violations = check(args.root)
  for v in violations:
    print(v)
  print(f"{len(violations)} violation(s)", file=sys.stderr)
  return 1 if violations else 0


if __name__ == "__main__":
  sys.exit(main())
