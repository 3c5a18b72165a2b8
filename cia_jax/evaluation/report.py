"""Benchmark comparison reports: tables, plots and per-sequence CSV for several trackers (`cia-jax evaluate`).

    cia-jax evaluate --dataset lasot --root /data/LaSOT --out reports/lasot \\
        --results CIA18=results/cia18/lasot DiMP18=/downloads/dimp18_000 DiMP18=/downloads/dimp18_001

Each `NAME=DIR` is one tracker's results directory (our layout, pytracking's raw results or the GOT-10k
toolkit layout, see `cia_jax.results`); repeating a NAME adds runs that are averaged (pytracking's merge_results;
GOT-10k pools them). The logic is in `evaluate_trackers` / `write_report` / `run_evaluation`, which take
`cia_jax.data.datasets.base.Sequence` objects, so they work without the dataset readers.

Sequence fields used: `name`, `boxes`, `visible` (LaSOT / GOT-10k protocols only), for GOT-10k's clipping the
image size (`cia_jax.data.frames.sequence_image_size`), and `attributes["attributes"]`: the sequence's
attribute tags (a list of names, or a mapping name -> truthy) for per-attribute plots.

A sequence that `cia-jax track` could not track is listed with its reason in the results directory's
`failures.json`; it is reported as missing with that reason (or, with `skip_missing`, skipped and listed
under the table).

Outputs in OUT: `summary.md`, `summary.csv` (AUC / P / NP / NP-AUC / OP50 / OP75 in percent, or AO / SR0.5 /
SR0.75 for GOT-10k, trackers best first), `per_sequence.csv`,
`{success,precision,norm_precision}_plot.{png,pdf}` and `attributes/<tag>_*_plot.*`.
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
from cia_jax.evaluation import metrics
from cia_jax.evaluation import plots as plotting
from cia_jax.results import load_results, read_failures

# (column header, summary key); values are shown in percent.
_COLUMNS_OPE = (("AUC", "auc"), ("P", "precision20"), ("NP", "norm_precision20"),
                ("NP-AUC", "norm_precision_auc"), ("OP50", "op50"), ("OP75", "op75"))
_COLUMNS_GOT10K = (("AO", "ao"), ("SR0.5", "sr50"), ("SR0.75", "sr75"))


@dataclasses.dataclass
class EvaluationReport:
  """Everything `evaluate_trackers` computed.

  Attributes:
    protocol: the protocol used.
    sequences: names of the evaluated sequences, in dataset order.
    skipped: sequences left out because some tracker had no result for them (`skip_missing=True`).
    runs: tracker -> per evaluated sequence, the `metrics.evaluate_sequence` dicts of its runs.
    summary: tracker -> `metrics.summarize` output.
    attributes: attribute tag -> indices into `sequences`.
    failed: skipped sequence -> why, for those a tracker's `failures.json` lists ("TRACKER: reason").
  """

  protocol: metrics.Protocol
  sequences: list[str]
  skipped: list[str]
  runs: dict[str, list[list[dict[str, Any]]]]
  summary: dict[str, dict[str, Any]]
  attributes: dict[str, list[int]]
  failed: dict[str, str] = dataclasses.field(default_factory=dict)

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


def _attribute_tags(seq) -> set[str]:
  tags = seq.attributes.get("attributes") if seq.attributes else None
  if tags is None:
    return set()
  if isinstance(tags, Mapping):
    return {str(k) for k, v in tags.items() if v}
  if isinstance(tags, str):
    return {tags}
  return {str(t) for t in tags}


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


def _attribute_index(kept: list) -> dict[str, list[int]]:
  """attribute tag -> indices into `kept` of the sequences that carry it, tags sorted."""
  attributes: dict[str, list[int]] = {}
  for i, seq in enumerate(kept):
    for tag in _attribute_tags(seq):
      attributes.setdefault(tag, []).append(i)
  return dict(sorted(attributes.items()))


def evaluate_trackers(sequences: SequenceABC, results: Mapping[str, str | SequenceABC[str]],
                      protocol: str | metrics.Protocol | None = None, *, exclude_invalid_frames: bool = False,
                      skip_missing: bool = False) -> EvaluationReport:
  """Evaluates several trackers' result directories on a list of sequences.

  Args:
    sequences: `cia_jax.data.datasets.base.Sequence` objects with ground truth.
    results: tracker name -> results directory, or a list of directories (runs of one tracker).
    protocol: protocol name or `Protocol` (see `metrics.evaluate_sequence`); default from the sequences'
      `dataset` field (`protocol_for_dataset`).
    exclude_invalid_frames: passed to `metrics.evaluate_sequence`.
    skip_missing: leave out (for every tracker) sequences some tracker has no result for, instead of raising
      FileNotFoundError (which names the tracker, and the reason when its `failures.json` lists the sequence).

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
  return EvaluationReport(
      protocol=proto, sequences=[s.name for s in kept], skipped=skipped, runs=runs,
      summary={name: metrics.summarize(r) for name, r in runs.items()}, attributes=_attribute_index(kept),
      failed=failed)


def summary_rows(report: EvaluationReport) -> list[list[str]]:
  """Header + one row per tracker (best first): name, the protocol's scores in percent (2 decimals)."""
  columns = report.columns()
  rows = [["Tracker"] + [c for c, _ in columns]]
  for name in report.ranking():
    rows.append([name] + [f"{100.0 * report.summary[name][k]:.2f}" for _, k in columns])
  return rows


def format_markdown(report: EvaluationReport) -> str:
  """The summary table in Markdown, with a line naming the protocol and the number of sequences."""
  rows = summary_rows(report)
  skipped = f" ({len(report.skipped)} skipped: no results for every tracker)" if report.skipped else ""
  lines = [f"Protocol `{report.protocol.name}`, {len(report.sequences)} sequences{skipped}.", "",
           "| " + " | ".join(rows[0]) + " |", "|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|"]
  lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
  if report.failed:
    lines += ["", "Not evaluated, tracking failed (failures.json):"]
    lines += [f"- `{name}`: {reason}" for name, reason in report.failed.items()]
  return "\n".join(lines) + "\n"


def _csv_text(rows: list[list[Any]]) -> str:
  buf = io.StringIO()
  csv.writer(buf, lineterminator="\n").writerows(rows)
  return buf.getvalue()


def write_report(report: EvaluationReport, out_dir: str, plots: bool = True,
                 formats: SequenceABC[str] = ("png", "pdf")) -> list[str]:
  """Writes summary.md, summary.csv, per_sequence.csv and (optionally) the plots; returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  written = []

  def write(filename, text):
    path = os.path.join(out_dir, filename)
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
    written.append(path)

  write("summary.md", format_markdown(report))
  write("summary.csv", _csv_text(summary_rows(report)))
  rows = [["sequence", "tracker", "num_frames", "num_valid", "num_runs", *metrics.SCALAR_KEYS]]
  ranking = report.ranking()
  for i, seq_name in enumerate(report.sequences):
    for name in ranking:
      merged = metrics.merge_runs(report.runs[name][i])
      rows.append([seq_name, name, merged["num_frames"], merged["num_valid"], merged["num_runs"]]
                  + [f"{merged[k]:.6f}" for k in metrics.SCALAR_KEYS])
  write("per_sequence.csv", _csv_text(rows))

  if plots:
    pooled = report.protocol.frame_pooled
    written += plotting.plot_benchmark(report.summary, out_dir, frame_pooled=pooled, formats=formats)
    for tag, idx in report.attributes.items():
      subset = {name: metrics.summarize([r[i] for i in idx]) for name, r in report.runs.items()}
      safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
      written += plotting.plot_benchmark(subset, os.path.join(out_dir, "attributes"), frame_pooled=pooled,
                                         prefix=f"{safe}_", title_suffix=f" - {tag} ({len(idx)})",
                                         formats=formats)
  return written


def run_evaluation(sequences: SequenceABC, results: Mapping[str, str | SequenceABC[str]], out_dir: str,
                   protocol: str | metrics.Protocol | None = None, *, exclude_invalid_frames: bool = False,
                   skip_missing: bool = False, plots: bool = True,
                   formats: SequenceABC[str] = ("png", "pdf")) -> EvaluationReport:
  """`evaluate_trackers` followed by `write_report` into `out_dir`; returns the report."""
  report = evaluate_trackers(sequences, results, protocol, exclude_invalid_frames=exclude_invalid_frames,
                             skip_missing=skip_missing)
  write_report(report, out_dir, plots=plots, formats=formats)
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
                       protocol: str | None = None, *, exclude_invalid_frames: bool = False,
                       skip_missing: bool = False, plots: bool = True,
                       formats: SequenceABC[str] = ("png", "pdf")) -> EvaluationReport:
  """`cia-jax evaluate`: reads a benchmark's ground truth (`load_dataset`) and runs `run_evaluation` into OUT.

  Args:
    dataset, root, split: the benchmark (`cia_jax.data.datasets.load_dataset`).
    results: `["NAME=DIR", ...]` (`parse_results_args`).
    out_dir: output directory of the tables and plots.
    protocol: protocol name (default: from `dataset`, `protocol_for_dataset`).
    exclude_invalid_frames, skip_missing, plots, formats: as in `run_evaluation`.
  """
  dirs = parse_results_args(results)
  proto = metrics.get_protocol(protocol) if protocol else protocol_for_dataset(dataset)
  sequences = datasets.load_dataset(dataset, root, split)
  return run_evaluation(sequences, dirs, out_dir, proto, exclude_invalid_frames=exclude_invalid_frames,
                        skip_missing=skip_missing, plots=plots, formats=formats)
