"""t-SNE pictures of target features at three stages of the network (the paper's Fig. 5); `cia-jax embed-plot`.

    cia-jax embed-plot --checkpoint runs/tiny --root ../shared/data/real --out tsne.png --frames 20

For every sequence, `frames` frames spread over its length are cropped around the ground-truth box (search
area factor and crop size of the checkpoint's training config, or the flags), run through the backbone, and the
target's feature vector is PrRoI-pooled (1x1, over the box) from three maps: `backbone` (layer3), `instance`
(after the angle modulation) and `category` (after the category encoder). Each stage's vectors are
L2-normalised and embedded in 2-D with an exact t-SNE; points are coloured by sequence. Features that
separate instances form one cluster per sequence.

The t-SNE is exact (O(N^2) memory and time; a few hundred points take a second or two), written from
van der Maaten & Hinton (2008): Gaussian affinities with a per-point bandwidth found by bisection on the
perplexity, symmetrised; Student-t similarities in 2-D; gradient descent with momentum 0.5 -> 0.8, early
exaggeration 12 for the first 250 iterations, and per-parameter gains.
"""

from __future__ import annotations

import os
import types
from typing import Mapping, Sequence as SequenceT

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cia_jax.data import processing
from cia_jax.data.frames import read_frame
from cia_jax.models.cia import CIANet
from cia_jax.ops.prroi_pool import prroi_pool
from cia_jax.checkpoints import load_for_tracking

STAGES = ("backbone", "instance", "category")


def _affinities(x: np.ndarray, perplexity: float, tol: float = 1e-5, max_steps: int = 64) -> np.ndarray:
  """Symmetric joint probabilities P `[N, N]` of points `[N, D]` at the given perplexity."""
  n = x.shape[0]
  sq = np.sum(x * x, axis=1)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
  target = np.log(perplexity)
  p = np.zeros((n, n))
  for i in range(n):
    di = np.delete(d2[i], i)
    lo, hi, beta = 0.0, np.inf, 1.0
    for _ in range(max_steps):
      w = np.exp(-(di - di.min()) * beta)
      s = w.sum()
      pi = w / s
      entropy = -np.sum(pi * np.log(np.maximum(pi, 1e-300)))
      if abs(entropy - target) < tol:
        break
      if entropy > target:  # too flat: narrow the kernel
        lo = beta
        beta = beta * 2.0 if hi == np.inf else (beta + hi) / 2.0
      else:
        hi = beta
        beta = (beta + lo) / 2.0
    p[i, np.arange(n) != i] = pi
  p = (p + p.T) / (2.0 * n)
  return np.maximum(p, 1e-12)


def tsne(x: np.ndarray, perplexity: float = 30.0, num_iter: int = 750, learning_rate: float | None = None,
         seed: int = 0) -> np.ndarray:
  """2-D t-SNE embedding `[N, 2]` of points `[N, D]` (float64, exact; see the module docstring).

  perplexity is clipped to (N - 1) / 3 so small sets work; learning_rate None = max(N / 12 / 4, 50)
  (the "auto" rule of openTSNE / scikit-learn with exaggeration 12).
  """
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < 3:
    raise ValueError(f"tsne: need points [N >= 3, D], got shape {x.shape}")
  n = x.shape[0]
  perplexity = float(min(perplexity, (n - 1) / 3.0))
  lr = max(n / 12.0 / 4.0, 50.0) if learning_rate is None else float(learning_rate)
  p = _affinities(x, perplexity)
  rng = np.random.default_rng(seed)
  y = rng.normal(scale=1e-4, size=(n, 2))
  velocity = np.zeros_like(y)
  gains = np.ones_like(y)
  for it in range(num_iter):
    exaggeration = 12.0 if it < 250 else 1.0
    momentum = 0.5 if it < 250 else 0.8
    sq = np.sum(y * y, axis=1)
    num = 1.0 / (1.0 + np.maximum(sq[:, None] + sq[None, :] - 2.0 * y @ y.T, 0.0))
    np.fill_diagonal(num, 0.0)
    q = np.maximum(num / num.sum(), 1e-12)
    pq = (exaggeration * p - q) * num
    grad = 4.0 * ((np.diag(pq.sum(axis=1)) - pq) @ y)
    same = np.sign(grad) == np.sign(velocity)
    gains = np.maximum(np.where(same, gains * 0.8, gains + 0.2), 0.01)
    velocity = momentum * velocity - lr * gains * grad
    y = y + velocity
    y = y - y.mean(axis=0)
  return y


def knn_accuracy(points: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
  """Leave-one-out k-nearest-neighbour accuracy of `labels` from `points` `[N, D]` (cluster quality)."""
  points = np.asarray(points, np.float64)
  labels = np.asarray(labels)
  d = np.sum((points[:, None] - points[None]) ** 2, axis=-1)
  np.fill_diagonal(d, np.inf)
  nn_idx = np.argsort(d, axis=1)[:, :k]
  votes = labels[nn_idx]
  pred = np.array([np.bincount(v).argmax() for v in votes])
  return float(np.mean(pred == labels))


def target_features(model, sequences: SequenceT, frames_per_sequence: int = 20, search_area_factor: float = 5.0,
                    crop_size: int = 288, batch: int = 16) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Target feature vectors of `frames_per_sequence` frames of each sequence at the three `STAGES`.

  Args:
    model: any object with `net` (a `CIANet`) and `variables` (e.g. `cia_jax.track.tracker.TrackingModel`).
    sequences: `Sequence` objects; frames with a visible, valid box are used, evenly spaced.
    search_area_factor, crop_size: crop side = factor * sqrt(w h) around the box, resized to crop_size px.

  Returns:
    ({stage: `[N, C3]` L2-normalised vectors}, sequence index `[N]` per row).
  """
  net, variables = model.net, model.variables

  @jax.jit
  def features(v, images, boxes_xywh):
    layer3 = net.apply(v, images, False, ("layer3",), method=CIANet.backbone_features)["layer3"]
    stages = net.apply(v, layer3, True, method=CIANet.classification_input_stages)
    rois = jnp.concatenate([jnp.arange(images.shape[0], dtype=jnp.float32)[:, None], boxes_xywh[:, :2],
                            boxes_xywh[:, :2] + boxes_xywh[:, 2:]], axis=1)
    out = {}
    for name, fmap in stages.items():
      vec = prroi_pool(fmap, rois, (1, 1), 1.0 / 16)[:, 0, 0, :]
      out[name] = vec / jnp.maximum(jnp.linalg.norm(vec, axis=-1, keepdims=True), 1e-12)
    return out

  crops, boxes, labels = [], [], []
  for si, seq in enumerate(sequences):
    valid = np.flatnonzero(seq.visible & np.all(np.isfinite(seq.boxes), axis=1)
                           & (seq.boxes[:, 2] > 0) & (seq.boxes[:, 3] > 0))
    if len(valid) == 0:
      raise ValueError(f"target_features: sequence {seq.name!r} has no frame with a valid box")
    picks = valid[np.linspace(0, len(valid) - 1, min(frames_per_sequence, len(valid))).round().astype(int)]
    for t in picks:
      image = read_frame(seq.frame_paths[t])
      crop_xywh = processing.crop_box_xywh(seq.boxes[t], image.shape[:2], search_area_factor)
      crops.append(processing.normalize(processing.crop_and_resize(image, crop_xywh, crop_size)))
      boxes.append(processing.box_to_crop(seq.boxes[t], crop_xywh, crop_size))
      labels.append(si)
  crops = np.stack(crops).astype(np.float32)
  boxes = np.stack(boxes).astype(np.float32)
  chunks = []
  for i in range(0, len(crops), batch):
    c, b = crops[i:i + batch], boxes[i:i + batch]
    pad = batch - len(c)  # one compiled shape for every chunk
    c = np.concatenate([c, np.repeat(c[-1:], pad, 0)]) if pad else c
    b = np.concatenate([b, np.repeat(b[-1:], pad, 0)]) if pad else b
    out = jax.device_get(features(variables, c, b))
    chunks.append({k: v[:len(c) - pad] for k, v in out.items()})
  feats = {k: np.concatenate([ch[k] for ch in chunks]) for k in STAGES}
  return feats, np.asarray(labels)


def plot_embeddings(path: str, feats: Mapping[str, np.ndarray], labels: np.ndarray, names: SequenceT[str],
                    seed: int = 0, titles: Mapping[str, str] | None = None) -> dict[str, float]:
  """t-SNE of each stage side by side, coloured by sequence; returns the 2-D 5-NN accuracy per stage."""
  titles = titles or {"backbone": "backbone (layer3)", "instance": "instance-aware", "category": "category-aware"}
  # matplotlib's object API on an Agg canvas, as in `plots`: no pyplot, no global backend switch.
  fig = Figure(figsize=(4.2 * len(feats), 4.2))
  FigureCanvasAgg(fig)
  axes = np.atleast_1d(fig.subplots(1, len(feats)))
  scores = {}
  cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
  for ax, (stage, x) in zip(axes, feats.items()):
    y = tsne(x, seed=seed)
    scores[stage] = knn_accuracy(y, labels)
    for i, name in enumerate(names):
      m = labels == i
      ax.scatter(y[m, 0], y[m, 1], s=14, color=cmap(i % cmap.N), label=name)
    ax.set_title(f"{titles.get(stage, stage)}\n5-NN acc. {100 * scores[stage]:.0f}%", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
  axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  return scores


def _crop_defaults(meta: Mapping) -> tuple[float, int]:
  """(search area factor, crop size) of a checkpoint's training config, else the CIA18 values (5, 288)."""
  cfg = meta.get("config") or {}
  data = cfg.get("data", {}) if isinstance(cfg, Mapping) else {}
  proc = data.get("processing", {}) if isinstance(data, Mapping) else {}
  if isinstance(proc, Mapping):
    return float(proc.get("search_area_factor", 5.0)), int(proc.get("output_sz", 288))
  return 5.0, 288


def embed_plot(checkpoint: str, sequences: SequenceT, out: str, frames_per_sequence: int = 20,
               search_area_factor: float | None = None, crop_size: int | None = None,
               seed: int = 0) -> dict[str, float]:
  """`cia-jax embed-plot`: the t-SNE figure of a checkpoint's features on `sequences`, written to `out`.

  Crop geometry from the checkpoint's training config unless given (`_crop_defaults`); returns the 2-D 5-NN
  accuracy per stage (`plot_embeddings`).
  """
  net, variables, meta = load_for_tracking(checkpoint)
  factor, size = _crop_defaults(meta)
  feats, labels = target_features(types.SimpleNamespace(net=net, variables=variables), sequences,
                                  frames_per_sequence, search_area_factor or factor, crop_size or size)
  return plot_embeddings(out, feats, labels, [s.name for s in sequences], seed=seed)
