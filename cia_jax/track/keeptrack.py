"""KeepTrack's target candidate matching (tcm) inside the jitted tracker step (keeptrack.md §1, 2, 4.3-4.6).

`cia_jax.track.tracker.step` runs this module's pieces when `settings.use_tcm` (presets keeptrack,
keeptrack_fast, cia50_tcm); with `use_tcm` False nothing here is traced and the DiMP / CIA step is unchanged.
Per tracked frame, after the score map (keeptrack.md §1):

    cand = extract_candidates(...)        local maxima (static capacity K), descriptors, image coords (keeptrack.md §2)
    matches = match_candidates(...)       the association net on (previous, current) under `lax.cond` (keeptrack.md §3)
    update(...)                           the candidate state machine (`track.candidates`, keeptrack.md §4.1-4.3)
    translation, flag                     DiMP's advanced localisation on fallback / reset frames, else the
                                          selected candidate's cell (keeptrack.md §1 step 4)
    track_scales(...)                     scale history, not-found counter, search-area rescaling (keeptrack.md §4.5)
    certainty_memory(...)                 certainty-weighted eviction / optimiser weights, in-place zeroing (4.6)

Where things live:
  * State: `TrackerState.tcm` is a `TcmState` (the candidate collection and previous candidates, the sample
    certainties `[M]`, the scale history and the not-found counter); None when `use_tcm` is off, so the DiMP
    state pytree is the one it always was.
  * Network: `TrackingModel.tcm_net` (static Flax module) and `TrackingModel.tcm_variables` (its
    `{'params', 'batch_stats'}`). The association net reads the base tracker's layer3 (keeptrack.md §0), so its
    descriptor conv has layer3's channel count (1024 for ResNet-50).
  * Matcher hook: `tcm_net` may be any Flax module with the methods of
    `cia_jax.models.tcm.TargetCandidateMatchingNet` used here, `descriptors(layer3 [1, F, F, C3], cells [1, K, 2],
    valid [1, K]) -> [1, K, D]` and `match(desc0, set0, desc1, set1) -> MatcherOutput` (only `matches1` and
    `match_scores1` are read), and an attribute `descriptor_dim` (D). A deterministic stand-in matcher can be
    injected this way.
  * Settings: the tcm fields of `TrackerSettings` (`use_tcm`, `local_max_candidate_score_th`,
    `candidate_capacity`, `use_certainty_for_weight_computation`, `certainty_for_weight_computation_ths`); the
    state machine's `TcmSettings` is built from them (`tcm_settings`), so `--set` overrides reach it.

Implemented (keeptrack.md section numbers): 1 steps 1-9 (one scale); 2.1-2.3; 4.1-4.3 (via
`cia_jax.track.candidates`); 4.4
(the tracker's `localize`); 4.5 search-area rescaling (history of 60 scales, n = clamp(counter, 2, 30));
4.6 boosted certainty (`boost_score` on the map max) for the memory and as `presence_score`, eviction by
argmin of certainty * weight over the non-initial slots, optimiser weights certainty * weight with
certainties < threshold set to 0 in place (7.6), 0 hard-negative iterations when certainty < threshold.

Choices where keeptrack.md is silent (documented, not verified against the reference):
  * The in-place zeroing of certainties < threshold happens on frames where the filter optimiser runs (the
    weights are built for that call); in between, a low certainty still counts as-is in the eviction.
  * The certainty weighting (eviction, optimiser weights, zeroing, hard-negative skip) all follow
    `use_certainty_for_weight_computation` (and need `use_tcm`: without it the flag has no effect); the scale
    history / rescaling and the boost follow `use_tcm`.
  * A not-found frame with an empty scale history leaves the scale unchanged.

Not implemented: more than one scale (`scale_factors`), candidate sets larger than `candidate_capacity`
(the reference keeps every local maximum), `output_not_found_box` with a special tcm meaning (the DiMP rule is
used), the debug visualisations.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from cia_jax.models.tcm import CandidateSet
from cia_jax.ops.candidates import candidate_image_coords, find_local_maxima
from cia_jax.ops.dtypes import default_float
from cia_jax.track.candidates import (CandidateState, FrameCandidates, Selection, TcmSettings, candidate_translation,
                                      frame_candidates, init_state, needs_matching, update)
from cia_jax.track.memory import SampleMemory
from cia_jax.track.params import TrackerSettings

SCALE_HISTORY = 60  # the reference's max_history of target scales (keeptrack.md §4.5)
MIN_SCALES, MAX_SCALES = 2, 30  # n = clamp(not-found counter, 2, 30) scales are averaged


@flax.struct.dataclass
class TcmState:
  """The KeepTrack part of the tracker state (fixed shapes; K candidate slots, M memory slots).

  Attributes:
    candidates: `CandidateState` (collection + previous-frame candidates, keeptrack.md §4.1).
    certainties: `[M]` certainty of each memory sample (1 for the initial ones; keeptrack.md §4.6).
    scale_history: `[60]` the last target scales of found frames, oldest first, newest last.
    num_scales: int32, scales ever recorded (the valid ones are the last min(num_scales, 60)).
    not_found_counter: int32, consecutive not-found frames.
  """

  candidates: CandidateState
  certainties: jax.Array
  scale_history: jax.Array
  num_scales: jax.Array
  not_found_counter: jax.Array


def tcm_settings(settings: TrackerSettings) -> TcmSettings:
  """The candidate state machine's `TcmSettings` from the tracker settings (every field of the same name)."""
  names = {f.name for f in dataclasses.fields(TcmSettings)}
  return TcmSettings(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name in names})


def init_tcm_state(settings: TrackerSettings, tcm_net: Any) -> TcmState:
  """The state after the init frame: no candidates, initial samples of certainty 1, empty history."""
  if tcm_net is None:
    raise ValueError("settings.use_tcm needs the association network: TrackingModel(tcm_net=..., tcm_variables=...)")
  dtype = default_float()
  certainties = jnp.zeros((settings.sample_memory_size,), dtype).at[:settings.num_init_samples].set(1.0)
  return TcmState(candidates=init_state(settings.candidate_capacity, int(tcm_net.descriptor_dim)),
                  certainties=certainties, scale_history=jnp.zeros((SCALE_HISTORY,), dtype),
                  num_scales=jnp.asarray(0, jnp.int32), not_found_counter=jnp.asarray(0, jnp.int32))


def search_area_box(patch_coord: jax.Array) -> jax.Array:
  """Search-area box `[4]` (x, y, w, h) = (x1, y1, x2 - x1 - 1, y2 - y1 - 1) of a crop (keeptrack.md §1 step 3).

  patch_coord: `[4]` (y1, x1, y2, x2) full-image pixels, end exclusive (`cia_jax.ops.crop.sample_patch`).
  """
  c = jnp.asarray(patch_coord, default_float())
  return jnp.stack([c[1], c[0], c[3] - c[1] - 1.0, c[2] - c[0] - 1.0])


def extract_candidates(tcm_net: Any, tcm_variables: Any, settings: TrackerSettings, scores: jax.Array,
                       layer3: jax.Array, patch_coord: jax.Array) -> FrameCandidates:
  """This frame's candidates (keeptrack.md §2): local maxima of the raw scores, descriptors, full-image positions.

  Args:
    tcm_net, tcm_variables: the association net (see the module docstring) and its variables.
    settings: tracker settings (threshold, capacity).
    scores: `[S, S]` raw score map.
    layer3: `[1, F, F, C3]` backbone layer3 of the search patch (S = F + 1).
    patch_coord: `[4]` (y1, x1, y2, x2) of the search patch.

  Returns:
    `FrameCandidates` with K = `settings.candidate_capacity` slots.
  """
  maxima = find_local_maxima(scores, settings.local_max_candidate_score_th, settings.candidate_capacity)
  desc = tcm_net.apply(tcm_variables, layer3, maxima.coords[None], maxima.valid[None],
                       method=lambda m, *a: m.descriptors(*a))[0]
  image_coords = candidate_image_coords(maxima.coords, search_area_box(patch_coord), scores.shape[0])
  return frame_candidates(maxima, desc, image_coords, jnp.max(scores))


def match_candidates(tcm_net: Any, tcm_variables: Any, state: CandidateState, cand: FrameCandidates,
                     image_hw: jax.Array, run: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The matcher's `matches1 [K]` (int32, -1 unmatched) and `match_scores1 [K]` for previous -> current.

  Runs the network only when `run` (`lax.cond`; under `vmap` both branches run and one is selected); otherwise
  returns no matches, which `update` ignores anyway.
  """
  k = cand.valid.shape[0]
  dtype = cand.scores.dtype

  def net(_):
    hw = jnp.asarray(image_hw, dtype)[None]
    set0 = CandidateSet(state.prev_image_coords[None], state.prev_scores[None], state.valid[None], hw)
    set1 = CandidateSet(cand.image_coords[None], cand.scores[None], cand.valid[None], hw)
    out = tcm_net.apply(tcm_variables, state.prev_descriptors[None], set0, cand.descriptors[None], set1,
                        method=lambda m, *a: m.match(*a))
    return out.matches1[0].astype(jnp.int32), out.match_scores1[0].astype(dtype)

  def skip(_):
    return jnp.full((k,), -1, jnp.int32), jnp.zeros((k,), dtype)

  return jax.lax.cond(run, net, skip, None)


def localize_by_candidates(tcm_net: Any, tcm_variables: Any, settings: TrackerSettings, state: TcmState,
                           scores: jax.Array, layer3: jax.Array, patch_coord: jax.Array, sample_scale: jax.Array,
                           image_hw: jax.Array, frame_num: jax.Array, dimp_translation: jax.Array,
                           dimp_flag: jax.Array) -> tuple[TcmState, Selection, jax.Array, jax.Array]:
  """Candidate-matching localisation (keeptrack.md §1 step 4-5).

  Args:
    tcm_net, tcm_variables: the association net and its variables.
    settings: tracker settings.
    state: the previous `TcmState`.
    scores: `[S, S]` raw scores; layer3: `[1, F, F, C3]`; patch_coord: `[4]` of the search patch.
    sample_scale: `[]` full-image pixels per patch pixel.
    image_hw: `[2]` frame size (H, W).
    frame_num: `[]` int32 this frame's number (first tracked frame: 2).
    dimp_translation, dimp_flag: DiMP's advanced localisation (`[2]` (y, x) pixels from the sample centre, int32),
      used on fallback and reset frames.

  Returns:
    (new state, `Selection`, translation `[2]` (y, x) full-image pixels from the sample centre, flag int32).
  """
  tcm = tcm_settings(settings)
  cand = extract_candidates(tcm_net, tcm_variables, settings, scores, layer3, patch_coord)
  run = needs_matching(state.candidates, cand, frame_num, tcm)
  matches1, match_scores1 = match_candidates(tcm_net, tcm_variables, state.candidates, cand, image_hw, run)
  candidates, sel = update(state.candidates, cand, matches1, match_scores1, frame_num, tcm)
  translation = jnp.where(sel.use_dimp, dimp_translation, candidate_translation(cand, sel, sample_scale, tcm))
  flag = jnp.where(sel.use_dimp, dimp_flag, sel.flag).astype(jnp.int32)
  return state.replace(candidates=candidates), sel, translation, flag


def rescaled_scale(history: jax.Array, num_scales: jax.Array, counter: jax.Array, current: jax.Array) -> jax.Array:
  """Search-area rescaling (keeptrack.md §4.5): the mean of the last n = clamp(counter, 2, 30) of the recorded scales
  (at most the last 60) that are >= the most recent one; `current` when nothing is recorded.

  Args:
    history: `[60]` scales, newest last; num_scales: int, how many were ever recorded.
    counter: int, the not-found counter (already incremented for this frame).
    current: `[]` the current target scale.
  """
  size = history.shape[0]
  valid = jnp.arange(size) >= size - jnp.minimum(num_scales, size)
  keep = valid & (history >= history[-1])
  n = jnp.clip(counter, MIN_SCALES, MAX_SCALES)
  from_end = jnp.cumsum(keep[::-1].astype(jnp.int32))[::-1]  # kept entries at or after each index
  keep = keep & (from_end <= n)
  mean = jnp.sum(jnp.where(keep, history, 0.0)) / jnp.maximum(jnp.sum(keep), 1)
  return jnp.where(num_scales > 0, mean, current).astype(current.dtype)


def track_scales(state: TcmState, target_scale: jax.Array, found: jax.Array) -> tuple[TcmState, jax.Array]:
  """Scale bookkeeping of one frame (keeptrack.md §1 step 7, 4.5).

  Found: the counter resets and the current (pre-refinement) `target_scale` is recorded. Not found: the
  counter grows and the returned scale is `rescaled_scale` of the history.

  Returns:
    (new state, the target scale to keep on a not-found frame `[]`).
  """
  history = jnp.where(found, jnp.concatenate([state.scale_history[1:], target_scale[None]]), state.scale_history)
  num_scales = state.num_scales + found.astype(jnp.int32)
  counter = jnp.where(found, 0, state.not_found_counter + 1).astype(jnp.int32)
  lost_scale = rescaled_scale(state.scale_history, state.num_scales, counter, target_scale)
  return state.replace(scale_history=history, num_scales=num_scales, not_found_counter=counter), lost_scale


def certainty_weighted(settings: TrackerSettings) -> bool:
  """Whether the certainty rules of keeptrack.md §4.6 apply: `use_tcm` and `use_certainty_for_weight_computation`."""
  return settings.use_tcm and settings.use_certainty_for_weight_computation


def hard_negative_iterations(settings: TrackerSettings, certainty: jax.Array):
  """Filter iterations on a hard-negative frame: `net_opt_hn_iter`, 0 below the certainty threshold (4.6)."""
  if not certainty_weighted(settings):
    return settings.net_opt_hn_iter
  return jnp.where(certainty < settings.certainty_for_weight_computation_ths, 0, settings.net_opt_hn_iter)


def certainty_memory(settings: TrackerSettings, state: TcmState, memory: SampleMemory, stored: jax.Array,
                     certainty: jax.Array, optimise: jax.Array) -> tuple[TcmState, SampleMemory]:
  """Records this frame's certainty and builds the optimiser's sample weights (keeptrack.md §4.6, 7.6).

  Args:
    settings: tracker settings.
    state: `TcmState` (certainties before this frame).
    memory: the memory after this frame's (possible) write; its `previous_replace_ind` is the written slot.
    stored: `[]` bool, a sample was written this frame.
    certainty: `[]` the (boosted) certainty of this frame's sample.
    optimise: `[]` bool, the filter optimiser runs this frame.

  Returns:
    (state with the new certainties, the memory to optimise on: weights = certainty * weight with certainties
    below the threshold as 0, when `certainty_weighted`; else `memory` itself).
  """
  slot = jnp.maximum(memory.previous_replace_ind, 0)
  certainties = jnp.where(stored, state.certainties.at[slot].set(certainty), state.certainties)
  if not certainty_weighted(settings):
    return state.replace(certainties=certainties), memory
  low = certainties < settings.certainty_for_weight_computation_ths
  weights = jnp.where(low, 0.0, certainties) * memory.weights
  certainties = jnp.where(optimise & low, 0.0, certainties)  # the reference zeroes its stored certainties
  return state.replace(certainties=certainties), memory.replace(weights=weights)


def init_tcm_variables(tcm_net: Any, layer3_channels: int, key: jax.Array, capacity: int = 2) -> dict:
  """Random `{'params', 'batch_stats'}` of an association net reading layer3 of `layer3_channels` channels.

  Variable shapes do not depend on the set sizes or the grid (jitted; one compilation).
  """
  layer3 = jnp.zeros((1, 4, 4, layer3_channels), jnp.float32)
  cells = jnp.zeros((1, capacity, 2), jnp.int32)
  cset = CandidateSet(jnp.zeros((1, capacity, 2), jnp.float32), jnp.ones((1, capacity), jnp.float32),
                      jnp.ones((1, capacity), bool), jnp.full((1, 2), 64.0, jnp.float32))
  variables = jax.jit(tcm_net.init)(key, layer3, cells, cset, layer3, cells, cset)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
