"""`cia-jax track` at scale: frames of 3 sizes in one batch, chunks of frames, 8 devices, 2 processes, resume.

The reference of every run is `runner.track_sequence`: one sequence at a time, unpadded frames, the jitted
single-sequence tracker, one frame per call. Data: 5 synthetic sequences (an odd number) of 3 frame sizes and
4 lengths, one of them (2 frames) shorter than the chunk.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cia_jax import results
from cia_jax.track import batching, distributed, runner
from subprocess_hosts import free_port, last_json, run_hosts, subprocess_env  # tests/subprocess_hosts.py

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# (W, H), frames, sequences of each size.
GROUPS = (((96, 80), 6, 2), ((112, 64), 4, 2), ((80, 96), 2, 1))
# Float32 reassociation of differently batched convolutions, carried over a few frames (as test_runner.py's
# K = 3 vs K = 1 check); a wrong crop, key or frame moves a box by whole pixels.
ATOL = 2e-3

# Builds the tiny tracker of test_runner.py (also run in subprocesses: keep it self-contained).
_MODEL = textwrap.dedent("""
    import jax
    from cia_jax.models.cia import CIANet, init_variables
    from cia_jax.track import params
    from cia_jax.track.tracker import TrackingModel
    net = CIANet(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)
    model = TrackingModel(net=net, variables=init_variables(net, jax.random.key(0)))
    settings = params.get_settings("cia18", image_sample_size=64, search_area_scale=4.0, box_refinement_iter=2,
                                   target_not_found_threshold=0.0)
""")

# argv: data results K C [process_id num_processes port]
_RUN = textwrap.dedent("""
    import json, sys
    data, out, k, c = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if len(sys.argv) > 5:
      from cia_jax.train import trainer
      assert trainer.initialize_distributed(f"127.0.0.1:{sys.argv[7]}", int(sys.argv[6]), int(sys.argv[5]))
""") + _MODEL + textwrap.dedent("""
    from cia_jax.track import runner
    seqs = runner.folder_sequences(data)
    summary = runner.run_benchmark(model, settings, seqs, out, seed=5, batch_sequences=k, chunk_frames=c,
                                   progress=False)
    print(json.dumps({"devices": jax.local_device_count(), "processes": jax.process_count(),
                      "tracked": sorted(summary["tracked"]), "frames": summary["frames"]}))
""")




@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
  """(data root, model, settings, {name: reference boxes [T, 4]}) of the 5 mixed sequences."""
  from cia_jax.data.synthetic import generate

  base = tmp_path_factory.mktemp("mixed")
  root = base / "seqs"
  for g, (size, frames, count) in enumerate(GROUPS):
    part = base / f"part{g}"
    for name in generate(str(part), "folder", num_sequences=count, num_frames=frames, image_size=size, seed=g):
      shutil.move(str(part / name), str(root / f"s{g}_{name}"))
  scope: dict = {}
  exec(_MODEL, scope)  # pylint: disable=exec-used
  model, settings = scope["model"], scope["settings"]
  seqs = runner.folder_sequences(str(root))
  assert sorted({runner.frame_size(s) for s in seqs}) == [(64, 112), (80, 96), (96, 80)]
  reference = {s.name: runner.track_sequence(model, settings, s, seed=5)[0] for s in seqs}
  return root, model, settings, reference


def _assert_as_reference(results_dir, reference, names=None):
  for name in names or reference:
    (boxes,) = results.load_results(str(results_dir), name)
    assert boxes.shape == reference[name].shape, name
    np.testing.assert_allclose(boxes, reference[name], atol=ATOL, err_msg=name)


def test_schedule_is_longest_first_onto_the_first_free_lane():
  # Lengths 7, 3, 9, 3, 1 frames; 2 lanes; chunks of 2 frames after the init frame.
  slots = batching.schedule([7, 3, 9, 3, 1], lanes=2, chunk=2)
  assert [(s.index, s.lane, s.chunk, s.chunks) for s in slots] == [
      (2, 0, 0, 4), (0, 1, 0, 3), (1, 1, 3, 1), (3, 0, 4, 1), (4, 1, 4, 1)]
  assert distributed.assign_processes([7, 3, 9, 3, 1], 2) == [[2, 3], [0, 1, 4]]


def test_padded_frames_are_zeros_below_and_right():
  image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) + 1
  padded = batching.pad_frame(image, (4, 5))
  np.testing.assert_array_equal(padded[:2, :3], image)
  assert padded.shape == (4, 5, 3) and not padded[2:].any() and not padded[:, 3:].any()
  assert batching.bucket_shape([(80, 96), (64, 112), (96, 80)]) == (128, 128)
  assert batching.bucket_shape([(720, 1280), (360, 480)]) == (768, 1280)


@pytest.mark.parametrize("k, c", [(2, 3)])
def test_mixed_sizes_in_one_batch_and_chunks_give_the_reference_boxes(mixed, tmp_path, k, c):
  root, model, settings, reference = mixed
  seqs = runner.folder_sequences(str(root))
  summary = runner.run_benchmark(model, settings, seqs, str(tmp_path), seed=5, batch_sequences=k, chunk_frames=c,
                                 progress=False)
  assert summary["frames"] == sum(frames * count for _, frames, count in GROUPS)
  _assert_as_reference(tmp_path, reference)
  assert max(np.ptp(b[:, 0]) for b in reference.values()) > 0.5  # the boxes move: a real check


def test_a_killed_run_resumes_with_the_unfinished_sequences(mixed, tmp_path, monkeypatch):
  root, model, settings, reference = mixed
  seqs = runner.folder_sequences(str(root))
  write, written = results.write_results, []

  def killed_after_three(results_dir, name, *args, **kwargs):
    if len(written) == 3:
      raise KeyboardInterrupt  # as Ctrl-C / a kill while the run is under way
    written.append(name)
    return write(results_dir, name, *args, **kwargs)

  monkeypatch.setattr(results, "write_results", killed_after_three)
  with pytest.raises(KeyboardInterrupt):
    runner.run_benchmark(model, settings, seqs, str(tmp_path), seed=5, batch_sequences=2, chunk_frames=3,
                         progress=False)
  monkeypatch.setattr(results, "write_results", write)
  assert len(written) == 3
  again = runner.run_benchmark(model, settings, seqs, str(tmp_path), seed=5, batch_sequences=2, chunk_frames=3,
                               progress=False)
  assert sorted(again["skipped"]) == sorted(written)
  assert sorted(again["tracked"]) == sorted(set(reference) - set(written))
  _assert_as_reference(tmp_path, reference)




def test_eight_cpu_devices(mixed, tmp_path):
  root, _, _, reference = mixed
  script = tmp_path / "run.py"
  script.write_text(_RUN)
  out = tmp_path / "res"
  res = subprocess.run([sys.executable, str(script), str(root), str(out), "1", "3"], capture_output=True, text=True,
                       timeout=600, cwd=ROOT, env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
  assert last_json(res.stdout) == {"devices": 8, "processes": 1, "tracked": sorted(reference),
                                    "frames": sum(frames * count for _, frames, count in GROUPS)}
  _assert_as_reference(out, reference)
  summary = json.loads((out / distributed.SUMMARY_FILE).read_text(encoding="utf-8"))
  assert summary["xla_flags"] == "--xla_force_host_platform_device_count=8"  # how the run was made




@pytest.mark.slow
def test_two_processes_share_the_sequences(mixed, tmp_path):
  root, _, _, reference = mixed
  script = tmp_path / "run.py"
  script.write_text(_RUN)
  out = tmp_path / "res"  # shared, as a pod's result bucket would be
  port = free_port()
  outs = run_hosts([[sys.executable, str(script), str(root), str(out), "2", "2", str(i), "2", str(port)]
                    for i in range(2)], subprocess_env())
  for rc, stdout, stderr in outs:
    assert rc == 0, (stdout + stderr)[-4000:]
  total = sum(frames * count for _, frames, count in GROUPS)
  for _, stdout, _ in outs:  # every process reports the combined run
    assert last_json(stdout) == {"devices": 1, "processes": 2, "tracked": sorted(reference), "frames": total}
  _assert_as_reference(out, reference)
  with open(out / distributed.SUMMARY_FILE, encoding="utf-8") as f:
    summary = json.load(f)
  shares = [p["sequences"] for p in summary["per_process"]]
  assert summary["processes"] == 2 and sum(shares) == 5 and min(shares) >= 2
