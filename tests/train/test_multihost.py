"""The training program on 8 simulated CPU devices and on two processes (jax.distributed on localhost)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cia_jax.data import synthetic
from subprocess_hosts import free_port, last_json, run_hosts, subprocess_env  # tests/subprocess_hosts.py

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic_mh")
  synthetic.generate(str(root / "got10k"), "got10k", 4, 30, (128, 96), seed=0, split="train")
  synthetic.generate(str(root / "got10k"), "got10k", 2, 30, (128, 96), seed=1, split="val")
  synthetic.generate(str(root / "lasot"), "lasot", 2, 30, (128, 96), seed=2)
  return root




# Runs the tiny config (one category-encoder layer and one filter iteration: these tests are about devices and
# hosts, and tracing and compiling the step dominate their time); argv: workdir data_root batch_size val variant
# [process_id num_processes port].
_TRAIN = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    workdir, data, batch, val, variant = sys.argv[1:6]
    from cia_jax import config_lib
    from cia_jax.train import step, trainer
    if len(sys.argv) > 6:
      pid, nproc, port = int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
      assert trainer.initialize_distributed(f"127.0.0.1:{port}", nproc, pid)
    import jax
    spec = os.path.join(os.environ["PYTHONPATH"], "configs", "tiny.py") + (f":{variant}" if variant != "-" else "")
    config = config_lib.load_config(spec)
    config_lib.apply_overrides(config, [
        f"data.train.got10k.root={data}/got10k", f"data.train.lasot.root={data}/lasot", "data.train.lasot.split=all",
        f"data.batch_size={batch}", "optim.total_steps=2", "log_every_steps=1", f"val.enabled={val}",
        "val.every_steps=2", "val.num_batches=1", "model.encoder_layers=1", "model.num_iter=1",
        "val.tracking.enabled=false"])
    state = trainer.train_and_evaluate(config, workdir)
    # Every local device holds the same replicated params.
    leaves = jax.tree.leaves(state.params)
    same = all(np.array_equal(np.asarray(s.data), np.asarray(x.addressable_shards[0].data))
               for x in leaves for s in x.addressable_shards)
    flat = {str(i): step.host_value(x) for i, x in enumerate(leaves)}
    np.savez(os.path.join(workdir, f"params_{jax.process_index()}.npz"), **flat)
    print(json.dumps({"devices": jax.device_count(), "local_devices": jax.local_device_count(),
                      "processes": jax.process_count(), "step": int(step.host_value(state.step)),
                      "replicas_equal": same,
                      "finite": all(bool(np.all(np.isfinite(v))) for v in flat.values())}))
""")




def test_eight_cpu_devices(data_root, tmp_path):
  script = tmp_path / "train.py"
  script.write_text(_TRAIN)
  workdir = tmp_path / "w8"
  res = subprocess.run([sys.executable, str(script), str(workdir), str(data_root), "8", "true", "-"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
  out = last_json(res.stdout)
  assert out == {"devices": 8, "local_devices": 8, "processes": 1, "step": 2, "replicas_equal": True,
                 "finite": True}
  assert os.path.isdir(workdir / "checkpoints" / "2") and os.path.isdir(workdir / "model")
  lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [(m["split"], m["step"]) for m in lines] == [("train", 1), ("train", 2), ("val", 2)]




@pytest.mark.slow
def test_two_processes_train_to_identical_params(data_root, tmp_path):
  """Two hosts of one device each. The `cl` variant (InfoNCE-V on, category modules off) keeps the cross-host
  key all-gather and the EMA encoder while shrinking the program: on CPU only process 0 hits the persistent
  compilation cache (the compile options name the local device), so process 1 compiles every time."""
  script = tmp_path / "train.py"
  script.write_text(_TRAIN)
  workdir = tmp_path / "w2"  # shared, as a pod's checkpoint bucket would be
  port = free_port()
  outs = run_hosts([[sys.executable, str(script), str(workdir), str(data_root), "4", "false", "cl", str(i), "2",
                     str(port)] for i in range(2)], subprocess_env())
  for rc, out, err in outs:
    assert rc == 0, (out + err)[-4000:]
  results = [last_json(out) for _, out, _ in outs]
  for r in results:
    assert r == {"devices": 2, "local_devices": 1, "processes": 2, "step": 2, "replicas_equal": True,
                 "finite": True}
  p0, p1 = (np.load(workdir / f"params_{i}.npz") for i in range(2))
  assert sorted(p0.files) == sorted(p1.files) and p0.files
  for k in p0.files:
    np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
  # Only process 0 logs; the checkpoint and the export were written collectively.
  assert len([n for n in os.listdir(workdir) if n.startswith("events.out.tfevents")]) == 1
  lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [(m["split"], m["step"]) for m in lines] == [("train", 1), ("train", 2)]
  assert os.path.isdir(workdir / "checkpoints" / "2") and os.path.isdir(workdir / "model")
