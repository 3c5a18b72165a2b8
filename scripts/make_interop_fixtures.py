"""Fixtures for `tests/interop/`: real `torch.save` files, and a golden forward of the CIA reference modules.

Needs torch (not a project dependency) and, for the CIA fixture, the CIA reference exported into the git-ignored
`third_party/CIA` (zxgravity/CIA). Nothing of the reference is copied here; its modules are imported and run.

  python3 -m venv ../torchref && ../torchref/bin/pip install torch==2.13.0 numpy
  ../torchref/bin/python scripts/make_interop_fixtures.py --cia-root third_party/CIA --out tests/data/interop

  (add --pytracking-root third_party/pytracking for reference_keys.json.gz)

Writes (fixed seeds; re-running reproduces the same tensors, though not the same bytes of the legacy file,
whose storage keys are memory addresses):
* `checkpoint_zip.pth` (torch >= 1.6 zip format) and `checkpoint_legacy.pth` (`_use_new_zipfile_serialization=
  False`, the pre-1.6 stream format of pytracking's released `.pth.tar` files): a pytracking-like dict
  {'epoch', 'net': OrderedDict of tensors of several dtypes, a transposed (non-contiguous) view, an offset
  slice sharing a storage, a 0-dim and an empty tensor, an nn.Parameter; 'constructor': an instance of a class
  living in module `ltr.admin.model_constructor`; 'stats': nested plain data}. `checkpoint_values.npz` holds
  the expected arrays (bfloat16 as float32) under `net/<key>`.
* `cia_modules.npz`: the CIA reference's `Projector` (encoder_q.proj), `Modulator_v2` (modulator) and
  `FCClassifier_v2` (upper_classifier, with its `TransformerEncoder_v2` built with dim_feedforward 16 to keep
  the file small) at C3 = 16, C4 = 32, random weights (all biases and LayerNorm affines non-zero). `state/<torch
  key>` = the modules' state dict under their full CIDiMPnet key names; inputs `layer3` (N, C3, 6, 6),
  `layer4` (N, C4, 3, 3), `box_xywh` (N, 4) in 96 px crop pixels; outputs in eval mode: `ins` (modulator output),
  `encoded` (`semantic_trans(ins, training=False)`, the tracker's classification input), `logits` (upper
  classifier), `query` (contrastive embedding: PrRoIPool 3x3 @1/16, proj with padding 0, L2 norm).

* `reference_keys.json.gz`: {arch: {torch key: shape}} of the full-size DiMP18 / SuperDiMP / SuperDiMP-simple
  (pytracking `dimpnet18` / `dimpnet50` / `dimpnet50_simple`) and CIA18 / CIA50 (CIA `cia18` / `cia50`) state
  dicts, built by the reference constructors with the arguments of their training settings (names and shapes
  only, no weights).

Import shims for the CIA fixture: `ltr.*` packages are registered bare (their `__init__`s pull in the training
stack), `ltr.external.PreciseRoIPooling.pytorch.prroi_pool.PrRoIPool2D` is the CPU implementation of
`scripts/make_golden_fixtures.py` (written from design.md §3.3; the real op is CUDA only), `ltr.models.backbone.resnet`
and `ltr.models.utils` are placeholders (the imported modules do not call them here), and `Tensor.cuda` is the
identity while `FCClassifier_v2` is constructed (its constructor copies a weight slice to the GPU). For the
network layouts, additionally `ltr.models.backbone` is registered bare with its ResNet / MoCo constructors
(its `__init__` imports timm for Swin), `ltr.model_constructor` is set from `ltr.admin.model_constructor`,
and `torchvision.models.resnet` / `cv2` are the stubs of `scripts/make_golden_fixtures.py`.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import pathlib
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

_HERE = pathlib.Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------------------------
# Real torch.save files.


class _NetConstructorLike:
  """Stands in for pytracking's NetConstructor; pickled by reference to module `ltr.admin.model_constructor`."""

  def __init__(self, fun_name, fun_module, args, kwds):
    self.fun_name = fun_name
    self.fun_module = fun_module
    self.args = args
    self.kwds = kwds


def _register_fake_ltr_class() -> type:
  for name in ("ltr", "ltr.admin", "ltr.admin.model_constructor"):
    sys.modules.setdefault(name, types.ModuleType(name))
  cls = type("NetConstructor", (_NetConstructorLike,), {"__module__": "ltr.admin.model_constructor"})
  cls.__qualname__ = "NetConstructor"
  sys.modules["ltr.admin.model_constructor"].NetConstructor = cls
  return cls


def _checkpoint_object(gen: torch.Generator):
  base = torch.randn(4, 6, generator=gen)
  shared = torch.arange(20, dtype=torch.float32) * 0.5
  net = collections.OrderedDict()
  net["conv.weight"] = torch.randn(3, 2, 3, 3, generator=gen)
  net["float64"] = torch.randn(2, 3, generator=gen, dtype=torch.float64)
  net["float16"] = torch.randn(5, generator=gen).half()
  net["bfloat16"] = torch.randn(2, 4, generator=gen).bfloat16()
  net["int64"] = torch.tensor([[1, -2, 3], [2**40, 5, -6]], dtype=torch.int64)
  net["int32"] = torch.tensor([7, -8, 9], dtype=torch.int32)
  net["uint8"] = torch.tensor([0, 128, 255], dtype=torch.uint8)
  net["bool"] = torch.tensor([True, False, True])
  net["transposed"] = base.t()  # non-contiguous: strides (1, 6)
  net["offset_slice"] = shared[5:11].view(2, 3)  # storage offset 5, shares `shared`'s storage
  net["shared_full"] = shared
  net["scalar"] = torch.tensor(2.5)
  net["empty"] = torch.zeros(0, 3)
  net["bn.num_batches_tracked"] = torch.tensor(17)
  net["param"] = nn.Parameter(torch.randn(2, 2, generator=gen))
  ctor = _register_fake_ltr_class()("dimpnet18", "ltr.models.tracking.dimpnet", (), {"optim_iter": 5})
  obj = {"epoch": 3, "net_type": "DiMPnet", "net": net, "constructor": ctor,
         "stats": {"train": {"Loss/total": [0.5, 0.25]}, "shape": (1, 2)}}
  return obj, net


def make_checkpoint_fixtures(out: pathlib.Path) -> None:
  gen = torch.Generator().manual_seed(0)
  obj, net = _checkpoint_object(gen)
  torch.save(obj, out / "checkpoint_zip.pth")
  torch.save(obj, out / "checkpoint_legacy.pth", _use_new_zipfile_serialization=False)
  values = {}
  for k, v in net.items():
    v = v.detach()
    values[f"net/{k}"] = (v.float() if v.dtype == torch.bfloat16 else v).numpy().copy()
  np.savez(out / "checkpoint_values.npz", **values)


# ------------------------------------------------------------------------------------------------------------
# CIA reference modules.


def _module(name: str, path: pathlib.Path | None = None, **attrs) -> types.ModuleType:
  """Registers a bare module in `sys.modules` (the golden-fixture script's shim helper)."""
  import make_golden_fixtures as golden  # noqa: E402  (scripts/ is on sys.path)
  return golden._module(name, path, **attrs)  # pylint: disable=protected-access


def load_file(name: str, path: pathlib.Path) -> types.ModuleType:
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  sys.modules[name] = mod
  spec.loader.exec_module(mod)
  return mod


def _install_cia_shims(root: pathlib.Path):
  models = root / "ltr" / "models"
  if not (models / "upper_classifier" / "upper_classifier.py").is_file():
    raise FileNotFoundError(f"--cia-root {root}: not a CIA checkout (no ltr/models/upper_classifier/...)")
  sys.path.insert(0, str(_HERE))
  import make_golden_fixtures as golden  # noqa: E402  (the CPU PrRoIPool, written from design.md §3.3)

  for k in [k for k in sys.modules if k == "ltr" or k.startswith("ltr.")]:
    del sys.modules[k]
  _module("ltr", root / "ltr")
  _module("ltr.external", None)
  _module("ltr.external.PreciseRoIPooling", None)
  _module("ltr.external.PreciseRoIPooling.pytorch", None)
  _module("ltr.external.PreciseRoIPooling.pytorch.prroi_pool", None, PrRoIPool2D=golden.TorchPrRoIPool2D)
  _module("ltr.models", models)
  _module("ltr.models.utils", None, corr=None, bb2roi=None)
  _module("ltr.models.layers", None)
  _module("ltr.models.layers.normalization", None, InstanceL2Norm=None)
  _module("ltr.models.neck", models / "neck")
  modulator = load_file("ltr.models.neck.modulator", models / "neck" / "modulator.py")
  for n in ("Modulator", "Modulator_v2", "Modulator_v3"):
    setattr(sys.modules["ltr.models.neck"], n, getattr(modulator, n))
  _module("ltr.models.backbone", models / "backbone")
  _module("ltr.models.backbone.resnet", None, resnet18=None, resnet50=None)
  moco = load_file("ltr.models.backbone.moco", models / "backbone" / "moco.py")
  _module("ltr.models.upper_classifier", models / "upper_classifier")
  load_file("ltr.models.upper_classifier.transformer", models / "upper_classifier" / "transformer.py")
  upper = load_file("ltr.models.upper_classifier.upper_classifier",
                     models / "upper_classifier" / "upper_classifier.py")
  return moco, modulator, upper, golden


def make_cia_fixture(root: pathlib.Path, out: pathlib.Path) -> None:
  moco, modulator_mod, upper_mod, golden = _install_cia_shims(root)
  torch.manual_seed(0)
  gen = torch.Generator().manual_seed(1)
  c3, c4, n = 16, 32, 2
  proj = moco.Projector(in_channels=c3, kernel_size=3)
  modulator = modulator_mod.Modulator_v2(in_channels=c3, alpha=-1, alpha_mode="learned")
  cuda = torch.Tensor.cuda
  torch.Tensor.cuda = lambda self, *a, **k: self
  try:
    upper = upper_mod.FCClassifier_v2(class_num=70, in_channel=c4, post_proj_channel=c3)
  finally:
    torch.Tensor.cuda = cuda
  layer = upper_mod.TransformerEncoderLayer_v2(d_model=c3, nhead=4, dim_feedforward=16)
  upper.transformer_encoder = upper_mod.TransformerEncoder_v2(encoder_layer=layer, num_layers=3, norm=None)
  with torch.no_grad():
    # Non-trivial values everywhere (zero biases / unit LayerNorms would hide mapping errors).
    for m in (proj, modulator, upper):
      for name, p in m.named_parameters():
        if name.endswith("bias") or ".norm" in name or name == "alpha_factor":
          p.copy_(0.2 * torch.randn(p.shape, generator=gen) + (1.0 if ".norm" in name and
                                                               name.endswith("weight") else 0.0))
    for i in range(3):  # The deep copies start identical; make the layers differ.
      for p in upper.transformer_encoder.layers[i].parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=gen))
  for m in (proj, modulator, upper):
    m.eval()
  layer3 = torch.randn(n, c3, 6, 6, generator=gen)
  layer4 = torch.randn(n, c4, 3, 3, generator=gen)
  box = torch.tensor([[20.0, 14.0, 40.0, 50.0], [5.5, 30.0, 61.0, 33.0]])
  with torch.no_grad():
    logits, _ = upper(layer4, box)  # Also points `cls_vectors` at the live clf_fc slice (intended path).
    y = F.normalize(proj(layer3), dim=1)
    ins = modulator(layer3, y)
    encoded = upper.semantic_trans(ins, training=False)
    rois = torch.cat([torch.arange(n, dtype=torch.float32)[:, None],
                      torch.cat([box[:, :2], box[:, :2] + box[:, 2:]], 1)], 1)
    pooled = golden.TorchPrRoIPool2D(3, 3, 1 / 16)(layer3, rois)
    query = F.normalize(proj(pooled, padding=0).reshape(n, -1), dim=1)
  data = {"layer3": layer3, "layer4": layer4, "box_xywh": box, "ins": ins, "encoded": encoded,
          "logits": logits, "query": query}
  data = {k: v.numpy().astype(np.float32) for k, v in data.items()}
  for prefix, m in (("feature_extractor.encoder_q.proj", proj), ("feature_extractor.modulator", modulator),
                    ("upper_classifier", upper)):
    for k, v in m.state_dict().items():
      data[f"state/{prefix}.{k}"] = v.detach().numpy().astype(np.float32)
  data["meta/torch_version"] = np.asarray(torch.__version__)
  np.savez(out / "cia_modules.npz", **data)


# ------------------------------------------------------------------------------------------------------------
# Real state-dict layouts of the four networks, from the reference constructors (names and shapes only).

# The constructor calls of the reference training settings (pytracking ltr/train_settings/dimp/{dimp18,
# super_dimp}.py, CIA ltr/train_settings/CIA/{CIA18,CIA50}.py), with backbone_pretrained=False (no download).
_COMMON = dict(filter_size=4, backbone_pretrained=False, optim_iter=5, clf_feat_norm=True, final_conv=True,
               optim_init_step=0.9, optim_init_reg=0.1, num_dist_bins=100, bin_displacement=0.1,
               mask_init_factor=3.0, target_mask_act="sigmoid", score_act="relu")
_R50_ARGS = dict(clf_feat_blocks=0, out_feature_dim=512, frozen_backbone_layers=["conv1", "bn1", "layer1", "layer2"])
_CONSTRUCTORS = {
    "dimp18": ("pytracking", "dimpnet18", dict(_COMMON, init_gauss_sigma=0.9)),
    "superdimp": ("pytracking", "dimpnet50", dict(_COMMON, **_R50_ARGS, init_gauss_sigma=0.25 / 6 * 22)),
    "cia18": ("cia", "cia18", dict(_COMMON, init_gauss_sigma=0.9)),
    "cia50": ("cia", "cia50", dict(_COMMON, **_R50_ARGS, init_gauss_sigma=0.25 / 6 * 22)),
    # The released KeepTrack base (ltr/train_settings/dimp/super_dimp_simple.py): no label / mask / weight
    # predictors, a hinge residual with a learnt filter_reg.
    "superdimp_simple": ("pytracking", "dimpnet50_simple",
                         dict(filter_size=4, backbone_pretrained=False, optim_iter=5, clf_feat_norm=True,
                              final_conv=True, optim_init_reg=0.1, score_act="relu", hinge_threshold=0.05,
                              activation_leak=0.1, **_R50_ARGS)),
}


def _install_network_shims(root: pathlib.Path, golden) -> None:
  """Bare `ltr` / `pytracking` packages of `root` plus the stubs listed in the module docstring."""
  for k in [k for k in sys.modules if k.split(".")[0] in ("ltr", "pytracking", "torchvision", "cv2")]:
    del sys.modules[k]
  sys.path.insert(0, str(root))
  _module("ltr", root / "ltr")
  _module("ltr.admin", root / "ltr" / "admin")
  import ltr.admin.model_constructor as mc  # noqa: E402
  sys.modules["ltr"].model_constructor = mc.model_constructor
  _module("pytracking", root / "pytracking")
  import pytracking.libs.tensorlist as tensorlist  # noqa: E402
  sys.modules["pytracking"].TensorList = tensorlist.TensorList
  _module("ltr.external", None)
  _module("ltr.external.PreciseRoIPooling", None)
  _module("ltr.external.PreciseRoIPooling.pytorch", None)
  _module("ltr.external.PreciseRoIPooling.pytorch.prroi_pool", None, PrRoIPool2D=golden.TorchPrRoIPool2D)
  _module("ltr.models", root / "ltr" / "models")
  _module("torchvision", None)
  _module("torchvision.models", None)
  _module("torchvision.models.resnet", None, BasicBlock=golden._BasicBlock,  # pylint: disable=protected-access
          Bottleneck=golden._BottleneckPlaceholder, model_urls={})  # pylint: disable=protected-access
  _module("cv2", None)
  # The backbone package's __init__ imports every backbone (timm for swin): register it bare with the
  # ResNet constructors (and CIA's MoCo ones) as attributes.
  backbone = _module("ltr.models.backbone", root / "ltr" / "models" / "backbone")
  for sub, names in (("resnet", ("resnet18", "resnet50")), ("moco", ("moco_resnet18", "moco_resnet50"))):
    if (root / "ltr" / "models" / "backbone" / f"{sub}.py").is_file():
      mod = importlib.import_module(f"ltr.models.backbone.{sub}")
      for n in names:
        setattr(backbone, n, getattr(mod, n))


def make_reference_keys(pytracking_root: pathlib.Path, cia_root: pathlib.Path, out: pathlib.Path) -> None:
  """`reference_keys.json.gz`: {arch: {torch key: shape}} of the reference networks' state dicts."""
  import gzip  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, str(_HERE))
  import make_golden_fixtures as golden  # noqa: E402

  layouts = {}
  for arch, (repo, fn, kwargs) in _CONSTRUCTORS.items():
    _install_network_shims(pytracking_root if repo == "pytracking" else cia_root, golden)
    dimpnet = importlib.import_module("ltr.models.tracking.dimpnet")
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # FCClassifier_v2's constructor moves a slice to the GPU
    try:
      net = getattr(dimpnet, fn)(**kwargs)
    finally:
      torch.Tensor.cuda = cuda
    layouts[arch] = {k: list(v.shape) for k, v in net.state_dict().items()}
    del net
    sys.path.remove(str(pytracking_root if repo == "pytracking" else cia_root))
  with gzip.open(out / "reference_keys.json.gz", "wt") as f:
    json.dump({"torch_version": torch.__version__, "layouts": layouts}, f, sort_keys=True)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=str(_HERE.parent / "tests" / "data" / "interop"))
  parser.add_argument("--cia-root", default=None, help="CIA reference checkout (skip the CIA fixtures if unset)")
  parser.add_argument("--pytracking-root", default=None,
                      help="pytracking checkout; with --cia-root, also writes reference_keys.json.gz")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  make_checkpoint_fixtures(out)
  if args.cia_root:
    make_cia_fixture(pathlib.Path(args.cia_root), out)
  if args.cia_root and args.pytracking_root:
    make_reference_keys(pathlib.Path(args.pytracking_root).resolve(), pathlib.Path(args.cia_root).resolve(), out)
  for p in sorted(out.iterdir()):
    print(f"{p}  {p.stat().st_size} bytes")
  return 0


if __name__ == "__main__":
  sys.exit(main())
