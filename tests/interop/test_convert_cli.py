"""`cia-jax convert`: a torch-format file in, a variables checkpoint (save_variables / load_variables) out."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cia_jax import cli
from cia_jax.interop import mapping
from cia_jax.checkpoints import load_variables, save_variables
from cia_jax.interop.torch_pickle import load_torch_file, save_torch_file


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
  """A torchvision-layout ResNet-18 state dict (full size, random values) saved in torch's zip format."""
  rng = np.random.default_rng(0)
  template = mapping.model_template("resnet18")
  variables = jax.tree.map(lambda l: rng.standard_normal(l.shape, np.float32), template)
  state = mapping.flax_to_torch(variables, "resnet18")
  state["fc.weight"] = np.zeros((1000, 512), np.float32)
  state["fc.bias"] = np.zeros((1000,), np.float32)
  path = tmp_path_factory.mktemp("torch") / "resnet18.pth"
  save_torch_file(path, state)
  return path, variables


def test_convert_resnet18_end_to_end(tmp_path, resnet18_file, capsys):
  src, variables = resnet18_file
  out = tmp_path / "ckpt"
  assert cli.main(["convert", "--from", "pytracking", "--arch", "resnet18", str(src), str(out)]) == 0
  assert "wrote" in capsys.readouterr().out
  loaded, meta = load_variables(str(out))
  assert meta["arch"] == "resnet18" and meta["source"] == str(src) and meta["backbone_only"] is True
  assert meta["model"] == mapping.ARCH_CONFIGS["resnet18"]
  assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(variables)
  for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), b)

  # And back: the exported torch file holds the original state dict (minus the dropped fc).
  back = tmp_path / "back.pth"
  assert cli.main(["convert", "--from", "cia-jax", "--arch", "resnet18", str(out), str(back)]) == 0
  exported = load_torch_file(back)["net"]
  original = load_torch_file(src)
  assert sorted(exported) == sorted(k for k in original if not k.startswith("fc."))
  for k, v in exported.items():
    assert v.dtype == original[k].dtype, k
    np.testing.assert_array_equal(v, original[k], err_msg=k)
  # Exporting with the wrong arch is a clear error.
  assert cli.main(["convert", "--from", "cia-jax", "--arch", "cia18", str(out), str(tmp_path / "x.pth")]) == 2
  assert "do not have the layout of arch 'cia18'" in capsys.readouterr().err


def test_convert_errors_name_the_file(tmp_path, resnet18_file, capsys):
  src, _ = resnet18_file
  assert cli.main(["convert", "--arch", "resnet18", str(tmp_path / "missing.pth"), str(tmp_path / "o")]) == 2
  assert "missing.pth: no such checkpoint file" in capsys.readouterr().err
  # The right file format, the wrong network: every problem listed, prefixed by the file.
  assert cli.main(["convert", "--arch", "dimp18", str(src), str(tmp_path / "o")]) == 2
  err = capsys.readouterr().err
  assert f"{src}: state dict does not match arch 'dimp18'" in err and "feature_extractor.conv1.weight" in err
  assert not (tmp_path / "o").exists()
  # Asking for the key encoder of a network that has none.
  assert cli.main(["convert", "--arch", "resnet18", "--momentum-out", str(tmp_path / "m"), str(src),
                   str(tmp_path / "o2")]) == 2
  assert "has no key encoder" in capsys.readouterr().err and not (tmp_path / "o2").exists()
  with pytest.raises(SystemExit):
    cli.main(["convert", "--arch", "vgg16", str(src), str(tmp_path / "o3")])


def test_export_refuses_another_architecture_naming_both(tmp_path, capsys):
  """A CIA18 network (as training exports it: CIANet kwargs, no arch) is not written out as a DiMP18 state dict."""
  tiny = dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda leaf: rng.standard_normal(leaf.shape).astype(leaf.dtype),
                           mapping.model_template("cia18", **tiny))
  src = save_variables(str(tmp_path / "cia18_export"), variables, {"model": mapping.model_kwargs("cia18", **tiny)})
  out = tmp_path / "as_dimp18.pth"
  assert cli.main(["convert", "--from", "cia-jax", "--arch", "dimp18", src, str(out)]) == 2
  err = capsys.readouterr().err
  assert f"{src} holds a 'cia18' network, not 'dimp18'" in err and "category_encoder=True" in err, err
  assert not out.exists()
  # The right arch exports.
  assert cli.main(["convert", "--from", "cia-jax", "--arch", "cia18", src, str(out)]) == 0
  assert "feature_extractor.encoder_q.conv1.weight" in load_torch_file(out)["net"]
