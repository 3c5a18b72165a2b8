"""KeepTrack's candidate-matching training samples (keeptrack.md §5.2, 5.3) from a candidate dump, in NumPy.

Input: a dump (`cia_jax.tcm.dump`, pytracking's JSON layout) and the benchmark's sequences (by name) for the
frames. `CandidateDataset` indexes the stored frames by frame state (G / H / J / K) and the consecutive pairs
by pair state (HH / HK / HG). `draw_sample` draws one training sample the reference's way:

  mode ~ U(sup_modes); self_sup: state ~ p_frame, a (sequence, frame) of that state, one image ->
  `self_sup_sample`; partial_sup: pair state ~ p_pair, a pair (base, base + 1), two images -> `partial_sup_sample`.

A sample (`[N]` slots, N = `num_candidates` = 5; S = the score-map side; crops `output_sz` square, 0..255):

  crop0 / crop1          [P, P, 3] float32        the frames cut with their search-area boxes (border replicated)
  cells0 / cells1        [N, 2] int32             score-map (row, col) of each slot (descriptor lookup)
  coords0 / coords1      [N, 2] float32           (y, x) full-frame pixels (keypoint encoder)
  scores0 / scores1      [N] float32
  image_hw0 / image_hw1  [2] float32              frame (H, W)
  gt_assignment          [N, N] float32; gt_matches0 / gt_matches1 [N] int32 (-1 dustbin, -2 ignored)

Every slot is filled (real candidates, then fake ones), as in the reference; `valid0/1` [N] bool say which are real.
Reproduced from the reference (keeptrack.md §5.3): the lopsided search-area jitter, frame 1's real cells from the
original box (7.13), slot-wise re-sorted noisy scores (7.14), the drop-in-frame-1 label quirk (7.7), fakes placed
by max-min distance among 20 uniform draws. Not reproduced exactly: the blur (OpenCV Gaussian, sigma 0.5) and the
random streams (NumPy, not torch).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence as SequenceT

import cv2
import numpy as np

FRAME_STATES = ("G", "H", "J", "K")
PAIR_STATES = ("HH", "HK", "HG")
NUM_FAKE_DRAWS = 20


class GTBeyondSlotsError(ValueError):
  """A partial_sup pair whose GT candidate is not among the N slots (keeptrack.md §7.16)."""


@dataclasses.dataclass(frozen=True)
class MatchingSamplerConfig:
  """The sampler / processing settings (defaults: KeepTrack's training loader, keeptrack.md §5.2-5.3).

  Attributes:
    output_sz: crop side P in pixels (352 = 22 * 16); score_size: S (23).
    num_candidates: N slots per frame (5).
    sup_modes: supervision modes drawn uniformly ('self_sup', 'partial_sup').
    frame_states, p_frame: self_sup states and their (unnormalised) probabilities.
    pair_states, p_pair: partial_sup pair states and probabilities.
    sa_jitter: search-area jitter divisor l (100): offsets in [-ceil(w / l), floor(w / l)].
    brightness_jitter: frame 1's brightness factor ~ U[1 - b, 1 + b]; blur_sigma, blur_prob: its Gaussian blur.
    gt_drop_prob: partial_sup's probability of dropping the GT candidate of one frame.
  """

  output_sz: int = 352
  score_size: int = 23
  num_candidates: int = 5
  sup_modes: tuple[str, ...] = ("self_sup", "partial_sup")
  frame_states: tuple[str, ...] = ("H", "K", "J")
  p_frame: tuple[float, ...] = (1.0, 0.5, 0.5)
  pair_states: tuple[str, ...] = ("HH", "HK", "HG")
  p_pair: tuple[float, ...] = (1.0, 0.1, 0.1)
  sa_jitter: int = 100
  brightness_jitter: float = 0.5
  blur_sigma: float = 0.5
  blur_prob: float = 0.75
  gt_drop_prob: float = 0.25


class CandidateDataset:
  """Stored frames of a dump by state, with the sequences that hold their images.

  Args:
    dump: {sequence name: dump entry} (`cia_jax.tcm.dump.read_dump`).
    sequences: the benchmark's sequences (`cia_jax.data.datasets.base.Sequence`); names missing from either
      side are skipped.
  """

  def __init__(self, dump: Mapping[str, Mapping[str, Any]], sequences: SequenceT):
    self.sequences = {s.name: s for s in sequences if s.name in dump}
    self.records: dict[tuple[str, int], dict] = {}
    self.frames: dict[str, list[tuple[str, int]]] = {k: [] for k in FRAME_STATES}
    self.pairs: dict[str, list[tuple[str, int]]] = {k: [] for k in PAIR_STATES}
    for name in sorted(self.sequences):
      entry = dump[name]
      for j, index in enumerate(entry["index"]):
        self.records[(name, int(index))] = {k: entry[k][j] for k in ("search_area_box", "target_anno_coord",
                                                                      "target_candidate_scores",
                                                                      "target_candidate_coords")}
      for state, indices in entry.get("frame_states", {}).items():
        self.frames.setdefault(state, []).extend((name, int(i)) for i in indices)
      for state, indices in entry.get("subseq_states", {}).items():
        self.pairs.setdefault(state, []).extend((name, int(i)) for i in indices)

  def image(self, name: str, index: int, reader) -> np.ndarray:
    return reader(self.sequences[name].frame_paths[index])


def crop_search_area(image: np.ndarray, box_xywh: SequenceT[float], output_sz: int) -> np.ndarray:
  """The integer box (truncated) cut from `image` with replicated borders, resized bilinearly to P x P (float32).

  As the reference: the right / bottom padding is max(x2 - W + 1, 0), so a box reaching the last column
  replicates the one before it.
  """
  x1, y1, w, h = (int(v) for v in box_xywh)
  x2, y2 = x1 + w, y1 + h
  H, W = image.shape[:2]
  px1, py1, px2, py2 = max(0, -x1), max(0, -y1), max(x2 - W + 1, 0), max(y2 - H + 1, 0)
  crop = image[y1 + py1:y2 - py2, x1 + px1:x2 - px2]
  crop = cv2.copyMakeBorder(np.ascontiguousarray(crop), py1, py2, px1, px2, cv2.BORDER_REPLICATE)
  return cv2.resize(crop, (output_sz, output_sz), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def cells_to_image(cells: np.ndarray, box: SequenceT[float], score_size: int) -> np.ndarray:
  """`[K, 2]` (row, col) -> (y, x) pixels: y = h row / (S - 1) + y0, x = w col / (S - 1) + x0."""
  x, y, w, h = (float(v) for v in box)
  cells = np.asarray(cells, np.float64).reshape(-1, 2)
  return np.stack([h * cells[:, 0] / (score_size - 1) + y, w * cells[:, 1] / (score_size - 1) + x], axis=1)


def image_to_cells(coords: np.ndarray, box: SequenceT[float], score_size: int) -> np.ndarray:
  """(y, x) pixels -> (row, col) = round((y - y0) / h (S - 1)) with the integer box; clipped into the map."""
  x, y, w, h = (int(v) for v in box)
  coords = np.asarray(coords, np.float64).reshape(-1, 2)
  cells = np.round(np.stack([(coords[:, 0] - y) / h, (coords[:, 1] - x) / w], axis=1) * (score_size - 1))
  return np.clip(cells, 0, score_size - 1).astype(np.int32)


def fake_scores(rng: np.random.Generator, n: int) -> np.ndarray:
  """Scores of fake candidates: 0.05 + min(|z| / 50, 0.025), z ~ N(0, 1)."""
  return (0.05 + np.minimum(np.abs(rng.standard_normal(n)) / 50, 0.025)).astype(np.float32)


def fake_position(rng: np.random.Generator, box: SequenceT[float], image_hw, used: np.ndarray) -> np.ndarray:
  """One fake (y, x): of 20 uniform points in the box clipped to the image, the farthest from `used` `[U, 2]`."""
  x, y, w, h = (int(v) for v in box)
  lo_y, lo_x, hi_y, hi_x = max(0, y), max(0, x), min(image_hw[0], y + h), min(image_hw[1], x + w)
  draws = np.stack([rng.random(NUM_FAKE_DRAWS) * (hi_y - lo_y) + lo_y,
                    rng.random(NUM_FAKE_DRAWS) * (hi_x - lo_x) + lo_x], axis=1)
  if len(used) == 0:
    return draws[0]
  dist = np.sqrt(np.sum((used[:, None, :] - draws[None, :, :]) ** 2, axis=2))
  return draws[np.argmax(np.min(dist, axis=0))]


def _photometric(rng: np.random.Generator, crop: np.ndarray, cfg: MatchingSamplerConfig) -> np.ndarray:
  """Frame 1's brightness jitter (clamped to 255) and, with probability blur_prob, Gaussian blur."""
  factor = rng.uniform(max(0.0, 1 - cfg.brightness_jitter), 1 + cfg.brightness_jitter)
  crop = np.minimum(crop * factor, 255.0)
  if rng.random() < cfg.blur_prob:
    crop = cv2.GaussianBlur(crop, (0, 0), cfg.blur_sigma)
  return crop.astype(np.float32)


def _augment_scores(rng: np.random.Generator, scores: np.ndarray, valid: np.ndarray, dropped: bool) -> np.ndarray:
  """keeptrack.md §5.3 self_sup step 6 (scores): noise, re-sort slot-wise, optional pull / swap, floor 0.075."""
  s = scores[valid].astype(np.float64)
  noise = 0.1 * rng.standard_normal(len(s))
  aug = np.sort(s + noise)[::-1].copy()
  if len(s) > 2 and not dropped and scores[1] > 0.5 * scores[0] and np.all(scores[:2] > 0.2):
    mode = int(rng.integers(0, 3))
    if mode > 0:
      aug[0], aug[1] = s[0] - abs(noise[0]), s[1] + abs(noise[1])
      aug[:2] = np.sort(aug[:2])[::-1]
      if mode == 2:
        aug[:2] = aug[1::-1].copy()
  out = scores.copy()
  out[valid] = np.maximum(aug, 0.075)
  return out


def _augment_coords(rng: np.random.Generator, coords: np.ndarray, image_hw, box, score_size: int) -> np.ndarray:
  """Independent uniform jitter of each (y, x) by up to min(sqrt(2) dmin / 4, size / S), clamped to the image."""
  w, h = float(box[2]), float(box[3])
  d = np.sqrt(np.sum((coords[None] - coords[:, None]) ** 2, axis=2))
  if np.all(d == 0):
    xmax, ymax = 0.5 * w / score_size, 0.5 * h / score_size
  else:
    dmin = np.sqrt(2) * np.min(d[d > 0]) / 4
    xmax, ymax = min(dmin, w / score_size), min(dmin, h / score_size)
  out = coords + np.stack([rng.random(len(coords)) * 2 * ymax - ymax, rng.random(len(coords)) * 2 * xmax - xmax], 1)
  return np.stack([np.clip(out[:, 0], 0, image_hw[0]), np.clip(out[:, 1], 0, image_hw[1])], axis=1)


def self_sup_sample(rng: np.random.Generator, image: np.ndarray, record: Mapping[str, Any],
                    cfg: MatchingSamplerConfig) -> dict[str, np.ndarray]:
  """One frame and its augmented copy, matched slot to slot (keeptrack.md §5.3 self_sup)."""
  n, size = cfg.num_candidates, cfg.score_size
  hw = np.array(image.shape[:2], np.float32)
  box0 = np.asarray(record["search_area_box"], np.float64)
  x, y, w, h = (int(v) for v in box0)
  box1 = box0.copy()
  if cfg.sa_jitter:  # torch.randint(-w // l, w // l + 1): [-ceil(w / l), floor(w / l)]
    l = cfg.sa_jitter
    box1 = np.array([x + rng.integers((-w) // l, w // l + 1), y + rng.integers((-h) // l, h // l + 1),
                     w + rng.integers((-w) // l, w // l + 1), h + rng.integers((-h) // l, h // l + 1)], np.float64)
  crop0 = crop_search_area(image, box0, cfg.output_sz)
  crop1 = _photometric(rng, crop_search_area(image, box1, cfg.output_sz), cfg)
  cells = np.asarray(record["target_candidate_coords"], np.float64).reshape(-1, 2)
  scores = np.asarray(record["target_candidate_scores"], np.float32)
  k = min(len(scores), n)
  coords = cells_to_image(cells[:k], box0, size)
  valid0, valid1 = np.arange(n) < k, np.arange(n) < k
  drop = rng.permutation(k)[:int(np.round(0.25 * k * rng.random()))]
  (valid0 if rng.random() < 0.5 else valid1)[drop] = False
  pad = [np.zeros((n, 2)), np.zeros((n, 2))]
  pad[0][:k], pad[1][:k] = coords, coords
  filled = [valid0.copy(), valid1.copy()]
  for i in range(n):
    for f, box in ((0, box0), (1, box1)):
      if not filled[f][i]:
        used = np.concatenate([pad[0][filled[0]], pad[1][filled[1]]])
        pad[f][i] = fake_position(rng, box, hw, used)
        filled[f][i] = True
  s0, s1 = np.zeros(n, np.float32), np.zeros(n, np.float32)
  for s, valid in ((s0, valid0), (s1, valid1)):
    s[valid] = scores[np.nonzero(valid)[0]]
    s[~valid] = fake_scores(rng, int((~valid).sum()))
  cells0 = image_to_cells(pad[0], box0, size)
  cells1 = np.where(valid1[:, None], image_to_cells(pad[1], box0, size), image_to_cells(pad[1], box1, size))
  coords1 = _augment_coords(rng, pad[1], hw, box1, size)
  s1 = _augment_scores(rng, s1, valid1, not np.array_equal(valid0, valid1))
  both = valid0 & valid1
  matches = np.where(both, np.arange(n), -1).astype(np.int32)
  return dict(crop0=crop0, crop1=crop1, cells0=cells0, cells1=cells1.astype(np.int32),
              coords0=pad[0].astype(np.float32), coords1=coords1.astype(np.float32), scores0=s0, scores1=s1,
              image_hw0=hw, image_hw1=hw, valid0=valid0, valid1=valid1,
              gt_assignment=np.diag(both.astype(np.float32)), gt_matches0=matches, gt_matches1=matches.copy())


def _pad_drop_gt(rng, coords: np.ndarray, drop: bool, gt: int, box, hw, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Top-n real candidates, the GT one removed when `drop`, the rest fakes far from the filled ones and the GT."""
  k = min(len(coords), n)
  pad, valid = np.zeros((n, 2)), np.arange(n) < k
  pad[:k] = coords[:k]
  gt_coord = pad[gt].copy()[None]
  if drop:
    valid[gt], pad[gt] = False, 0
  filled = valid.copy()
  for i in range(n):
    if not filled[i]:
      pad[i] = fake_position(rng, box, hw, np.concatenate([pad[filled], gt_coord]))
      filled[i] = True
  return pad, valid


def partial_sup_sample(rng: np.random.Generator, images: SequenceT[np.ndarray], records: SequenceT[Mapping[str, Any]],
                       cfg: MatchingSamplerConfig) -> dict[str, np.ndarray]:
  """Two consecutive real frames, the GT candidates matched (keeptrack.md §5.3 partial_sup, training)."""
  n, size = cfg.num_candidates, cfg.score_size
  out: dict[str, np.ndarray] = {}
  gts, frames = [], []
  for f, (image, rec) in enumerate(zip(images, records)):
    cells = np.asarray(rec["target_candidate_coords"], np.float64).reshape(-1, 2)
    gts.append(int(np.argmin(np.sum((cells - np.asarray(rec["target_anno_coord"], np.float64)) ** 2, axis=1))))
    frames.append((image, np.asarray(rec["search_area_box"], np.float64), cells,
                   np.asarray(rec["target_candidate_scores"], np.float32)))
  if max(gts) >= n:  # keeptrack.md §7.16: the GT beyond the top N cannot be labelled
    raise GTBeyondSlotsError(f"GT candidate index {max(gts)} beyond the {n} slots")
  frame_id, dropout = int(rng.integers(0, 2)), bool(rng.random() < cfg.gt_drop_prob)
  valids = []
  for f, (image, box, cells, scores) in enumerate(frames):
    hw = np.array(image.shape[:2], np.float32)
    pad, valid = _pad_drop_gt(rng, cells_to_image(cells, box, size), dropout and frame_id == f, gts[f], box, hw, n)
    s = np.zeros(n, np.float32)
    s[valid] = scores[np.nonzero(valid)[0]]
    s[~valid] = fake_scores(rng, int((~valid).sum()))
    out.update({f"crop{f}": crop_search_area(image, box, cfg.output_sz), f"cells{f}": image_to_cells(pad, box, size),
                f"coords{f}": pad.astype(np.float32), f"scores{f}": s, f"image_hw{f}": hw, f"valid{f}": valid})
    valids.append(valid)
  g0, g1 = gts
  gt_assignment = np.zeros((n, n), np.float32)
  gt_assignment[g0, g1] = float(valids[0][g0] and valids[1][g1])
  m0, m1 = np.full(n, -2, np.int32), np.full(n, -2, np.int32)
  if dropout and frame_id == 0:
    m0[g0], m1[g1] = -2, -1
  elif dropout:
    m0[g0] = -1
    m0[g1] = -2  # keeptrack.md §7.7: the reference writes frame 1's "ignore" into frame 0's list
  else:
    m0[g0], m1[g1] = g1, g0
  out.update(gt_assignment=gt_assignment, gt_matches0=m0, gt_matches1=m1)
  return out


def real_candidates_sample(images: SequenceT[np.ndarray], records: SequenceT[Mapping[str, Any]],
                           cfg: MatchingSamplerConfig, capacity: int) -> dict[str, np.ndarray]:
  """A validation pair with the real candidates only (keeptrack.md §5.3, val_HH / val_HK): no fakes, no
  augmentation; the only label is the GT pair (every other slot -2). The variable-size sets are padded to
  `capacity` slots (`valid0/1` False on padding; ValueError when a set is larger)."""
  out: dict[str, np.ndarray] = {}
  gts = []
  for f, (image, rec) in enumerate(zip(images, records)):
    cells = np.asarray(rec["target_candidate_coords"], np.float64).reshape(-1, 2)
    k = len(cells)
    if k > capacity:
      raise ValueError(f"{k} candidates exceed the validation capacity {capacity}")
    gts.append(int(np.argmin(np.sum((cells - np.asarray(rec["target_anno_coord"], np.float64)) ** 2, axis=1))))
    box = np.asarray(rec["search_area_box"], np.float64)
    pad = lambda a, n=capacity: np.concatenate([a, np.zeros((n - len(a),) + a.shape[1:], a.dtype)])  # noqa: E731
    out.update({f"crop{f}": crop_search_area(image, box, cfg.output_sz),
                f"cells{f}": pad(cells.astype(np.int32)),
                f"coords{f}": pad(cells_to_image(cells, box, cfg.score_size).astype(np.float32)),
                f"scores{f}": pad(np.asarray(rec["target_candidate_scores"], np.float32)),
                f"image_hw{f}": np.array(image.shape[:2], np.float32), f"valid{f}": np.arange(capacity) < k})
  gt_assignment = np.zeros((capacity, capacity), np.float32)
  gt_assignment[gts[0], gts[1]] = 1
  m0, m1 = np.full(capacity, -2, np.int32), np.full(capacity, -2, np.int32)
  m0[gts[0]], m1[gts[1]] = gts[1], gts[0]
  out.update(gt_assignment=gt_assignment, gt_matches0=m0, gt_matches1=m1)
  return out


def draw_sample(rng: np.random.Generator, data: CandidateDataset, cfg: MatchingSamplerConfig, reader,
                max_tries: int = 10) -> dict[str, np.ndarray]:
  """One training sample (module docstring); `reader(path) -> [H, W, 3] uint8` reads a frame.

  A pair whose GT candidate sits beyond the N slots (keeptrack.md §7.16; the reference restarts its loader) is
  replaced by a new draw, at most `max_tries` times.
  """
  for _ in range(max_tries):
    mode = cfg.sup_modes[int(rng.integers(0, len(cfg.sup_modes)))]
    self_sup = mode == "self_sup"
    names, probs, table = ((cfg.frame_states, cfg.p_frame, data.frames) if self_sup
                           else (cfg.pair_states, cfg.p_pair, data.pairs))
    states = [s for s in names if table.get(s)]
    if not states:
      raise ValueError(f"the candidate dump has no {mode} sample of the states {names}")
    p = np.array([probs[names.index(s)] for s in states], np.float64)
    pool = table[states[int(rng.choice(len(states), p=p / p.sum()))]]
    name, index = pool[int(rng.integers(0, len(pool)))]
    if self_sup:
      return self_sup_sample(rng, data.image(name, index, reader), data.records[(name, index)], cfg)
    try:
      return partial_sup_sample(rng, [data.image(name, index, reader), data.image(name, index + 1, reader)],
                                [data.records[(name, index)], data.records[(name, index + 1)]], cfg)
    except GTBeyondSlotsError:
      continue
  raise ValueError(f"no usable sample in {max_tries} draws (GT candidates beyond the {cfg.num_candidates} slots)")


def collate(samples: SequenceT[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Stacks samples along a new batch axis."""
  return {k: np.stack([s[k] for s in samples]) for k in samples[0]}


def synthetic_dump(sequences: SequenceT, rng: np.random.Generator, search_area_scale: float = 4.0,
                   score_size: int = 5, max_distractors: int = 3) -> dict[str, dict]:
  """A stand-in candidate dump built from ground truth only (CI / smoke runs without a trained base tracker).

  Per frame >= 1 with a visible target: the search-area box is a square of side `search_area_scale` *
  sqrt(w h) centred on the GT centre, the GT cell is its centre cell, and 1 to `max_distractors` other
  distinct cells are random candidates. Frames alternate at random between H (the GT candidate has the
  best score) and K (a distractor beats it). Not KeepTrack's data: real dumps come from `cia-jax tcm-dump`.
  """
  out = {}
  centre = (score_size - 1) // 2
  for seq in sequences:
    entry: dict[str, Any] = {k: [] for k in ("index", "search_area_box", "target_anno_coord",
                                              "target_candidate_scores", "target_candidate_coords")}
    states: dict[str, list] = {"H": [], "K": []}
    pairs: dict[str, list] = {"HH": [], "HK": []}
    previous = None
    for i in range(1, len(seq.boxes)):
      x, y, w, h = (float(v) for v in seq.boxes[i])
      if not seq.visible[i] or not np.all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        previous = None
        continue
      side = search_area_scale * np.sqrt(w * h)
      cy, cx = y + (h - 1) / 2, x + (w - 1) / 2
      box = [cx - side / 2, cy - side / 2, side, side]
      others = [c for c in rng.permutation(score_size * score_size) if c != centre * score_size + centre]
      cells = [[centre, centre]] + [[int(c) // score_size, int(c) % score_size]
                                    for c in others[:int(rng.integers(1, max_distractors + 1))]]
      scores = np.sort(rng.uniform(0.3, 1.0, len(cells)))[::-1]
      state = "H" if rng.random() < 0.7 else "K"
      if state == "K":  # the target is the second best candidate
        cells[0], cells[1] = cells[1], cells[0]
      for k, v in (("index", i), ("search_area_box", box), ("target_anno_coord", [centre, centre]),
                   ("target_candidate_scores", scores.tolist()), ("target_candidate_coords", cells)):
        entry[k].append(v)
      states[state].append(i)
      if previous == "H":
        pairs["H" + state].append(i - 1)
      previous = state
    entry["frame_states"], entry["subseq_states"] = states, pairs
    out[seq.name] = entry
  return out
