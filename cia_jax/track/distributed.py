"""A benchmark run over several hosts (`cia-jax track --distributed` / `--coordinator-address ...`).

Every process tracks its own share of the sequences on its own local devices (no collective inside the
tracking: hosts never wait for each other until the end) and writes its own result files. The share is
decided the same way on every process from the sequence list alone (`assign_processes`: longest sequences
first, each to the process with the fewest frames so far), never from what is already finished, so a rerun
after a kill gives every process the same sequences and each skips the ones it finished. At the end the
processes exchange their summaries (`gather`, through the coordinator's key-value store) and process 0 writes
the run summary (`<results>/run_summary.json`) and the failure list.
"""

from __future__ import annotations

import heapq
import itertools
import json
from typing import Any, Sequence as SequenceT

import jax
from jax._src import distributed as jax_distributed  # the key-value store has no public API (jax 0.10)

SUMMARY_FILE = "run_summary.json"
GATHER_TIMEOUT_MS = 48 * 3600 * 1000  # how long a process that finished waits for the slowest one
_GATHERS = itertools.count()


def assign_processes(lengths: SequenceT[int], num_processes: int) -> list[list[int]]:
  """Indices of the sequences each process tracks: longest first (ties: lower index), each to the process with
  the fewest frames so far (ties: lower process); within a process the indices keep that order."""
  load = [(0, p) for p in range(num_processes)]
  heapq.heapify(load)
  shares: list[list[int]] = [[] for _ in range(num_processes)]
  for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
    frames, p = heapq.heappop(load)
    shares[p].append(i)
    heapq.heappush(load, (frames + lengths[i], p))
  return shares


def gather(value: Any) -> list[Any]:
  """The JSON-able `value` of every process, in process order (just `[value]` alone).

  Through the `jax.distributed` key-value store, not a collective: processes end their shares minutes or hours
  apart, and a collective's set-up times out after 30 s (gloo on CPU). Every process must call it the same
  number of times.
  """
  if jax.process_count() == 1:
    return [value]
  client = jax_distributed.global_state.client
  tag = f"cia_jax/track/gather/{next(_GATHERS)}"
  client.key_value_set(f"{tag}/{jax.process_index()}", json.dumps(value))
  return [json.loads(client.blocking_key_value_get(f"{tag}/{p}", GATHER_TIMEOUT_MS))
          for p in range(jax.process_count())]
