"""`scripts/compare_pytorch.py` without torch: layouts, stage differences, box IoU, per-frame reports, the CLI
boundary, and the JAX stage plumbing on a tiny network (the torch side is exercised by running the script)."""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import types

import jax
import numpy as np
import pytest

from cia_jax.data.datasets import Sequence

_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "compare_pytorch.py"
_spec = importlib.util.spec_from_file_location("compare_pytorch", _SCRIPT)
cp = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("compare_pytorch", cp)  # dataclasses look their module up by name
_spec.loader.exec_module(cp)


# ------------------------------------------------------------------------------------------------------------
# Layouts and stage differences.


def test_to_reference_layout_matches_index_mapping():
  a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # NHWC
  out = cp.to_reference_layout(a, "nchw")
  assert out.shape == (2, 5, 3, 4)
  for n, c, h, w in [(0, 0, 0, 0), (1, 4, 2, 3), (0, 2, 1, 0)]:
    assert out[n, c, h, w] == a[n, h, w, c]
  filt = cp.to_reference_layout(a, "filter")  # (B, 4, 4, D) -> (B, D, 4, 4) is the same permutation
  np.testing.assert_array_equal(filt, out)
  assert cp.to_reference_layout(a, "flat").shape == (a.size,)
  assert cp.to_reference_layout(a, "same") is not None and cp.to_reference_layout(a, "same").shape == a.shape
  with pytest.raises(ValueError, match="4-d"):
    cp.to_reference_layout(a[0], "nchw")
  with pytest.raises(ValueError, match="unknown layout"):
    cp.to_reference_layout(a, "nhwc")


def test_stage_diff_values():
  rng = np.random.default_rng(0)
  ref = rng.standard_normal((3, 4, 5)).astype(np.float32)
  ref[1, 2, 3] = -7.5  # the largest magnitude
  ours = ref.copy()
  ours[0, 1, 1] += 3e-3
  d = cp.stage_diff("x", ours, ref)
  assert d.shape == (3, 4, 5)
  np.testing.assert_allclose(d.max_abs, abs(np.float64(ours[0, 1, 1]) - np.float64(ref[0, 1, 1])), rtol=1e-12)
  assert d.ref_max == 7.5
  np.testing.assert_allclose(d.rel, d.max_abs / 7.5, rtol=1e-12)
  assert cp.stage_diff("x", ref, ref).rel == 0.0


def test_stage_diff_edge_cases():
  with pytest.raises(ValueError, match="'layer3'.*shape mismatch"):
    cp.stage_diff("layer3", np.zeros((2, 3)), np.zeros((3, 2)))
  assert cp.stage_diff("z", np.zeros(4), np.zeros(4)).rel == 0.0
  assert cp.stage_diff("z", np.ones(4), np.zeros(4)).rel == float("inf")
  bad = cp.stage_diff("n", np.array([np.nan, 1.0]), np.array([1.0, 1.0]))
  assert np.isnan(bad.rel)


def test_format_stage_table_marks_pass_and_fail():
  diffs = [cp.StageDiff("a", (2, 3), 1e-6, 1.0, 1e-6), cp.StageDiff("b", (4,), 2e-3, 1.0, 2e-3),
           cp.StageDiff("c", (1,), float("nan"), float("nan"), float("nan")),
           cp.StageDiff("d", (1,), 1e-4, 1.0, 1e-4)]
  table = cp.format_stage_table(diffs, 1e-4, {"a": "stage A"})
  lines = table.splitlines()
  assert len(lines) == 2 + 4
  assert lines[2].startswith("| stage A | 2x3 |") and lines[2].endswith("| yes |")
  assert lines[3].endswith("| NO |")
  assert lines[4].endswith("| NO |")  # NaN never passes
  assert lines[5].endswith("| yes |")  # exactly at the tolerance passes


def test_compare_stages_applies_layouts():
  rng = np.random.default_rng(1)
  ours = {"backbone/layer3": rng.standard_normal((2, 3, 3, 8)), "filter/init": rng.standard_normal((1, 4, 4, 8)),
          "iou/mod3": rng.standard_normal((1, 8)), "score/map": rng.standard_normal((1, 1, 5, 5)),
          "only_ours": np.zeros(3)}
  ref = {"backbone/layer3": np.transpose(ours["backbone/layer3"], (0, 3, 1, 2)),
         "filter/init": np.transpose(ours["filter/init"], (0, 3, 1, 2)).copy(),
         "iou/mod3": ours["iou/mod3"].reshape(1, 8, 1, 1), "score/map": ours["score/map"]}
  ref["filter/init"][0, 5, 1, 2] += 0.5
  diffs = {d.name: d for d in cp.compare_stages(ours, ref)}
  assert set(diffs) == {"backbone/layer3", "filter/init", "iou/mod3", "score/map"}
  assert diffs["backbone/layer3"].max_abs == 0 and diffs["iou/mod3"].max_abs == 0 and diffs["score/map"].max_abs == 0
  np.testing.assert_allclose(diffs["filter/init"].max_abs, 0.5, rtol=1e-12)


# ------------------------------------------------------------------------------------------------------------
# Box IoU and per-frame reports.


def _raster_iou(a, b, scale=4):
  """Independent IoU of integer-valued xywh boxes by counting 1/scale-pixel cells on a grid."""
  grid = np.zeros((2, 80 * scale, 80 * scale), bool)
  for k, (x, y, w, h) in enumerate((a, b)):
    grid[k, int(y * scale):int((y + h) * scale), int(x * scale):int((x + w) * scale)] = True
  inter = np.logical_and(grid[0], grid[1]).sum()
  union = np.logical_or(grid[0], grid[1]).sum()
  return inter / union


def test_box_iou_against_rasterised_reference():
  rng = np.random.default_rng(2)
  a = np.concatenate([rng.integers(0, 40, (50, 2)), rng.integers(1, 30, (50, 2))], 1).astype(np.float64) / 2
  b = np.concatenate([rng.integers(0, 40, (50, 2)), rng.integers(1, 30, (50, 2))], 1).astype(np.float64) / 2
  b[:5] = a[:5] + np.array([0.5, -0.5, 0, 1.0])  # some overlapping pairs for sure
  got = cp.box_iou_xywh(a, b)
  want = np.array([_raster_iou(x, y) for x, y in zip(a, b)])
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
  assert got[5:].min() >= 0 and (got[:5] > 0).all()


def test_box_iou_special_cases():
  box = np.array([3.0, 4.0, 10.0, 20.0])
  assert cp.box_iou_xywh(box, box) == 1.0
  assert cp.box_iou_xywh(box, box + np.array([10.0, 0, 0, 0])) == 0.0  # touching edges
  np.testing.assert_allclose(cp.box_iou_xywh(box, np.array([3.0, 4.0, 5.0, 20.0])), 0.5)
  assert cp.box_iou_xywh(np.array([0.0, 0, 0, 0]), box) == 0.0
  assert cp.box_iou_xywh(np.array([np.nan, 0, 1, 1]), box) == 0.0
  with pytest.raises(ValueError, match="box_iou_xywh"):
    cp.box_iou_xywh(np.zeros((3, 4)), np.zeros((2, 4)))


def test_iou_report_first_divergence_and_flags():
  ref = np.tile(np.array([10.0, 10.0, 20.0, 20.0]), (6, 1))
  ours = ref.copy()
  ours[3, 0] += 2.0  # IoU 18*20 / (2*400 - 360) = 360/440
  ours[5, 2] += 10.0  # IoU 400 / 600
  flags_ref = ["init", "normal", "normal", "hard_negative", "normal", "normal"]
  flags_ours = ["init", "normal", "normal", "normal", "normal", "uncertain"]
  rep = cp.iou_report("seq", ours, ref, 0.99, flags_ours, flags_ref)
  assert rep.num_frames == 5 and rep.first_below == 3 and rep.num_below == 2
  np.testing.assert_allclose(rep.min_iou, 400 / 600)
  np.testing.assert_allclose(rep.mean_iou, (3 + 360 / 440 + 400 / 600) / 5)
  assert rep.flag_mismatches == 2 and rep.first_flag_mismatch == 3
  assert rep.ious[0] == 1.0
  clean = cp.iou_report("seq", ref, ref, 0.99)
  assert clean.first_below is None and clean.num_below == 0 and clean.min_iou == 1.0
  # Frame 0 (the shared init box) never counts, even if it differs.
  moved0 = ref.copy()
  moved0[0, 0] += 15
  assert cp.iou_report("seq", moved0, ref).first_below is None
  with pytest.raises(ValueError, match="seq"):
    cp.iou_report("seq", ref[:, :3], ref)
  table = cp.format_iou_table([rep, clean], 0.99).splitlines()
  assert table[2] == "| seq | 5 | 0.6667 | 0.8970 | 2 | 3 | 2 (3) |"
  assert table[3] == "| seq | 5 | 1.0000 | 1.0000 | 0 | - | 0 |"


def test_first_score_divergence():
  ref = np.array([np.nan, 0.1, 0.2, 0.3, 0.4])
  assert cp.first_score_divergence(ref, ref) is None
  ours = ref.copy()
  ours[2] *= 1 + 5e-4  # within 1e-3
  ours[3] *= 1 + 2e-3
  assert cp.first_score_divergence(ours, ref) == 3
  ours[1] = np.nan
  assert cp.first_score_divergence(ours, ref) == 1


def test_frame_detail_names_both_sides():
  ours = {"boxes": np.array([[1.0, 2, 3, 4], [1.0, 2, 3, 4]]), "max_scores": np.array([np.nan, 0.125]),
          "flags": np.array(["init", "normal"])}
  ref = {"boxes": np.array([[1.0, 2, 3, 4], [2.0, 2, 3, 4]]), "max_scores": np.array([np.nan, 0.25]),
         "flags": np.array(["init", "hard_negative"])}
  line = cp.frame_detail(1, ours, ref)
  assert line.startswith("frame 1: IoU 0.5000;")
  assert "score 0.125000 flag normal" in line and "score 0.250000 flag hard_negative" in line


# ------------------------------------------------------------------------------------------------------------
# CLI boundary.


def test_cli_rejects_bad_inputs(tmp_path, capsys):
  ckpt = tmp_path / "c.pth"
  ckpt.write_bytes(b"x")
  fake_python = tmp_path / "python"
  fake_python.write_text("")
  base = ["--arch", "dimp18", "--torch-python", str(fake_python)]
  cases = [
      (["--reference-root", str(tmp_path / "nope"), "--checkpoint", str(ckpt), "--sequence", str(tmp_path)],
       "nope"),
      (["--reference-root", str(tmp_path), "--checkpoint", str(tmp_path / "missing.pth"), "--sequence",
        str(tmp_path)], "missing.pth"),
      (["--reference-root", str(tmp_path), "--checkpoint", str(ckpt)], "--sequence"),
      (["--reference-root", str(tmp_path), "--checkpoint", str(ckpt), "--sequence", str(tmp_path / "noseq")],
       "noseq"),
      (["--reference-root", str(tmp_path), "--checkpoint", str(ckpt), "--sequence", str(tmp_path),
        "--max-frames", "1"], "--max-frames"),
      (["--reference-root", str(tmp_path), "--checkpoint", str(ckpt), "--sequence", str(tmp_path),
        "--reference-crop-from", str(tmp_path)], "preprocessing.py"),
      (["--reference-root", str(tmp_path), "--checkpoint", str(ckpt), "--sequence", str(tmp_path), "--speed",
        "--float64"], "--speed"),
      (["--reference-root", str(tmp_path), "--checkpoint", str(ckpt), "--sequence", str(tmp_path),
        "--frame-size", "1280x720"], "--frame-size"),
      (["--reference-root", str(tmp_path), "--checkpoint", str(ckpt), "--sequence", str(tmp_path), "--lockstep"],
       "--lockstep"),
  ]
  for argv, needle in cases:
    assert cp.main(base + argv) == 2, argv
    assert needle in capsys.readouterr().err
  assert cp.main(["--arch", "dimp18", "--torch-python", str(tmp_path / "py"), "--reference-root", str(tmp_path),
                  "--checkpoint", str(ckpt), "--sequence", str(tmp_path)]) == 2
  assert "--torch-python" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# Our side of the stage comparison on a tiny CIA network.


def test_our_stages_shapes_and_consistency():
  from cia_jax.models.cia import CIANet
  from cia_jax.models.cia import init_variables
  from cia_jax.models.presets import model_kwargs
  from cia_jax.track.params import get_settings
  from cia_jax.track.tracker import TrackingModel

  net = CIANet(**model_kwargs("cia18", backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32))
  variables = init_variables(net, jax.random.PRNGKey(0))
  model = TrackingModel(net=net, variables=variables)
  settings = get_settings("cia18", image_sample_size=64, deterministic=True, target_not_found_threshold=0.0)
  rng = np.random.default_rng(3)
  frame = rng.integers(0, 256, (48, 80, 3)).astype(np.uint8)
  s = settings.image_sample_size
  ref = {"patches": rng.uniform(0, 255, (13, s, s, 3)).astype(np.float32),
         "clf/boxes": np.tile(np.array([[20.0, 18.0, 24.0, 28.0]], np.float32), (15, 1)),
         "iou/proposals": np.array([[20.0, 18.0, 24.0, 28.0]] * 17, np.float32) + rng.uniform(-2, 2, (17, 4)),
         "meta/box": np.array([30.0, 10.0, 12.0, 20.0], np.float32)}
  ours = cp.our_stages(model, settings, ref, frame)
  f = s // 16
  expect = {"patches": (13, s, s, 3), "backbone/conv1": (13, s // 2, s // 2, 8), "backbone/layer3": (13, f, f, 32),
            "backbone/layer4": (13, f // 2, f // 2, 64), "cia/instance": (13, f, f, 32),
            "cia/category": (13, f, f, 32), "clf/features": (13, f, f, 16), "clf/samples": (15, f, f, 16),
            "filter/init": (1, 4, 4, 16), "filter/optimized": (1, 4, 4, 16), "score/map": (1, 1, f + 1, f + 1),
            "iou/mod3": (1, 16), "iou/feat3": (1, 2 * f, 2 * f, 16), "iou/pred": (1, 17), "iou/grad": (1, 17, 4)}
  for k, shape in expect.items():
    assert ours[k].shape == shape, k
    assert np.all(np.isfinite(ours[k])), k
  assert set(ours) <= set(cp.STAGE_KEYS)
  # The two appended memory samples are copies of sample 0 (deterministic mode).
  np.testing.assert_array_equal(ours["clf/samples"][13], ours["clf/features"][0])
  # Score map = cross-correlation of the optimised filter with sample 0 (padding 2), in float64 NumPy.
  x = np.pad(ours["clf/samples"][0].astype(np.float64), ((2, 2), (2, 2), (0, 0)))
  w = ours["filter/optimized"][0].astype(np.float64)
  want = np.array([[np.sum(x[i:i + 4, j:j + 4] * w) for j in range(f + 1)] for i in range(f + 1)])
  np.testing.assert_allclose(ours["score/map"][0, 0], want, rtol=1e-4, atol=1e-6)
  # The IoU gradient is d(sum of predictions)/d(boxes): its largest entry against central differences.
  props = np.asarray(ref["iou/proposals"], np.float32)[None]

  def total(p):
    return float(np.sum(net.apply(variables, ours["iou/mod3"], ours["iou/mod4"], ours["iou/feat3"],
                                  ours["iou/feat4"], p, method=CIANet.predict_iou)))
  np.testing.assert_allclose(total(props), ours["iou/pred"].sum(), rtol=1e-5)
  k = np.unravel_index(np.argmax(np.abs(ours["iou/grad"])), props.shape)
  assert abs(ours["iou/grad"][k]) > 0
  eps = 0.05
  plus, minus = props.copy(), props.copy()
  plus[k] += eps
  minus[k] -= eps
  np.testing.assert_allclose((total(plus) - total(minus)) / (2 * eps), ours["iou/grad"][k], rtol=5e-2)


# ------------------------------------------------------------------------------------------------------------
# Side-by-side speed (`--speed`): summaries, tables, CPU description, the reference's part timer.


def test_cpu_description_reads_model_flags_and_cores():
  text = ("processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t\t: fpu sse avx2 fma\n\n"
          "processor\t: 1\nmodel name\t: Some CPU @ 2.0GHz\nflags\t\t: fpu sse avx2 fma avx512f\n")
  assert cp.cpu_description(text) == {"model": "Some CPU @ 2.0GHz", "avx2": True, "avx512f": False, "cores": 2}
  assert cp.cpu_description("")["model"] == "unknown"


def test_speed_summary_pools_rounds_and_skips_the_init_frame():
  import statistics
  a = [9.0, 0.10, 0.30, 0.20]  # frame 0 (init, compile) must not count
  b = [7.0, 0.25, 0.05]
  s = cp.speed_summary([a, b])
  assert s["median"] == pytest.approx(statistics.median(a[1:] + b[1:]))
  assert s["fps"] == pytest.approx(1 / statistics.median(a[1:] + b[1:]))
  assert s["round_medians"] == pytest.approx([0.2, 0.15])
  with pytest.raises(ValueError, match="tracked frame"):
    cp.speed_summary([[1.0]])


def test_our_parts_grouped_as_the_reference_parts_and_set_beside_them():
  # profile_tracking rows: (variant, part, GFLOP, median ms, GFLOP/s, % peak).
  rows = [("-", "patch", 0, 1.0, 0, 0), ("-", "backbone", 0, 30.0, 0, 0), ("-", "instance", 0, 4.0, 0, 0),
          ("-", "category", 0, 20.0, 0, 0), ("-", "clf_feat", 0, 6.0, 0, 0), ("-", "localize", 0, 0.5, 0, 0),
          ("-", "iou_refine", 0, 10.0, 0, 0), ("-", "update_0", 0, 3.0, 0, 0), ("-", "update_2", 0, 20.0, 0, 0),
          ("-", "step", 0, 70.0, 0, 0)]
  ours = cp.our_part_breakdown(rows)
  assert ours["backbone"] == pytest.approx(0.034) and ours["clf_features"] == pytest.approx(0.026)
  assert ours["update"] == pytest.approx(0.003)
  assert ours["total"] == pytest.approx(0.0745)  # the parts' sum, not the profiled step (70 ms, its update)
  assert set(ours) == set(cp.OUR_PARTS) | {"total"}  # update_2 is not a frame's part; no 'other'
  dimp = cp.our_part_breakdown([r for r in rows if r[1] not in ("instance", "category")])
  assert dimp["backbone"] == pytest.approx(0.030) and dimp["clf_features"] == pytest.approx(0.006)
  reference = {"seqA": {"backbone": 0.068, "clf_features": 0.026, "other": 0.001, "total": 0.150}}
  table = cp.format_parts_beside({"seqA": ours}, reference)
  assert "| backbone (normalisation + ResNet; CIA: + instance encoder) | 34.0 / 68.0 (2.0x) |" in table
  assert "| classification features (CIA: + category encoder) | 26.0 / 26.0 (1.0x) |" in table
  assert "| patch extraction (image -> tensor, crop + resize) | - |" in table  # absent on the reference side
  assert "| rest of track() (bookkeeping) | - |" in table
  assert "| total (ours: the parts' sum, a frame without filter update) | 74.5 / 150.0 |" in table  # no ratio


def test_part_breakdown_and_tables():
  times = [np.array([5.0, 0.30, 0.50]), np.array([4.0, 0.40, 0.40])]
  parts = [{"backbone": np.array([0, 0.1, 0.2]), "update": np.array([0, 0.05, 0.05])},
           {"backbone": np.array([0, 0.2, 0.1]), "update": np.array([0, 0.05, 0.15])}]
  b = cp.part_breakdown(parts, times)
  assert b["total"] == pytest.approx(0.4) and b["backbone"] == pytest.approx(0.15)
  assert b["update"] == pytest.approx(0.075) and b["other"] == pytest.approx(0.4 - 0.15 - 0.075)
  table = cp.format_breakdown_table({"seqA": b})
  assert "| IoU-Net refinement | - |" in table and "150.0 (38%)" in table and "400.0 (100%)" in table
  ours, ref = cp.speed_summary(times), cp.speed_summary([np.array([1.0, 0.8, 0.8])])
  row = cp.format_speed_table([("seqA", "360x240", 2, ours, ref)]).splitlines()[-1]
  assert "| 2.00x |" in row and "| 400.0 (2.50) | 800.0 (1.25) |" in row and row.endswith("| - | - | - |")
  # 20 GFLOP at 100 GFLOP/s: >= 0.2 s per frame; ours 0.4 s = 50% of peak; the reference's 0.8 s -> at most 4x.
  ceiling = cp.work_ceiling(20.0, 100.0, ours["median"], ref["median"])
  assert ceiling["floor_s"] == pytest.approx(0.2) and ceiling["ours_pct_peak"] == pytest.approx(50.0)
  assert ceiling["ceiling"] == pytest.approx(4.0)
  row = cp.format_speed_table([("seqA", "360x240", 2, ours, ref, ceiling)]).splitlines()[-1]
  assert ceiling["peak_gflops"] == 100.0 and row.endswith("| 20.00 | 50% (100) | 4.00x |")


_TORCH_PYTHON = pathlib.Path(cp.DEFAULT_TORCH_PYTHON)


@pytest.mark.skipif(not _TORCH_PYTHON.is_file(), reason=f"no torch venv at {_TORCH_PYTHON} (CIA_JAX_TORCH_PYTHON)")
def test_reference_part_timer_counts_exclusive_time():
  """torch_reference.PartTimer (run in the torch venv): a wrapped call inside another is not counted twice."""
  import subprocess
  code = """
import sys, time
sys.path.insert(0, sys.argv[1])
import torch_reference as tr
t = tr.PartTimer()
inner = t.wrap("backbone", lambda: time.sleep(0.2))
def outer():
  time.sleep(0.1)
  inner()
t.wrap("patch", outer)()
t.wrap("patch", lambda: time.sleep(0.05))()
print(t.frame["patch"], t.frame["backbone"])
"""
  res = subprocess.run([str(_TORCH_PYTHON), "-c", code, str(_SCRIPT.parent)], capture_output=True, text=True,
                       timeout=120, check=True)
  patch, backbone = (float(v) for v in res.stdout.split())
  # 0.1 + 0.05 s of its own; counting the nested call's 0.2 s too would give >= 0.35 s (bounds allow for oversleep).
  assert 0.15 <= patch < 0.34
  assert 0.2 <= backbone < 0.4


# ------------------------------------------------------------------------------------------------------------
# Float64 truth (`--float64-truth`).


def _track(boxes, scores, flags):
  return {"boxes": np.asarray(boxes, np.float64), "max_scores": np.asarray(scores, np.float64), "flags": flags}


def test_truth_distances_and_first_departure():
  truth = _track([[10, 10, 20, 20]] * 4, [np.nan, 0.2, 0.2, 0.2], ["init", "normal", "normal", "normal"])
  # Frame 2: score 0.20015 (7.5e-4 relative: within the 1e-3 tolerance); frame 3: box moved 5 px right.
  run = _track([[10, 10, 20, 20], [10, 10, 20, 20], [10, 10, 20, 20], [15, 10, 20, 20]],
               [np.nan, 0.2, 0.20015, 0.2], ["init", "normal", "normal", "normal"])
  d = cp.truth_distances(run, truth)
  np.testing.assert_allclose(d["box_px"], [0, 0, 0, 5])
  assert d["iou"][3] == pytest.approx(15 * 20 / (2 * 400 - 15 * 20))
  np.testing.assert_allclose(d["score_rel"], [0, 0, 7.5e-4, 0], atol=1e-12)
  assert cp.first_departure(d) == (3, "box")
  assert cp.first_departure(d, score_tol=5e-4) == (2, "max score")
  run["boxes"][2, 0] += 0.05  # 0.05 px: IoU 0.995 passes the IoU test, the corner test catches it
  assert cp.first_departure(cp.truth_distances(run, truth)) == (2, "box")
  assert cp.first_departure(cp.truth_distances(run, truth), box_px_tol=0.1) == (3, "box")
  run["boxes"][2, 0] -= 0.05
  run["flags"] = ["init", "normal", "hard_negative", "normal"]
  assert cp.first_departure(cp.truth_distances(run, truth)) == (2, "flag")
  assert cp.first_departure(cp.truth_distances(truth, truth)) == (None, "-")
  with pytest.raises(ValueError, match="shapes"):
    cp.truth_distances(_track([[0, 0, 1, 1]], [0.1], ["init"]), truth)


def test_truth_verdict_and_table():
  assert cp.truth_verdict((5, "box"), (9, "flag"), None) == "ours"
  assert cp.truth_verdict((12, "box"), (9, "max score"), 20) == "reference"
  assert cp.truth_verdict((12, "box"), (None, "-"), 10) == "neither, while the float64 runs agree"
  assert cp.truth_verdict((None, "-"), (None, "-"), None) == "neither, while the float64 runs agree"
  assert cp.truth_verdict((4, "box"), (4, "flag"), None) == "both at the same frame"
  row = cp.format_truth_table([("seq", 29, (None, "-"), (15, "max score"), (18, "box"))], 0.99).splitlines()[2]
  assert row == "| seq | 29 | - | 15 (max score) | 18 (box) | ours |"


def _f32(bits: int) -> float:
  return float(np.asarray(bits, np.uint32).view(np.float32))


@pytest.mark.parametrize("bits, mode, msc, expected", [
    # Golden values from the reference tracker's own crops on VOT_bag (480 x 360, CIA18 trained weights).
    (1146131399, "inside_major", 1.5, 556),  # frame 1: shrink 1.74 clamped to 1.5
    (1144229506, "inside_major", 1.5, 480),  # frame 20
    (1142278733, "inside_major", 1.5, 479),  # frame 27: quotient one ulp below 480
    (1142278731, "inside_major", 1.5, 480),  # ours at frame 27
    (1142278733, "replicate", None, 599),
])
def test_reference_crop_rule(bits, mode, msc, expected):
  got = cp.reference_crop_rule(_f32(bits), (360, 480), mode, msc, np.float32)
  assert got.tolist() == [expected, expected]


def test_crop_divergence_names_the_frame_the_bits_and_the_exact_crop():
  settings = types.SimpleNamespace(border_mode="inside_major", patch_max_scale_change=1.5)
  n = 4
  ours = {"crops/sample_sz": np.full((n, 2), _f32(1142278731)), "crops/df": np.ones(n, int),
          "crops/size": np.full((n, 2), 480)}
  ref = {"crops/sample_sz": np.full((n, 2), _f32(1142278731)), "crops/df": np.ones(n, int),
         "crops/size": np.full((n, 2), 480), "crops/quotient": np.full((n, 2), 480.0)}
  assert cp.crop_divergence(ours, ref, (360, 480), settings) is None
  assert cp.crop_divergence({"boxes": None}, ref, (360, 480), settings) is None
  ref["crops/sample_sz"][2:] = _f32(1142278733)
  ref["crops/size"][2:] = 479
  ref["crops/quotient"][2:] = 479.99997
  d = cp.crop_divergence(ours, ref, (360, 480), settings)
  assert d["frame"] == 2 and d["frames_differing"] == 2
  assert d["ulp_apart"] == 2
  assert d["ours_crop"] == [1, 480, 480] and d["ref_crop"] == [1, 479, 479]
  assert d["ref_rule_on_ours"] == 480
  assert d["exact_ours"] == 480 and d["exact_ref"] == 480
  line = cp.format_crop_divergence(d)
  assert "frame 2" in line and "+2 ulp" in line and "exact arithmetic gives 480" in line


def test_frame_size_option_and_resized_sequence():
  assert cp.parse_frame_size("1280x720") == (1280, 720)
  assert cp.parse_frame_size("native") is None
  for bad in ("1280", "0x720", "axb", "1280x720x3"):
    with pytest.raises(argparse.ArgumentTypeError, match="WIDTHxHEIGHT"):
      cp.parse_frame_size(bad)
  frames = np.zeros((2, 24, 36, 3), np.uint8)
  frames[:, 6:12, 9:18] = 200  # a bright 9 x 6 block at x = 9, y = 6
  seq = Sequence(name="s", frame_paths=("a.jpg", "b.jpg"), boxes=np.array([[9.0, 6.0, 9.0, 6.0]] * 2),
                 visible=np.ones(2, bool))
  out, seq2 = cp.resized_sequence(frames, seq, (72, 48))
  assert out.shape == (2, 48, 72, 3) and out.dtype == np.uint8
  np.testing.assert_allclose(seq2.boxes, [[18.0, 12.0, 18.0, 12.0]] * 2)
  ys, xs = np.nonzero(out[0, :, :, 0] > 100)  # the block moved and grew with the box
  assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (18, 12, 36, 24)
  assert seq2.name == seq.name and np.array_equal(seq.boxes[0], [9.0, 6.0, 9.0, 6.0])
  same, seq3 = cp.resized_sequence(frames, seq, (36, 24))
  assert same is frames and seq3 is seq


def test_frame_size_ratios_pair_each_sequence_with_its_first_size():
  s = lambda ms: {"median": ms / 1e3}
  rows = [("a", "360x240", 9, s(50), s(100)), ("a", "1280x720", 9, s(55), s(150)), ("b", "640x360", 9, s(40), s(80))]
  (name, size0, size1, ours, ref), = cp.frame_size_ratios(rows)
  assert (name, size0, size1) == ("a", "360x240", "1280x720")
  assert ours == pytest.approx(1.1) and ref == pytest.approx(1.5)
