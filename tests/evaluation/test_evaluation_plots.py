"""Plots: files are written, non-empty, and the legend is sorted by score with the value."""

import numpy as np
import pytest

from cia_jax.evaluation import metrics
from cia_jax.evaluation import plots


def _curves():
  t = metrics.SUCCESS_THRESHOLDS
  curves = {"weak": np.clip(0.6 - 0.6 * t, 0, 1), "strong": np.clip(1.0 - 0.5 * t, 0, 1),
            "mid": np.clip(0.9 - 0.7 * t, 0, 1)}
  return curves, {n: float(c.mean()) for n, c in curves.items()}


def test_legend_sorted_by_score_with_value():
  curves, scores = _curves()
  fig = plots.make_figure(curves, metrics.SUCCESS_THRESHOLDS, scores, "success")
  labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert labels == [f"strong [{100 * scores['strong']:.1f}]", f"mid [{100 * scores['mid']:.1f}]",
                    f"weak [{100 * scores['weak']:.1f}]"]
  line = fig.axes[0].get_lines()[0]
  np.testing.assert_allclose(line.get_ydata(), 100 * curves["strong"])  # plotted in percent


def test_plot_files_written(tmp_path):
  curves, scores = _curves()
  stem = str(tmp_path / "sub" / "success_plot")
  paths = plots.plot_curves(curves, metrics.SUCCESS_THRESHOLDS, scores, stem)
  assert [p.rsplit(".", 1)[1] for p in paths] == ["png", "pdf"]
  with open(paths[0], "rb") as f:
    png = f.read()
  with open(paths[1], "rb") as f:
    pdf = f.read()
  assert png.startswith(b"\x89PNG") and len(png) > 5000
  assert pdf.startswith(b"%PDF") and len(pdf) > 2000


def test_plot_errors():
  curves, scores = _curves()
  with pytest.raises(ValueError, match="kind"):
    plots.make_figure(curves, metrics.SUCCESS_THRESHOLDS, scores, "roc")
  with pytest.raises(ValueError, match=r"scores: missing for \['weak'\]"):
    plots.make_figure(curves, metrics.SUCCESS_THRESHOLDS, {"strong": 1.0, "mid": 0.5}, "success")
