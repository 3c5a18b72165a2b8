"""Helpers of the tests that run the program in subprocesses: several devices, several hosts, signals.

`tests/` is on `sys.path` (pytest puts the folder of the root conftest.py there), so test files anywhere below
import this module by name.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from typing import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**extra: str) -> dict[str, str]:
  """The suite's environment for a child process: its compilation cache and JAX settings, the checkout first."""
  env = dict(os.environ)
  env.update(JAX_COMPILATION_CACHE_DIR=os.environ.get("CIA_JAX_TEST_CACHE", os.path.join(ROOT, ".jax_cache")),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5", JAX_THREEFRY_PARTITIONABLE="false",
             TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0", PYTHONPATH=ROOT, **extra)
  return env


def last_json(out: str) -> dict:
  """The last line of `out` that starts with '{', parsed (the child's result line)."""
  return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def free_port() -> int:
  """A TCP port free on localhost now (the coordinator of a local `jax.distributed` run)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_hosts(commands: Sequence[Sequence[str]], env: dict[str, str], timeout: float = 600) -> list[tuple]:
  """Starts every command at once (one process per simulated host) -> [(returncode, stdout, stderr)] in order.

  A process still running after the others finished or timed out is killed, so a hung host never outlives the test.
  """
  procs = [subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
           for cmd in commands]
  outs = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=timeout)
      outs.append((p.returncode, stdout, stderr))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return outs
