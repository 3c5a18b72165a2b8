"""Two trackers in two processes taking turns frame by frame (`compare_pytorch.py --speed --lockstep`).

A shared VM has slow spells of seconds to a minute (BENCHMARKS.md, "Capacity buckets"): runs of one tracker after
the other can land one of them in such a spell and move their ratio by a third. In lockstep, frame t of the
reference and frame t of ours run back to back, one process at a time (the other blocks on a pipe), so a spell
slows both alike and the ratio of their per-frame medians stays put.

The protocol is lines over the follower's stdin / stdout: the follower prints `READY` once set up (its tracker
initialised), then waits for `GO` before each frame and prints `DONE` after it, and after its last frame waits
for the leader to close the pipe before it goes on (saving, exiting) so that nothing of it runs beside the
leader's last frame; anything else it prints is ignored. Standard library only: the reference side imports this
in the torch venv.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterable, Iterator, Sequence, TextIO

READY = "lockstep: ready"
GO = "lockstep: go"
DONE = "lockstep: done"


class Follower:
  """The side that waits for its turn (the reference tracker's frame loop)."""

  def __init__(self, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout):
    self._in, self._out = stdin, stdout

  def _say(self, line: str) -> None:
    self._out.write(line + "\n")
    self._out.flush()

  def ready(self) -> None:
    self._say(READY)

  def wait_turn(self) -> None:
    """Blocks until the leader says GO; SystemExit when the leader has gone (its pipe closed)."""
    line = self._in.readline()
    if not line:
      raise SystemExit("lockstep: the leader closed the pipe before this follower's last frame")
    if line.strip() != GO:
      raise SystemExit(f"lockstep: expected {GO!r} from the leader, got {line.strip()!r}")

  def done(self) -> None:
    self._say(DONE)

  def wait_end(self) -> None:
    """Blocks until the leader closes the pipe (`Leader.finish`, after the leader's last frame); SystemExit when
    the leader asks for a frame more than this follower has."""
    for line in iter(self._in.readline, ""):
      if line.strip() == GO:
        raise SystemExit("lockstep: the leader asked for a frame after this follower's last one")


class Leader:
  """The side that hands out turns: starts the follower process and runs one follower frame per `turn()`.

  The follower's stderr goes to a temporary file (a full stderr pipe would stall it while we wait on stdout); its
  tail is in the error when the follower exits early. `gap_s`: an idle pause before and after each follower
  frame, outside both sides' timings: a process's worker threads stay busy for a moment after its frame, and
  without the pause our CIA18 frames right after the reference's took 84-86 ms against 77-78 ms with it
  (BENCHMARKS.md, "Lockstep").
  """

  def __init__(self, cmd: Sequence[str], env: dict | None = None, gap_s: float = 0.05):
    self.cmd = list(cmd)
    self.gap_s = gap_s
    self._err = tempfile.TemporaryFile(mode="w+")
    self._proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                  text=True, env=env, bufsize=1)
    self._expect(READY)

  def _expect(self, what: str) -> None:
    while True:
      line = self._proc.stdout.readline()
      if not line:
        raise RuntimeError(f"lockstep: the follower exited before {what!r} (status {self._proc.wait()}): "
                           f"{' '.join(self.cmd)}\n{self._stderr_tail()}")
      if line.strip() == what:
        return

  def _stderr_tail(self, chars: int = 4000) -> str:
    self._err.seek(0)
    return self._err.read()[-chars:]

  def turn(self) -> None:
    """The follower's next frame: GO, then wait for its DONE (with `gap_s` before and after)."""
    time.sleep(self.gap_s)
    try:
      self._proc.stdin.write(GO + "\n")
      self._proc.stdin.flush()
    except BrokenPipeError as e:
      raise RuntimeError(f"lockstep: the follower has exited: {' '.join(self.cmd)}\n{self._stderr_tail()}") from e
    self._expect(DONE)
    time.sleep(self.gap_s)

  def finish(self, timeout: float = 600.0) -> None:
    """Closes the follower's stdin and waits for it to exit; RuntimeError (with its stderr) unless it exits 0."""
    self._proc.stdin.close()
    status = self._proc.wait(timeout=timeout)
    self._proc.stdout.close()
    tail = self._stderr_tail()
    self._err.close()
    if status != 0:
      raise RuntimeError(f"lockstep: the follower failed (status {status}): {' '.join(self.cmd)}\n{tail}")

  def kill(self) -> None:
    """Stops the follower (after an error on the leader's side)."""
    if self._proc.poll() is None:
      self._proc.kill()
      self._proc.wait()
    self._err.close()


def interleave(frames: Iterable, turn: Callable[[], None], follower_frames: int,
               follower_first: bool) -> Iterator:
  """The leader's frames, with the follower's turns between them: with `follower_first`, follower frame t runs just
  before leader frame t, else just after it (run when the leader asks for frame t + 1, and the last one when the
  leader's frames are exhausted). Frame 0 (both sides' initialisation) is not a turn: follower frames 1 ..
  `follower_frames` - 1 are.

  Use it as the leader's frame source: a frame loop that takes its next frame only after the previous one has
  finished (`runner.track_sequence`) then alternates with the follower, one process running at a time. Exhaust
  the iterator after that loop (`for _ in it: pass`) to run the follower's frames still due.
  """
  turns = 0
  for t, frame in enumerate(frames):
    if t >= 1 and turns < follower_frames - 1 and (follower_first or t >= 2):
      turn()
      turns += 1
    yield frame
  while turns < follower_frames - 1:  # the follower's frames after the leader's last one
    turn()
    turns += 1
