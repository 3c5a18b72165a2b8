"""Experiment configs: paper values, locking, variants as switches, overrides and launch-time errors."""

import argparse
import os

import ml_collections
import pytest

from cia_jax import config_lib
from cia_jax.cli import main as cli_main
from cia_jax.cli import split_config_overrides
from cia_jax.cli import train as train_cli
from cia_jax.data.processing import PROCESSING_PRESETS
from cia_jax.models.cia import build_model, init_variables
from cia_jax.train import init, inputs, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = ("cia18", "cia50", "dimp18", "superdimp", "tiny")
SWITCHES = ("category_classification", "category_encoder", "contrastive", "instance_encoder")


def _load(name, arg=None):
  spec = os.path.join(ROOT, "configs", f"{name}.py") + (f":{arg}" if arg else "")
  return config_lib.load_config(spec)


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_load_lock_and_build(name):
  config = _load(name)
  assert config.is_locked
  with pytest.raises(AttributeError):
    config.optim.epochs_typo = 3  # locked: no new keys
  model = build_model(config.model)
  assert model.backbone_arch == ("resnet50" if name in ("cia50", "superdimp") else "resnet18")
  proc = inputs.processing_config(config)
  assert proc.output_sz == {"tiny": 64, "cia50": 352, "superdimp": 352}.get(name, 288)
  assert trainer.total_steps(config) == config.optim.epochs * config.optim.steps_per_epoch
  # The launch command is in the file's docstring.
  with open(os.path.join(ROOT, "configs", f"{name}.py")) as f:
    assert f"cia-jax train --config configs/{name}.py" in f.read()


def test_paper_settings():
  """Spec 4.9 and design.md §D1, D3, D4, D5."""
  c18, c50, d18, sd = (_load(n) for n in ("cia18", "cia50", "dimp18", "superdimp"))
  assert dict(c18.optim.learning_rates) == {"feature_extractor": 2e-4, "upper_classifier": 2e-4,
                                            "filter_initializer": 5e-5, "filter_optimizer": 5e-4,
                                            "clf_feature_extractor": 5e-5, "bb_regressor": 1e-3}
  assert c50.optim.learning_rates.feature_extractor == 2e-5 and sd.optim.learning_rates.feature_extractor == 2e-5
  for c in (c18, c50):  # design.md §D5: both CIAs with the paper's schedule
    assert (c.optim.epochs, c.optim.steps_per_epoch, c.optim.decay_every_epochs, c.optim.decay_factor,
            c.data.batch_size) == (50, 2000, 15, 0.2, 64)
  assert (d18.data.batch_size, d18.optim.steps_per_epoch, sd.data.batch_size) == (26, 1000, 20)
  assert all(c18.model[s] for s in SWITCHES) and not any(d18.model[s] for s in SWITCHES)  # design.md §D1
  assert c18.loss.momentum and c18.loss.ema_decay == 0.999 and c18.loss.temperature == 0.07  # design.md §D4
  assert c18.loss.infonce_form == "reference"  # design.md §D3
  assert dict(c18.loss.weights) == {"clf": 1.0, "iou": 1.0, "category": 0.1, "contrastive": 1.0}
  assert c50.loss.iou_loss == "kl" and c50.loss.weights.iou == 0.01 and c18.loss.iou_loss == "mse"
  assert tuple(c50.model.frozen_layers) == ("conv1", "layer1", "layer2") and c18.model.frozen_layers == ()
  assert {k: v.weight for k, v in c18.data.train.items()} == {"lasot": 0.25, "got10k": 1.0, "trackingnet": 1.0,
                                                             "coco": 1.0}
  assert {k: v.weight for k, v in c50.data.train.items()} == {"lasot": 1.0, "got10k": 1.0, "trackingnet": 1.0,
                                                             "coco": 1.0}
  assert c18.data.train.got10k.split == "vottrain" and tuple(c18.data.train.trackingnet.chunks) == (0, 1, 2, 3)
  assert all(e.root is None for e in c18.data.train.values())
  assert (c18.data.sampler.max_gap, c50.data.sampler.max_gap) == (30, 200)
  assert inputs.processing_config(c50) == PROCESSING_PRESETS["cia50"]
  assert inputs.processing_config(c18) == PROCESSING_PRESETS["cia18"]
  assert c18.val.every_steps == 5 * 2000 and c18.val.num_batches == 5000 // 64
  assert c50.val.every_steps == 20 * 2000 and c18.val.datasets.got10k.split == "votval"
  settings = trainer.step_settings(c50)
  assert settings.iou_loss == "kl" and dict(settings.loss_weights)["iou"] == 0.01


def _diff(a, b, prefix=""):
  """Dotted keys whose values differ between two configs."""
  out = set()
  for k in set(a.keys()) | set(b.keys()):
    va, vb = a.get(k), b.get(k)
    if isinstance(va, ml_collections.ConfigDict) and isinstance(vb, ml_collections.ConfigDict):
      out |= _diff(va, vb, f"{prefix}{k}.")
    elif va != vb:
      out.add(f"{prefix}{k}")
  return out


# variant -> {changed key: new value} relative to the full CIA18 config (plus `variant` itself).
EXPECTED_VARIANTS = {
    "dimp": {f"model.{s}": False for s in SWITCHES},
    "cc": {"model.category_encoder": False, "model.contrastive": False, "model.instance_encoder": False},
    "cc_ce": {"model.contrastive": False, "model.instance_encoder": False},
    "cl": {"model.category_classification": False, "model.category_encoder": False,
           "model.instance_encoder": False},
    "cl_ie": {"model.category_classification": False, "model.category_encoder": False},
    "full": {},
    "no_category": {"model.category_classification": False, "model.category_encoder": False},
    "no_contrastive": {"model.contrastive": False},
    "no_momentum": {"loss.momentum": False},
    "no_known_categories": {"model.category_classification": False, "model.num_known_categories": 0},
}


@pytest.mark.parametrize("variant", sorted(EXPECTED_VARIANTS))
def test_variants_are_switches(variant):
  base, var = _load("cia18"), _load("cia18", variant)
  expected = EXPECTED_VARIANTS[variant]
  assert _diff(base, var) == set(expected) | {"variant"}
  for key, value in expected.items():
    group, field = key.split(".")
    assert var[group][field] == value
  build_model(var.model)  # a valid CIANet


def test_variants_combine_and_unknown_variant_fails():
  c = _load("cia50", "cl,no_momentum")
  assert c.model.contrastive and not c.model.category_classification and not c.loss.momentum
  with pytest.raises(ValueError, match="unknown config variant 'no_such'"):
    _load("cia18", "no_such")


def test_overrides_are_type_checked_and_typos_name_the_key():
  c = _load("cia18")
  config_lib.apply_overrides(c, ["optim.epochs=3", "--config.data.train.got10k.root=/data/got", "loss.momentum=false",
                                   "model.frozen_layers=('conv1', 'layer1')", "data.processing.max_scale_change=1.5",
                                   "optim.total_steps=7", "optim.lr_scale=2"])
  assert (c.optim.epochs, c.data.train.got10k.root, c.loss.momentum) == (3, "/data/got", False)
  assert c.model.frozen_layers == ("conv1", "layer1") and c.data.processing.max_scale_change == 1.5
  assert trainer.total_steps(c) == 7 and init.learning_rates(c)["bb_regressor"] == pytest.approx(2e-3)
  with pytest.raises(ValueError, match=r"unknown key 'optim\.epoch'.*epochs"):
    config_lib.apply_overrides(c, ["optim.epoch=3"])
  with pytest.raises(ValueError, match=r"unknown key 'modell'"):
    config_lib.apply_overrides(c, ["modell.clf_dim=3"])
  with pytest.raises(ValueError, match=r"optim\.epochs='three': expected a int"):
    config_lib.apply_overrides(c, ["optim.epochs=three"])
  with pytest.raises(ValueError, match="expected a bool"):
    config_lib.apply_overrides(c, ["loss.momentum=maybe"])
  with pytest.raises(ValueError, match="cannot be None"):
    config_lib.apply_overrides(c, ["optim.epochs=None"])
  with pytest.raises(ValueError, match="group of settings"):
    config_lib.apply_overrides(c, ["optim=3"])
  with pytest.raises(ValueError, match="expected KEY=VALUE"):
    config_lib.apply_overrides(c, ["optim.epochs"])
  with pytest.raises(FileNotFoundError, match="config file not found"):
    config_lib.load_config("/nonexistent/cfg.py")


def test_cli_collects_overrides():
  parser = argparse.ArgumentParser()
  train_cli.add_arguments(parser)
  rest, overrides = split_config_overrides(["--config", "configs/tiny.py", "--config.optim.epochs=2", "--workdir",
                                            "/tmp/w", "--config.loss.momentum", "false"])
  args = parser.parse_args(rest)
  args.config_overrides = overrides
  assert args.config == "configs/tiny.py" and args.workdir == "/tmp/w"
  assert args.config_overrides == ["optim.epochs=2", "loss.momentum=false"]
  # A typo in an override fails at launch, before any data or JAX work, naming the key.
  assert cli_main(["train", "--config", args.config, "--workdir", args.workdir, "--config.optim.epochz=2"]) == 2


def test_a_config_that_is_not_python_or_fails_to_import_is_named(tmp_path, capsys):
  notes = tmp_path / "notes.txt"
  notes.write_text("optim.epochs = 2\n")
  with pytest.raises(ValueError, match=r"config file .*notes\.txt: not a Python file"):
    config_lib.load_config(str(notes))
  broken = tmp_path / "broken.py"
  broken.write_text("import no_such_module\n")
  with pytest.raises(ValueError, match=r"config file .*broken\.py failed to import: ModuleNotFoundError"):
    config_lib.load_config(str(broken) + ":cl")
  # Through the CLI: one line naming the file, exit code 2, before any data or JAX work.
  assert cli_main(["train", "--config", str(notes), "--workdir", str(tmp_path / "w")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "notes.txt: not a Python file" in err[0]
  assert not (tmp_path / "w").exists()


def test_missing_dataset_root_and_split_file_fail_naming_the_key(tmp_path):
  c = _load("cia18")
  every_root = ", ".join(rf"config\.data\.train\.{n}\.root" for n in ("coco", "got10k", "lasot", "trackingnet"))
  with pytest.raises(ValueError, match=every_root + " not set"):
    inputs.build_samplers(c, str(tmp_path))
  c = _load("cia18")
  for name in ("lasot", "trackingnet", "coco"):
    c.data.train[name].weight = 0.0
  os.makedirs(tmp_path / "got10k")
  c.data.train.got10k.root = str(tmp_path / "got10k")
  with pytest.raises(ValueError, match=r"config\.data\.train\.got10k: GOT-10k split 'vottrain' needs a split file"):
    inputs.build_samplers(c, str(tmp_path))
  c.data.train.got10k.split = "train"
  c.data.train.got10k.root = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match=r"config\.data\.train\.got10k"):
    inputs.build_samplers(c, str(tmp_path))


def test_tiny_config_generates_its_synthetic_data_once(tmp_path):
  config = _load("tiny")
  train, val = inputs.build_samplers(config, str(tmp_path))
  n = config.data.synthetic.num_sequences
  assert train.num_usable() == [n, n] and val is not None and val.num_usable() == [n]
  got10k = tmp_path / "synthetic" / "got10k_got10k"
  assert (got10k / "train" / "list.txt").is_file() and (got10k / "val" / "list.txt").is_file()
  train_names = {s.name for s in train.datasets[0]}
  assert not train_names & {s.name for s in val.datasets[0]}  # GOT-10k_Train_* vs GOT-10k_Val_*
  stamp = os.path.getmtime(got10k / "train" / "list.txt")
  inputs.build_samplers(config, str(tmp_path))  # a resumed run reuses the generated files
  assert os.path.getmtime(got10k / "train" / "list.txt") == stamp


@pytest.mark.parametrize("name", ["cia18", "cia50", "dimp18", "superdimp"])
def test_full_size_configs_build_their_network_and_optimiser(name):
  """Full-size shapes with `jax.eval_shape` (no compile): every parameter group has a learning rate."""
  import jax  # pylint: disable=g-import-not-at-top

  from cia_jax.train.state import FROZEN, param_labels  # pylint: disable=g-import-not-at-top

  config = _load(name)
  model = build_model(config.model)
  shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(int(config.seed))))
  c3 = 1024 if name in ("cia50", "superdimp") else 256
  assert shapes["params"]["classifier"]["filter_initializer"]["filter_conv"]["kernel"].shape[-1] == \
      config.model.clf_dim
  assert ("proj" in shapes["params"]) == (name in ("cia18", "cia50"))
  groups = set(jax.tree.leaves(param_labels(shapes["params"], tuple(model.frozen_layers))))
  assert groups - {FROZEN} <= set(config.optim.learning_rates)
  assert (FROZEN in groups) == (name in ("cia50", "superdimp"))
  tx = init.optimizer(config, shapes["params"], model.frozen_layers)
  opt_shapes = jax.eval_shape(tx.init, shapes["params"])
  assert jax.tree.leaves(opt_shapes)
  if name in ("cia18", "cia50"):
    assert shapes["params"]["proj"]["conv1"]["kernel"].shape[-1] == c3
