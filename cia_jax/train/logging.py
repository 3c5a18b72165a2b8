"""What a training run reports: TensorBoard scalars, `metrics.jsonl`, the console (process 0 only).

The console shows a tqdm bar: over the run's steps, or -- when the run has a wall-clock budget
(`config.time_limit_minutes`) -- over the seconds of that budget, with the step count and steps/s beside it,
so its percentage and ETA follow the clock that ends the run. Loss values are checked for non-finite values on
the host (`check_finite`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tqdm import tqdm

from cia_jax.data.pipeline import hide_gpus_from_tf

# Scalars checked for finiteness, in the order they are reported (the specific term before the total).
LOSS_TERMS = ("clf", "clf_init", "clf_final", "iou", "category", "contrastive", "total", "grad_norm")
# Console line of a logged step.
_CONSOLE_KEYS = ("total", "clf", "iou", "category", "contrastive", "grad_norm", "steps_per_sec")


def check_finite(step: int, metrics: Mapping[str, float]) -> None:
  """FloatingPointError naming the first non-finite loss term of `metrics` (host floats of step `step`)."""
  for k in LOSS_TERMS:
    if k in metrics and not np.isfinite(metrics[k]):
      raise FloatingPointError(f"non-finite loss term '{k}' = {metrics[k]} at step {step} (training stopped; "
                               f"no checkpoint written for this step). Other terms: "
                               + ", ".join(f"{n}={metrics[n]:.4g}" for n in LOSS_TERMS if n in metrics))


def format_metrics(step: int, total: int, metrics: Mapping[str, float]) -> str:
  """The console line of a logged step: `step 10/60: total 1.23 clf ...`."""
  return f"step {step}/{total}: " + " ".join(f"{k} {metrics[k]:.4g}" for k in _CONSOLE_KEYS if k in metrics)


class MetricsLogger:
  """TensorBoard event files and `metrics.jsonl` in the workdir, and the console bar; inactive (every method a
  no-op) on processes other than 0.

  Args:
    workdir: the run's folder.
    num_steps: the run's last step.
    start_step: the step it starts from (resumed runs).
    active: this process logs.
    budget_s: the wall-clock budget in seconds (None: the bar counts steps).
    t_begin: `time.monotonic()` at which the budget started.
  """

  def __init__(self, workdir: str, num_steps: int, start_step: int, active: bool, budget_s: float | None = None,
               t_begin: float | None = None):
    self.active = active
    self.num_steps = num_steps
    self.budget_s = budget_s
    self.t_begin = time.monotonic() if t_begin is None else t_begin
    if not active:
      return
    hide_gpus_from_tf()
    self.writer = tf.summary.create_file_writer(workdir)
    # `tf.summary.scalar` lives in the tensorboard package (not a dependency); this is the metadata it writes.
    self.metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    if budget_s is None:
      self.bar = tqdm(total=num_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    else:
      # Seconds since `t_begin` (compilation and setup included); smoothing 0 = the average rate of the bar, i.e.
      # 1 s/s, so "left" is the budget that remains.
      self.bar = tqdm(total=budget_s, initial=self._elapsed(), smoothing=0, desc="train", unit="s",
                      dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of "
                                                     "the time budget, {remaining} left{postfix}")

  def scalars(self, step: int, prefix: str, values: Mapping[str, float]) -> None:
    """Writes `values` as `<prefix>/<name>` at `step` to TensorBoard and as one line to metrics.jsonl."""
    if not self.active:
      return
    with self.writer.as_default():
      for k, v in values.items():
        tf.summary.write(f"{prefix}/{k}", tf.constant(float(v), tf.float32), step=step, metadata=self.metadata)
    self.writer.flush()
    self.jsonl.write(json.dumps({"step": step, "split": prefix, **{k: float(v) for k, v in values.items()}}) + "\n")
    self.jsonl.flush()

  def _elapsed(self) -> float:
    return min(time.monotonic() - self.t_begin, self.budget_s)

  def progress(self, step: int, metrics: Mapping[str, float]) -> None:
    """Moves the bar to `step` (or to the time used) and shows the loss (and, on a time bar, the step)."""
    if not self.active:
      return
    postfix = {"loss": f"{metrics['total']:.4g}"}
    if self.budget_s is None:
      self.bar.update(step - self.bar.n)
    else:
      postfix = {"step": f"{step}/{self.num_steps}", "steps/s": f"{metrics.get('steps_per_sec', 0.0):.3g}",
                 **postfix}
      self.bar.update(self._elapsed() - self.bar.n)
    self.bar.set_postfix(postfix)

  def write(self, text: str) -> None:
    """A console line (above the bar)."""
    if self.active:
      self.bar.write(text)

  def close(self) -> None:
    if self.active:
      if self.budget_s is not None:  # up to now, or the final refresh reads validation / saving as a slowdown
        self.bar.update(self._elapsed() - self.bar.n)
      self.bar.close()
      self.writer.close()
      self.jsonl.close()
