"""`scripts/lockstep.py`: the turn order of `interleave`, and two real processes taking turns over pipes."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
import textwrap
import time

import pytest

_SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / "scripts"
_spec = importlib.util.spec_from_file_location("lockstep", _SCRIPTS / "lockstep.py")
lockstep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lockstep)


def _order(n_frames: int, follower_first: bool) -> list[str]:
  """Who runs when: 'F<t>' for follower frame t, 'L<t>' for leader frame t, as a leader loop consumes them."""
  log = []
  turns = lockstep.interleave(range(n_frames), lambda: log.append(f"F{sum(e[0] == 'F' for e in log) + 1}"),
                              n_frames, follower_first)
  for t in turns:  # the leader's frame loop: frame t runs after it is taken
    log.append(f"L{t}")
    if t == n_frames - 1:
      break
  for _ in turns:  # then the follower's frames still due
    pass
  return log


def test_interleave_alternates_frame_by_frame():
  assert _order(4, follower_first=True) == ["L0", "F1", "L1", "F2", "L2", "F3", "L3"]
  assert _order(4, follower_first=False) == ["L0", "L1", "F1", "L2", "F2", "L3", "F3"]
  assert _order(1, follower_first=False) == ["L0"]  # the initialisation only: no turn


_FOLLOWER = textwrap.dedent("""
  import json, sys, time
  sys.path.insert(0, sys.argv[1])
  import lockstep
  f = lockstep.Follower()
  print("setting up")  # not a protocol line: the leader skips it
  f.ready()
  spans = []
  for t in range(int(sys.argv[2])):
    f.wait_turn()
    t0 = time.perf_counter()
    time.sleep(0.03)
    spans.append((t0, time.perf_counter()))
    f.done()
  f.wait_end()
  spans.append((time.perf_counter(), time.perf_counter()))  # when it went on after its last frame
  if len(sys.argv) > 4:
    sys.exit("follower: " + sys.argv[4])
  with open(sys.argv[3], "w") as out:
    json.dump(spans, out)
""")


def _spawn(tmp_path, turns: int, fail: str | None = None):
  script = tmp_path / "follower.py"
  script.write_text(_FOLLOWER)
  spans = tmp_path / "spans.txt"
  cmd = [sys.executable, str(script), str(_SCRIPTS), str(turns), str(spans)] + ([fail] if fail else [])
  return lockstep.Leader(cmd), spans


def test_leader_and_follower_processes_never_run_at_once(tmp_path):
  n = 5
  leader, spans_file = _spawn(tmp_path, n - 1)
  mine = []
  turns = lockstep.interleave(range(n), leader.turn, n, follower_first=True)
  for _ in turns:
    t0 = time.perf_counter()
    time.sleep(0.02)
    mine.append((t0, time.perf_counter()))
    if len(mine) == n:
      break
  for _ in turns:
    pass
  leader.finish()
  theirs = json.loads(spans_file.read_text())
  after = theirs.pop()
  assert after[0] >= mine[-1][1]  # the follower went on only after the leader's last frame
  assert len(theirs) == n - 1
  spans = sorted([("L", *s) for s in mine] + [("F", *s) for s in theirs], key=lambda s: s[1])
  assert [s[0] for s in spans] == ["L"] + ["F", "L"] * (n - 1)  # strictly alternating (perf_counter is system-wide)
  assert all(a[2] <= b[1] for a, b in zip(spans, spans[1:]))  # no overlap


def test_a_follower_that_fails_is_reported_with_its_stderr(tmp_path):
  leader, _ = _spawn(tmp_path, 1, fail="broken reference")
  leader.turn()
  with pytest.raises(RuntimeError, match="broken reference"):
    leader.finish()
  leader, _ = _spawn(tmp_path, 1)
  leader.turn()
  with pytest.raises(RuntimeError, match="follower (has exited|exited before 'lockstep: done')"):
    leader.turn()  # the follower had one frame only
  leader.kill()
