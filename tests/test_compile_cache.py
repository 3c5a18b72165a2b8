"""Warm starts: `cia-jax` fills JAX's persistent compilation cache by default, `--compilation-cache none` turns it off.

The runs are subprocesses (the cache must be configured before a process compiles anything, and this test
process already has the suite's cache): a tiny `cia-jax track` (a width-8 DiMP18 checkpoint of NumPy random
weights: nothing but the tracker's programs to compile) over one synthetic 96x80 sequence of 2 frames with 64 px
patches.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cia_jax import checkpoints, compile_cache
from cia_jax.cli import split_cache_option
from cia_jax.data.synthetic import generate
from cia_jax.models.cia import build_model, random_variables
from cia_jax.models.presets import model_kwargs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _files(path) -> list[str]:
  return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)


def _track(tmp_path, name: str, before: list[str], after: list[str], frames: int) -> subprocess.CompletedProcess:
  """`cia-jax [before] track ... [after]` with a private HOME / XDG_CACHE_HOME and no JAX cache variables."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COMPILATION_CACHE_DIR", compile_cache.ENV_VAR) and not k.startswith("JAX_PERSISTENT")}
  env.update(PYTHONPATH=REPO, XDG_CACHE_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"))
  cmd = [sys.executable, "-m", "cia_jax.cli", *before, "track", "--tracker", "dimp18", "--checkpoint",
         str(tmp_path / "tiny_dimp18"), "--dataset",
         "folder", "--root", str(tmp_path / "seqs"), "--results", str(tmp_path / name), "--no-progress",
         "--max-frames", str(frames), "--set", "image_sample_size=64", *after]
  return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cache_is_filled_by_a_run_and_none_writes_nothing(tmp_path):
  generate(str(tmp_path / "seqs"), "folder", num_sequences=1, num_frames=2, image_size=(96, 80), seed=3)
  kwargs = model_kwargs("dimp18", backbone_width=8, clf_dim=16, iou_dim=16)
  checkpoints.save_variables(str(tmp_path / "tiny_dimp18"), random_variables(build_model(kwargs)), {"model": kwargs})
  cache = tmp_path / "cache"
  # The option after the subcommand.
  proc = _track(tmp_path, "with_cache", [], ["--compilation-cache", str(cache)], frames=2)
  assert proc.returncode == 0, proc.stderr[-3000:]
  entries = _files(cache)
  assert len([f for f in entries if f.endswith("-cache")]) >= 2, entries  # at least the tracker's init and step
  assert oct(os.stat(cache).st_mode & 0o777) == oct(0o700)
  # The option before the subcommand: no compiled program is written anywhere (other tools' caches, e.g.
  # matplotlib's font list under XDG_CACHE_HOME, may appear).
  proc = _track(tmp_path, "without", ["--compilation-cache", "none"], [], frames=1)
  assert proc.returncode == 0, proc.stderr[-3000:]
  written = _files(tmp_path / "xdg") + _files(tmp_path / "home")
  assert not [f for f in written if "cia_jax" in f or f.endswith("-cache")], written
  assert _files(cache) == entries


def test_cache_option_is_found_before_or_after_the_subcommand():
  assert split_cache_option(["--compilation-cache", "/c", "track", "--x"]) == (["track", "--x"], "/c")
  assert split_cache_option(["track", "--compilation-cache=none", "--x", "1"]) == (["track", "--x", "1"], "none")
  assert split_cache_option(["track"]) == (["track"], None)
  for bad in (["track", "--compilation-cache"], ["--compilation-cache", "--x"], ["--compilation-cache="]):
    with pytest.raises(ValueError, match="needs a value"):
      split_cache_option(bad)


def test_default_folder_follows_xdg(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert compile_cache.default_cache_dir() == os.path.join(str(tmp_path), "cia_jax", "jax")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "h"))
  assert compile_cache.default_cache_dir() == os.path.join(str(tmp_path), "h", ".cache", "cia_jax", "jax")
