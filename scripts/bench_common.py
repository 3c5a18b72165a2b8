"""Helpers shared by the `benchmark_*.py` scripts (imported from the scripts' own folder)."""

from __future__ import annotations


def flops_of(compiled) -> float:
  """FLOPs per call from `Compiled.cost_analysis()` (a dict, or a list of per-program dicts in older jax)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, dict):
    cost = [cost]
  return float(sum((c or {}).get("flops", 0.0) for c in cost or []))
