"""KeepTrack's candidate state machine (keeptrack.md §1 step 4-5, 4.1-4.3) against a plain-Python transcription.

`RefTracker` / `RefCollection` below follow the spec's wording with dicts, lists and loops in float64; every
constructed sequence runs through both, frame by frame, and the selected ids, flags and the whole state must
agree. The inputs are float32 values (what the jitted code sees), read as float64 by the transcription.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.ops.candidates import LocalMaxima
from cia_jax.track import tracker
from cia_jax.track.candidates import (FLAG_NORMAL, FLAG_NOT_FOUND, TcmSettings, candidate_translation,
                                      frame_candidates, init_state, needs_matching, update)

K, C, S = 6, 4, 31
SETTINGS = TcmSettings(candidate_capacity=K)
UPDATE = jax.jit(update, static_argnames="settings")
FLAGS = {"normal": FLAG_NORMAL, "not_found": FLAG_NOT_FOUND}


# --------------------------------------------------------------------------------------------------
# Plain-Python transcription of keeptrack.md §4.1-4.2 and the frame logic of keeptrack.md §1 step 4-5.

class RefCandidate:
  def __init__(self, object_id, index, score, cell):
    self.object_id = object_id
    self.ids, self.scores, self.cells = [index], [score], [cell]

  def add(self, index, score, cell):
    self.ids.append(index)
    self.scores.append(score)
    self.cells.append(cell)


class RefCollection:
  def __init__(self, scores, cells, certain):
    self.flag = "normal"
    self.object_id_cntr = 0 if certain else 1
    self.selected_index = 0
    self.selected_object_id = self.object_id_cntr
    self.certain = certain
    self.candidates = {}
    for i, (score, cell) in enumerate(zip(scores, cells)):
      self.candidates[i] = self._new(i, score, cell)

  def _new(self, index, score, cell):
    cand = RefCandidate(self.object_id_cntr, index, score, cell)
    self.object_id_cntr += 1
    return cand

  def update(self, scores, cells, matches1, match_scores1):
    updated = {}
    for i, (score, cell) in enumerate(zip(scores, cells)):
      j = matches1[i]
      if j >= 0:
        prev = self.candidates[j]
        ms = match_scores1[i]
        too_low = ms < 0.6 or (ms < 0.85 and score < 0.2)
        if prev.object_id == self.selected_object_id and too_low:
          updated[i] = self._new(i, score, cell)
        else:
          prev.add(i, score, cell)
          updated[i] = prev
      else:
        updated[i] = self._new(i, score, cell)
    self.candidates = updated
    found = False
    for i, cand in self.candidates.items():
      if cand.object_id == self.selected_object_id:
        found = True
        self.selected_index = i
        self.flag = "normal"
        if max(cand.scores) > 0.75:
          self.certain = True
    if found and self.selected_index != 0:
      top, sel = self.candidates[0], self.candidates[self.selected_index]
      if max(top.scores) > max(sel.scores):
        self.selected_index = 0
        self.selected_object_id = top.object_id
        self.flag = "normal"
    if not found:
      self.selected_index = None
      if self.flag == "normal":
        self.flag = "not_found"
        self.certain = False
      best = 0.25
      for i, cand in self.candidates.items():
        if cand.scores[-1] > best:
          best = cand.scores[-1]
          self.selected_index = i
      if self.selected_index is not None:
        self.selected_object_id = self.candidates[self.selected_index].object_id
        self.flag = "normal"


class RefTracker:
  def __init__(self, threshold):
    self.threshold = threshold
    self.collection = None
    self.prev = None

  def frame(self, frame_num, scores, cells, descriptors, map_max, matches1, match_scores1):
    """One frame; returns dict(use_dimp, presence). Spec 1 steps 4.1-4.6 and 5."""
    use_dimp = True
    if map_max >= self.threshold:
      if self.prev is None or self.prev["frame_num"] != frame_num - 1:
        self.collection = None
      else:
        use_dimp = False
        if len(self.prev["scores"]) == 1 and len(scores) == 1 and self.prev["scores"][0] > 0.5 and scores[0] > 0.5:
          matches1, match_scores1 = [0], [1.0]
        self.collection.update(scores, cells, matches1, match_scores1)
      if self.collection is None:
        self.collection = RefCollection(scores, cells, frame_num < 10)
      self.prev = {"frame_num": frame_num, "scores": list(scores), "descriptors": descriptors}
    presence = map_max
    if self.collection is None or self.collection.selected_object_id == 0:
      presence = max(map_max, math.sqrt(map_max)) if map_max > 0 else map_max
    return {"use_dimp": use_dimp, "presence": presence}


# --------------------------------------------------------------------------------------------------
# Sequences and the side-by-side driver.

@dataclasses.dataclass
class Frame:
  """One frame: descending scores (len n <= K), matches1 / match_scores1 for them (default: none)."""
  scores: list
  matches1: list | None = None
  match_scores1: list | None = None
  map_max: float | None = None  # default: scores[0] (0 for an empty set)
  frame_num: int | None = None  # default: previous + 1, starting at 2
  cells: list | None = None  # default: random distinct cells


def build_inputs(frames, seed=0):
  """Per frame (frame_num, FrameCandidates, matches1 [K], match_scores1 [K], raw float64 inputs)."""
  rng = np.random.default_rng(seed)
  out, frame_num = [], 1
  for f in frames:
    frame_num = f.frame_num if f.frame_num is not None else frame_num + 1
    n = len(f.scores)
    scores = np.zeros(K, np.float32)
    scores[:n] = f.scores
    cells = np.zeros((K, 2), np.int32)
    flat = rng.choice(S * S, size=n, replace=False)
    cells[:n] = np.asarray(f.cells, np.int32) if f.cells is not None else np.stack([flat // S, flat % S], -1)
    desc = np.zeros((K, C), np.float32)
    desc[:n] = rng.normal(size=(n, C))
    img = np.zeros((K, 2), np.float32)
    img[:n] = cells[:n] * 7.5 + 3.0
    m1 = np.full(K, -1, np.int32)
    ms1 = np.zeros(K, np.float32)
    if f.matches1 is not None:
      m1[:n] = f.matches1
      ms1[:n] = f.match_scores1 if f.match_scores1 is not None else 0.0
    map_max = np.float32(f.map_max if f.map_max is not None else (f.scores[0] if n else 0.0))
    maxima = LocalMaxima(jnp.asarray(cells), jnp.asarray(scores), jnp.asarray(np.arange(K) < n),
                         jnp.asarray(n, jnp.int32), jnp.asarray(n, jnp.int32))
    cand = frame_candidates(maxima, desc, img, map_max)
    raw = {"scores": [float(s) for s in scores[:n]], "cells": [tuple(c) for c in cells[:n].tolist()],
           "descriptors": desc[:n].astype(np.float64), "map_max": float(map_max), "matches1": m1[:n].tolist(),
           "match_scores1": [float(s) for s in ms1[:n]]}
    out.append((frame_num, cand, m1, ms1, raw))
  return out


def assert_same(state, sel, ref, rout, frame_num):
  """The jitted state / selection equal the transcription's after one frame."""
  where = f"frame {frame_num}"
  coll = ref.collection
  assert bool(sel.use_dimp) == rout["use_dimp"], where
  np.testing.assert_allclose(float(sel.presence_score), rout["presence"], rtol=1e-6, err_msg=where)
  assert bool(state.has_collection) == (coll is not None), where
  assert bool(state.has_previous) == (ref.prev is not None), where
  if ref.prev is not None:
    n = len(ref.prev["scores"])
    assert int(state.prev_frame_num) == ref.prev["frame_num"], where
    np.testing.assert_array_equal(np.asarray(state.valid), np.arange(K) < n, err_msg=where)
    np.testing.assert_array_equal(np.asarray(state.prev_scores)[:n], np.float32(ref.prev["scores"]), err_msg=where)
    np.testing.assert_array_equal(np.asarray(state.prev_descriptors)[:n], np.float32(ref.prev["descriptors"]),
                                  err_msg=where)
  if coll is None:
    assert int(sel.index) == -1 and int(sel.flag) == FLAG_NORMAL, where
    return
  keys = sorted(coll.candidates)
  assert keys == list(range(len(keys))), where
  np.testing.assert_array_equal(np.asarray(state.object_ids)[:len(keys)],
                                [coll.candidates[i].object_id for i in keys], err_msg=where)
  np.testing.assert_array_equal(np.asarray(state.max_scores)[:len(keys)],
                                np.float32([max(coll.candidates[i].scores) for i in keys]), err_msg=where)
  expected_index = -1 if coll.selected_index is None else coll.selected_index
  assert int(sel.index) == int(state.selected_index) == expected_index, where
  assert int(sel.object_id) == int(state.selected_object_id) == coll.selected_object_id, where
  assert int(sel.flag) == int(state.flag) == FLAGS[coll.flag], where
  assert int(state.object_id_cntr) == coll.object_id_cntr, where
  assert bool(state.selection_certain) == coll.certain, where


def run_both(frames, settings=SETTINGS, seed=0):
  """Runs the jitted `update` and the transcription side by side; returns the per-frame selections."""
  state = init_state(K, C)
  ref = RefTracker(float(np.float32(settings.local_max_candidate_score_th)))
  selections = []
  for frame_num, cand, m1, ms1, raw in build_inputs(frames, seed):
    assert bool(needs_matching(state, cand, frame_num, settings)) == (
        raw["map_max"] >= ref.threshold and ref.prev is not None and ref.prev["frame_num"] == frame_num - 1
        and not (len(ref.prev["scores"]) == 1 and len(raw["scores"]) == 1 and ref.prev["scores"][0] > 0.5
                 and raw["scores"][0] > 0.5))
    state, sel = UPDATE(state, cand, m1, ms1, frame_num, settings=settings)
    rout = ref.frame(frame_num, raw["scores"], raw["cells"], raw["descriptors"], raw["map_max"], raw["matches1"],
                     raw["match_scores1"])
    assert_same(state, sel, ref, rout, frame_num)
    selections.append(jax.tree.map(np.asarray, sel))
  return selections


def field(selections, name):
  return [int(getattr(s, name)) for s in selections]


# --------------------------------------------------------------------------------------------------
# Constructed sequences.

def test_target_stays_matched():
  frames = [Frame([0.9, 0.4])] + [Frame([0.9, 0.4], [0, 1], [0.95, 0.9]) for _ in range(11)]
  sel = run_both(frames)
  assert field(sel, "index") == [0] * 12 and field(sel, "object_id") == [0] * 12
  assert field(sel, "flag") == [FLAG_NORMAL] * 12
  assert field(sel, "use_dimp") == [1] + [0] * 11 and field(sel, "matched") == [0] + [1] * 11
  assert sel[-1].presence_score == pytest.approx(math.sqrt(0.9))  # object id 0: the sqrt boost


def test_target_disappears_and_reappears():
  frames = [Frame([0.8, 0.3]),
            Frame([0.2], [1], [0.9]),  # only the distractor is left, below 0.25: lost
            Frame([0.25, 0.1], [0, -1], [0.9, 0.0]),  # 0.25 is not > 0.25: stays lost
            Frame([0.6, 0.21], [-1, 0], [0.0, 0.9])]  # a new candidate above 0.25: re-found by score alone
  sel = run_both(frames)
  assert field(sel, "flag") == [FLAG_NORMAL, FLAG_NOT_FOUND, FLAG_NOT_FOUND, FLAG_NORMAL]
  assert field(sel, "index") == [0, -1, -1, 0]
  assert field(sel, "object_id") == [0, 0, 0, 3]  # id 2 went to the unmatched candidate of frame 4
  assert sel[-1].presence_score == pytest.approx(0.6)  # no longer object 0: no boost


def test_broken_target_track_is_reselected_when_a_candidate_scores_above_025():
  frames = [Frame([0.8, 0.3]), Frame([0.7, 0.3], [0, 1], [0.5, 0.9])]  # target match 0.5 < 0.6: broken
  sel = run_both(frames)
  assert field(sel, "flag") == [FLAG_NORMAL, FLAG_NORMAL] and field(sel, "object_id") == [0, 2]


@pytest.mark.parametrize("associate", [True, False])
def test_distractor_overtaking_the_target(associate):
  """Matching keeps the target at slot 1 while a distractor scores highest; without it the tracker swaps."""
  m = (lambda x: x) if associate else (lambda x: [-1] * len(x))
  frames = [Frame([0.9, 0.3], cells=[[15, 15], [15, 22]]),
            Frame([0.85, 0.7], m([1, 0]), [0.9, 0.9], cells=[[15, 21], [15, 16]]),
            Frame([0.88, 0.7], m([0, 1]), [0.9, 0.9], cells=[[15, 20], [15, 16]]),
            Frame([0.92, 0.7], m([0, 1]), [0.9, 0.9], cells=[[15, 19], [15, 16]])]
  sel = run_both(frames)
  if associate:
    # Slot 0's historical max (0.85, 0.88) stays below the target's (0.9); at 0.92 "prefer the top candidate"
    # switches to it (the reference's rule, not a matching failure).
    assert field(sel, "index") == [0, 1, 1, 0] and field(sel, "object_id") == [0, 0, 0, 1]
  else:
    assert field(sel, "index") == [0, 0, 0, 0] and field(sel, "object_id") == [0, 2, 4, 6]


def test_too_low_match_rules_only_break_the_target():
  frames = [Frame([0.8, 0.5, 0.4]),
            Frame([0.8, 0.5, 0.19], [0, 1, 2], [0.85, 0.3, 0.7]),  # target 0.85 ok; others too low but kept
            Frame([0.8, 0.5, 0.19], [2, 1, 0], [0.9, 0.9, 0.7]),  # target moves to slot 2 with 0.7 & 0.19: broken
            Frame([0.8, 0.3], [0, 1], [0.59, 0.9]),  # the new target's match 0.59 < 0.6: broken again
            Frame([0.15, 0.1], [0, 1], [0.85, 0.9])]  # 0.85 is not < 0.85: kept despite the score 0.15 < 0.2
  sel = run_both(frames)
  assert field(sel, "object_id") == [0, 0, 2, 4, 4] and field(sel, "index")[-1] == 0


def test_certain_and_uncertain_collections():
  frames = ([Frame([0.8, 0.4])] + [Frame([0.8, 0.4], [0, 1], [0.9, 0.9]) for _ in range(6)]
            + [Frame([0.04], map_max=0.04)]  # frame 9: fallback
            + [Frame([0.7, 0.4])]  # frame 10: reset at frame_num >= 10: ids start at 1
            + [Frame([0.7, 0.4], [0, 1], [0.9, 0.9]), Frame([0.8], [0], [0.9]), Frame([0.2], [-1], [0.0])])
  sel = run_both(frames)
  assert field(sel, "reset") == [1] + [0] * 7 + [1, 0, 0, 0]
  assert field(sel, "object_id")[8:] == [1, 1, 1, 1]
  assert float(sel[9].presence_score) == pytest.approx(0.7)  # object 1: no sqrt boost after frame 9
  assert field(sel, "flag")[-1] == FLAG_NOT_FOUND


def test_reset_at_frame_9_is_still_certain():
  frames = [Frame([0.8]), Frame([0.8], frame_num=9), Frame([0.9], frame_num=11)]
  sel = run_both(frames)
  assert field(sel, "reset") == [1, 1, 1] and field(sel, "object_id") == [0, 0, 1]


def test_low_score_fallback_leaves_the_state_and_forces_a_reset():
  frames = [Frame([0.8, 0.3]), Frame([0.8, 0.3], [0, 1], [0.9, 0.9]),
            Frame([0.045], map_max=0.045),
            Frame([0.8, 0.3], [0, 1], [0.9, 0.9])]  # consecutive to frame 4, not to the stored frame 3: reset
  state = init_state(K, C)
  inputs = build_inputs(frames)
  for frame_num, cand, m1, ms1, _ in inputs[:2]:
    state, _ = UPDATE(state, cand, m1, ms1, frame_num, settings=SETTINGS)
  frame_num, cand, m1, ms1, _ = inputs[2]
  after, sel = UPDATE(state, cand, m1, ms1, frame_num, settings=SETTINGS)
  jax.tree.map(np.testing.assert_array_equal, after, state)
  assert bool(sel.fallback) and bool(sel.use_dimp) and not bool(needs_matching(state, cand, frame_num, SETTINGS))
  sel = run_both(frames)
  assert field(sel, "fallback") == [0, 0, 1, 0] and field(sel, "reset") == [1, 0, 0, 1]


def test_fallback_before_the_first_collection_boosts_the_presence_score():
  frames = [Frame([], map_max=0.04), Frame([], map_max=-0.2), Frame([0.8])]  # frames 2-3: no collection yet
  sel = run_both(frames)
  assert float(sel[0].presence_score) == pytest.approx(0.2)  # sqrt(0.04)
  assert float(sel[1].presence_score) == pytest.approx(-0.2)  # no sqrt of a negative score
  assert field(sel, "reset") == [0, 0, 1] and field(sel, "object_id") == [-1, -1, 0]


def test_fast_threshold_falls_back_with_candidates_present():
  fast = TcmSettings(image_sample_size=352, local_max_candidate_score_th=0.1, candidate_capacity=K)  # default_fast
  frames = [Frame([0.6, 0.3]), Frame([0.08, 0.06], [0, 1], [0.9, 0.9]), Frame([0.6], [0], [0.9])]
  sel = run_both(frames, settings=fast)
  assert field(sel, "fallback") == [0, 1, 0] and field(sel, "reset") == [1, 0, 1]


def test_frame_number_gap_resets():
  sel = run_both([Frame([0.8]), Frame([0.8], [0], [0.9]), Frame([0.8], [0], [0.9], frame_num=5)])
  assert field(sel, "reset") == [1, 0, 1]


def test_capacity_full_sets():
  perm = [3, 0, 5, 1, 4, 2]
  frames = [Frame([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]),
            Frame([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], perm, [0.9] * K),
            Frame([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]),  # all unmatched: K new ids
            Frame([0.95, 0.8, 0.7, 0.6, 0.5, 0.3], [5, -1, 0, 1, -1, 2], [0.7, 0, 0.9, 0.9, 0, 0.3])]
  sel = run_both(frames)
  assert field(sel, "index") == [0, 1, 0, 0]
  assert field(sel, "object_id") == [0, 0, 6, 11]  # frame 5: slot 0's max 0.95 > the target's 0.9: switch


def test_one_candidate_shortcut_ignores_the_matcher():
  frames = [Frame([0.8]), Frame([0.7], [-1], [0.0]),  # shortcut: matched with probability 1
            Frame([0.5], [-1], [0.0]),  # 0.5 is not > 0.5: the (empty) matches count, target broken
            Frame([0.8, 0.3], [0, -1], [0.9, 0.0]), Frame([0.8], [-1], [0.0])]  # previous frame had two
  state = init_state(K, C)
  inputs = build_inputs(frames)
  flags = []
  for frame_num, cand, m1, ms1, _ in inputs:
    flags.append(bool(needs_matching(state, cand, frame_num, SETTINGS)))
    state, _ = UPDATE(state, cand, m1, ms1, frame_num, settings=SETTINGS)
  assert flags == [False, False, True, True, True]
  sel = run_both(frames)
  assert field(sel, "shortcut") == [0, 1, 0, 0, 0] and field(sel, "object_id") == [0, 0, 1, 1, 3]


def test_random_sequences_match_reference():
  for seed in range(4):
    run_both(random_frames(np.random.default_rng(100 + seed), 40), seed=seed)


def random_frames(rng, length):
  """Random sets (scores rounded to 0.05: ties and exact thresholds), partial matchings, gaps, fallbacks."""
  frames, prev_n, frame_num = [], 0, 1
  for _ in range(length):
    frame_num += 2 if rng.random() < 0.05 else 1
    if rng.random() < 0.1:
      frames.append(Frame([0.04] if rng.random() < 0.5 else [], map_max=0.04, frame_num=frame_num))
      continue
    n = int(rng.integers(1, K + 1))
    top = 1.0 if rng.random() < 0.6 else 0.4  # weak frames: the target gets lost and reselection is close
    scores = sorted((max(float(s), 0.1) for s in np.round(rng.uniform(0.05, top, n) * 20) / 20), reverse=True)
    pool = list(rng.permutation(prev_n))
    matches = [int(pool.pop()) if pool and rng.random() < 0.8 else -1 for _ in range(n)]
    ms = [float(np.round(rng.uniform(0.3, 1.0) * 20) / 20) if m >= 0 else 0.0 for m in matches]
    frames.append(Frame(scores, matches, ms, frame_num=frame_num))
    prev_n = n
  return frames


def stack(*trees):
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def unstack(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


def test_vmap_over_three_sequences_equals_single_runs():
  seqs = [build_inputs(random_frames(np.random.default_rng(7 + i), 25), seed=i) for i in range(3)]
  batched = jax.jit(jax.vmap(functools.partial(update, settings=SETTINGS)))
  state_b = stack(*[init_state(K, C)] * 3)
  singles = [init_state(K, C) for _ in range(3)]
  for t in range(25):
    frames = [seq[t] for seq in seqs]
    state_b, sel_b = batched(state_b, stack(*[f[1] for f in frames]), jnp.stack([f[2] for f in frames]),
                             jnp.stack([f[3] for f in frames]), jnp.asarray([f[0] for f in frames]))
    for i, (frame_num, cand, m1, ms1, _) in enumerate(frames):
      singles[i], sel = UPDATE(singles[i], cand, m1, ms1, frame_num, settings=SETTINGS)
      jax.tree.map(np.testing.assert_array_equal, unstack(state_b, i), singles[i])
      jax.tree.map(np.testing.assert_array_equal, unstack(sel_b, i), sel)


# --------------------------------------------------------------------------------------------------
# Translation, empty sets, settings.

def test_candidate_translation_uses_the_selected_cell():
  frames = [Frame([0.9, 0.3], cells=[[15, 15], [4, 27]]), Frame([0.85, 0.7], [1, 0], [0.9, 0.9],
                                                                cells=[[3, 26], [16, 13]])]
  state = init_state(K, C)
  for frame_num, cand, m1, ms1, _ in build_inputs(frames):
    state, sel = UPDATE(state, cand, m1, ms1, frame_num, settings=SETTINGS)
  scale = 1.7
  t = candidate_translation(cand, sel, scale, SETTINGS)
  np.testing.assert_allclose(np.asarray(t), (np.array([16.0, 13.0]) - 15.0) * (480 / 30) * scale, rtol=1e-6)
  lost = sel.replace(index=jnp.asarray(-1, jnp.int32))
  np.testing.assert_array_equal(np.asarray(candidate_translation(cand, lost, scale, SETTINGS)), [0.0, 0.0])


def test_empty_set_at_creation_selects_nothing():
  (frame_num, cand, m1, ms1, _), = build_inputs([Frame([], map_max=0.05)])  # max == th: not a fallback
  state, sel = UPDATE(init_state(K, C), cand, m1, ms1, frame_num, settings=SETTINGS)
  assert bool(sel.reset) and int(sel.index) == -1 and int(state.object_id_cntr) == 0


def test_settings():
  default, fast = TcmSettings(), TcmSettings(image_sample_size=352, local_max_candidate_score_th=0.1)
  assert (default.score_size, fast.score_size) == (31, 23)
  assert hash(default) != hash(fast)
  assert (FLAG_NORMAL, FLAG_NOT_FOUND) == (tracker.FLAG_NORMAL, tracker.FLAG_NOT_FOUND)
  with pytest.raises(ValueError, match="image_sample_size"):
    TcmSettings(image_sample_size=100)
  with pytest.raises(ValueError, match="candidate_capacity"):
    TcmSettings(candidate_capacity=0)
