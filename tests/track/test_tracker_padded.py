"""Padded frames: a frame padded at the bottom / right (to a size bucket) with its true size passed as
`image_sz_yx` gives bit-identical boxes to the unpadded frame, in every border mode and for frames of
different sizes sharing one compiled padded program; and the uint8 frame is never converted as a whole."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.cia import CIANet, init_variables
from cia_jax.ops import crop
from cia_jax.track import params, tracker

from test_tracker import TINY, textured_sequence

BUCKET = (128, 144)  # every padded frame has this array shape: one compilation per settings


@pytest.fixture(scope="module")
def model():
  net = CIANet(**TINY)
  return tracker.TrackingModel(net=net, variables=init_variables(net, jax.random.key(0)))


def _settings(mode: str):
  # target 16-24 px, search area 5 -> crops of 80-120 px around 64 px patches: the inside modes shrink (clamped
  # at 1.5) and shift against the border, replicate mode pre-decimates (df = 2 when the crop exceeds 141 px
  # after scale growth) and pads; train_skipping=2 runs filter updates every other frame.
  return params.get_settings("cia18", image_sample_size=64, search_area_scale=5.0, box_refinement_iter=2,
                             train_skipping=2, border_mode=mode,
                             patch_max_scale_change=None if mode == "replicate" else 1.5)


def _pad(frames: np.ndarray, fill: int) -> np.ndarray:
  t, h, w, c = frames.shape
  out = np.full((t, *BUCKET, c), fill, np.uint8)
  out[:, :h, :w] = frames
  return out


def _track(model, settings, frames, box, image_sz=None):
  key = jax.random.key(3)
  state = tracker.init(model, settings, frames[0], jnp.asarray(box, jnp.float32), jax.random.fold_in(key, 0),
                       image_sz)
  boxes, scores = [], []
  for t in range(1, len(frames)):
    state, out = tracker.step(model, settings, state, frames[t], jax.random.fold_in(key, t))
    boxes.append(np.asarray(out["box_xywh"]))
    scores.append(np.asarray(out["max_score"]))
  return np.stack(boxes), np.stack(scores), state


# (mode, true frame sizes): inside_major (CIA's mode) on three sizes sharing one padded program; 'inside' (its
# own init-time shift from the image size) on one. 'replicate' uses the true size only inside `sample_patch`
# (covered by the crop test below for all modes). Targets start near the right / bottom border.
CASES = [("inside_major", [(96, 96), (80, 112), (120, 100)]), ("inside", [(90, 84)])]


@pytest.mark.parametrize("mode,sizes", CASES)
def test_padded_frames_give_the_boxes_of_unpadded_ones(model, mode, sizes):
  settings = _settings(mode)
  for i, (h, w) in enumerate(sizes):
    frames, gt = textured_sequence(4, size=max(h, w), target=16 + 4 * i, seed=i, start=(w - 50.0, h - 50.0))
    frames = np.ascontiguousarray(frames[:, :h, :w])
    ref_boxes, ref_scores, ref_state = _track(model, settings, frames, gt[0])
    for fill in (0, 255):  # whatever lies in the padding is never read
      boxes, scores, state = _track(model, settings, _pad(frames, fill), gt[0], np.asarray([h, w], np.int32))
      np.testing.assert_array_equal(boxes, ref_boxes)
      np.testing.assert_array_equal(scores, ref_scores)
      np.testing.assert_array_equal(np.asarray(state.memory.weights), np.asarray(ref_state.memory.weights))
      np.testing.assert_array_equal(np.asarray(state.image_sz_yx), [h, w])
  assert np.all(np.isfinite(ref_boxes)) and not np.allclose(ref_boxes[0], ref_boxes[-1])  # it really moved


@pytest.mark.parametrize("mode", crop.MODES)
def test_sample_patch_on_a_padded_frame_equals_the_unpadded_crop(mode):
  """One compiled crop (padded shape static, true size traced) against the unpadded crop, many sizes and
  positions across the border, df = 1..3."""
  rng = np.random.default_rng(0)
  padded = jax.jit(lambda im, p, s, hw: crop.sample_patch(im, p, s, (24, 24), mode, 1.5, image_sz_yx=hw))
  for h, w in [(60, 80), (41, 37), (100, 100)]:
    im = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    big = np.full((*BUCKET, 3), 255, np.uint8)
    big[:h, :w] = im
    unpadded = jax.jit(lambda im_, p, s: crop.sample_patch(im_, p, s, (24, 24), mode, 1.5))
    for pos, sz in [((h - 3.2, w - 1.7), 50.0), ((h / 2, w + 10.0), 90.0), ((5.5, w - 8.1), 75.0)]:
      pa, ca = padded(big, jnp.asarray(pos), jnp.asarray(sz), jnp.asarray([h, w]))
      pb, cb = unpadded(im, jnp.asarray(pos), jnp.asarray(sz))
      np.testing.assert_array_equal(np.asarray(ca), np.asarray(cb))
      np.testing.assert_array_equal(np.asarray(pa), np.asarray(pb))
      assert np.asarray(pa).max() <= im.max() and np.asarray(pa).min() >= im.min()


def test_step_does_not_convert_the_whole_frame(model):
  """Per-frame cost independent of the frame size: the compiled step has no float array of the frame's size
  (only the gathered patch pixels are converted)."""
  settings = _settings("inside_major")
  frames, gt = textured_sequence(2, size=96, target=16)
  big = _pad(frames, 0)
  state = tracker.init(model, settings, big[0], jnp.asarray(gt[0], jnp.float32), jax.random.key(0),
                       np.asarray([96, 96]))
  hlo = tracker.step.lower(model, settings, state, big[1], jax.random.key(1)).as_text()
  h, w = BUCKET
  assert f"tensor<{h}x{w}x3xui8>" in hlo  # the frame arrives as uint8 ...
  assert f"tensor<{h}x{w}x3xf32>" not in hlo and f"{h}x{w}x3xf64" not in hlo  # ... and is never converted
