"""Benchmark comparison reports: tables, plots and per-sequence CSV for several trackers (`cia-jax evaluate`).

    cia-jax evaluate --dataset lasot --root /data/LaSOT --out reports/lasot \\
        --results CIA18=results/cia18/lasot DiMP18=/downloads/dimp18_000 DiMP18=/downloads/dimp18_001

Each `NAME=DIR` is one tracker's results directory (our layout, pytracking's raw results or the GOT-10k
toolkit layout, see `cia_jax.results`); repeating a NAME adds runs that are averaged (pytracking's merge_results;
GOT-10k pools them). The logic is in `evaluate_trackers` / `write_report` / `run_evaluation`, which take
`cia_jax.data.datasets.base.Sequence` objects, so they work without the dataset readers.

Sequence fields used: `name`, `boxes`, `visible` (LaSOT / GOT-10k protocols only), for GOT-10k's clipping the
image size (`cia_jax.data.frames.sequence_image_size`), and `attributes` for the per-attribute analysis
(`cia_jax.evaluation.attributes`).

Besides the scores, every report has the trackers' speed (`cia_jax.evaluation.speed`: frames/s from the
`_time.txt` files, frame 0 excluded, "n/a" without them), a 95% bootstrap interval over sequences of the headline
score (AUC, or AO for GOT-10k), and paired bootstrap tests of the headline score (`cia_jax.evaluation.statistics`):
by default every tracker against the first one given (the reference), or the pairs in `compare`.

A sequence that `cia-jax track` could not track is listed with its reason in the results directory's
`failures.json`; it is reported as missing with that reason (or, with `skip_missing`, skipped and listed
under the table).

Outputs in OUT: `summary.md`, `summary.csv` (AUC / P / NP / NP-AUC / OP50 / OP75 in percent, or AO / SR0.5 /
SR0.75 for GOT-10k, trackers best first, then the score's 95% interval and FPS), `comparisons.csv` (the paired
tests), `per_sequence.csv`, `{success,precision,norm_precision}_plot.{png,pdf}`; with `by_attribute`,
`attributes.md` / `attributes.csv` (headline scores per attribute), `attributes_plot.*` (bar chart) and
`attributes/<tag>_*_plot.*`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import warnings
from collections.abc import Mapping
from collections.abc import Sequence as SequenceABC
from typing import Any

import numpy as np

from cia_jax.data import datasets
from cia_jax.data.frames import sequence_image_size
from cia_jax.evaluation import attributes as attr_lib
from cia_jax.evaluation import metrics
from cia_jax.evaluation import plots as plotting
from cia_jax.evaluation import speed as speed_lib
from cia_jax.evaluation import statistics as stats
from cia_jax.results import load_results, read_failures

# (column header, summary key); values are shown in percent.
_COLUMNS_OPE = (("AUC", "auc"), ("P", "precision20"), ("NP", "norm_precision20"),
                ("NP-AUC", "norm_precision_auc"), ("OP50", "op50"), ("OP75", "op75"))
_COLUMNS_GOT10K = (("AO", "ao"), ("SR0.5", "sr50"), ("SR0.75", "sr75"))
SPEED_NOTE = ("FPS: frames per second from the `_time.txt` files, the initialisation frame (frame 0) excluded; "
              "n/a without time files.")


@dataclasses.dataclass
class EvaluationReport:
  """Everything `evaluate_trackers` computed.

  Attributes:
    protocol: the protocol used.
    sequences: names of the evaluated sequences, in dataset order.
    skipped: sequences left out because some tracker had no result for them (`skip_missing=True`).
    runs: tracker -> per evaluated sequence, the `metrics.evaluate_sequence` dicts of its runs.
    summary: tracker -> `metrics.summarize` output.
    attribute_index: which of `sequences` carry which attribute (`attributes.attribute_index`).
    failed: skipped sequence -> why, for those a tracker's `failures.json` lists ("TRACKER: reason").
    speed: tracker -> pooled `speed.Speed` over `sequences`.
    sequence_speed: tracker -> per evaluated sequence, its `speed.Speed`.
    intervals: tracker -> bootstrap `statistics.Interval` of the headline score (`score_key`).
    comparisons: paired bootstrap tests of the headline score (`statistics.PairedTest`, a - b).
    bootstrap: (number of resampled sets, seed) behind `intervals` and `comparisons`.
  """

  protocol: metrics.Protocol
  sequences: list[str]
  skipped: list[str]
  runs: dict[str, list[list[dict[str, Any]]]]
  summary: dict[str, dict[str, Any]]
  attribute_index: attr_lib.AttributeIndex
  failed: dict[str, str] = dataclasses.field(default_factory=dict)
  speed: dict[str, speed_lib.Speed] = dataclasses.field(default_factory=dict)
  sequence_speed: dict[str, list[speed_lib.Speed]] = dataclasses.field(default_factory=dict)
  intervals: dict[str, stats.Interval] = dataclasses.field(default_factory=dict)
  comparisons: list[stats.PairedTest] = dataclasses.field(default_factory=list)
  bootstrap: tuple[int, int] = (stats.DEFAULT_SAMPLES, stats.DEFAULT_SEED)

  @property
  def attributes(self) -> dict[str, list[int]]:
    """Attribute -> indices into `sequences` of the sequences that carry it, attributes sorted."""
    return self.attribute_index.by_attribute

  @property
  def score_key(self) -> str:
    """Headline score: AO for frame-pooled protocols (GOT-10k), AUC otherwise."""
    return "ao" if self.protocol.frame_pooled else "auc"

  def ranking(self) -> list[str]:
    """Tracker names, best headline score first."""
    return sorted(self.summary, key=lambda n: -self.summary[n][self.score_key])

  def columns(self) -> tuple[tuple[str, str], ...]:
    """(table header, summary key) of the protocol's headline scores."""
    return _COLUMNS_GOT10K if self.protocol.frame_pooled else _COLUMNS_OPE


def protocol_for_dataset(dataset: str) -> metrics.Protocol:
  """The protocol of a dataset name: lasot*, uav*, got10k* or, for everything else, pytracking's "otb"."""
  key = dataset.lower().replace("-", "")
  for prefix in ("lasot", "uav", "got10k"):
    if key.startswith(prefix):
      return metrics.get_protocol(prefix)
  return metrics.get_protocol("otb")


def _result_dirs(sequences: list, results: Mapping[str, str | SequenceABC[str]]) -> dict[str, list[str]]:
  """tracker name -> its results directories; ValueError / FileNotFoundError for empty inputs, missing dirs."""
  if not sequences:
    raise ValueError("sequences: empty")
  if not results:
    raise ValueError("results: no tracker given")
  dirs = {name: [d] if isinstance(d, str) else list(d) for name, d in results.items()}
  for name, ds in dirs.items():
    for d in ds:
      if not os.path.isdir(d):
        raise FileNotFoundError(f"results of {name!r}: directory not found: {d}")
  return dirs


def _check_ground_truth(seq) -> None:
  if len(seq.boxes) > 1 and not np.isfinite(seq.boxes[1:]).all(axis=1).any():
    raise ValueError(f"sequence {seq.name!r}: no ground truth after frame 0 (withheld test annotations? "
                     "GOT-10k and TrackingNet test sets are evaluated by their servers)")


def _predictions(dirs: Mapping[str, list[str]], seq) -> dict[str, list[np.ndarray]]:
  """tracker -> the `[N, 4]` boxes of each of its runs on `seq`; FileNotFoundError naming the tracker (and why,
  when its `failures.json` lists the sequence) if one has none."""
  preds = {}
  for name, ds in dirs.items():
    try:
      preds[name] = [p for d in ds for p in load_results(d, seq.name, seq.dataset)]
    except FileNotFoundError as e:
      raise FileNotFoundError(f"results of {name!r}: {e}") from e
  return preds


def _failure_reasons(dirs: Mapping[str, list[str]], seq_name: str) -> str | None:
  """`TRACKER: reason; ...` of the trackers whose `failures.json` lists `seq_name`; None if none does."""
  reasons = []
  for name, ds in dirs.items():
    for d in ds:
      reason = read_failures(d).get(seq_name)
      if reason is not None:
        reasons.append(f"{name}: {reason}")
  return "; ".join(reasons) or None


def score_ratios(report: EvaluationReport, name: str) -> tuple[np.ndarray, np.ndarray | None]:
  """Per-sequence (numerators `[S]`, denominators `[S]` or None) of tracker `name`'s headline score.

  AUC: the sequences' AUCs (mean over runs), no denominators (the score is their mean). AO (frame-pooled): the
  summed IoUs of the evaluated frames of all runs and their number (the score is the ratio of the sums).
  """
  if report.protocol.frame_pooled:
    num = [sum(float(np.sum(r["iou"][r["valid"]])) for r in runs) for runs in report.runs[name]]
    den = [sum(int(np.sum(r["valid"])) for r in runs) for runs in report.runs[name]]
    return np.asarray(num), np.asarray(den, np.float64)
  return np.asarray([metrics.merge_runs(runs)["auc"] for runs in report.runs[name]]), None


def _comparison_pairs(names: list[str], compare: SequenceABC[SequenceABC[str]] | None) -> list[tuple[str, str]]:
  """(a, b) pairs to test: `compare` checked against the tracker names, or every tracker vs the first."""
  if compare is None:
    return [(name, names[0]) for name in names[1:]]
  pairs = []
  for pair in compare:
    if len(pair) != 2:
      raise ValueError(f"compare: expected pairs of tracker names, got {pair!r}")
    for name in pair:
      if name not in names:
        raise ValueError(f"compare: no tracker {name!r}; trackers: {', '.join(names)}")
    pairs.append((pair[0], pair[1]))
  return pairs


def add_statistics(report: EvaluationReport, compare: SequenceABC[SequenceABC[str]] | None = None,
                   samples: int = stats.DEFAULT_SAMPLES, seed: int = stats.DEFAULT_SEED) -> None:
  """Fills `report.intervals` (95% bootstrap interval per tracker) and `report.comparisons` (paired tests).

  One set of `[samples, S]` resampling indices serves every tracker and pair, so the numbers do not depend on
  the order or number of trackers. `compare`: (a, b) name pairs (difference a - b); default every tracker
  against the first one in `report.runs` (the order the results were given in).
  """
  names = list(report.runs)
  idx = stats.resample_indices(len(report.sequences), samples, seed)
  ratios = {name: score_ratios(report, name) for name in names}
  report.intervals = {name: stats.bootstrap_ci(*ratios[name], indices=idx) for name in names}
  report.comparisons = [stats.paired_bootstrap(ratios[a][0], ratios[b][0], ratios[a][1], ratios[b][1],
                                               names=(a, b), indices=idx)
                        for a, b in _comparison_pairs(names, compare)]
  report.bootstrap = (samples, seed)


def _add_speed(report: EvaluationReport, dirs: Mapping[str, list[str]], kept: list) -> None:
  report.sequence_speed = {name: [speed_lib.sequence_speed(ds, seq.name, seq.dataset) for seq in kept]
                           for name, ds in dirs.items()}
  report.speed = {name: speed_lib.combine(s) for name, s in report.sequence_speed.items()}


def evaluate_trackers(sequences: SequenceABC, results: Mapping[str, str | SequenceABC[str]],
                      protocol: str | metrics.Protocol | None = None, *, exclude_invalid_frames: bool = False,
                      skip_missing: bool = False, attribute_table: Mapping[str, SequenceABC[str]] | None = None,
                      compare: SequenceABC[SequenceABC[str]] | None = None,
                      bootstrap_samples: int = stats.DEFAULT_SAMPLES,
                      seed: int = stats.DEFAULT_SEED) -> EvaluationReport:
  """Evaluates several trackers' result directories on a list of sequences.

  Args:
    sequences: `cia_jax.data.datasets.base.Sequence` objects with ground truth.
    results: tracker name -> results directory, or a list of directories (runs of one tracker).
    protocol: protocol name or `Protocol` (see `metrics.evaluate_sequence`); default from the sequences'
      `dataset` field (`protocol_for_dataset`).
    exclude_invalid_frames: passed to `metrics.evaluate_sequence`.
    skip_missing: leave out (for every tracker) sequences some tracker has no result for, instead of raising
      FileNotFoundError (which names the tracker, and the reason when its `failures.json` lists the sequence).
    attribute_table: sequence -> attribute names, replacing what the dataset readers give
      (`attributes.load_attribute_table`); None reads the sequences' own attribute information.
    compare, bootstrap_samples, seed: the paired tests and the bootstrap (`add_statistics`).

  Returns:
    An `EvaluationReport`.
  """
  sequences = list(sequences)
  dirs = _result_dirs(sequences, results)
  if protocol is None:
    protocol = protocol_for_dataset(sequences[0].dataset or "otb")
  proto = metrics.get_protocol(protocol)
  runs = {name: [] for name in dirs}
  kept, skipped, unsized, failed = [], [], [], {}
  for seq in sequences:
    _check_ground_truth(seq)
    try:
      preds = _predictions(dirs, seq)
    except FileNotFoundError:
      if not skip_missing:
        raise
      skipped.append(seq.name)
      reason = _failure_reasons(dirs, seq.name)
      if reason is not None:
        failed[seq.name] = reason
      continue
    visible = seq.visible if proto.uses_visible else None
    image_size = sequence_image_size(seq) if proto.clip_to_image else None
    if proto.clip_to_image and image_size is None:
      unsized.append(seq.name)
    for name, pred_runs in preds.items():
      runs[name].append([
          metrics.evaluate_sequence(p, seq.boxes, visible, proto, image_size=image_size,
                                    exclude_invalid_frames=exclude_invalid_frames, name=f"{name}/{seq.name}")
          for p in pred_runs])
    kept.append(seq)
  if not kept:
    raise FileNotFoundError("no sequence has results for every tracker")
  if unsized:
    warnings.warn(f"{len(unsized)} sequences without image size (no attributes['resolution'], no readable "
                  f"first frame), e.g. {unsized[0]!r}: their boxes are not clipped to the image",
                  stacklevel=2)
  report = EvaluationReport(
      protocol=proto, sequences=[s.name for s in kept], skipped=skipped, runs=runs,
      summary={name: metrics.summarize(r) for name, r in runs.items()},
      attribute_index=attr_lib.attribute_index(kept, attribute_table), failed=failed)
  _add_speed(report, dirs, kept)
  add_statistics(report, compare, bootstrap_samples, seed)
  return report


def summary_rows(report: EvaluationReport, split_interval: bool = False) -> list[list[str]]:
  """Header + one row per tracker (best first): name, the protocol's scores in percent (2 decimals), the
  headline score's 95% interval (`[low, high]`, or two columns low / high with `split_interval`) and FPS."""
  columns = report.columns()
  score = columns[0][0]
  ci = [f"{score} CI low", f"{score} CI high"] if split_interval else [f"{score} 95% CI"]
  rows = [["Tracker"] + [c for c, _ in columns] + ci + ["FPS"]]
  for name in report.ranking():
    row = [name] + [f"{100.0 * report.summary[name][k]:.2f}" for _, k in columns]
    interval = report.intervals.get(name)
    if interval is None:
      row += ["n/a"] * len(ci)
    elif split_interval:
      row += [f"{100.0 * interval.low:.2f}", f"{100.0 * interval.high:.2f}"]
    else:
      row += [f"[{100.0 * interval.low:.2f}, {100.0 * interval.high:.2f}]"]
    speed = report.speed.get(name)
    rows.append(row + [speed.label() if speed else "n/a"])
  return rows


def comparison_rows(report: EvaluationReport) -> list[list[str]]:
  """Header + one row per paired test: trackers, difference of the headline score (points), interval, p."""
  score = report.columns()[0][0]
  rows = [["A", "B", "Sequences", f"{score} A - B", "CI low", "CI high", "p"]]
  for t in report.comparisons:
    d = t.difference
    rows.append([t.a, t.b, str(t.num_sequences), f"{100.0 * d.value:+.2f}", f"{100.0 * d.low:+.2f}",
                 f"{100.0 * d.high:+.2f}", f"{t.p_value:.4f}"])
  return rows


def _markdown_table(rows: list[list[str]], text_columns: int = 1) -> list[str]:
  align = ["---"] * text_columns + ["---:"] * (len(rows[0]) - text_columns)
  return ["| " + " | ".join(rows[0]) + " |", "|" + "|".join(align) + "|"] + ["| " + " | ".join(r) + " |"
                                                                                for r in rows[1:]]


def format_markdown(report: EvaluationReport) -> str:
  """The summary table in Markdown with its notes (protocol, sequences, interval, speed) and the paired tests."""
  skipped = f" ({len(report.skipped)} skipped: no results for every tracker)" if report.skipped else ""
  samples, seed = report.bootstrap
  score = report.columns()[0][0]
  lines = [f"Protocol `{report.protocol.name}`, {len(report.sequences)} sequences{skipped}.", ""]
  lines += _markdown_table(summary_rows(report))
  lines += ["", f"{score} 95% CI: percentile bootstrap over the sequences ({samples} resampled sets, seed {seed}). "
            + SPEED_NOTE]
  if report.comparisons:
    lines += ["", f"Paired bootstrap tests of {score} (the same resampled sequences for A and B; two-sided p; "
              "difference and interval in points):", ""]
    lines += _markdown_table(comparison_rows(report), text_columns=2)
  if report.failed:
    lines += ["", "Not evaluated, tracking failed (failures.json):"]
    lines += [f"- `{name}`: {reason}" for name, reason in report.failed.items()]
  return "\n".join(lines) + "\n"


def attribute_summaries(report: EvaluationReport) -> dict[str, dict[str, dict[str, Any]]]:
  """Row ("all", each attribute, "(none)", "(no information)") -> tracker -> `metrics.summarize` of its subset."""
  out = {"all": report.summary}
  for row, idx in report.attribute_index.rows():
    out[row] = {name: metrics.summarize([runs[i] for i in idx]) for name, runs in report.runs.items()}
  return out


def _row_counts(report: EvaluationReport) -> dict[str, int]:
  return {"all": len(report.sequences), **{row: len(idx) for row, idx in report.attribute_index.rows()}}


def attribute_rows(report: EvaluationReport, summaries: Mapping[str, Mapping[str, Any]] | None = None
                   ) -> list[list[str]]:
  """Header + one row per attribute row: name, sequence count, the two headline scores (percent) per tracker."""
  summaries = attribute_summaries(report) if summaries is None else summaries
  columns = report.columns()[:2]
  ranking = report.ranking()
  counts = _row_counts(report)
  rows = [["Attribute", "Sequences"] + [f"{name} {c}" for name in ranking for c, _ in columns]]
  for row, subset in summaries.items():
    rows.append([row, str(counts[row])] + [f"{100.0 * subset[n][k]:.2f}" for n in ranking for _, k in columns])
  return rows


def format_attributes_markdown(report: EvaluationReport,
                               summaries: Mapping[str, Mapping[str, Any]] | None = None) -> str:
  """The per-attribute table in Markdown, naming the sequences without attribute information."""
  columns = " / ".join(c for c, _ in report.columns()[:2])
  lines = [f"{columns} (percent) per attribute, protocol `{report.protocol.name}`. A sequence counts under every "
           "attribute it has (sequence level: LaSOT / VOT per-frame flags when any frame has them); "
           f"`{attr_lib.NONE_ROW}`: attribute information lists none; `{attr_lib.UNKNOWN_ROW}`: none given.", ""]
  lines += _markdown_table(attribute_rows(report, summaries), text_columns=1)
  unknown = [report.sequences[i] for i in report.attribute_index.unknown]
  if unknown:
    lines += ["", f"No attribute information ({len(unknown)}): " + ", ".join(f"`{n}`" for n in unknown)]
  return "\n".join(lines) + "\n"


def _csv_text(rows: list[list[Any]]) -> str:
  buf = io.StringIO()
  csv.writer(buf, lineterminator="\n").writerows(rows)
  return buf.getvalue()


def _per_sequence_rows(report: EvaluationReport) -> list[list[Any]]:
  rows = [["sequence", "tracker", "num_frames", "num_valid", "num_runs", *metrics.SCALAR_KEYS, "fps"]]
  ranking = report.ranking()
  for i, seq_name in enumerate(report.sequences):
    for name in ranking:
      merged = metrics.merge_runs(report.runs[name][i])
      fps = report.sequence_speed[name][i].fps if report.sequence_speed else None
      rows.append([seq_name, name, merged["num_frames"], merged["num_valid"], merged["num_runs"]]
                  + [f"{merged[k]:.6f}" for k in metrics.SCALAR_KEYS] + ["n/a" if fps is None else f"{fps:.3f}"])
  return rows


def _write_attributes(report: EvaluationReport, out_dir: str, write, plots: bool,
                      formats: SequenceABC[str]) -> list[str]:
  """attributes.md / .csv and (with `plots`) the bar chart and per-attribute curves; returns the plot paths."""
  summaries = attribute_summaries(report)
  write("attributes.md", format_attributes_markdown(report, summaries))
  write("attributes.csv", _csv_text(attribute_rows(report, summaries)))
  if not plots:
    return []
  pooled = report.protocol.frame_pooled
  label, key = report.columns()[0]
  counts = _row_counts(report)
  bars = {f"{row} ({counts[row]})": {n: summary[key] for n, summary in sub.items()} for row, sub in summaries.items()}
  written = plotting.plot_attribute_bars(bars, os.path.join(out_dir, "attributes_plot"), score_label=label,
                                         formats=formats)
  for tag, idx in report.attribute_index.rows():
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
    written += plotting.plot_benchmark(summaries[tag], os.path.join(out_dir, "attributes"), frame_pooled=pooled,
                                       prefix=f"{safe}_", title_suffix=f" - {tag} ({len(idx)})", formats=formats)
  return written


def write_report(report: EvaluationReport, out_dir: str, plots: bool = True,
                 formats: SequenceABC[str] = ("png", "pdf"), by_attribute: bool = False) -> list[str]:
  """Writes summary.md / .csv, comparisons.csv, per_sequence.csv, (optionally) the plots and, with
  `by_attribute`, the per-attribute tables and plots; returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  written = []

  def write(filename, text):
    path = os.path.join(out_dir, filename)
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
    written.append(path)

  write("summary.md", format_markdown(report))
  write("summary.csv", _csv_text(summary_rows(report, split_interval=True)))
  if report.comparisons:
    write("comparisons.csv", _csv_text(comparison_rows(report)))
  write("per_sequence.csv", _csv_text(_per_sequence_rows(report)))
  if plots:
    written += plotting.plot_benchmark(report.summary, out_dir, frame_pooled=report.protocol.frame_pooled,
                                       formats=formats)
  if by_attribute:
    written += _write_attributes(report, out_dir, write, plots, formats)
  return written


def run_evaluation(sequences: SequenceABC, results: Mapping[str, str | SequenceABC[str]], out_dir: str,
                   protocol: str | metrics.Protocol | None = None, *, plots: bool = True,
                   formats: SequenceABC[str] = ("png", "pdf"), by_attribute: bool = False,
                   **options) -> EvaluationReport:
  """`evaluate_trackers` (`options`: its keyword arguments) then `write_report` into `out_dir`; returns the
  report."""
  report = evaluate_trackers(sequences, results, protocol, **options)
  write_report(report, out_dir, plots=plots, formats=formats, by_attribute=by_attribute)
  return report


def parse_results_args(items: SequenceABC[str]) -> dict[str, list[str]]:
  """`["NAME=DIR", ...]` -> {NAME: [DIR, ...]} in first-seen order; a repeated NAME collects runs."""
  out: dict[str, list[str]] = {}
  for item in items:
    name, sep, path = item.partition("=")
    if not sep or not name.strip() or not path.strip():
      raise ValueError(f"--results: expected NAME=DIR, got {item!r}")
    out.setdefault(name.strip(), []).append(path.strip())
  return out


def evaluate_benchmark(dataset: str, root: str, results: SequenceABC[str], out_dir: str, split: str | None = None,
                       protocol: str | None = None, *, attributes_file: str | None = None,
                       **options) -> EvaluationReport:
  """`cia-jax evaluate`: reads a benchmark's ground truth (`load_dataset`) and runs `run_evaluation` into OUT.

  Args:
    dataset, root, split: the benchmark (`cia_jax.data.datasets.load_dataset`).
    results: `["NAME=DIR", ...]` (`parse_results_args`).
    out_dir: output directory of the tables and plots.
    protocol: protocol name (default: from `dataset`, `protocol_for_dataset`).
    attributes_file: a user attribute table (`attributes.load_attribute_table`); implies `by_attribute`.
    **options: keyword arguments of `run_evaluation` / `evaluate_trackers` (exclude_invalid_frames,
      skip_missing, plots, formats, by_attribute, compare, bootstrap_samples, seed).
  """
  dirs = parse_results_args(results)
  proto = metrics.get_protocol(protocol) if protocol else protocol_for_dataset(dataset)
  table = None
  if attributes_file:
    table = attr_lib.load_attribute_table(attributes_file)
    options["by_attribute"] = True
  sequences = datasets.load_dataset(dataset, root, split)
  return run_evaluation(sequences, dirs, out_dir, proto, attribute_table=table, **options)
