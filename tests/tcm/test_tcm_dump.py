"""`cia-jax tcm-dump` (cia_jax.tcm.dump, keeptrack.md §5.1): label cell, frame states, the dump of a scripted tracker,
and the CLI on synthetic sequences (one unreadable sequence, resume)."""

from __future__ import annotations

import json
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax import cli
from cia_jax.data.datasets.base import Sequence
from cia_jax.tcm import dump
from cia_jax.track import params, runner

TINY = dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)


def np_label_argmax(center_yx, sample_pos, sample_scale, crop_px, f, sigma=0.25 * 22 / 22):
  """The DiMP label (a 2-D Gaussian on the grid -(f-1)/2 + i, i < f + 1, centred at f d / (scale crop) + 0.5) and its
  first argmax, as in the reference's get_label_function + max2d."""
  c = f * (np.asarray(center_yx) - np.asarray(sample_pos)) / (sample_scale * crop_px) + 0.5
  k = -(f - 1) / 2 + np.arange(f + 1)
  label = np.exp(-0.5 * ((k[:, None] - c[0]) ** 2 + (k[None, :] - c[1]) ** 2) / sigma ** 2)
  return np.array(np.unravel_index(np.argmax(label), label.shape))


def test_anno_cell_is_the_label_argmax():
  rng = np.random.default_rng(0)
  for _ in range(200):
    pos, scale = rng.uniform(100, 300, 2), rng.uniform(0.5, 3)
    center = pos + rng.uniform(-250, 250, 2) * scale  # inside and outside the crop
    want = np_label_argmax(center, pos, scale, 352, 22)
    np.testing.assert_array_equal(dump.anno_cell(center, pos, scale, 352, 23), want)


@pytest.mark.parametrize("scores, coords, state", [
    ([0.9, 0.3], [[5, 5], [15, 15]], "H"),
    ([0.2, 0.1], [[5, 5], [15, 15]], "G"),
    ([0.9, 0.3], [[15, 15], [6, 6]], "K"),  # the target (nearest, 1.4 cells) is candidate 1
    ([0.9, 0.3], [[12, 5], [15, 15]], "J"),  # nearest 7 cells away
    ([0.9, 0.3], [[5, 5], [8, 5]], None),  # second nearest only 3 cells away: ambiguous
    ([0.9], [[5, 5]], None),  # one candidate
    ([0.9, 0.3], [[8, 5], [15, 15]], None),  # nearest 2 < d <= 4
    ([0.9, 0.3], [[7, 5], [15, 15]], "H"),  # nearest exactly 2: near
])
def test_frame_states(scores, coords, state):
  assert dump.frame_state(np.array(scores), np.array(coords), np.array([5, 5]), True) == state
  assert dump.frame_state(np.array(scores), np.array(coords), np.array([5, 5]), False) is None


class FakeState(NamedTuple):
  pos_yx: jnp.ndarray
  target_scale: jnp.ndarray
  frame: int


def scripted_tracker(maps):
  """init / step of a tracker that stays put (crop = the whole 352 x 352 image) and returns `maps[i]` on frame i."""
  def init(model, image, box, key):
    return FakeState(jnp.array([175.5, 175.5]), jnp.float32(1.0), 0)

  def step(model, state, image, key):
    i = state.frame + 1
    return state._replace(frame=i), {"score_map": jnp.asarray(maps[i])}
  return {"init": init, "step": step}


def peaks(cells_scores):
  m = np.zeros((23, 23), np.float32)
  for (r, c), s in cells_scores:
    m[r, c] = s
  return m


def test_dump_of_a_scripted_tracker(monkeypatch):
  # GT cell (r, c) <-> centre 175.5 + 16 (r - 11), c likewise: crop [0, 352), scale 1, F = 22.
  gt_cells = [(11, 11), (11, 11), (11, 12), (11, 12), (3, 3), (11, 12)]
  boxes = np.array([[175.5 + 16 * (c - 11) - 16, 175.5 + 16 * (r - 11) - 16, 33, 33] for r, c in gt_cells])
  maps = [None,
          peaks([((11, 11), 0.8), ((20, 20), 0.4)]),  # 1: H
          peaks([((11, 12), 0.9), ((2, 2), 0.5), ((2, 20), 0.06)]),  # 2: H (3 candidates)
          peaks([((11, 12), 0.5), ((20, 2), 0.7)]),  # 3: K
          peaks([((11, 12), 0.5), ((20, 2), 0.7)]),  # 4: J (target at (3, 3))
          peaks([((11, 12), 0.9), ((11, 20), 0.04)])]  # 5: one candidate above 0.05: no state
  monkeypatch.setattr(runner, "tracker_fns", lambda settings: scripted_tracker(maps))
  seq = Sequence(name="s", frame_paths=[f"/x/{i}.jpg" for i in range(6)], boxes=boxes, visible=np.ones(6, bool))
  settings = params.get_settings("superdimp", image_sample_size=352, border_mode="replicate")
  entry = dump.dump_sequence(None, settings, seq, frames=[np.zeros((352, 352, 3), np.uint8)] * 6)
  assert entry["index"] == [1, 2, 3, 4]
  assert entry["frame_states"] == {"H": [1, 2], "K": [3], "J": [4]}
  assert entry["subseq_states"] == {"HH": [1], "HK": [2]}
  assert entry["target_anno_coord"] == [[11, 11], [11, 12], [11, 12], [3, 3]]
  # superdimp's upstream crop rule puts tl on a half pixel: crop [-0.5, 352), box w = x2 - x1 - 1.
  assert entry["search_area_box"][0] == [-0.5, -0.5, 351.5, 351.5]
  assert entry["target_candidate_coords"][1] == [[11, 12], [2, 2], [2, 20]]
  np.testing.assert_allclose(entry["target_candidate_scores"][1], [0.9, 0.5, 0.06], rtol=1e-6)


@pytest.mark.slow  # compiles the tiny tracker's init / step
def test_cli_isolates_a_bad_sequence_and_resumes(tmp_path, monkeypatch, capsys):
  from cia_jax.data.synthetic import generate  # pylint: disable=g-import-not-at-top

  root = tmp_path / "seqs"
  names = generate(str(root), "folder", num_sequences=3, num_frames=3, image_size=(96, 80), seed=3)
  bad = sorted((root / names[1]).glob("*.jpg"))[2]
  bad.write_bytes(b"not a jpeg")
  monkeypatch.setattr(runner, "model_kwargs", lambda name: dict(TINY))
  out = tmp_path / "cand.json"
  argv = ["--compilation-cache", "none", "tcm-dump", "--random-weights", "--dataset", "folder", "--root", str(root),
          "--out", str(out), "--set", "image_sample_size=64", "--set", "search_area_scale=4.0",
          "--set", "box_refinement_iter=1"]
  assert cli.main(argv) == 1
  data = json.loads(out.read_text())
  assert sorted(data) == sorted([names[0], names[2]])
  for entry in data.values():
    assert set(dump.FRAME_KEYS) <= set(entry) and "frame_states" in entry and "subseq_states" in entry
  assert names[1] in capsys.readouterr().err
  bad.write_bytes(sorted((root / names[0]).glob("*.jpg"))[2].read_bytes())  # repaired: the rerun adds only it
  assert cli.main(argv) == 0
  assert "dumped 1 sequence(s), skipped 2" in capsys.readouterr().out
  assert sorted(json.loads(out.read_text())) == sorted(names)


def test_cli_refuses_a_tcm_tracker_and_a_single_frame(tmp_path, capsys):
  base = ["--compilation-cache", "none", "tcm-dump", "--random-weights", "--dataset", "folder", "--root",
          str(tmp_path), "--out", str(tmp_path / "c.json")]
  assert cli.main(base + ["--tracker", "keeptrack"]) == 2
  assert "uses target candidate matching" in capsys.readouterr().err
  assert cli.main(base + ["--max-frames", "1"]) == 2
  assert "--max-frames must be at least 2" in capsys.readouterr().err
