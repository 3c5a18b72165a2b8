"""KeepTrack's candidate-tracking state machine (keeptrack.md §1 step 4-5, 4.1-4.3) and the settings it reads.

Per tracked frame the tracker step does, in this order (keeptrack.md §1):

    cand = frame_candidates(find_local_maxima(scores, th, K), descriptors, image_coords, jnp.max(scores))
    run_net = needs_matching(state, cand, frame_num, settings)          # the matcher's inputs: state.prev_*
    matches1, match_scores1 = <matcher(prev = state.prev_*, cur = cand)>  (any values when not run_net)
    state, sel = update(state, cand, matches1, match_scores1, frame_num, settings)
    translation = jnp.where(sel.use_dimp, <DiMP localize_advanced>, candidate_translation(cand, sel, ...))
    flag = jnp.where(sel.use_dimp, <DiMP flag>, sel.flag)

`update` is pure `jnp` over a fixed-shape `CandidateState` (static capacity K for the candidates, descriptor
size C), so it is jit-able and vmap-able, and testable without a network: it takes the matcher's readout
(`cia_jax.ops.sinkhorn.Matches.matches1 / match_scores1`) as plain arrays. Every branch of the reference
(fallback, reset, one-candidate shortcut, match update, new collection) is computed and chosen with
`jnp.where`.

The reference's `CandidateCollection` is a dict from current-frame candidate index to a `Candidate` with an
unbounded history; its decisions read only each candidate's object id, its historical max score and its latest
score (always the current score). The state keeps those per slot: `object_ids [K]`, `max_scores [K]`, and the
slot mask `valid [K]`, which is also the mask of the stored previous-frame candidates (the collection and the
previous candidates are always written together, on every non-fallback frame).

Flag codes are the tracker's (`cia_jax.track.tracker`): FLAG_NORMAL = 0, FLAG_NOT_FOUND = 3. The collection
itself only ever holds these two.

Reference behaviour reproduced on purpose (keeptrack.md §4.2-4.3, 7.8, 7.9, 7.11, 7.12):
  * Fallback (max of the map < local_max_candidate_score_th): nothing is written, so the stored previous
    candidates become stale and the next frame resets the collection (7.11). A reset at frame_num >= 10 starts
    the ids at 1, so the sqrt boost of the presence score / certainty is gone for good.
  * Reset frames: the translation and flag come from DiMP (`use_dimp`), the new collection still selects
    candidate 0; the two may disagree on that frame (4.3).
  * The target's track breaks only when *it* gets a too-low match; any other candidate keeps its id on a
    too-low match. Unmatched previous candidates are dropped (no memory beyond one frame).
  * "Prefer the top candidate" and the reselection use strict `>`; ties go to the first index (7.8).
    Reselection is by the current score alone, without appearance (4.2).
  * `selection_certain` is written as in the reference but never read by any decision.
  * The presence score uses the global map max, not the selected candidate's score (7.12).
  * With no selected candidate the reference's translation is junk; here it is 0 (the flag is not_found, so the
    position is not updated either way).

Differences from the reference (documented):
  * Candidates beyond the capacity K are dropped by `find_local_maxima` (the reference keeps all of them), so
    with more than K local maxima the sets, the one-candidate test and the matches differ.
  * A collection created from an empty set (map max exactly equal to the threshold, 7.9; not a fallback, but no
    candidate is strictly above it) selects index -1; the reference's selected index 0 points at no candidate.
  * `matches1` must be injective (the mutual readout guarantees it); an index to an invalid previous slot is
    treated as unmatched.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from cia_jax.ops.candidates import LocalMaxima
from cia_jax.ops.dtypes import default_float

Array = Any

FLAG_NORMAL, FLAG_NOT_FOUND = 0, 3  # the codes of cia_jax.track.tracker.FLAG_NORMAL / FLAG_NOT_FOUND

# Constants hard-coded in the reference's candidate logic (keeptrack.md §1 step 4.4-4.5, 4.1, 4.2).
SHORTCUT_SCORE = 0.5  # one candidate in both frames, both scores > this: matched with probability 1
MATCH_SCORE_LOW = 0.6  # the target's match is too low below this ...
MATCH_SCORE_WEAK = 0.85  # ... or below this while the current candidate's score is < WEAK_CANDIDATE_SCORE
WEAK_CANDIDATE_SCORE = 0.2
RESELECT_SCORE = 0.25  # a lost target is replaced by the best candidate strictly above this
CERTAIN_SCORE = 0.75  # historical max above this marks the selection "certain" (never read)
CERTAIN_FRAMES = 10  # a collection created at frame_num < this starts at object id 0 ("certain")
FEATURE_STRIDE = 16  # score-map cell size in patch pixels (layer3 stride; 4x4 filter with padding 2)


# --------------------------------------------------------------------------------------------------
# Parameters (keeptrack.md §4.7).

@dataclasses.dataclass(frozen=True)
class TcmSettings:
  """What the candidate state machine reads of the tracker settings (static, hashable).

  KeepTrack's parameters have one home, the `keeptrack` / `keeptrack_fast` / `cia50_tcm` presets of
  `cia_jax.track.params`; `cia_jax.track.keeptrack.tcm_settings` builds this from them.

  Attributes:
    image_sample_size: crop side in pixels (480 in `default`, 352 in `default_fast`); gives the score-map side S.
    local_max_candidate_score_th: candidates are local maxima strictly above it (0.05; fast: 0.1).
    candidate_capacity: the static K of the candidate buffers (a cia_jax addition: the reference has no cap).
  """

  image_sample_size: int = 480
  local_max_candidate_score_th: float = 0.05
  candidate_capacity: int = 32

  def __post_init__(self):
    def bad(name, why):
      raise ValueError(f"TcmSettings.{name}={getattr(self, name)!r}: {why}")
    if self.image_sample_size < 2 * FEATURE_STRIDE or self.image_sample_size % FEATURE_STRIDE:
      bad("image_sample_size", f"must be a multiple of {FEATURE_STRIDE} and >= {2 * FEATURE_STRIDE}")
    if self.candidate_capacity < 1:
      bad("candidate_capacity", "must be >= 1")

  @property
  def score_size(self) -> int:
    """S, the score-map side in cells: image_sample_size / 16 + 1 (31 for default, 23 for default_fast)."""
    return self.image_sample_size // FEATURE_STRIDE + 1


# --------------------------------------------------------------------------------------------------
# State.

@flax.struct.dataclass
class FrameCandidates:
  """The current frame's candidates in a static buffer, best first (slot 0 = highest score).

  Attributes:
    coords: `[K, 2]` int32 score-map cells (row, col).
    scores: `[K]` raw score-map values.
    valid: `[K]` bool, real candidates (a prefix of the buffer).
    image_coords: `[K, 2]` (y, x) full-frame pixels (`cia_jax.ops.candidates.candidate_image_coords`).
    descriptors: `[K, C]` descriptors (`cia_jax.ops.candidates.gather_descriptors`).
    map_max: `[]` max of the whole score map (the fallback test and the presence score).
  """

  coords: jax.Array
  scores: jax.Array
  valid: jax.Array
  image_coords: jax.Array
  descriptors: jax.Array
  map_max: jax.Array


def frame_candidates(maxima: LocalMaxima, descriptors: Array, image_coords: Array,
                     map_max: Array) -> FrameCandidates:
  """Bundles `find_local_maxima`'s buffer with the candidates' descriptors `[K, C]` and image coords `[K, 2]`."""
  dtype = default_float()
  return FrameCandidates(jnp.asarray(maxima.coords, jnp.int32), jnp.asarray(maxima.scores, dtype),
                         jnp.asarray(maxima.valid, bool), jnp.asarray(image_coords, dtype),
                         jnp.asarray(descriptors, dtype), jnp.asarray(map_max, dtype))


@flax.struct.dataclass
class CandidateState:
  """The candidate collection and the previous-frame candidates (keeptrack.md §4.1); K slots, C descriptor channels.

  Slot i is candidate i of the last non-fallback frame ("previous" for the next frame).

  Attributes:
    has_collection: `[]` bool, a collection exists (False before the first tracked frame).
    object_ids: `[K]` int32 object id of each slot's track.
    max_scores: `[K]` historical max score of each slot's track.
    object_id_cntr: `[]` int32 next free object id.
    flag: `[]` int32 FLAG_NORMAL or FLAG_NOT_FOUND.
    selected_index: `[]` int32 slot of the target, -1 for none (the reference's None).
    selected_object_id: `[]` int32 object id of the target (kept while the target is lost; -1 before the
      first collection).
    selection_certain: `[]` bool, the reference's `candidate_selection_is_certain` (written, never read).
    has_previous: `[]` bool, previous candidates are stored.
    prev_frame_num: `[]` int32 frame number of the stored candidates (-1 for none).
    prev_descriptors: `[K, C]`; prev_image_coords: `[K, 2]` (y, x) pixels; prev_scores: `[K]`.
    valid: `[K]` bool, the stored candidates (the collection's keys and the previous frame's set).
  """

  has_collection: jax.Array
  object_ids: jax.Array
  max_scores: jax.Array
  object_id_cntr: jax.Array
  flag: jax.Array
  selected_index: jax.Array
  selected_object_id: jax.Array
  selection_certain: jax.Array
  has_previous: jax.Array
  prev_frame_num: jax.Array
  prev_descriptors: jax.Array
  prev_image_coords: jax.Array
  prev_scores: jax.Array
  valid: jax.Array


def init_state(capacity: int, descriptor_dim: int) -> CandidateState:
  """The state after the init frame (frame_num 1, which extracts no candidates): nothing stored.

  Args:
    capacity: K, static number of candidate slots.
    descriptor_dim: C, descriptor channels (256 for KeepTrack).
  """
  dtype = default_float()
  return CandidateState(
      has_collection=jnp.asarray(False), object_ids=jnp.zeros((capacity,), jnp.int32),
      max_scores=jnp.zeros((capacity,), dtype), object_id_cntr=jnp.asarray(0, jnp.int32),
      flag=jnp.asarray(FLAG_NORMAL, jnp.int32), selected_index=jnp.asarray(-1, jnp.int32),
      selected_object_id=jnp.asarray(-1, jnp.int32), selection_certain=jnp.asarray(False),
      has_previous=jnp.asarray(False), prev_frame_num=jnp.asarray(-1, jnp.int32),
      prev_descriptors=jnp.zeros((capacity, descriptor_dim), dtype), prev_image_coords=jnp.zeros((capacity, 2), dtype),
      prev_scores=jnp.zeros((capacity,), dtype), valid=jnp.zeros((capacity,), bool))


@flax.struct.dataclass
class Selection:
  """What one `update` decided (all `[]`).

  Attributes:
    index: int32 current-frame slot of the target, -1 for none.
    object_id: int32 the target's object id.
    flag: int32 the collection's flag (FLAG_NORMAL / FLAG_NOT_FOUND); the tracker's flag unless `use_dimp`.
    use_dimp: bool, fallback or reset frame: take translation and flag from DiMP's advanced localisation.
    fallback: bool, map max < threshold: nothing was written (the next frame resets).
    reset: bool, a new collection was created from the current candidates.
    shortcut: bool, one candidate in both frames, both > 0.5: matched with probability 1, matcher unused.
    matched: bool, the matcher's `matches1` / `match_scores1` were used.
    presence_score: the object presence score (keeptrack.md §1 step 5): map max, boosted by `boost_score`.
  """

  index: jax.Array
  object_id: jax.Array
  flag: jax.Array
  use_dimp: jax.Array
  fallback: jax.Array
  reset: jax.Array
  shortcut: jax.Array
  matched: jax.Array
  presence_score: jax.Array


# --------------------------------------------------------------------------------------------------
# The state machine.

def _frame_branches(state: CandidateState, cand: FrameCandidates, frame_num: Array, settings: TcmSettings):
  """(fallback, consecutive, shortcut) of keeptrack.md §1 step 4.1, 4.3 and 4.4 (all `[]` bool)."""
  fallback = cand.map_max < settings.local_max_candidate_score_th
  consecutive = state.has_previous & state.has_collection & (state.prev_frame_num == frame_num - 1)
  one_each = (jnp.sum(state.valid) == 1) & (jnp.sum(cand.valid) == 1)
  strong = (state.prev_scores[0] > SHORTCUT_SCORE) & (cand.scores[0] > SHORTCUT_SCORE)
  return fallback, consecutive, consecutive & one_each & strong & state.valid[0] & cand.valid[0]


def needs_matching(state: CandidateState, cand: FrameCandidates, frame_num: Array, settings: TcmSettings) -> jax.Array:
  """`[]` bool: this frame's `update` reads the matcher's output (consecutive frames, no fallback, no shortcut).

  The matcher's inputs are the stored previous candidates (`state.prev_descriptors / prev_image_coords /
  prev_scores / valid`) as set 0 and `cand` as set 1. A step may skip the network (`lax.cond`) when False.
  """
  fallback, consecutive, shortcut = _frame_branches(state, cand, frame_num, settings)
  return ~fallback & consecutive & ~shortcut


def _new_collection(state: CandidateState, cand: FrameCandidates, frame_num: Array) -> CandidateState:
  """A collection from the current candidates (keeptrack.md §4.1): ids from 0 if frame_num < 10, else from 1."""
  certain = frame_num < CERTAIN_FRAMES
  first = jnp.where(certain, 0, 1).astype(jnp.int32)
  count = jnp.sum(cand.valid).astype(jnp.int32)
  ids = first + jnp.arange(cand.valid.shape[0], dtype=jnp.int32)
  return state.replace(
      has_collection=jnp.asarray(True), object_ids=jnp.where(cand.valid, ids, 0),
      max_scores=jnp.where(cand.valid, cand.scores, 0).astype(state.max_scores.dtype),
      object_id_cntr=first + count, flag=jnp.asarray(FLAG_NORMAL, jnp.int32),
      selected_index=jnp.where(count > 0, 0, -1).astype(jnp.int32), selected_object_id=first,
      selection_certain=certain)


def _reassign(state: CandidateState, cand: FrameCandidates, matches1: jax.Array,
              match_scores1: jax.Array) -> CandidateState:
  """Spec 4.2 step 1: carry each matched track to its current slot, new ids (in slot order) for the rest.

  Only the *target's* track breaks on a too-low match (score < 0.6, or < 0.85 with a current score < 0.2);
  other tracks continue whatever the match score. Unmatched previous tracks are dropped.
  """
  k = cand.valid.shape[0]
  j = jnp.clip(matches1, 0, k - 1)
  matched = cand.valid & (matches1 >= 0) & (matches1 < k) & state.valid[j]
  weak = (match_scores1 < MATCH_SCORE_WEAK) & (cand.scores < WEAK_CANDIDATE_SCORE)
  too_low = (match_scores1 < MATCH_SCORE_LOW) | weak
  carries_target = state.object_ids[j] == state.selected_object_id
  keep = matched & ~(carries_target & too_low)
  new = cand.valid & ~keep
  rank = jnp.cumsum(new.astype(jnp.int32)) - new.astype(jnp.int32)  # new ids are handed out in slot order
  ids = jnp.where(keep, state.object_ids[j], state.object_id_cntr + rank)
  max_scores = jnp.where(keep, jnp.maximum(state.max_scores[j], cand.scores), cand.scores)
  return state.replace(object_ids=jnp.where(cand.valid, ids, 0),
                       max_scores=jnp.where(cand.valid, max_scores, 0).astype(state.max_scores.dtype),
                       object_id_cntr=state.object_id_cntr + jnp.sum(new).astype(jnp.int32))


def _select(state: CandidateState, cand: FrameCandidates) -> CandidateState:
  """Spec 4.2 steps 2-4 on a reassigned collection, in the reference's order.

  2. The slot carrying the selected id (if any) is the target, flag normal; certain if its max > 0.75.
  3. If that slot is not 0 and slot 0's historical max is strictly greater, switch to slot 0.
  4. Not found: index None (-1); a normal flag becomes not_found (certain cleared); then the first slot with
     the largest current score strictly above 0.25 (in practice slot 0) is selected, flag normal.
  """
  here = cand.valid & (state.object_ids == state.selected_object_id)
  found = jnp.any(here)
  index = jnp.argmax(here).astype(jnp.int32)
  certain = jnp.where(found & (state.max_scores[index] > CERTAIN_SCORE), True, state.selection_certain)
  # Step 3: prefer the top candidate.
  switch = found & (index != 0) & cand.valid[0] & (state.max_scores[0] > state.max_scores[index])
  index = jnp.where(switch, 0, index)
  object_id = jnp.where(switch, state.object_ids[0], state.selected_object_id)
  # Step 4: lost, then reselect by the current score alone.
  was_normal = state.flag == FLAG_NORMAL
  flag = jnp.where(found, FLAG_NORMAL, jnp.where(was_normal, FLAG_NOT_FOUND, state.flag))
  certain = jnp.where(~found & was_normal, False, certain)
  eligible = cand.valid & (cand.scores > RESELECT_SCORE)
  best = jnp.argmax(jnp.where(eligible, cand.scores, -jnp.inf)).astype(jnp.int32)  # first index wins ties
  reselect = ~found & jnp.any(eligible)
  index = jnp.where(found, index, jnp.where(reselect, best, -1))
  object_id = jnp.where(reselect, state.object_ids[best], object_id)
  flag = jnp.where(reselect, FLAG_NORMAL, flag)
  return state.replace(flag=flag.astype(jnp.int32), selected_index=index.astype(jnp.int32),
                       selected_object_id=object_id.astype(jnp.int32), selection_certain=certain)


def _tree_where(pred: jax.Array, a, b):
  return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def boost_score(score: Array, state: CandidateState) -> jax.Array:
  """Presence score / sample certainty rule (keeptrack.md §1 step 5, 4.6): `max(s, sqrt(s))` when there is no
  collection or the selected object id is 0, else `s`.

  For s < 0 the reference's sqrt is NaN and keeptrack.md does not say which max it takes; this returns s (what
  Python's built-in max(s, nan) returns), never NaN.
  """
  score = jnp.asarray(score)
  boost = ~state.has_collection | (state.selected_object_id == 0)
  boosted = jnp.maximum(score, jnp.sqrt(jnp.maximum(score, 0)))
  return jnp.where(boost & (score > 0), boosted, score)


def update(state: CandidateState, cand: FrameCandidates, matches1: Array, match_scores1: Array, frame_num: Array,
           settings: TcmSettings) -> tuple[CandidateState, Selection]:
  """One tracked frame of the candidate logic (keeptrack.md §1 steps 4.1-4.6 and 5), in the reference's order.

  4.1 map max < local_max_candidate_score_th: fallback, the state is returned unchanged (DiMP localises;
      the stale previous candidates force a reset on the next frame, quirk 7.11).
  4.3 no previous candidates of frame_num - 1: reset (DiMP localises), the collection is discarded.
  4.4 consecutive frames: the one-candidate shortcut replaces the matches by "0 <-> 0 with probability 1",
      then `_reassign` and `_select` (keeptrack.md §4.2) update the collection.
  4.5 no collection left (reset): a new one from the current candidates, "certain" if frame_num < 10.
  4.6 the current candidates are stored as the previous ones (frame number, descriptors, coords, scores).
  5   presence score = map max, boosted (`boost_score`) by the updated state.

  Args:
    state: `CandidateState` after the previous frame.
    cand: this frame's `FrameCandidates` (K slots, same K and C as the state).
    matches1: `[K]` int, for each current candidate the matched previous slot, -1 if none (ignored unless
      `needs_matching`).
    match_scores1: `[K]` the matches' probabilities, scaled by (M + N) (keeptrack.md §3.7).
    frame_num: `[]` int, this frame's number (the init frame is 1, the first tracked frame 2).
    settings: `TcmSettings` (static; only `local_max_candidate_score_th` is read).

  Returns:
    (new state, `Selection`).
  """
  frame_num = jnp.asarray(frame_num, jnp.int32)
  fallback, consecutive, shortcut = _frame_branches(state, cand, frame_num, settings)
  k = cand.valid.shape[0]
  slot0 = jnp.arange(k) == 0
  matches1 = jnp.where(shortcut, jnp.where(slot0, 0, -1), jnp.asarray(matches1, jnp.int32))
  match_scores1 = jnp.where(shortcut, jnp.where(slot0, 1.0, 0.0), jnp.asarray(match_scores1, cand.scores.dtype))
  matched_state = _select(_reassign(state, cand, matches1, match_scores1), cand)
  updated = _tree_where(consecutive, matched_state, _new_collection(state, cand, frame_num))
  updated = updated.replace(has_previous=jnp.asarray(True), prev_frame_num=frame_num,
                            prev_descriptors=cand.descriptors.astype(state.prev_descriptors.dtype),
                            prev_image_coords=cand.image_coords.astype(state.prev_image_coords.dtype),
                            prev_scores=cand.scores.astype(state.prev_scores.dtype), valid=cand.valid)
  new_state = _tree_where(fallback, state, updated)
  selection = Selection(
      index=new_state.selected_index, object_id=new_state.selected_object_id, flag=new_state.flag,
      use_dimp=fallback | ~consecutive, fallback=fallback, reset=~fallback & ~consecutive,
      shortcut=~fallback & shortcut, matched=~fallback & consecutive & ~shortcut,
      presence_score=boost_score(cand.map_max, new_state))
  return new_state, selection


def candidate_translation(cand: FrameCandidates, selection: Selection, sample_scale: Array,
                          settings: TcmSettings) -> jax.Array:
  """The selected candidate's offset from the sample centre (keeptrack.md §1 step 4.4), full-image pixels.

  `(c - (S - 1) / 2) * (image_sample_size / (S - 1)) * sample_scale` for the cell c = (row, col) of the
  selected slot; 0 when no candidate is selected (the reference's junk value is never used).

  Args:
    cand: this frame's candidates.
    selection: `update`'s selection.
    sample_scale: `[]` full-image pixels per patch pixel of the search patch.
    settings: `TcmSettings` (image_sample_size gives S).

  Returns:
    `[2]` (y, x) translation; the tracker's new position is sample_pos + translation.
  """
  s1 = settings.score_size - 1
  cell = cand.coords[jnp.maximum(selection.index, 0)].astype(default_float())
  offset = (cell - s1 / 2.0) * (settings.image_sample_size / s1) * jnp.asarray(sample_scale, default_float())
  return jnp.where(selection.index >= 0, offset, jnp.zeros_like(offset))
