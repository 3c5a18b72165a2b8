"""`cia_jax.xla_flags`: which flags are added when, that XLA accepts them, and that they change the compiled CPU
program (convolutions leave YNNPACK) without changing its values."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from cia_jax import xla_flags

FLAG = xla_flags.CPU_FLAGS[0]
MEASURED = xla_flags.MEASURED_JAXLIB[0]


def test_flags_to_add_rules():
  assert xla_flags.flags_to_add("", MEASURED, None) == [FLAG]
  assert xla_flags.flags_to_add("--xla_force_host_platform_device_count=8", MEASURED, None) == [FLAG]
  assert xla_flags.flags_to_add("", "0.0.1", None) == []  # an unmeasured jaxlib may not know the flag
  assert xla_flags.flags_to_add("", None, None) == []
  for off in ("0", "false", "No", " off "):
    assert xla_flags.flags_to_add("", MEASURED, off) == []
  assert xla_flags.flags_to_add("", MEASURED, "1") == [FLAG]
  # The user's own value of the flag wins, whatever it is.
  assert xla_flags.flags_to_add("--xla_cpu_experimental_ynn_fusion_type=eltwise", MEASURED, None) == []
  assert xla_flags.flags_to_add(f"--foo=1 {FLAG}", MEASURED, None) == []


def test_configure_does_nothing_once_backends_are_up():
  import jax  # pylint: disable=g-import-not-at-top
  jax.numpy.zeros(1).block_until_ready()
  before = os.environ.get("XLA_FLAGS")
  assert xla_flags.configure() == []
  assert os.environ.get("XLA_FLAGS") == before


_PROBE = """
import json, os, sys
import numpy as np
from cia_jax import xla_flags
added = xla_flags.configure()
import jax, jax.numpy as jnp
x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 18, 18, 32), np.float32))
w = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3, 32, 32), np.float32))
f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
hlo = f.lower(x, w).compile().as_text()
print(json.dumps({"added": added, "xla_flags": os.environ.get("XLA_FLAGS", ""), "ynn": "ynn" in hlo.lower(),
                  "out": np.asarray(f(x, w), np.float64).ravel()[:50].tolist()}))
"""


def _probe(env_extra: dict[str, str]) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.ENV_VAR)}
  env.update(env_extra)
  out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300,
                       check=False)
  assert out.returncode == 0, out.stderr[-2000:]  # XLA aborts at start-up on a flag it does not know
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(importlib.metadata.version("jaxlib") not in xla_flags.MEASURED_JAXLIB,
                    reason="this jaxlib was not measured: cia_jax leaves XLA's defaults (test_flags_to_add_rules)")
def test_flag_is_accepted_and_takes_convolutions_off_ynn():
  on = _probe({})
  assert on["added"] == [FLAG] and FLAG in on["xla_flags"].split()
  off = _probe({xla_flags.ENV_VAR: "0"})
  assert off["added"] == [] and off["xla_flags"] == ""
  assert off["ynn"] and not on["ynn"]  # the default CPU program uses YNNPACK; with the flag it does not
  assert on["out"] == pytest.approx(off["out"], rel=1e-5, abs=1e-5)
