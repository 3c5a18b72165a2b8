"""The benchmark runner's I/O: result layouts, resumability, frame prefetching, sequence selection."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax import results
from cia_jax.data import frames
from cia_jax.data.datasets.base import Sequence
from cia_jax.track import runner

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "real")


def _seq(name, n=3, box=(1, 2, 3, 4)):
  return Sequence(name=name, frame_paths=[f"/nonexistent/{name}/{i}.jpg" for i in range(n)],
                  boxes=np.tile(np.asarray(box, float), (n, 1)), visible=np.ones(n, bool))


@pytest.mark.parametrize("fmt", results.RESULT_FORMATS)
def test_results_round_trip_through_the_evaluation_reader(tmp_path, fmt):
  boxes = np.random.default_rng(0).uniform(0, 100, size=(7, 4)).round(3)
  box_path, time_path = results.write_results(str(tmp_path), "seqA", boxes, np.arange(7) * 0.01, fmt)
  assert os.path.isfile(time_path)
  (back,) = results.load_results(str(tmp_path), "seqA")
  np.testing.assert_allclose(back, boxes, atol=1e-4)
  if fmt == "got10k":
    assert box_path.endswith(os.path.join("seqA", "seqA_001.txt"))
  assert results.is_finished(str(tmp_path), "seqA", 7, fmt)
  assert not results.is_finished(str(tmp_path), "seqA", 8, fmt)  # wrong length = not finished
  assert not results.is_finished(str(tmp_path), "other", 7, fmt)
  assert not any(n.endswith(".tmp") or ".tmp" in n for n in os.listdir(os.path.dirname(box_path)))


def test_write_results_rejects_bad_shapes(tmp_path):
  with pytest.raises(ValueError, match="seqA.*\\[T, 4\\]"):
    results.write_results(str(tmp_path), "seqA", np.zeros((3, 5)), np.zeros(3))
  with pytest.raises(ValueError, match="unknown result format"):
    results.result_paths(str(tmp_path), "seqA", "vot")


def test_prefetch_keeps_order_and_reraises_at_the_failing_frame():
  def reader(p):
    if p == "bad":
      raise ValueError("frame could not be decoded as an image: bad")
    return np.full((2, 2, 3), int(p), np.uint8)

  got = [int(f[0, 0, 0]) for f in runner.prefetch_frames([str(i) for i in range(20)], depth=3, reader=reader)]
  assert got == list(range(20))
  seen = []
  with pytest.raises(ValueError, match="bad"):
    for f in runner.prefetch_frames(["1", "2", "bad", "4"], depth=2, reader=reader):
      seen.append(int(f[0, 0, 0]))
  assert seen == [1, 2]
  # Abandoning the iterator early does not hang (the producer thread is released).
  it = runner.prefetch_frames([str(i) for i in range(100)], depth=1, reader=reader)
  assert int(next(it)[0, 0, 0]) == 0
  it.close()


def test_read_frame_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.jpg"):
    frames.read_frame(str(tmp_path / "missing.jpg"))
  bad = tmp_path / "junk.jpg"
  bad.write_bytes(b"not an image")
  with pytest.raises(ValueError, match="junk.jpg"):
    frames.read_frame(str(bad))


def test_select_sequences_and_first_box():
  seqs = [_seq("a"), _seq("b"), _seq("c")]
  assert [s.name for s in runner.select_sequences(seqs, "c, a")] == ["c", "a"]
  assert runner.select_sequences(seqs, None) == seqs
  with pytest.raises(ValueError, match="unknown sequence.*'zz'"):
    runner.select_sequences(seqs, "a,zz")
  with pytest.raises(ValueError, match="'bad'.*no valid box"):
    runner.first_box(_seq("bad", box=(1, 2, 0, 4)))
  np.testing.assert_array_equal(runner.first_box(_seq("ok")), [1, 2, 3, 4])


def test_sequence_keys_depend_only_on_seed_and_name():
  import jax

  k = lambda seed, name: jax.random.key_data(runner.sequence_key(seed, name))
  np.testing.assert_array_equal(k(0, "a"), k(0, "a"))
  assert not np.array_equal(k(0, "a"), k(0, "b"))
  assert not np.array_equal(k(0, "a"), k(1, "a"))


def test_refuses_random_weights_unless_asked():
  with pytest.raises(ValueError, match="refusing to track with random weights"):
    runner.load_model("cia18", None, False)


@pytest.mark.skipif(not os.path.isdir(REAL), reason=f"real sequences not found at {REAL}")
def test_folder_dataset_names_sequences_after_their_folders():
  seqs = runner.folder_sequences(REAL)
  names = {s.name for s in seqs}
  assert {"OTB_Crossing", "LaSOT_airplane-1", "VOT_bag"} <= names
  for s in seqs:
    assert len(s.frame_paths) == len(s.boxes) > 0
  groups = runner.batch_groups(seqs, 2)
  for g in groups:
    assert 1 <= len(g) <= 2 and len({runner.frame_size(s) for s in g}) == 1
  assert sorted(s.name for g in groups for s in g) == sorted(names)


# ------------------------------------------------------------------------------------------------
# With the real (tiny, random-weight) tracker.

@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
  import jax

  from cia_jax.data.synthetic import generate
  from cia_jax.models.cia import CIANet
  from cia_jax.models.cia import init_variables
  from cia_jax.track import params
  from cia_jax.track.tracker import TrackingModel

  root = tmp_path_factory.mktemp("seqs")
  generate(str(root), "folder", num_sequences=3, num_frames=5, image_size=(96, 80), seed=3)
  net = CIANet(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)
  model = TrackingModel(net=net, variables=init_variables(net, jax.random.key(0)))
  # Random shifts, dropout and IoU boxes stay on: batching must reproduce the per-sequence random streams.
  settings = params.get_settings("cia18", image_sample_size=64, search_area_scale=4.0, box_refinement_iter=2,
                                 target_not_found_threshold=0.0)
  return str(root), model, settings


def test_batched_tracking_equals_sequential_and_runs_resume(tiny_setup, tmp_path):
  root, model, settings = tiny_setup
  seqs = runner.folder_sequences(root)
  seqs[1] = Sequence(name=seqs[1].name, frame_paths=seqs[1].frame_paths[:3], boxes=seqs[1].boxes[:3],
                     visible=seqs[1].visible[:3])  # a shorter sequence finishes early inside the batch
  one, three = str(tmp_path / "k1"), str(tmp_path / "k3")
  s1 = runner.run_benchmark(model, settings, seqs, one, seed=5, batch_sequences=1, progress=False)
  s3 = runner.run_benchmark(model, settings, seqs, three, seed=5, batch_sequences=3, progress=False)
  assert s1["frames"] == s3["frames"] == 5 + 3 + 5
  for s in seqs:
    (a,) = results.load_results(one, s.name)
    (b,) = results.load_results(three, s.name)
    assert a.shape == (len(s), 4)
    np.testing.assert_array_equal(a[0], s.boxes[0])
    np.testing.assert_allclose(b, a, atol=2e-3, err_msg=s.name)  # float32 reassociation only
  assert np.ptp(a[:, 0]) > 0  # the tracker produced boxes that change (not just the init box)
  # Another seed changes the random augmentation, hence (slightly) the boxes.
  other = str(tmp_path / "seed6")
  runner.run_benchmark(model, settings, seqs[:1], other, seed=6, progress=False)
  assert not np.allclose(results.load_results(other, seqs[0].name)[0],
                         results.load_results(one, seqs[0].name)[0])
  # Resume: everything is finished, nothing is tracked again.
  again = runner.run_benchmark(model, settings, seqs, one, seed=5, progress=False)
  assert again["tracked"] == [] and sorted(again["skipped"]) == sorted(s.name for s in seqs)


def test_got10k_layout_is_read_back_by_the_evaluation(tiny_setup, tmp_path):
  from cia_jax.evaluation import metrics

  root, model, settings = tiny_setup
  seqs = runner.folder_sequences(root)[:1]
  runner.run_benchmark(model, settings, seqs, str(tmp_path), fmt="got10k", max_frames=3, progress=False)
  (boxes,) = results.load_results(str(tmp_path), seqs[0].name)
  assert boxes.shape == (3, 4)
  res = metrics.evaluate_sequence(boxes, seqs[0].boxes[:3], protocol="otb")
  assert 0.0 <= res["auc"] <= 1.0


@pytest.mark.parametrize("n", [1, 64, 70])
def test_frame_keys_are_fold_in_of_the_frame_index(n):
  """`frame_keys` (made in blocks before the loop) equals `fold_in(sequence key, frame)` per frame, per lane."""
  keys = jnp.stack([runner.sequence_key(0, "a"), runner.sequence_key(3, "b")])
  single, batch = runner.frame_keys(keys[0], n), runner.frame_keys(keys, n)
  assert len(single) == len(batch) == n and single[0].shape == () and batch[0].shape == (2,)
  for i in range(n):
    for lane, got in ((0, single[i]), (0, batch[i][0]), (1, batch[i][1])):
      np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(jax.random.fold_in(keys[lane], i)))
