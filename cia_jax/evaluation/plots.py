"""Success / precision plots of several trackers, as in the paper's Fig. 7 (legend sorted by score, with it).

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no interactive backend, no global state).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cia_jax.evaluation import metrics

_STYLES = {
    "success": dict(xlabel="Overlap threshold", ylabel="Overlap precision [%]", xlim=(0.0, 1.0),
                    legend_loc="lower left", title="Success plot"),
    "precision": dict(xlabel="Location error threshold [pixels]", ylabel="Distance precision [%]",
                      xlim=(0.0, 50.0), legend_loc="lower right", title="Precision plot"),
    "norm_precision": dict(xlabel="Normalised location error threshold", ylabel="Distance precision [%]",
                           xlim=(0.0, 0.5), legend_loc="lower right", title="Normalised precision plot"),
}
# Best tracker first: red, blue, green, ... (then the same colours dashed).
_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#000000", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22")


def make_figure(curves: Mapping[str, np.ndarray], thresholds: np.ndarray, scores: Mapping[str, float],
                kind: str = "success", title: str | None = None):
  """A matplotlib `Figure` (Agg canvas) of several trackers' curves; see `plot_curves` for the arguments."""
  if kind not in _STYLES:
    raise ValueError(f"kind: expected one of {sorted(_STYLES)}, got {kind!r}")
  if not curves:
    raise ValueError("curves: no tracker to plot")
  missing = set(curves) - set(scores)
  if missing:
    raise ValueError(f"scores: missing for {sorted(missing)}")
  style = _STYLES[kind]
  order = sorted(curves, key=lambda n: -scores[n])
  fig = Figure(figsize=(6.0, 4.8))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for rank, tracker in enumerate(order):
    ax.plot(thresholds, 100.0 * np.asarray(curves[tracker]), color=_COLORS[rank % len(_COLORS)],
            linestyle=("-", "--", ":")[(rank // len(_COLORS)) % 3], linewidth=2.0,
            label=f"{tracker} [{100.0 * scores[tracker]:.1f}]")
  ax.legend(loc=style["legend_loc"], fancybox=False, edgecolor="black", framealpha=1.0, fontsize="small")
  ax.set(xlabel=style["xlabel"], ylabel=style["ylabel"], xlim=style["xlim"], ylim=(0.0, 100.0),
         title=title or style["title"])
  ax.grid(True, linestyle="-.")
  fig.tight_layout()
  return fig


def plot_curves(curves: Mapping[str, np.ndarray], thresholds: np.ndarray, scores: Mapping[str, float],
                path_stem: str, kind: str = "success", title: str | None = None,
                formats: Sequence[str] = ("png", "pdf")) -> list[str]:
  """Draws one plot of several trackers' curves and saves it as `path_stem.<fmt>` for each format.

  Args:
    curves: tracker name -> `[K]` rates in [0, 1] (plotted in percent).
    thresholds: `[K]` x values (IoU, pixels or normalised distance).
    scores: tracker name -> score in [0, 1] shown in the legend as `name [xx.x]` (percent); the legend and the
      colours follow the scores, best first.
    path_stem: output path without extension; parent folders are created.
    kind: "success", "precision" or "norm_precision" (axis labels, limits, legend place).
    title: plot title; defaults to the kind's.
    formats: file formats understood by matplotlib.

  Returns:
    The written paths.
  """
  fig = make_figure(curves, thresholds, scores, kind, title)
  parent = os.path.dirname(path_stem)
  if parent:
    os.makedirs(parent, exist_ok=True)
  paths = []
  for fmt in formats:
    path = f"{path_stem}.{fmt}"
    fig.savefig(path, dpi=150, format=fmt)
    paths.append(path)
  return paths


def plot_benchmark(summaries: Mapping[str, Mapping[str, np.ndarray | float]], out_dir: str,
                   frame_pooled: bool = False, prefix: str = "", title_suffix: str = "",
                   formats: Sequence[str] = ("png", "pdf")) -> list[str]:
  """Success, precision and normalised precision plots of several trackers' `metrics.summarize` outputs.

  Frame-pooled benchmarks (GOT-10k) get one success plot of the pooled 101-threshold curve with AO in the
  legend; the others the three pytracking plots (AUC, precision at 20 px, normalised precision at 0.2).
  Files: `out_dir/<prefix>success_plot.{png,pdf}`, `..precision_plot..`, `..norm_precision_plot..`.
  """
  def draw(kind, curve_key, thresholds, score_key):
    return plot_curves({n: s[curve_key] for n, s in summaries.items()}, thresholds,
                       {n: s[score_key] for n, s in summaries.items()},
                       os.path.join(out_dir, f"{prefix}{kind}_plot"), kind,
                       title=f"{_STYLES[kind]['title']}{title_suffix}", formats=formats)

  if frame_pooled:
    return draw("success", "pooled_success_curve", metrics.GOT10K_THRESHOLDS, "ao")
  return (draw("success", "success_curve", metrics.SUCCESS_THRESHOLDS, "auc")
          + draw("precision", "precision_curve", metrics.PRECISION_THRESHOLDS, "precision20")
          + draw("norm_precision", "norm_precision_curve", metrics.NORM_PRECISION_THRESHOLDS,
                 "norm_precision20"))


def plot_attribute_bars(scores: Mapping[str, Mapping[str, float]], path_stem: str, score_label: str = "AUC",
                        formats: Sequence[str] = ("png", "pdf")) -> list[str]:
  """Grouped horizontal bars of a score per attribute and tracker (`cia-jax evaluate --by-attribute`).

  Args:
    scores: row (attribute) -> tracker -> score in [0, 1] (drawn in percent); rows top to bottom in the given
      order, trackers coloured best first by their mean over the rows (as in the curve plots).
    path_stem: output path without extension; parent folders are created.
    score_label: the score's name for the axis.
    formats: file formats understood by matplotlib.

  Returns:
    The written paths.
  """
  if not scores:
    raise ValueError("scores: no attribute to plot")
  rows = list(scores)
  trackers = sorted({t for r in rows for t in scores[r]},
                    key=lambda t: -np.nanmean([scores[r].get(t, np.nan) for r in rows]))
  height = 0.8 / len(trackers)
  fig = Figure(figsize=(7.0, 1.0 + 0.25 * len(rows) * max(2, len(trackers))))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  y = np.arange(len(rows))
  for k, tracker in enumerate(trackers):
    values = [100.0 * scores[r].get(tracker, np.nan) for r in rows]
    ax.barh(y - 0.4 + (k + 0.5) * height, values, height=height, color=_COLORS[k % len(_COLORS)], label=tracker)
  ax.set_yticks(y, rows)
  ax.invert_yaxis()
  ax.set(xlabel=f"{score_label} [%]", xlim=(0.0, 100.0), title=f"{score_label} per attribute")
  ax.grid(True, axis="x", linestyle="-.")
  # Outside the axes: bars reach any length, a legend inside would hide some.
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fancybox=False, edgecolor="black", fontsize="small")
  fig.tight_layout()
  parent = os.path.dirname(path_stem)
  if parent:
    os.makedirs(parent, exist_ok=True)
  paths = []
  for fmt in formats:
    paths.append(f"{path_stem}.{fmt}")
    fig.savefig(paths[-1], dpi=150, format=fmt)
  return paths
