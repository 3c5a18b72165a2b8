"""The one-shot device check (`scripts/device_check.sh`) in its tiny CPU mode: the code paths of the accelerator
run (tracking at K = 1 and batched, the training step, each in fp32 and bf16) cannot rot unnoticed.

Runs the shell wrapper in a subprocess with the suite's compilation cache (cold, it compiles 8 small programs,
about 50 CPU-seconds, two at a time, with scripts/device_check.sh's XLA flags for --tiny).
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ["device", "tracking CIA18, K=1", "tracking CIA18, best batched K", "training CIA18, batch 2"]


@pytest.mark.slow
def test_tiny_device_check_prints_one_table_with_every_row():
  cache = jax.config.jax_compilation_cache_dir or "none"
  env = dict(os.environ, PYTHON=sys.executable, DEVICE_CHECK_TIMEOUT="580")
  proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "device_check.sh"), "--tiny",
                         "--compilation-cache", cache], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert all(line.startswith("|") and line.endswith("|") for line in lines), proc.stdout  # one table, nothing else
  cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
  assert cells[0][:4] == ["measurement", "setting", "fp32", "bf16"] and all(len(c) == 8 for c in cells)
  body = {c[0]: c for c in cells[2:]}
  assert list(body) == ROWS
  for name in ROWS[1:]:
    row = body[name]
    unit = "s/step" if name.startswith("training") else "frames/s"
    for cell in row[2:4]:  # fp32, bf16
      assert cell.endswith(unit) and float(cell.split()[0]) > 0, row
    assert len(row[4].split(" / ")) == 2, row  # compile times of both dtypes
    assert float(row[5]) > 0, row  # GFLOP/s from XLA's cost analysis
    assert row[6].endswith("iB") and row[7] == "n/a", row  # XLA memory; no device memory statistics on CPU
  assert body["tracking CIA18, best batched K"][1].startswith("K=2")
  assert body["device"][1].startswith("cpu")
