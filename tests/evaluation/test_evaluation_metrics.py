"""cia_jax.evaluation.metrics vs the frame-by-frame float64 reference (eval_reference.py); hand-made cases."""

import math
import warnings

import eval_reference as ref
import numpy as np
import pytest

from cia_jax.evaluation import metrics

TOL = dict(rtol=1e-12, atol=1e-12)
SCALARS = ("auc", "precision20", "norm_precision20", "norm_precision_auc", "op50", "op75", "ao", "sr50",
           "sr75")


def random_case(seed, num_frames=90, invalid=True):
  """Random GT and predictions: noisy hits, lost frames, zero-size predictions; NaN / zero-size GT rows."""
  rng = np.random.default_rng(seed)
  gt = np.concatenate([rng.uniform(-20, 300, (num_frames, 2)), rng.uniform(2, 80, (num_frames, 2))], axis=1)
  pred = gt.copy()
  pred[:, :2] += rng.normal(0, 6, (num_frames, 2))
  pred[:, 2:] *= np.exp(rng.normal(0, 0.3, (num_frames, 2)))
  lost = rng.random(num_frames) < 0.15
  pred[lost, :2] += 400.0
  pred[rng.random(num_frames) < 0.08, 2] = 0.0  # zero-size predictions
  pred[1, 3] = 0.0  # takes the (original) frame-0 prediction
  pred[2, 2] = 0.0  # cascades from frame 1's replacement
  visible = np.ones(num_frames, bool)
  if invalid:
    gt[rng.random(num_frames) < 0.08] = np.nan
    gt[rng.random(num_frames) < 0.05, 2] = 0.0
    gt[0] = [5.0, 6.0, 30.0, 20.0]
    visible = rng.random(num_frames) > 0.15
    visible[0] = True
  return pred, gt, visible


def assert_matches(ours, expected):
  for k in ("success_curve", "precision_curve", "norm_precision_curve"):
    np.testing.assert_allclose(ours[k], expected[k], err_msg=k, **TOL)
  for k in SCALARS:
    np.testing.assert_allclose(ours[k], expected[k], err_msg=k, **TOL)


def test_threshold_sets():
  assert len(metrics.SUCCESS_THRESHOLDS) == 21 and metrics.SUCCESS_THRESHOLDS[-1] == 1.0
  assert metrics.SUCCESS_THRESHOLDS[metrics.OP50_INDEX] == 0.5
  assert metrics.SUCCESS_THRESHOLDS[metrics.OP75_INDEX] == 0.75
  np.testing.assert_array_equal(metrics.SUCCESS_THRESHOLDS, ref.SUCCESS_T)
  np.testing.assert_array_equal(metrics.PRECISION_THRESHOLDS, ref.PRECISION_T)
  np.testing.assert_array_equal(metrics.NORM_PRECISION_THRESHOLDS, ref.NORM_T)
  assert metrics.PRECISION_THRESHOLDS[metrics.PRECISION_INDEX] == 20.0
  assert metrics.NORM_PRECISION_THRESHOLDS[metrics.NORM_PRECISION_INDEX] == 0.2


def test_per_frame_errors_match_reference():
  pred, gt, _ = random_case(0, invalid=False)
  pred[:, 2:] = np.maximum(pred[:, 2:], 0.3)  # sub-pixel sizes included, no empty union
  iou = metrics.iou_inclusive(pred, gt)
  cerr = metrics.center_error(pred, gt)
  nerr = metrics.normalized_center_error(pred, gt)
  ref_iou, ref_c, ref_n, _ = ref.pytracking_errors(pred, gt)
  # The reference overwrites frame 0 with GT; compare the rest.
  np.testing.assert_allclose(iou[1:], ref_iou[1:], **TOL)
  np.testing.assert_allclose(cerr[1:], ref_c[1:], **TOL)
  np.testing.assert_allclose(nerr[1:], ref_n[1:], **TOL)
  assert (iou > 0).any() and (iou == 0).any()  # both overlapping and disjoint pairs were drawn
  size = (250.0, 200.0)
  np.testing.assert_allclose(metrics.iou_continuous(pred, gt),
                             [ref.got10k_iou(a, b) for a, b in zip(pred, gt)], **TOL)
  np.testing.assert_allclose(metrics.iou_continuous(pred, gt, size),
                             [ref.got10k_iou(a, b, size) for a, b in zip(pred, gt)], **TOL)
  assert not np.allclose(metrics.iou_continuous(pred, gt, size), metrics.iou_continuous(pred, gt))


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("protocol", ["otb", "uav", "lasot"])
@pytest.mark.parametrize("seed", [1, 2])
def test_evaluate_sequence_matches_reference(protocol, exclude, seed):
  pred, gt, visible = random_case(seed)
  vis = visible if protocol == "lasot" else None
  ours = metrics.evaluate_sequence(pred, gt, vis, protocol, exclude_invalid_frames=exclude)
  expected = ref.pytracking_sequence(pred, gt, protocol, vis, exclude_invalid=exclude)
  assert_matches(ours, expected)
  np.testing.assert_array_equal(ours["valid"], expected["valid"])
  np.testing.assert_allclose(ours["iou"], expected["iou"], **TOL)
  assert 0 < ours["num_valid"] < ours["num_frames"] == len(gt)
  for k in ("success_curve", "precision_curve", "norm_precision_curve"):
    assert np.all((ours[k] >= 0) & (ours[k] <= 1))


@pytest.mark.parametrize("num_pred", [70, 110])
def test_length_mismatch_pads_or_truncates_with_a_warning(num_pred):
  pred, gt, _ = random_case(3, num_frames=90)
  pred = np.concatenate([pred, pred])[:num_pred]
  with pytest.warns(UserWarning, match=f"seqA: the prediction has {num_pred} rows, the ground truth 90"):
    ours = metrics.evaluate_sequence(pred, gt, name="seqA")
  assert_matches(ours, ref.pytracking_sequence(pred, gt))


def test_length_mismatch_errors():
  pred, gt, visible = random_case(4, num_frames=30)
  with pytest.raises(ValueError, match=r"seqB: the prediction has 29 rows, the ground truth 30.*'lasot'"):
    metrics.evaluate_sequence(pred[:29], gt, visible, "lasot", name="seqB")
  with pytest.warns(UserWarning, match="extra rows dropped"):
    metrics.evaluate_sequence(np.concatenate([pred, pred[:2]]), gt, visible, "lasot")
  with pytest.raises(ValueError, match="31 rows.*'got10k'"):
    metrics.evaluate_sequence(np.concatenate([pred, pred[:1]]), gt, visible, "got10k")


def test_bad_inputs():
  gt = np.tile([[10.0, 20.0, 10.0, 10.0]], (5, 1))
  pred = gt.copy()
  pred[3, 1] = np.nan
  with pytest.raises(ValueError, match=r"s1: prediction frame 3 \(0-based\) is not a valid box"):
    metrics.evaluate_sequence(pred, gt, name="s1")
  pred[3] = [1.0, 2.0, -3.0, 4.0]
  with pytest.raises(ValueError, match="prediction frame 3"):
    metrics.evaluate_sequence(pred, gt)
  pred = gt.copy()
  pred[0] = np.nan  # frame 0 is replaced by the ground truth: allowed
  assert metrics.evaluate_sequence(pred, gt)["auc"] == pytest.approx(20 / 21)
  with pytest.raises(ValueError, match=r"predictions: expected \[T, 4\]"):
    metrics.evaluate_sequence(gt[:, :3], gt)
  with pytest.raises(ValueError, match=r"valid must be \[5\]"):
    metrics.evaluate_sequence(gt, gt, valid=np.ones(4, bool))
  with pytest.raises(ValueError, match="unknown 'vot2020'"):
    metrics.evaluate_sequence(gt, gt, protocol="vot2020")
  with pytest.raises(ValueError, match="no valid frame"):
    metrics.evaluate_sequence(gt, gt, np.zeros(5, bool), "lasot", exclude_invalid_frames=True)
  with pytest.raises(ValueError, match="empty ground truth"):
    metrics.evaluate_sequence(np.zeros((0, 4)), np.zeros((0, 4)))


def test_aliases():
  assert metrics.get_protocol("UAV123") is metrics.PROTOCOLS["uav"]
  assert metrics.get_protocol("nfs") is metrics.PROTOCOLS["otb"]
  assert metrics.get_protocol(metrics.PROTOCOLS["lasot"]) is metrics.PROTOCOLS["lasot"]


def test_perfect_tracker():
  rng = np.random.default_rng(5)
  # Whole / half pixels as in the benchmarks' files (with arbitrary floats, rounding in x + w - 1 - x + 1 can
  # put the IoU of identical boxes a hair above 1, in pytracking as here).
  gt = np.concatenate([rng.integers(0, 100, (40, 2)), rng.integers(5, 50, (40, 2))], axis=1) / 2.0
  for protocol in ("otb", "uav", "lasot", "got10k"):
    r = metrics.evaluate_sequence(gt, gt, np.ones(40, bool), protocol, image_size=(1000, 1000))
    assert r["auc"] == pytest.approx(20 / 21, abs=1e-15), protocol  # IoU 1 is not > 1.0
    assert r["precision20"] == r["norm_precision20"] == r["norm_precision_auc"] == 1.0
    assert r["ao"] == pytest.approx(1.0) and r["sr50"] == r["sr75"] == r["op50"] == r["op75"] == 1.0
    np.testing.assert_array_equal(r["precision_curve"], 1.0)


def test_constant_offset():
  gt = np.tile([[10.0, 20.0, 10.0, 10.0]], (10, 1))
  pred = gt + [3.0, 0.0, 0.0, 0.0]  # inclusive pixels: 7 x 10 overlap, union 130
  r = metrics.evaluate_sequence(pred, gt)
  np.testing.assert_allclose(r["iou"], [1.0] + [7 / 13] * 9, **TOL)
  np.testing.assert_allclose(r["center_error"], [0.0] + [3.0] * 9, **TOL)
  np.testing.assert_allclose(r["norm_center_error"], [0.0] + [0.3] * 9, **TOL)
  expected_success = [1.0] * 11 + [0.1] * 9 + [0.0]  # 7/13 > 0.5 but < 0.55; frame 0 (:= GT) always > t < 1
  np.testing.assert_allclose(r["success_curve"], expected_success, **TOL)
  assert r["auc"] == pytest.approx(11.9 / 21, abs=1e-15)
  np.testing.assert_allclose(r["precision_curve"], [0.1] * 3 + [1.0] * 48, **TOL)  # err 3 <= t from t = 3
  np.testing.assert_allclose(r["norm_precision_curve"], [0.1] * 30 + [1.0] * 21, **TOL)  # 0.3 <= 0.30
  assert r["norm_precision20"] == pytest.approx(0.1)
  assert r["ao"] == pytest.approx((1 + 9 * 7 / 13) / 10)
  assert (r["sr50"], r["sr75"], r["op50"], r["op75"]) == (1.0, pytest.approx(0.1), 1.0, pytest.approx(0.1))
  # Continuous convention (GOT-10k): IoU = 70 / 130 as well here, but frame 0 is not evaluated.
  g = metrics.evaluate_sequence(pred, gt, None, "got10k")
  assert g["num_valid"] == 9 and g["ao"] == pytest.approx(7 / 13) and g["sr75"] == 0.0


def test_lost_target():
  gt = np.tile([[10.0, 20.0, 10.0, 10.0]], (10, 1))
  pred = np.tile([[500.0, 500.0, 10.0, 10.0]], (10, 1))
  r = metrics.evaluate_sequence(pred, gt)
  np.testing.assert_allclose(r["success_curve"], [0.1] * 20 + [0.0], **TOL)  # only frame 0 (:= GT)
  np.testing.assert_allclose(r["precision_curve"], 0.1, **TOL)
  assert r["auc"] == pytest.approx(2.0 / 21) and r["ao"] == pytest.approx(0.1)
  g = metrics.evaluate_sequence(pred, gt, None, "got10k")
  assert g["ao"] == 0.0 and g["auc"] == 0.0 and g["sr50"] == 0.0


def test_invalid_frame_conventions():
  gt = np.tile([[10.0, 20.0, 10.0, 10.0]], (4, 1))
  gt[2] = np.nan
  pred = np.where(np.isnan(gt), 1.0, gt)
  otb = metrics.evaluate_sequence(pred, gt, protocol="otb")
  assert otb["num_valid"] == 3 and otb["iou"][2] == -1.0
  assert otb["success_curve"][0] == 0.75 and otb["precision_curve"][0] == 0.75
  assert otb["norm_precision_curve"][0] == 1.0  # quirk: -1 <= t counts the invalid frame as a hit
  assert math.isinf(otb["center_error"][2]) and otb["norm_center_error"][2] == -1.0
  uav = metrics.evaluate_sequence(pred, gt, protocol="uav")
  assert uav["precision_curve"][0] == 1.0 and uav["center_error"][2] == -1.0  # quirk in UAV precision
  excl = metrics.evaluate_sequence(pred, gt, protocol="uav", exclude_invalid_frames=True)
  assert excl["success_curve"][0] == excl["precision_curve"][0] == excl["norm_precision_curve"][0] == 1.0
  visible = np.array([True, False, True, True])
  lasot = metrics.evaluate_sequence(pred, gt, visible, "lasot")
  assert lasot["num_valid"] == 2
  assert math.isinf(lasot["norm_center_error"][1]) and lasot["norm_center_error"][2] == -1.0
  assert lasot["success_curve"][0] == 0.5 and lasot["precision_curve"][0] == 0.5
  assert lasot["norm_precision_curve"][0] == 0.75  # the visible NaN frame keeps its -1 hit
  got = metrics.evaluate_sequence(pred, gt, visible, "got10k")
  assert got["num_valid"] == 1 and got["success_curve"][0] == 1.0  # frames 0, 1 (cover 0), 2 (NaN) excluded


def test_zero_size_fill_and_padding():
  gt = np.tile([[10.0, 20.0, 10.0, 10.0]], (6, 1))
  gt[4] = np.nan
  a = [12.0, 20.0, 10.0, 10.0]
  pred = np.array([a, [0, 0, 0, 5.0], [0, 0, 5.0, 0], [11.0, 20, 10, 10], [0, 0, 0, 0]])
  with pytest.warns(UserWarning):
    out = metrics.prepare_predictions(pred, gt, "otb")
  # frames 1, 2 take the original frame 0 (before it is overwritten), frame 4 (GT NaN) keeps its zeros,
  # frame 5 is zero padding (not filled).
  np.testing.assert_array_equal(out, [gt[0], a, a, pred[3], [0, 0, 0, 0], [0, 0, 0, 0]])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    g = metrics.prepare_predictions(pred[:5], gt[:5], "got10k")
  np.testing.assert_array_equal(g, pred[:5])  # got10k: nothing replaced


def test_got10k_protocol_matches_reference():
  pred, gt, cover = random_case(6, invalid=False)
  cover = np.random.default_rng(7).integers(0, 9, len(gt))
  size = (260.0, 240.0)
  r = metrics.evaluate_sequence(pred, gt, cover > 0, "got10k", image_size=size)
  ious = ref.got10k_frame_ious(pred, gt, cover, size)
  assert r["num_valid"] == len(ious) < len(gt) - 1
  assert r["ao"] == pytest.approx(np.mean(ious), rel=1e-12)
  assert r["sr50"] == pytest.approx(np.mean(np.array(ious) > 0.5))
  assert r["sr75"] == pytest.approx(np.mean(np.array(ious) > 0.75))
  expected = ref.rates(ious, ref.SUCCESS_T, [True] * len(ious), len(ious), True)
  np.testing.assert_allclose(r["success_curve"], expected, **TOL)


def test_summarize_matches_reference():
  seqs = []
  expected_curves, pooled = [], []
  for s in range(3):
    runs, ref_runs = [], []
    for run in range(2):
      pred, gt, visible = random_case(10 * s + run, num_frames=40 + 10 * s)
      runs.append(metrics.evaluate_sequence(pred, gt, visible, "lasot"))
      ref_runs.append(ref.pytracking_sequence(pred, gt, "lasot", visible))
      pooled += [v for v, ok in zip(ref_runs[-1]["iou"], ref_runs[-1]["valid"]) if ok]
    seqs.append(runs)
    expected_curves.append(np.mean([r["success_curve"] for r in ref_runs], axis=0))
  summary = metrics.summarize(seqs)
  curve = np.mean(expected_curves, axis=0)
  np.testing.assert_allclose(summary["success_curve"], curve, **TOL)
  assert summary["auc"] == pytest.approx(curve.mean(), rel=1e-12)
  assert summary["op50"] == pytest.approx(curve[10], rel=1e-12)
  assert summary["ao"] == pytest.approx(np.mean(pooled), rel=1e-12)
  assert summary["sr50"] == pytest.approx(np.mean(np.array(pooled) > 0.5))
  assert summary["num_sequences"] == 3 and summary["pooled_success_curve"].shape == (101,)
  # A single run per sequence may be given as a plain dict.
  single = metrics.summarize([s[0] for s in seqs])
  assert single["auc"] == pytest.approx(np.mean([s[0]["auc"] for s in seqs]))


def test_cross_check_got10k_toolkit_functions():
  try:
    from got10k.utils.metrics import rect_iou  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # optional dev dependency
    pytest.skip(f"got10k toolkit not importable ({e}); pip install got10k six")
  pred, gt, _ = random_case(8, invalid=False)
  size = (250, 220)
  np.testing.assert_allclose(metrics.iou_continuous(pred, gt, size),
                             rect_iou(pred.copy(), gt.copy(), bound=size), rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(metrics.iou_continuous(pred, gt), rect_iou(pred.copy(), gt.copy()),
                             rtol=1e-12, atol=1e-14)
