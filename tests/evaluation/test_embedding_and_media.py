"""t-SNE, the Fig. 5 feature stages, OpenCV baselines and tracking GIFs."""

import os
import types

import jax
import numpy as np
import pytest

from cia_jax.evaluation import baselines, embedding, video


def test_tsne_separates_clusters_and_preserves_neighbourhoods():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(4, 20)) * 6.0
  labels = np.repeat(np.arange(4), 25)
  x = centres[labels] + rng.normal(size=(100, 20))
  y = embedding.tsne(x, perplexity=15, num_iter=400, seed=1)
  assert y.shape == (100, 2) and np.all(np.isfinite(y))
  assert embedding.knn_accuracy(y, labels) > 0.95
  # Labels that do not follow the geometry are not "separated": the score can fail.
  shuffled = rng.permutation(labels)
  assert embedding.knn_accuracy(y, shuffled) < 0.6


def test_affinities_hit_the_perplexity():
  x = np.random.default_rng(1).normal(size=(40, 5))
  n = len(x)
  d2 = np.sum((x[:, None] - x[None]) ** 2, -1)
  # Recover each row's conditional distribution from the bisection and check its perplexity directly.
  p = embedding._affinities(x, perplexity=8.0)  # pylint: disable=protected-access
  assert np.allclose(p, p.T) and abs(p.sum() - 1.0) < 1e-6
  # Row-conditional check with an independent implementation at the same precision.
  for i in range(0, n, 7):
    di = np.delete(d2[i], i)
    lo, hi = 1e-6, 1e3
    for _ in range(200):
      beta = np.sqrt(lo * hi)
      w = np.exp(-(di - di.min()) * beta)
      pi = w / w.sum()
      h = -np.sum(pi * np.log(pi + 1e-300))
      lo, hi = (beta, hi) if h > np.log(8.0) else (lo, beta)
    assert abs(np.exp(h) - 8.0) < 1e-3


def test_tsne_rejects_tiny_inputs():
  with pytest.raises(ValueError, match="N >= 3"):
    embedding.tsne(np.zeros((2, 4)))


def _write_frames(tmp_path, n=6, size=(96, 128)):
  import cv2
  from cia_jax.data.datasets.base import Sequence

  rng = np.random.default_rng(0)
  paths, boxes = [], []
  for t in range(n):
    img = (rng.uniform(0, 60, size=(*size, 3))).astype(np.uint8)
    x, y = 20 + 4 * t, 30 + 2 * t
    img[y:y + 24, x:x + 30] = (230, 200, 40)
    p = str(tmp_path / f"{t:04d}.jpg")
    cv2.imwrite(p, img[..., ::-1])
    paths.append(p)
    boxes.append([x, y, 30, 24])
  return Sequence(name="s", frame_paths=paths, boxes=np.asarray(boxes, float), visible=np.ones(n, bool))


def test_target_features_have_the_three_stages(tmp_path):
  from cia_jax.models.cia import CIANet
  from cia_jax.models.cia import init_variables

  seq = _write_frames(tmp_path)
  net = CIANet(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)
  model = types.SimpleNamespace(net=net, variables=init_variables(net, jax.random.key(0)))
  feats, labels = embedding.target_features(model, [seq, seq], frames_per_sequence=4, search_area_factor=4.0,
                                            crop_size=64, batch=3)
  assert set(feats) == set(embedding.STAGES)
  np.testing.assert_array_equal(labels, [0] * 4 + [1] * 4)
  for k, v in feats.items():
    assert v.shape == (8, 32), k  # C3 = 4 * width * 2 ** 2 ... layer3 of a width-8 ResNet-18 has 32 channels
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
  # Modulation and the encoder change the features; the same sequence twice gives the same vectors.
  assert not np.allclose(feats["backbone"], feats["instance"])
  assert not np.allclose(feats["instance"], feats["category"])
  np.testing.assert_allclose(feats["category"][:4], feats["category"][4:], rtol=1e-5, atol=1e-6)
  scores = embedding.plot_embeddings(str(tmp_path / "tsne.png"), feats, labels, ["a", "b"])
  assert os.path.getsize(tmp_path / "tsne.png") > 1000 and set(scores) == set(embedding.STAGES)


def test_opencv_mil_follows_a_moving_block(tmp_path):
  from cia_jax.ops.boxes import iou_xywh
  from cia_jax.data.frames import read_frame

  assert "MIL" in baselines.available_trackers()
  seq = _write_frames(tmp_path, n=8)
  boxes = baselines.track_opencv("MIL", (read_frame(p) for p in seq.frame_paths), seq.boxes[0])
  assert boxes.shape == (8, 4)
  np.testing.assert_array_equal(boxes[0], seq.boxes[0])
  assert np.mean(np.asarray(iou_xywh(boxes, seq.boxes))) > 0.5
  with pytest.raises(ValueError, match="unknown OpenCV tracker"):
    baselines.track_opencv("TLD", [], seq.boxes[0])


def test_gif_has_one_frame_per_kept_frame_and_draws_boxes(tmp_path):
  from PIL import Image

  frames = [np.zeros((60, 80, 3), np.uint8) for _ in range(5)]
  gt = np.tile([10.0, 10, 20, 20], (5, 1))
  pred = gt + 5
  path = video.write_tracking_gif(str(tmp_path / "a.gif"), frames, gt, {"CIA": pred}, every=2)
  with Image.open(path) as im:
    assert im.n_frames == 3
    rgb = np.asarray(im.convert("RGB"))
  # The GT rectangle's left edge (x = 10) is green, the prediction's (x = 15) red, below the text line.
  assert rgb[25, 10, 1] > 150 and rgb[25, 10, 0] < 100
  assert rgb[35, 15, 0] > 150 and rgb[35, 15, 1] < 100
  assert rgb[22, 22].max() < 60  # inside both boxes: untouched background
  with pytest.raises(ValueError, match="no frames"):
    video.write_tracking_gif(str(tmp_path / "b.gif"), [], gt, {})
