"""The deterministic weights and inputs of the KeepTrack golden fixture (NumPy only; shared by
`scripts/make_tcm_fixture.py`, which runs the torch reference on them, and `tests/interop/test_keeptrack_conversion.py`,
which rebuilds the same state dict without storing its 27 MB)."""

from __future__ import annotations

import numpy as np

B, F, M, N = 2, 3, 3, 4  # batch, layer3 side (score map F + 1), candidates in set 0 / set 1
IMAGE_HW = (360.0, 480.0)


def pseudo_values(shape, salt: float) -> np.ndarray:
  """float32 values in [-1, 1): fract(sin(12.9898 i + salt) * 43758.5453) * 2 - 1 over the flat index i."""
  i = np.arange(int(np.prod(shape)), dtype=np.float64)
  v = np.sin(12.9898 * i + salt) * 43758.5453
  return ((v - np.floor(v)) * 2.0 - 1.0).reshape(shape).astype(np.float32)


def tensor_value(index: int, key: str, shape) -> np.ndarray:
  """The fixture's value of state-dict entry number `index` (fan-in-scaled weights, BN stats in a sane range)."""
  v = pseudo_values(shape, 0.731 * index + 0.1)
  if key.endswith("running_var"):
    return (1.0 + 0.5 * v).astype(np.float32)
  if key.endswith("running_mean") or key.endswith("bias"):
    return (0.1 * v).astype(np.float32)
  if key.endswith("bin_score"):
    return np.full(shape, -1.0, np.float32)
  fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
  return (v * np.sqrt(3.0 / fan_in)).astype(np.float32)


def inputs() -> dict:
  """The candidate sets of the fixture (shared by the script and the test)."""
  cells0 = np.array([[[0, 0], [1, 3], [3, 2]], [[2, 2], [0, 1], [3, 3]]], np.int64)
  cells1 = np.array([[[0, 1], [1, 2], [3, 3], [2, 0]], [[2, 1], [1, 1], [3, 0], [0, 3]]], np.int64)
  coords0 = (pseudo_values((B, M, 2), 3.3) * 0.5 + 0.5) * np.array(IMAGE_HW, np.float32)
  coords1 = (pseudo_values((B, N, 2), 4.4) * 0.5 + 0.5) * np.array(IMAGE_HW, np.float32)
  scores0 = np.sort(pseudo_values((B, M), 5.5) * 0.45 + 0.55)[:, ::-1].copy()
  scores1 = np.sort(pseudo_values((B, N), 6.6) * 0.45 + 0.55)[:, ::-1].copy()
  return dict(layer3_0=pseudo_values((B, 1024, F, F), 1.1), layer3_1=pseudo_values((B, 1024, F, F), 2.2),
              cells0=cells0, cells1=cells1, coords0=coords0.astype(np.float32), coords1=coords1.astype(np.float32),
              scores0=scores0.astype(np.float32), scores1=scores1.astype(np.float32),
              image_hw=np.array(IMAGE_HW, np.float32))


def loss_labels() -> dict:
  """Labels for the fixture's `[B, M + 1, N + 1]` assignments (B = 2, M = 3, N = 4): a positive pair, dustbin
  negatives (-1) and ignored slots (-2) in each sample."""
  gt = np.zeros((B, M, N), np.float32)
  gt[0, 0, 1], gt[0, 2, 3], gt[1, 1, 0] = 1, 1, 1
  m0 = np.array([[1, -1, 3], [-2, 0, -1]], np.int64)
  m1 = np.array([[-2, 0, -1, 2], [1, -1, -2, -1]], np.int64)
  return dict(gt_assignment=gt, gt_matches0=m0, gt_matches1=m1)
