"""`cia-jax quickstart`: train a tiny CIA on synthetic data, track held-out sequences, evaluate, show the result.

    cia-jax quickstart --workdir quickstart --minutes 6 --real ../shared/data/real

Steps (everything lands in the workdir):
  1. `data/train/{got10k,lasot}`: synthetic training sequences in the GOT-10k and LaSOT layouts;
     `data/test/lasot`: held-out synthetic test sequences (other seeds, hence other targets, textures,
     backgrounds and trajectories), in the LaSOT layout so the LaSOT protocol (occlusion / out-of-view flags)
     applies.
  2. `train/`: `configs/tiny.py` (full CIA: instance- and category-aware modules, InfoNCE-V with the EMA
     encoder) with `QUICKSTART_SETTINGS` (128 px crops), trained for at most `--minutes` (compilation
     included; the progress bar counts those minutes), checkpointed, exported to `train/model`.
  3. Tracking of the test sequences (and of every sequence under `--real`) by the trained tiny CIA, by the same
     network with random weights, and by OpenCV's classical trackers (MIL; KCF / CSRT when opencv-contrib is
     installed), into `results/<set>/<tracker>/`.
  4. `report_<set>/`: the results table (`summary.md`, `summary.csv`), success / precision plots (PNG + PDF),
     per-sequence CSV; `tracking.gif`: one test sequence with the ground truth and the trackers' boxes;
     `tsne.png`: t-SNE of target features of the test sequences at the three stages of the paper's Fig. 5.
The tracker parameters are the CIA18 ones with the patch size and search area of the tiny training crops
(128 px, factor 5); see `tracker_settings`.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from cia_jax import config_lib, results
from cia_jax.checkpoints import load_for_tracking
from cia_jax.data.datasets import load_dataset
from cia_jax.data.synthetic import generate
from cia_jax.evaluation import baselines, embedding, report, video
from cia_jax.models.cia import init_variables
from cia_jax.track import runner
from cia_jax.track.params import get_settings
from cia_jax.track.tracker import TrackingModel, prepare
from cia_jax.train.trainer import train_and_evaluate

# Synthetic data sizes: small frames keep decoding and tracking cheap on 2 cores.
TRAIN_SETS = {"got10k": dict(num_sequences=24, num_frames=40, seed=0),
              "lasot": dict(num_sequences=24, num_frames=40, seed=1)}
TEST_SET = dict(num_sequences=6, num_frames=60, seed=1000)
IMAGE_SIZE = (160, 120)


def make_data(workdir: str, test_sequences: int | None = None, test_frames: int | None = None,
              train_scale: float = 1.0) -> dict[str, str]:
  """Writes the synthetic train / test sets (skipped when already there); returns their roots."""
  roots = {}
  for name, kw in TRAIN_SETS.items():
    root = os.path.join(workdir, "data", "train", name)
    n = max(2, int(round(kw["num_sequences"] * train_scale)))
    marker = os.path.join(root, ".complete")
    if not os.path.isfile(marker):
      generate(root, name, num_sequences=n, num_frames=kw["num_frames"], image_size=IMAGE_SIZE, seed=kw["seed"],
               split="train")
      if name == "got10k":  # a small validation split for the training loop's val losses
        generate(root, name, num_sequences=2, num_frames=kw["num_frames"], image_size=IMAGE_SIZE,
                 seed=kw["seed"] + 500, split="val")
      open(marker, "w").close()
    roots[name] = root
  test_root = os.path.join(workdir, "data", "test", "lasot")
  marker = os.path.join(test_root, ".complete")
  if not os.path.isfile(marker):
    generate(test_root, "lasot", num_sequences=test_sequences or TEST_SET["num_sequences"],
             num_frames=test_frames or TEST_SET["num_frames"], image_size=IMAGE_SIZE, seed=TEST_SET["seed"])
    open(marker, "w").close()
  roots["test"] = test_root
  return roots


# The quickstart's changes to configs/tiny.py. 128 px crops (8x8 features) instead of 64 px: at the search area
# factor 5 a 64 px crop gives a 5x5 score map whose cells are 1.25 target widths, too coarse to localise (the
# tracked boxes were lost within a frame); 8x8 features halve the cell. The label predictor's initial sigma
# follows the feature size (0.25 / 5 * 8 cells, design.md §2.4). Training runs until the time limit.
# The tracking check while training is off: the quickstart tracks its test set after training anyway.
QUICKSTART_SETTINGS = ("data.processing.output_sz=128", "data.processing.feature_sz=8",
                       "model.init_gauss_sigma=0.4", "val.tracking.enabled=false")
# Step cap (an upper bound; the time limit normally ends training first): ~10 steps/s, the tiny network's rate on 2
# idle cores. The progress bar counts the seconds of the time limit, not these steps.
STEPS_PER_MINUTE = 600


def train_config(roots: dict[str, str], minutes: float, overrides=()):
  """The tiny CIA config pointed at the synthetic roots, with a wall-clock limit on training.

  `QUICKSTART_SETTINGS` are applied first, then `overrides` (`KEY=VALUE` strings).
  """
  here = os.path.dirname(os.path.abspath(__file__))
  cfg_path = os.path.join(os.path.dirname(here), "configs", "tiny.py")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f"configs/tiny.py not found next to the package ({cfg_path}); run from a checkout")
  config = config_lib.load_config(cfg_path)
  with config.unlocked():
    config.data.synthetic.enabled = False
    config.data.train.got10k.root = roots["got10k"]  # the GOT-10k root (train/ and val/ inside)
    config.data.train.lasot.root = roots["lasot"]
    config.data.train.lasot.split = "all"  # generated LaSOT has no train/test split lists
    config.val.datasets.got10k.root = roots["got10k"]
    config.time_limit_minutes = float(minutes)
  budget = f"optim.total_steps={max(100, int(minutes * STEPS_PER_MINUTE))}"
  return config_lib.apply_overrides(config, list(QUICKSTART_SETTINGS) + [budget] + list(overrides))


def tracker_settings(config, **overrides):
  """CIA18 tracker parameters at the tiny network's scale: patch = training crop size, search area = factor."""
  proc = config.data.processing
  return get_settings("cia18", image_sample_size=int(proc.output_sz),
                      search_area_scale=float(proc.search_area_factor), **overrides)


def _track_opencv(name, seqs, out_dir):
  for seq in seqs:
    if results.is_finished(out_dir, seq.name, len(seq)):
      continue
    t0 = time.perf_counter()
    boxes = baselines.track_opencv(name, runner.prefetch_frames(seq.frame_paths), runner.first_box(seq))
    dt = (time.perf_counter() - t0) / max(len(seq), 1)
    results.write_results(out_dir, seq.name, boxes, np.full(len(seq), dt))


def track_and_evaluate(workdir: str, sets: dict, nets: dict[str, tuple[str, TrackingModel]], settings,
                       seed: int = 0, progress: bool = True) -> dict:
  """Tracks every set with the networks and OpenCV's trackers, writes `report_<set>/` -> {set: summary}.

  Args:
    workdir: the quickstart folder (results go to `results/<set>/<tracker>/`).
    sets: set name -> sequences ('synthetic' is evaluated with the LaSOT protocol, the others with OTB's).
    nets: tracker name in the tables -> (result folder name, `TrackingModel`).
    settings: the `TrackerSettings`.
    seed: tracking seed.
    progress: show the tracker's progress bars.
  """
  cv_trackers = baselines.available_trackers()
  summaries = {}
  for set_name, seqs in sets.items():
    res_root = os.path.join(workdir, "results", set_name)
    result_dirs = {name: os.path.join(res_root, folder) for name, (folder, _) in nets.items()}
    for name, (_, tracking_model) in nets.items():
      runner.run_benchmark(tracking_model, settings, seqs, result_dirs[name], seed=seed, progress=progress)
    for name in cv_trackers:
      result_dirs[f"OpenCV {name}"] = os.path.join(res_root, f"opencv_{name.lower()}")
      _track_opencv(name, seqs, result_dirs[f"OpenCV {name}"])
    protocol = "lasot" if set_name == "synthetic" else "otb"
    rep = report.run_evaluation(seqs, result_dirs, os.path.join(workdir, f"report_{set_name}"), protocol,
                                formats=("png", "pdf"))
    summaries[set_name] = {name: {k: float(v) for k, v in rep.summary[name].items()
                                  if isinstance(v, (int, float))} for name in rep.ranking()}
    print(f"\n{set_name} sequences ({protocol} protocol):\n" + report.format_markdown(rep), flush=True)
  return summaries


def gif_and_tsne(workdir: str, seqs, trained: TrackingModel, config, seed: int = 0, gif_frames: int = 60) -> dict:
  """`tracking.gif` (the longest synthetic test sequence, ground truth and trackers) and `tsne.png` (Fig. 5)."""
  seq = max(seqs, key=len)
  res_root = os.path.join(workdir, "results", "synthetic")
  preds = {"CIA-tiny": results.load_results(os.path.join(res_root, "cia_tiny"), seq.name)[0]}
  for cv_name in baselines.available_trackers()[:1]:
    cv_dir = os.path.join(res_root, f"opencv_{cv_name.lower()}")
    preds[f"OpenCV {cv_name}"] = results.load_results(cv_dir, seq.name)[0]
  n = min(len(seq), gif_frames)
  outputs = {"gif": video.write_tracking_gif(os.path.join(workdir, "tracking.gif"),
                                             runner.prefetch_frames(seq.frame_paths[:n]), seq.boxes[:n],
                                             {k: v[:n] for k, v in preds.items()})}
  proc = config.data.processing
  feats, labels = embedding.target_features(trained, seqs, 20, float(proc.search_area_factor), int(proc.output_sz))
  outputs["tsne"] = os.path.join(workdir, "tsne.png")
  outputs["tsne_knn"] = embedding.plot_embeddings(outputs["tsne"], feats, labels, [s.name for s in seqs], seed=seed)
  return outputs


def run_quickstart(workdir: str, minutes: float = 6.0, real: str | None = None, test_sequences: int | None = None,
                   test_frames: int | None = None, train_scale: float = 1.0, overrides=(), seed: int = 0,
                   progress: bool = True, gif_frames: int = 60) -> dict:
  """Runs every step of the module docstring; returns {set: EvaluationReport summary dict} and output paths."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  t_start = time.perf_counter()
  print(f"[1/4] synthetic data -> {workdir}/data", flush=True)
  roots = make_data(workdir, test_sequences, test_frames, train_scale)
  config = train_config(roots, minutes, overrides)

  print(f"[2/4] training the tiny CIA for at most {minutes:g} min -> {workdir}/train", flush=True)
  train_dir = os.path.join(workdir, "train")
  train_and_evaluate(config, train_dir)
  net, variables, _ = load_for_tracking(train_dir)
  trained = prepare(TrackingModel(net=net, variables=variables))
  untrained = prepare(TrackingModel(net=net, variables=init_variables(net, jax.random.key(seed + 1))))

  sets = {"synthetic": load_dataset("lasot", roots["test"], "all")}
  if real:
    sets["real"] = runner.folder_sequences(real)
  print(f"[3/4] tracking {', '.join(f'{len(v)} {k}' for k, v in sets.items())} sequences", flush=True)
  nets = {"CIA-tiny (trained)": ("cia_tiny", trained), "CIA-tiny (random weights)": ("cia_tiny_random", untrained)}
  summaries = track_and_evaluate(workdir, sets, nets, tracker_settings(config), seed, progress)

  print("[4/4] GIF and t-SNE", flush=True)
  outputs = gif_and_tsne(workdir, sets["synthetic"], trained, config, seed, gif_frames)
  outputs["summaries"] = summaries
  outputs["seconds"] = time.perf_counter() - t_start
  with open(os.path.join(workdir, "quickstart.json"), "w") as f:
    json.dump(outputs, f, indent=2)
  print(f"\ndone in {outputs['seconds'] / 60:.1f} min: {workdir}/report_synthetic/summary.md, "
        f"success_plot.png, {outputs['gif']}, {outputs['tsne']}", flush=True)
  return outputs
