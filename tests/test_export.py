"""Exported trackers (`cia-jax export`): the jax-only runtime gives the in-process tracker's boxes.

Tiny random-weight CIA network (width-8 ResNet-18, the full CIA path), 64 px patches, a synthetic 96x128
sequence with a textured target. The runtime runs in a subprocess in which flax, optax, orbax, TensorFlow,
chex and cia_jax itself cannot be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from cia_jax.cli import main as cli_main
from cia_jax.export import exporter, runtime
from cia_jax.models.cia import CIANet
from cia_jax.track import params, tracker

from cia_jax.models.cia import init_variables

TINY = dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)
# Random shifts, dropout copies and jittered IoU boxes on (keys matter); train_skipping=2 runs the 2-iteration
# filter update (the `lax.switch` branch) every other frame.
SETTINGS = params.get_settings("cia18", image_sample_size=64, search_area_scale=4.0, box_refinement_iter=2,
                               train_skipping=2, target_not_found_threshold=0.0)
BLOCKED = ("flax", "optax", "orbax", "tensorflow", "tensorflow_datasets", "tensorstore", "chex", "ml_collections",
           "cv2", "cia_jax")


def moving_target(num_frames: int, height: int = 96, width: int = 128, target: int = 24, seed: int = 0):
  """A black/white checker target drifting over grey noise -> (frames `[T, H, W, 3]` uint8, first box xywh)."""
  rng = np.random.default_rng(seed)
  tex = np.kron(rng.choice([20.0, 235.0], (4, 4, 3)), np.ones((target // 4, target // 4, 1)))
  frames = []
  for t in range(num_frames):
    img = rng.normal(128, 20, (height, width, 3)).clip(0, 255)
    x, y = 30 + 4 * t, 25 + 2 * t
    img[y:y + target, x:x + target] = tex
    frames.append(img.astype(np.uint8))
  return np.stack(frames), np.asarray([30.0, 25.0, target, target])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  net = CIANet(**TINY)
  model = tracker.TrackingModel(net=net, variables=init_variables(net, jax.random.key(0)))
  frames, box = moving_target(6)
  out = str(tmp_path_factory.mktemp("export") / "tiny")
  manifest = exporter.export_tracker(model, SETTINGS, frames.shape[1:3], out, info={"tracker": "tiny-cia18"})
  ref = tracker.Tracker(model, SETTINGS, seed=3)
  boxes = ref.track(frames, box)
  return out, manifest, frames, box, boxes, ref.last_output


def _run_blocked(code: str, cwd: str) -> subprocess.CompletedProcess:
  """Runs `code` in a fresh Python whose imports of BLOCKED packages fail (None in sys.modules)."""
  prelude = f"import sys\nfor _m in {BLOCKED!r}:\n  sys.modules[_m] = None\n"
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def test_exported_tracker_gives_the_in_process_boxes_without_flax(exported, tmp_path):
  out, _, frames, box, boxes, last = exported
  np.save(tmp_path / "frames.npy", frames)
  np.save(tmp_path / "small.npy", frames[:, :64])
  # The copied runtime, by its Python API and by its command line (same programs: compiled once), then a frame
  # size other than the exported one.
  code = f"""
    import numpy as np
    sys.path.insert(0, {out!r})
    import cia_tracker_runtime as rt
    t = rt.ExportedTracker({out!r}, seed=3)
    boxes = t.track(np.load("frames.npy"), {box.tolist()!r})
    np.savez("got.npz", boxes=boxes, **t.last_output)
    args = [{out!r}, "--frames", "frames.npy", "--box", "{','.join(map(str, box))}", "--seed", "3"]
    assert rt.main(args + ["--out", "boxes.txt"]) == 0
    print("small frames exit", rt.main(args[:2] + ["small.npy"] + args[3:]))
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r} and sys.modules[m] is not None)
    assert not loaded, loaded
  """
  proc = _run_blocked(code, str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = np.load(tmp_path / "got.npz")
  # Bit-identical: the same StableHLO compiled by the same XLA on the same CPU, and the same keys.
  np.testing.assert_array_equal(got["boxes"], boxes)
  assert int(got["flag"]) == int(last["flag"]) and float(got["max_score"]) == float(last["max_score"])
  assert np.ptp(boxes[:, 0]) > 5  # the boxes move: a frozen tracker would also agree
  np.testing.assert_allclose(np.loadtxt(tmp_path / "boxes.txt", delimiter=","), boxes, atol=1e-4)
  assert "small frames exit 2" in proc.stdout
  assert "must be [96, 128, 3]" in proc.stderr


def test_manifest_describes_the_programs(exported):
  out, manifest, frames, _, _, _ = exported
  on_disk = json.load(open(os.path.join(out, runtime.MANIFEST_FILE)))
  assert on_disk == manifest
  assert manifest["image_size"] == [96, 128] and manifest["jax_version"] == jax.__version__
  assert manifest["platforms"] == ["cpu", "cuda", "tpu"]
  assert manifest["settings"]["image_sample_size"] == 64 and manifest["settings"]["uncertain_threshold"] == "-inf"
  assert manifest["model"]["backbone_width"] == 8
  names = [e["name"] for e in manifest["step"]["outputs"]]
  assert names == ["state", "box_xywh", "flag", "max_score"]
  assert {"name": "image", "shape": [96, 128, 3], "dtype": "uint8"}.items() <= manifest["step"]["inputs"][2].items()
  state = {e["name"]: e for e in manifest["state"]}
  assert state["memory/features"]["shape"] == [50, 4, 4, 16]
  with np.load(os.path.join(out, runtime.WEIGHTS_FILE)) as npz:
    assert len(npz.files) == len(manifest["weights"]["arrays"])


def test_export_command(tmp_path, capsys):
  out = tmp_path / "dimp18"
  rc = cli_main(["export", "--tracker", "dimp18", "--random-weights", "--image-size", "72x96", "--out", str(out),
                 "--platforms", "cpu", "--set", "image_sample_size=64"])
  assert rc == 0
  manifest = json.load(open(out / runtime.MANIFEST_FILE))
  assert manifest["tracker"] == "dimp18" and manifest["image_size"] == [72, 96] and manifest["platforms"] == ["cpu"]
  assert manifest["overrides"] == ["image_sample_size=64"] and manifest["model"]["category_encoder"] is False
  assert sorted(os.listdir(out)) == sorted([runtime.INIT_FILE, runtime.STEP_FILE, runtime.WEIGHTS_FILE,
                                            runtime.MANIFEST_FILE, runtime.RUNTIME_FILE])
  assert "exported dimp18 for 72x96 (HxW)" in capsys.readouterr().out
  assert cli_main(["export", "--tracker", "dimp18", "--random-weights", "--image-size", "72by96",
                   "--out", str(tmp_path / "x")]) == 2
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  assert cli_main(["export", "--tracker", "dimp18", "--random-weights", "--image-size", "72x96",
                   "--out", str(tmp_path / "other")]) == 2
  assert "holds no export" in capsys.readouterr().err
