"""`cia-jax track --video`: a video written by cv2 and an image folder, tracked by a stand-in tracker (the real
tracker is tested elsewhere; here the frames, the result files, the overlay and the CLI are)."""

import os

import cv2
import numpy as np
import pytest

from cia_jax import cli
from cia_jax.track import runner
from cia_jax.track import video

W, H, N, SIDE = 96, 64, 12, 16


def _truth(i):
  return np.array([8.0 + 5 * i, 20.0 + i, SIDE, SIDE])


def _frame(i):
  """BGR frame with a white square at `_truth(i)` and a red bar in the corner (checks the RGB order)."""
  img = np.zeros((H, W, 3), np.uint8)
  x, y, w, h = _truth(i).astype(int)
  img[y:y + h, x:x + w] = 255
  img[:4, :8] = (0, 0, 255)
  return img


def _write_video(path):
  fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.endswith(".avi") else "mp4v"))
  writer = cv2.VideoWriter(path, fourcc, 10.0, (W, H))
  assert writer.isOpened()
  for i in range(N):
    writer.write(_frame(i))
  writer.release()


def _fake_fns():
  """init / step that box the bright pixels, so the boxes show the frames arrive in order, decoded, in RGB."""

  def init(model, image, box, key):
    assert image.shape == (H, W, 3) and image[1, 1, 0] > 200 > image[1, 1, 2]  # RGB: the red bar is red
    return {"n": 0}

  def step(model, state, image, key):
    ys, xs = np.nonzero(image[8:].min(axis=2) > 128)
    box = np.array([xs.min(), ys.min() + 8, xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], np.float32)
    return {"n": state["n"] + 1}, {"box_xywh": box, "max_score": np.float32(0.75), "flag": np.int32(state["n"] % 4)}

  return {"init": init, "step": step}


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_video_file_results_and_overlay(tmp_path, ext):
  clip = str(tmp_path / f"clip{ext}")
  _write_video(clip)
  out = str(tmp_path / f"overlay{ext}")
  res = video.track_video(None, None, clip, _truth(0), str(tmp_path / "res"), out=out, fns=_fake_fns())
  assert res.name == "clip" and not res.interrupted
  boxes = np.loadtxt(res.box_path, delimiter=",")
  assert boxes.shape == (N, 4) and np.loadtxt(res.time_path).shape == (N,)
  np.testing.assert_array_equal(boxes[0], _truth(0))  # frame 0: the initial box
  np.testing.assert_allclose(boxes[1:], [_truth(i) for i in range(1, N)], atol=2.0)  # lossy codec
  assert np.isnan(res.scores[0]) and (res.scores[1:] == 0.75).all() and res.flags.tolist()[:3] == [-1, 0, 1]
  cap = cv2.VideoCapture(out)
  frames = []
  while True:
    ok, frame = cap.read()
    if not ok:
      break
    frames.append(frame)
  assert len(frames) == N and frames[0].shape == (H, W, 3)
  # Frame 1 (flag normal): the box outline is drawn in green (BGR) on the black background left of the square.
  x, y = _truth(1)[:2].astype(int)
  assert frames[1][y + SIDE // 2, x, 1] > 120 and frames[1][y + SIDE // 2, x, 2] < 120


def test_image_folder_and_max_frames(tmp_path):
  folder = tmp_path / "walk"
  os.makedirs(folder)
  for i in range(N):
    cv2.imwrite(str(folder / f"img{i + 1}.png"), _frame(i))  # natural order: img2 before img10
  res = video.track_video(None, None, str(folder), _truth(0), str(tmp_path / "res"), max_frames=11,
                          fns=_fake_fns())
  assert res.name == "walk" and res.box_path == str(tmp_path / "res" / "walk.txt") and res.overlay is None
  np.testing.assert_array_equal(res.boxes[1:], [_truth(i) for i in range(1, 11)])  # PNG: exact


def test_errors_name_the_problem(tmp_path):
  clip = str(tmp_path / "c.avi")
  _write_video(clip)
  for text in ("1,2,3", "1,2,0,4", "a,b,c,d", "1,2,nan,4"):
    with pytest.raises(ValueError, match="--init-box: expected x,y,w,h"):
      video.parse_box(text)
  assert video.parse_box(" 1, 2.5,3,4").tolist() == [1.0, 2.5, 3.0, 4.0]
  with pytest.raises(ValueError, match="lies outside the first frame"):
    video.track_video(None, None, clip, np.array([200.0, 10, 5, 5]), str(tmp_path / "r"), fns=_fake_fns())
  with pytest.raises(FileNotFoundError, match="no such file, folder or camera index"):
    video.open_source(str(tmp_path / "nothing.mp4"))
  junk = tmp_path / "junk.mp4"
  junk.write_bytes(b"not a video")
  with pytest.raises(ValueError, match="OpenCV cannot decode"):
    video.open_source(str(junk))


def test_cli(tmp_path, monkeypatch, capsys):
  clip = str(tmp_path / "clip.avi")
  _write_video(clip)
  monkeypatch.setattr(runner, "load_model", lambda *a, **k: None)
  monkeypatch.setattr(video, "tracker_fns", lambda settings: _fake_fns())
  base = ["track", "--tracker", "dimp18", "--random-weights", "--results", str(tmp_path / "res")]
  assert cli.main(base + ["--video", clip, "--init-box", "8,20,16,16", "--out", str(tmp_path / "o.avi")]) == 0
  assert f"{N} frames tracked: {tmp_path / 'res' / 'clip.txt'}, overlay" in capsys.readouterr().out
  assert os.path.getsize(tmp_path / "o.avi") > 0
  for extra, message in ((["--video", clip], "--video needs --init-box"),
                         (["--video", clip, "--init-box", "1,2,3,4", "--dataset", "otb"], "do not apply"),
                         ([], "give --dataset and --root"), (["--init-box", "1,2,3,4"], "go with --video")):
    assert cli.main(base + extra) == 2
    assert message in capsys.readouterr().err
