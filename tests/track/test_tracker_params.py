"""Tracker settings: presets (design.md §5.1 table), overrides, validation errors."""

from __future__ import annotations

import dataclasses

import pytest

from cia_jax.track import params


def test_presets_follow_the_spec_table():
  p = params.PRESETS
  assert set(p) == {"dimp18", "superdimp", "cia18", "cia50"}
  d = p["dimp18"]
  assert (d.image_sample_size, d.search_area_scale, d.border_mode) == (288, 5.0, "replicate")
  assert p["dimp18"].patch_max_scale_change is None
  for name in ("superdimp", "cia18", "cia50"):  # design.md §D6: CIA18 tracks at 352 / 6 / inside_major.
    s = p[name]
    assert (s.image_sample_size, s.search_area_scale, s.border_mode, s.patch_max_scale_change) == (
        352, 6.0, "inside_major", 1.5)
  for name, space, iters, step in [("dimp18", "default", 5, 1.0), ("cia18", "default", 5, 1.0),
                                   ("superdimp", "relative", 10, 2.5e-3), ("cia50", "relative", 10, 2.5e-3)]:
    s = p[name]
    assert (s.box_refinement_space, s.box_refinement_iter, s.box_refinement_step_length) == (space, iters, step)
  s = p["cia50"]
  assert (s.net_opt_iter, s.net_opt_update_iter, s.net_opt_hn_iter, s.train_skipping) == (10, 2, 1, 20)
  assert (s.learning_rate, s.hard_negative_learning_rate, s.init_samples_minimum_weight) == (0.01, 0.02, 0.25)
  assert s.num_init_samples == 15 and s.sample_memory_size == 50
  assert p["cia18"].use_upper_classifier and not p["cia50"].use_upper_classifier
  hash(s)  # static jit argument


def test_overrides_parse_by_field_type():
  s = params.apply_overrides(params.get_settings("cia18"), [
      "image_sample_size=64", "search_area_scale=4", "deterministic=true", "patch_max_scale_change=none",
      "aug_rotate=(5, -5)", "aug_blur=[[1, 2]]", "border_mode=replicate", "uncertain_threshold=-inf"])
  assert s.image_sample_size == 64 and isinstance(s.image_sample_size, int)
  assert s.search_area_scale == 4.0 and s.deterministic is True and s.patch_max_scale_change is None
  assert s.aug_rotate == (5.0, -5.0) and s.aug_blur == ((1.0, 2.0),) and s.border_mode == "replicate"
  assert s.num_init_samples == 1 + 4 + 1 + 1 + 2 + 2
  hash(s)
  assert params.get_settings("dimp18", image_sample_size=96).image_sample_size == 96


def test_bad_settings_name_the_key():
  with pytest.raises(ValueError, match="unknown tracker setting.*'imag_sample_size'.*image_sample_size"):
    params.apply_overrides(params.PRESETS["cia18"], ["imag_sample_size=64"])
  with pytest.raises(ValueError, match="net_opt_iter"):
    params.apply_overrides(params.PRESETS["cia18"], ["net_opt_iter=ten"])
  with pytest.raises(ValueError, match="key=value"):
    params.apply_overrides(params.PRESETS["cia18"], ["deterministic"])
  with pytest.raises(ValueError, match="unknown tracker preset"):
    params.get_settings("atom")
  with pytest.raises(ValueError, match="border_mode"):
    params.get_settings("cia18", border_mode="reflect")
  with pytest.raises(ValueError, match="image_sample_size"):
    params.get_settings("cia18", image_sample_size=100)
  with pytest.raises(ValueError, match="scale_factors"):
    params.get_settings("cia18", scale_factors=(0.98, 1.0, 1.02))
  with pytest.raises(dataclasses.FrozenInstanceError):
    params.PRESETS["cia18"].learning_rate = 0.5  # type: ignore[misc]
