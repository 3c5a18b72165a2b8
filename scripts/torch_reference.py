"""The PyTorch reference side of `scripts/compare_pytorch.py` (runs in the torch venv, not the project's).

Builds the real reference network -- pytracking `dimpnet18` / `dimpnet50` (DiMP18 / SuperDiMP; KeepTrack: SuperDiMP
plus `target_candidate_matching_net_resnet50`) or CIA `cia18` / `cia50` (CIA18 / CIA50) -- on the CPU with the
import shims of `scripts/make_interop_fixtures.py` (bare `ltr` / `pytracking` packages, the pure-torch CPU Precise
RoI Pooling of `scripts/make_golden_fixtures.py`, `Tensor.cuda` = identity) and runs the reference tracker classes
(pytracking `DiMP` / `KeepTrack`, CIA `CIA`) unmodified. Nothing of the reference is copied; its files are
imported and run. KeepTrack's tracker expects the `dimpnet50_simple` base (its filter optimiser takes the tracker's
`train_label`): a base file with that layout (`make-checkpoint --arch keeptrack --keeptrack-base superdimp_simple`,
or the released super_dimp_simple.pth.tar) runs it as is; a SuperDiMP `dimpnet50` base file is given behind
`LabelFreeOptimizer`. Which one a base file is, is read from its keys (`keeptrack_base_of`).

  ../torchref/bin/python scripts/torch_reference.py make-checkpoint --reference-root third_party/pytracking \\
      --arch dimp18 --seed 0 --out /tmp/dimp18_seed0.pth
  ../torchref/bin/python scripts/torch_reference.py stages --reference-root ... --arch dimp18 \\
      --checkpoint /tmp/dimp18_seed0.pth --frames FRAMES.npy --box x,y,w,h --out stages.npz
  ../torchref/bin/python scripts/torch_reference.py track --reference-root ... --arch dimp18 \\
      --checkpoint /tmp/dimp18_seed0.pth --frames FRAMES.npy --box x,y,w,h --out track.npz
  ../torchref/bin/python scripts/torch_reference.py make-checkpoint --reference-root third_party/pytracking \\
      --arch keeptrack --seed 0 --out /tmp/keep_track_seed0.pth --base-out /tmp/superdimp_seed0.pth
  ../torchref/bin/python scripts/torch_reference.py track ... --arch keeptrack --checkpoint /tmp/superdimp_seed0.pth \\
      --tcm-checkpoint /tmp/keep_track_seed0.pth --candidate-threshold 0.01 --record-matches 2 ...
  ../torchref/bin/python scripts/torch_reference.py make-checkpoint --reference-root third_party/pytracking \\
      --arch keeptrack --keeptrack-base superdimp_simple --seed 0 --out /tmp/keep_track_seed0.pth \\
      --base-out /tmp/superdimp_simple_seed0.pth       # the released base's layout (dimpnet50_simple)

`FRAMES.npy` is `[T, H, W, 3]` uint8 RGB, decoded once by the driver so that both sides see the same pixels.

Deterministic tracker mode (what `--deterministic`, the default, sets on the reference parameters):
`random_shift_factor = 0` (flip / blur / rotate samples get shift (0, 0)), dropout augmentation `(2, 0.0)` (the
two dropout copies are plain copies of sample 0: same 15-sample memory layout as with dropout),
`num_init_random_boxes = 0` (IoU-Net refines only the unjittered box), plus `target_not_found_threshold` from the
command line (0 for random weights, whose peak scores are ~0.1). `use_upper_classifier = False` for CIA (debug
output only). For CIA, the category encoder's dictionary (`upper_classifier.cls_vectors`) is pointed at the loaded
`clf_fc.weight[:, C4:]` (design.md §4.6: otherwise the reference tracker attends to the init-time random atoms).

`--float64 1` (stages / track) runs the reference in double precision (see `use_float64`).

Stage outputs (`stages`, NCHW torch layouts, float32, or float64 with `--float64 1`): see `STAGE_KEYS` in
`compare_pytorch.py`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch

_HERE = pathlib.Path(__file__).resolve().parent
ARCHS = ("dimp18", "superdimp", "cia18", "cia50", "keeptrack")
_REPO = {"dimp18": "pytracking", "superdimp": "pytracking", "cia18": "cia", "cia50": "cia", "keeptrack": "pytracking"}
# The reference's tracker parameter file of each network (pytracking's `dimp.super_dimp` is SuperDiMP).
_PARAMS = {"dimp18": "pytracking.parameter.dimp.dimp18", "superdimp": "pytracking.parameter.dimp.super_dimp",
           "cia18": "pytracking.parameter.CIA.CIA18", "cia50": "pytracking.parameter.CIA.CIA50",
           "keeptrack": "pytracking.parameter.keep_track.default"}
# KeepTrack = a SuperDiMP base network (`params.net`) + the target candidate matching net
# (`params.target_candidate_matching_net`), two checkpoint files as released (super_dimp_simple / keep_track).
# The base is SuperDiMP-simple (`dimpnet50_simple`, as released) or SuperDiMP (`dimpnet50`, behind
# LabelFreeOptimizer); `set_keeptrack_base` picks it.
_BASE_ARCH = {"keeptrack": "superdimp"}
KEEPTRACK_BASES = ("superdimp", "superdimp_simple")
# The one state-dict key that tells a dimpnet50_simple from a dimpnet50 (docs/keeptrack.md §0).
SIMPLE_BASE_KEY = "classifier.filter_optimizer.residual_module.filter_reg"


def base_arch(arch: str) -> str:
  """The DiMP / CIA network `arch` tracks with (keeptrack: superdimp or superdimp_simple)."""
  return _BASE_ARCH.get(arch, arch)


def set_keeptrack_base(base: str) -> None:
  if base not in KEEPTRACK_BASES:
    raise ValueError(f"keeptrack base must be one of {KEEPTRACK_BASES}, got {base!r}")
  _BASE_ARCH["keeptrack"] = base


def keeptrack_base_of(checkpoint: str) -> str:
  """'superdimp_simple' when the base file holds dimpnet50_simple's optimiser key, else 'superdimp'."""
  obj = torch.load(checkpoint, map_location="cpu", weights_only=False)
  state = obj["net"] if isinstance(obj, dict) and "net" in obj else obj
  return "superdimp_simple" if SIMPLE_BASE_KEY in state else "superdimp"


def plain_list_autograd() -> None:
  """`torch.autograd.grad` given plain lists for TensorLists: pytracking's `TensorList.__getattr__` answers any
  attribute, `__torch_function__` included, which current torch takes for a tensor-like override and refuses
  (`GNSteepestDescent` passes TensorLists). The values and the reference's code are unchanged."""
  grad = torch.autograd.grad
  if getattr(grad, "plain_lists", False):
    return

  def wrapped(outputs, inputs, grad_outputs=None, **kwargs):
    plain = lambda x: list(x) if isinstance(x, list) else x  # noqa: E731
    return grad(plain(outputs), plain(inputs), plain(grad_outputs), **kwargs)
  wrapped.plain_lists = True
  torch.autograd.grad = wrapped


def is_cia(arch: str) -> bool:
  """CIA networks (CIA checkout, `CIA` tracker class, category encoder) as opposed to pytracking DiMP ones."""
  return _REPO[arch] == "cia"


# ------------------------------------------------------------------------------------------------------------
# float64 runs.
#
# The reference hard-codes float32 in places (`.float()` on images and coordinates, `dtype=torch.float32` in
# `arange` grids of the label / window / blur code). For a float64 parity run (`--float64 1`) every float32 request
# is turned into float64 in this process: the default dtype, `Tensor.float`, and an explicit `dtype=torch.float32`
# given to the tensor factories. The network's float32 weights are cast with `.double()` (exact). The rotation
# augmentation's `cv2.warpAffine` is replaced by `warp_affine_bilinear` (see there).

_FACTORIES = ("arange", "zeros", "ones", "empty", "full", "tensor", "linspace", "as_tensor", "zeros_like",
              "ones_like", "rand", "randn", "from_numpy")


def warp_affine_bilinear(image: np.ndarray, matrix: np.ndarray, dsize, flags: int | None = None,
                         borderMode: int | None = None, **kwargs) -> np.ndarray:  # noqa: N803  (cv2's names)
  """`cv2.warpAffine(image, matrix, dsize, borderMode=cv2.BORDER_REPLICATE)` as exact bilinear interpolation in
  float64: dst(x, y) = src(M^-1 (x, y, 1)), replicated border. OpenCV's float32 warp is this up to float32
  rounding (checked: 1.5e-3 of 255 on noise images); its float64 warp quantises positions differently (up to
  5.7 of 255 off), so a float64 run of the reference uses this one for the rotation augmentation."""
  import cv2  # pylint: disable=g-import-not-at-top
  if borderMode != cv2.BORDER_REPLICATE or flags not in (None, cv2.INTER_LINEAR) or kwargs:
    return cv2.warpAffine(image, matrix, dsize, flags=flags or cv2.INTER_LINEAR, borderMode=borderMode, **kwargs)
  w, h = dsize
  inv = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
  yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
  sx = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
  sy = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
  x0, y0 = np.floor(sx), np.floor(sy)
  img = np.asarray(image, np.float64)
  extra = (None,) * (img.ndim - 2)
  lx, ly = (sx - x0)[(...,) + extra], (sy - y0)[(...,) + extra]
  hi, wi = img.shape[:2]
  at = lambda y, x: img[np.clip(y, 0, hi - 1).astype(np.int64), np.clip(x, 0, wi - 1).astype(np.int64)]  # noqa: E731
  top = (1 - lx) * at(y0, x0) + lx * at(y0, x0 + 1)
  bottom = (1 - lx) * at(y0 + 1, x0) + lx * at(y0 + 1, x0 + 1)
  return (1 - ly) * top + ly * bottom


def use_float64(reference_root: pathlib.Path) -> None:
  """Makes every float32 tensor that the reference code under `reference_root` asks for a float64 one (see
  above). Only calls made from the reference's own files are widened: torch's internals (e.g. `torch.load`
  rebuilding float32 storages) keep the dtypes they ask for."""
  if getattr(torch, "_cia_float64", False):
    return
  root = str(pathlib.Path(reference_root).resolve())
  def from_reference() -> bool:  # is the caller of the patched function a file of the reference checkout?
    return sys._getframe(2).f_code.co_filename.startswith(root)  # pylint: disable=protected-access
  torch.set_default_dtype(torch.float64)
  to_float = torch.Tensor.float
  torch.Tensor.float = lambda self, *a, **k: self.to(torch.float64) if from_reference() else to_float(self, *a, **k)

  def widen(name, fn):
    def wrapped(*a, **k):
      if from_reference():
        if k.get("dtype") is torch.float32:
          k["dtype"] = torch.float64
        if name == "from_numpy":
          out = fn(*a, **k)
          return out.double() if out.is_floating_point() else out
      return fn(*a, **k)
    return wrapped
  for name in _FACTORIES:
    setattr(torch, name, widen(name, getattr(torch, name)))
  torch._cia_float64 = True  # pylint: disable=protected-access


# ------------------------------------------------------------------------------------------------------------
# Building the reference network and tracker.


def _install(root: pathlib.Path, arch: str):
  """Import shims (those of make_interop_fixtures, plus what the tracker modules need); returns the dimpnet module."""
  sys.path.insert(0, str(_HERE))
  import make_golden_fixtures as golden  # noqa: E402
  import make_interop_fixtures as interop  # noqa: E402

  root = root.resolve()  # absolute: the CIA tracker is imported from another working directory
  marker = "ltr/models/upper_classifier/upper_classifier.py" if is_cia(arch) else "ltr/models/tracking/dimpnet.py"
  if not (root / marker).is_file():
    raise FileNotFoundError(f"--reference-root {root}: not a {_REPO[arch]} checkout for {arch} (no {marker})")
  interop._install_network_shims(root, golden)  # pylint: disable=protected-access
  # The tracker needs the real OpenCV (rotation augmentation); the network shims put an empty cv2 in place.
  sys.modules.pop("cv2", None)
  import cv2  # noqa: F401,E402
  # Bare `ltr.data` package: its __init__ pulls in the dataset loaders.
  interop._module("ltr.data", root / "ltr" / "data")  # pylint: disable=protected-access
  pyt = sys.modules["pytracking"]
  for name in ("complex", "fourier", "dcf"):  # `from pytracking import dcf` (the bare package has no __init__)
    setattr(pyt, name, importlib.import_module(f"pytracking.libs.{name}"))
  interop._module("pytracking.utils.plotting", None,  # pylint: disable=protected-access
                  show_tensor=lambda *a, **k: None, plot_graph=lambda *a, **k: None)  # matplotlib-free
  torch.Tensor.cuda = lambda self, *a, **k: self  # CPU run: FCClassifier_v2's constructor moves a slice "to the GPU"
  if arch == "keeptrack":  # keep_track.py imports matplotlib for its debug plots only (the venv has none)
    for name in ("matplotlib", "matplotlib.pyplot", "matplotlib.patches"):
      sys.modules.setdefault(name, type(sys)(name))
  return importlib.import_module("ltr.models.tracking.dimpnet"), interop


def build_network(root: pathlib.Path, arch: str, seed: int | None = None):
  """The reference network of `arch` (constructor arguments of its training settings), eval mode."""
  dimpnet, interop = _install(root, arch)
  _, fn, kwargs = interop._CONSTRUCTORS[base_arch(arch)]  # pylint: disable=protected-access
  if seed is not None:
    torch.manual_seed(seed)
  net = getattr(dimpnet, fn)(**kwargs)
  return net.eval()


def build_tcm_network():
  """KeepTrack's target candidate matching net by the reference constructor (as `ltr/train_settings/keep_track`
  calls it, backbone not pretrained), eval mode; `_install` must have run."""
  tcm = importlib.import_module("ltr.models.target_candidate_matching.target_candidate_matching")
  return tcm.target_candidate_matching_net_resnet50(backbone_pretrained=False).eval()


def _load_state(net, checkpoint: str, what: str):
  obj = torch.load(checkpoint, map_location="cpu", weights_only=False)
  state = obj["net"] if isinstance(obj, dict) and "net" in obj else obj
  try:
    net.load_state_dict(state, strict=True)
  except RuntimeError as e:
    raise ValueError(f"{checkpoint}: not a {what} state dict ({str(e).splitlines()[0]})") from None


def load_tcm_network(tcm_checkpoint: str):
  """The association net of a `keep_track.pth.tar`-layout file (after `load_network`), eval mode."""
  default = torch.get_default_dtype()
  torch.set_default_dtype(torch.float32)
  try:
    net = build_tcm_network()
    _load_state(net, tcm_checkpoint, "KeepTrack (TargetCandidateMatchingNetwork)")
  finally:
    torch.set_default_dtype(default)
  if torch.get_default_dtype() == torch.float64:
    net = net.double()
  return net.eval()


def load_network(root: pathlib.Path, arch: str, checkpoint: str):
  default = torch.get_default_dtype()
  torch.set_default_dtype(torch.float32)  # built as in float32 runs, then cast (below)
  try:
    net = build_network(root, arch)
    _load_state(net, checkpoint, base_arch(arch))
  finally:
    torch.set_default_dtype(default)
  if torch.get_default_dtype() == torch.float64:
    net = net.double()
  if is_cia(arch):
    up = net.upper_classifier
    # Point the dictionary at the trained weights (design.md §4.6); the constructor's copy is of the random init.
    up.cls_vectors = up.clf_fc.weight[:, up.upper_clf_channel:].detach()
  return net.eval()


class LabelFreeOptimizer(torch.nn.Module):
  """SuperDiMP's filter optimiser (`DiMPSteepestDescentGN`, its labels predicted from the boxes) under the call
  signature of super_dimp_simple's (`GNSteepestDescent` on `LinearFilterHinge`), which the released KeepTrack
  tracker uses: `train_label` is accepted and dropped, a `TensorList([filter])` is unwrapped and the result
  wrapped back. The tracker is not modified; only the network it is given answers its call. This is the base
  network cia_jax's keeptrack preset implements (SuperDiMP's dimpnet50; docs/keeptrack.md, compare mode)."""

  def __init__(self, inner):
    super().__init__()
    self.inner = inner

  def forward(self, weights, feat, bb, sample_weight=None, num_iter=None, compute_losses=False, train_label=None):
    del train_label
    wrapped = isinstance(weights, list)  # TensorList is a list
    w = weights[0] if wrapped else weights
    out, iterates, losses = self.inner(w, feat=feat, bb=bb, sample_weight=sample_weight, num_iter=num_iter,
                                       compute_losses=compute_losses)
    return (type(weights)([out]) if wrapped else out), iterates, losses


class CPUNet:
  """Stands in for pytracking's `NetWithBackbone` (no `load_network`, no `.cuda()`); records backbone calls."""

  def __init__(self, net):
    self.net = net
    self.calls = []  # (patches [N, 3, S, S], features dict) of every extract_backbone call
    self._mean = torch.Tensor((0.485, 0.456, 0.406)).view(1, -1, 1, 1)
    self._std = torch.Tensor((0.229, 0.224, 0.225)).view(1, -1, 1, 1)
    self.record = False

  def initialize(self):
    pass

  def __getattr__(self, name):
    return getattr(self.__dict__["net"], name)

  def extract_backbone(self, im: torch.Tensor):
    x = (im / 255 - self._mean) / self._std
    feats = self.net.extract_backbone_features(x)
    if self.record:
      self.calls.append((im.clone(), feats))
    return feats


def tracker_params(arch: str, net: CPUNet, deterministic: bool, target_not_found_threshold: float | None,
                   candidate_threshold: float | None = None):
  """The reference parameter file of `arch` (`_PARAMS`) as a TrackerParams, on the CPU."""
  module = _PARAMS[arch]
  # The parameter file only constructs a NetWithBackbone / NetWrapper (which would load a file onto the GPU): stubs.
  sys.modules["pytracking.features.net_wrappers"] = type(sys)("pytracking.features.net_wrappers")
  sys.modules["pytracking.features.net_wrappers"].NetWithBackbone = lambda **kw: None
  sys.modules["pytracking.features.net_wrappers"].NetWrapper = lambda **kw: None
  params = importlib.import_module(module).parameters()
  params.net = net
  params.use_gpu = False
  params.device = "cpu"
  params.debug = 0
  params.visualization = False
  if is_cia(arch):
    params.use_upper_classifier = False
  if deterministic:
    params.random_shift_factor = 0
    params.augmentation = dict(params.augmentation, dropout=(params.augmentation["dropout"][0], 0.0))
    params.num_init_random_boxes = 0
  if target_not_found_threshold is not None:
    params.target_not_found_threshold = target_not_found_threshold
  if candidate_threshold is not None:  # keeptrack: candidate (local maximum) and matching-fallback threshold
    params.local_max_candidate_score_th = candidate_threshold
  return params


def use_crop_of(other_root: pathlib.Path) -> None:
  """Replaces the reference's `sample_patch` by the one of another checkout (e.g. the CIA fork's floor-division
  crop window for the pytracking DiMP tracker; the two files differ only there). `sample_patch_multiscale` /
  `sample_patch_transformed` look the function up at call time, so both tracker paths use it."""
  path = pathlib.Path(other_root).resolve() / "pytracking" / "features" / "preprocessing.py"
  if not path.is_file():
    raise FileNotFoundError(f"--crop-from {other_root}: no {path}")
  spec = importlib.util.spec_from_file_location("_crop_rule_preprocessing", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  importlib.import_module("pytracking.features.preprocessing").sample_patch = mod.sample_patch


def build_tracker(root: pathlib.Path, arch: str, checkpoint: str, deterministic: bool = True,
                  target_not_found_threshold: float | None = 0.0, crop_from: str | None = None,
                  tcm_checkpoint: str | None = None, candidate_threshold: float | None = None):
  if arch == "keeptrack":
    set_keeptrack_base(keeptrack_base_of(checkpoint))
  net = CPUNet(load_network(root, arch, checkpoint))
  params = tracker_params(arch, net, deterministic, target_not_found_threshold, candidate_threshold)
  if arch == "keeptrack":
    if not tcm_checkpoint:
      raise ValueError("--arch keeptrack needs --tcm-checkpoint (the keep_track.pth.tar-layout file)")
    # The tracker calls `.initialize()` on it and then reads get_backbone_clf_feat / descriptor_extractor /
    # matcher: CPUNet provides the first and forwards the rest.
    params.target_candidate_matching_net = CPUNet(load_tcm_network(tcm_checkpoint))
    if base_arch(arch) == "superdimp_simple":
      plain_list_autograd()
    else:
      clf = net.net.classifier
      clf.filter_optimizer = LabelFreeOptimizer(clf.filter_optimizer)
    cls = importlib.import_module("pytracking.tracker.keep_track.keep_track").KeepTrack
  elif is_cia(arch):
    # CIA.py reads 'upper_cls_map.txt' from the working directory at import time (debug labels only).
    tmp = tempfile.mkdtemp(prefix="cia_ref_")
    with open(os.path.join(tmp, "upper_cls_map.txt"), "w") as f:
      f.write("\n".join(f"class{i}" for i in range(70)) + "\n")
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
      cls = importlib.import_module("pytracking.tracker.CIA.CIA").CIA
    finally:
      os.chdir(cwd)
  else:
    cls = importlib.import_module("pytracking.tracker.dimp.dimp").DiMP
  if crop_from:
    use_crop_of(pathlib.Path(crop_from))
  if torch.get_default_dtype() == torch.float64:
    import cv2  # pylint: disable=g-import-not-at-top  (the real one: `_install` put it back)
    aug = importlib.import_module("pytracking.features.augmentation")
    aug.cv = type(sys)("cv2_float64_warp")  # the module's `cv` name only; cv2 itself stays untouched
    aug.cv.__dict__.update({k: getattr(cv2, k) for k in dir(cv2) if not k.startswith("__")})
    aug.cv.warpAffine = warp_affine_bilinear
  return cls(params), net


# ------------------------------------------------------------------------------------------------------------
# Commands.


def _np(t) -> np.ndarray:
  """float32 or, in a float64 run, float64 NumPy copy."""
  a = t.detach().cpu().numpy()
  return a if a.dtype == np.float64 else a.astype(np.float32)


def _randomise_bn(net, gen: torch.Generator) -> None:
  """Non-trivial BatchNorm running stats / affines (identity BN would hide a mean/var or weight/bias mix-up)."""
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
        c = m.num_features
        m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
        m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
        m.weight.mul_(0.75 + 0.5 * torch.rand(c, generator=gen))
        m.bias.add_(0.1 * torch.randn(c, generator=gen))


def cmd_make_checkpoint(args) -> int:
  net = build_network(pathlib.Path(args.reference_root), args.arch, seed=args.seed)
  if args.randomize_bn:
    _randomise_bn(net, torch.Generator().manual_seed(args.seed + 1))
  if args.arch == "keeptrack":
    return _make_keeptrack_checkpoints(args, net)
  state = net.state_dict()
  torch.save({"net": state, "net_type": type(net).__name__, "arch": args.arch, "seed": args.seed}, args.out)
  print(f"wrote {args.out}: {args.arch} random weights (torch.manual_seed({args.seed})), {len(state)} tensors")
  return 0


def _make_keeptrack_checkpoints(args, base) -> int:
  """KeepTrack's two released files from random weights: `--base-out` = the base (`--keeptrack-base`:
  superdimp_simple = super_dimp_simple.pth.tar's layout, `cia-jax convert --arch superdimp_simple`; superdimp =
  SuperDiMP's dimpnet50, `cia-jax convert --arch superdimp`), `--out` = the target candidate matching net
  (keep_track.pth.tar's layout, `cia-jax convert --arch keeptrack`). The matching net is built right after the
  base under the same seed stream; its `feature_extractor` takes the base's weights, as the reference's training
  settings load them (`load_state_dict(base.state_dict(), strict=False)`)."""
  if not args.base_out:
    raise ValueError("make-checkpoint --arch keeptrack needs --base-out (the SuperDiMP base file)")
  tcm = build_tcm_network()
  tcm.load_state_dict(base.state_dict(), strict=False)
  if args.randomize_bn:  # the matcher's keypoint-encoder / GNN BatchNorm1d layers (the backbone's came with the base)
    _randomise_bn(tcm.matcher, torch.Generator().manual_seed(args.seed + 2))
  torch.save({"net": base.state_dict(), "net_type": type(base).__name__, "arch": base_arch("keeptrack"),
              "seed": args.seed}, args.base_out)
  state = tcm.state_dict()
  torch.save({"net": state, "net_type": type(tcm).__name__, "arch": "keeptrack", "seed": args.seed}, args.out)
  print(f"wrote {args.base_out} ({base_arch('keeptrack')} base) and {args.out} (target candidate matching, "
        f"{len(state)} tensors): random weights (torch.manual_seed({args.seed}))")
  return 0


def _box(text: str) -> list[float]:
  vals = [float(v) for v in text.split(",")]
  if len(vals) != 4:
    raise ValueError(f"--box {text!r}: expected x,y,w,h")
  return vals


def cmd_stages(args) -> int:
  """Initialises the reference tracker on frame 0 and records every network stage of the first frame."""
  frames = np.load(args.frames, mmap_mode="r")
  tracker, net = build_tracker(pathlib.Path(args.reference_root), args.arch, args.checkpoint, True, 0.0,
                               args.crop_from, args.tcm_checkpoint, args.candidate_threshold)
  net.record = True
  tracker.initialize(np.array(frames[0]), {"init_bbox": _box(args.box)})
  patches, feats = net.calls[0]
  out = {"patches": patches.permute(0, 2, 3, 1)}  # [13, S, S, 3] 0..255 (NHWC, as ours)
  inner = net.net
  resnet = inner.feature_extractor.encoder_q if is_cia(args.arch) else inner.feature_extractor
  with torch.no_grad():  # all five backbone outputs (the tracker's call stops at layer3 / layer4)
    layers = resnet((patches / 255 - net._mean) / net._std,  # pylint: disable=protected-access
                    ["conv1", "layer1", "layer2", "layer3", "layer4"])
  feats = dict(feats, **{k: v for k, v in layers.items() if k not in feats})
  with torch.no_grad():
    for k in ("conv1", "layer1", "layer2", "layer3", "layer4"):
      out[f"backbone/{k}"] = feats[k]
    if is_cia(args.arch):
      out["cia/instance"] = feats["layer3_ins"]
      out["cia/category"] = inner.upper_classifier.semantic_trans(feats["layer3_ins"], training=False)
      clf_in = out["cia/category"]
    else:
      clf_in = feats["layer3"]
    out["clf/features"] = inner.classifier.extract_classification_feat(clf_in)  # [13, D, f, f]
    x = tracker.training_samples[0][:tracker.num_init_samples[0]]  # [15, D, f, f] incl. the 2 copies
    boxes = tracker.target_boxes[:tracker.num_init_samples[0]]  # [15, 4]
    out["clf/samples"] = x
    out["clf/boxes"] = boxes
    out["filter/init"] = inner.classifier.filter_initializer(x.unsqueeze(1), boxes.unsqueeze(1))
    if getattr(tracker, "target_labels", None) is not None:  # keeptrack: the initial samples' labels
      out["clf/labels"] = tracker.target_labels[0][:tracker.num_init_samples[0], 0]  # [15, G, G]
    out["filter/optimized"] = tracker.target_filter
    out["score/map"] = inner.classifier.classify(tracker.target_filter, x[:1].unsqueeze(1))  # [1, 1, G, G]
    out["iou/mod3"], out["iou/mod4"] = tracker.iou_modulation[0], tracker.iou_modulation[1]
    c3t, c4t = inner.bb_regressor.get_iou_feat([feats["layer2"][:1], feats["layer3"][:1]])
    out["iou/feat3"], out["iou/feat4"] = c3t, c4t
    gen = torch.Generator().manual_seed(3)
    box0 = boxes[0]
    jitter = (torch.rand(16, 4, generator=gen) - 0.5) * torch.cat([box0[2:], box0[2:]]) * 0.4
    props = torch.cat([box0[None], box0[None] + jitter])  # [17, 4] xywh patch pixels
    out["iou/proposals"] = props
  props_g = props.clone().view(1, -1, 4).requires_grad_(True)
  mods = [m.view(1, -1, 1, 1) if m.dim() == 1 else m for m in tracker.iou_modulation]
  pred = inner.bb_regressor.predict_iou(mods, [c3t, c4t], props_g)
  pred.sum().backward()
  out["iou/pred"] = pred.detach()
  out["iou/grad"] = props_g.grad
  arrays = {k: _np(v) for k, v in out.items()}
  arrays["meta/box"] = np.asarray(_box(args.box), np.float32)
  np.savez(args.out, **arrays)
  print(f"wrote {args.out}: {len(arrays)} arrays")
  return 0


def _instrument(tracker, frame_index: int, dump: dict) -> None:
  """Records the internals of 0-based frame `frame_index` (frame_num = index + 1) into `dump` (NumPy arrays)."""
  wrapped = {}

  def wrap(name, record):
    fn = getattr(tracker, name)
    wrapped[name] = fn

    def inner(*a, **k):
      active = tracker.frame_num == frame_index + 1
      if active:
        record("before", a, k)
      res = fn(*a, **k)
      if active:
        record("after", res, None)
      return res
    setattr(tracker, name, inner)

  def put(key, value):
    dump[key] = value.detach().cpu().numpy().astype(np.float64) if torch.is_tensor(value) else np.asarray(value)

  def rec_localize(when, a, _):
    if when == "before":
      put("scores", a[0])
      put("sample_pos", a[1])
      put("sample_scale", a[2])
      put("pos_before", tracker.pos)
      put("target_sz_before", tracker.target_sz)
      put("target_scale_before", torch.as_tensor(tracker.target_scale))
    else:
      put("translation", a[0])
      dump["flag"] = np.asarray(str(a[3]))

  def rec_refine(when, a, _):
    if when == "before":
      put("pos_refine_in", tracker.pos)
    else:
      put("pos_refine_out", tracker.pos)
      put("target_sz_refine_out", tracker.target_sz)
      put("target_scale_refine_out", torch.as_tensor(tracker.target_scale))

  def rec_boxes(when, a, _):
    if when == "before":
      put("iou_init_boxes", a[1])
      put("iou_feat3", a[0][0])
      put("iou_feat4", a[0][1])
      put("iou_mod3", tracker.iou_modulation[0])
      put("iou_mod4", tracker.iou_modulation[1])
    else:
      put("iou_out_boxes", a[0])
      put("iou_out_scores", a[1])

  bbreg = tracker.params.net.net.bb_regressor
  predict = bbreg.predict_iou
  calls = []

  def predict_rec(*a, **k):  # every IoU-Net forward of the refinement: boxes in, predictions out
    out = predict(*a, **k)
    if tracker.frame_num == frame_index + 1:
      calls.append((a[2].detach().clone(), out.detach().clone()))
      put("iou_iter_boxes", torch.stack([c[0].view(-1, 4) for c in calls]))
      put("iou_iter_scores", torch.stack([c[1].view(-1) for c in calls]))
    return out
  bbreg.predict_iou = predict_rec
  wrap("localize_target", rec_localize)
  wrap("refine_target_box", rec_refine)
  wrap("optimize_boxes", rec_boxes)


def record_matches(tracker, limit: int, out: dict) -> None:
  """KeepTrack: records the inputs and outputs of the first `limit` association-net calls into `out` as
  '<i>/<name>' NumPy arrays (i = 0..limit-1): per side s = 0 (previous frame), 1 (current): 'layer3_s'
  [1, C3, F, F] (the base network's layer3 the descriptors are read from), 'tsm_coords_s' [K, 2] int (score-map
  cells), 'img_coords_s' [K, 2] (y, x) full-frame pixels, 'scores_s' [K], 'descriptors_s' [1, D, K]; then
  'image_hw' [2] (the frame shape the tracker passes), 'frame' (frame_num of set 1), and the matcher's
  'log_assignment' [1, M + 1, N + 1], 'matches0' / 'matches1', 'match_scores0' / 'match_scores1'. Wrappers
  around the tracker instance's own `extract_descriptors_and_keypoints` / `extract_matches`; nothing else changes.
  """
  extract, match = tracker.extract_descriptors_and_keypoints, tracker.extract_matches
  seen = {}  # frame_num -> (layer3, candidates) of the last two frames with candidates
  count = [0]

  def extract_rec(backbone_feat, score_map, search_area_box):
    cands = extract(backbone_feat, score_map, search_area_box)
    if count[0] < limit:
      seen[tracker.frame_num] = (backbone_feat["layer3"].detach().clone(), cands)
      for k in [k for k in seen if k < tracker.frame_num - 1]:
        del seen[k]
    return cands

  def match_rec(**kw):
    pred = match(**kw)
    i = count[0]
    prev = seen.get(tracker.previous_candidates["frame_num"])
    if i < limit and prev is not None and tracker.frame_num in seen:
      for s, (layer3, c) in enumerate((prev, seen[tracker.frame_num])):
        out[f"{i}/layer3_{s}"] = _np(layer3)
        for k in ("tsm_coords", "img_coords", "scores", "descriptors"):
          out[f"{i}/{k}_{s}"] = c[k].detach().cpu().numpy() if k == "tsm_coords" else _np(c[k])
      out[f"{i}/image_hw"] = np.asarray(list(kw["image_shape"]), np.int64)
      out[f"{i}/frame"] = np.asarray(tracker.frame_num - 1)  # 0-based frame index of set 1
      for k in ("log_assignment", "matches0", "matches1", "match_scores0", "match_scores1"):
        out[f"{i}/{k}"] = pred[k].detach().cpu().numpy() if k.startswith("matches") else _np(pred[k])
      count[0] += 1
    return pred

  tracker.extract_descriptors_and_keypoints = extract_rec
  tracker.extract_matches = match_rec


# Per-part timing of the reference tracker (`track --timing 1`): wrappers installed from outside around the
# tracker's own methods (nothing of the reference is edited). Part -> the reference methods whose time it counts.
PARTS: dict[str, tuple[str, ...]] = {
    "patch": ("numpy_to_torch", "extract_backbone_features"),  # image -> tensor, crop + resize (minus backbone)
    "backbone": ("net.extract_backbone",),  # normalisation + ResNet to layer3 (CIA: + instance encoder)
    "clf_features": ("get_classification_features",),  # [CIA: category encoder +] classification head
    "localisation": ("get_sample_location", "classify_target", "localize_target"),  # score map + peak logic
    "iou_refine": ("refine_target_box",),  # IoU-Net features, modulation and box ascent
    "update": ("update_classifier",),  # sample memory + filter optimisation
}


class PartTimer:
  """Exclusive wall time per part within one frame: a wrapped call's time minus that of the wrapped calls inside
  it (e.g. `extract_backbone_features` minus `net.extract_backbone` = the crop). `frame` is reset per frame."""

  def __init__(self):
    self.frame: dict[str, float] = {}
    self._inner: list[float] = []  # time spent in wrapped callees, one entry per active wrapped call

  def wrap(self, part: str, fn):
    def timed(*a, **k):
      self._inner.append(0.0)
      t0 = time.perf_counter()
      try:
        return fn(*a, **k)
      finally:
        elapsed = time.perf_counter() - t0
        inner = self._inner.pop()
        self.frame[part] = self.frame.get(part, 0.0) + elapsed - inner
        if self._inner:
          self._inner[-1] += elapsed
    return timed


def install_part_timer(tracker, net: CPUNet) -> PartTimer:
  """Wraps the methods of `PARTS` on this tracker instance (and `numpy_to_torch` in its module's namespace)."""
  timer = PartTimer()
  module = sys.modules[type(tracker).__module__]
  for part, names in PARTS.items():
    for name in names:
      if name == "numpy_to_torch":
        module.numpy_to_torch = timer.wrap(part, module.numpy_to_torch)
      elif name == "net.extract_backbone":
        net.extract_backbone = timer.wrap(part, net.extract_backbone)
      else:
        setattr(tracker, name, timer.wrap(part, getattr(tracker, name)))
  return timer


def record_crops(tracker, num_frames: int) -> dict[str, np.ndarray]:
  """Records the crop geometry of every tracked frame (the first `sample_patch` call of each `track()`) into
  the returned arrays, filled in place: 'crops/sample_sz' [T, 2] (the requested size, in the tracker's float
  dtype), 'crops/quotient' [T, 2] (the size after the inside / inside_major shrink, before `.long()`),
  'crops/df' [T] (decimation factor) and 'crops/size' [T, 2] (crop side in decimated pixels); row 0 (the init
  frame) stays NaN / -1. The values are recomputed beside the reference's own call with the same torch
  operations, so a crop one pixel short from a quotient just below an integer shows here."""
  prep = importlib.import_module("pytracking.features.preprocessing")
  inner = prep.sample_patch
  out = {"crops/sample_sz": np.full((num_frames, 2), np.nan), "crops/quotient": np.full((num_frames, 2), np.nan),
         "crops/df": np.full(num_frames, -1), "crops/size": np.full((num_frames, 2), -1)}
  seen = set()

  def sample_patch(im, pos, sample_sz, output_sz=None, mode="replicate", max_scale_change=None, **kw):
    t = tracker.frame_num - 1  # track() has already advanced frame_num
    if getattr(tracker, "_tracking", False) and 0 < t < num_frames and t not in seen:
      seen.add(t)
      sz = q = sample_sz  # not modified in place below
      if mode in ("inside", "inside_major"):
        ratio = sz / torch.tensor([im.shape[2], im.shape[3]], dtype=sz.dtype)
        shrink = (ratio.max() if mode == "inside" else ratio.min()).clamp(min=1, max=max_scale_change)
        q = sz / shrink
        sz = q.long().to(q.dtype)
      df = max(int(torch.min(sz / output_sz.to(sz.dtype)).item() - 0.1), 1) if output_sz is not None else 1
      out["crops/sample_sz"][t] = _np(sample_sz)
      out["crops/quotient"][t] = _np(q)
      out["crops/df"][t] = df
      out["crops/size"][t] = np.maximum(np.round(_np(sz) / df), 2).astype(int)  # half to even, as torch
    return inner(im, pos, sample_sz, output_sz, mode=mode, max_scale_change=max_scale_change, **kw)
  prep.sample_patch = sample_patch
  return out


def cmd_track(args) -> int:
  """Runs the reference tracker over the first `--num-frames` frames; saves boxes, max scores and flags (plus
  per-frame filters / centres with --save-filters and the internals of one frame with --dump-frame)."""
  frames = np.load(args.frames, mmap_mode="r")
  n = len(frames) if args.num_frames is None else min(args.num_frames, len(frames))
  tracker, net = build_tracker(pathlib.Path(args.reference_root), args.arch, args.checkpoint, args.deterministic,
                               args.target_not_found_threshold, args.crop_from, args.tcm_checkpoint,
                               args.candidate_threshold)
  box = _box(args.box)
  dump, matches = {}, {}
  if args.dump_frame is not None:
    _instrument(tracker, args.dump_frame, dump)
  crops = record_crops(tracker, n) if not args.timing else {}
  if args.record_matches:
    if args.arch != "keeptrack":
      raise ValueError("--record-matches: only for --arch keeptrack")
    record_matches(tracker, args.record_matches, matches)
  boxes, scores, flags = [box], [np.nan], ["init"]
  filters, positions = [], []
  images = [np.array(frames[t]) for t in range(n)] if args.timing else None  # decoded before any timing
  timer = install_part_timer(tracker, net) if args.timing else None
  times, parts = np.zeros(n), {p: np.zeros(n) for p in PARTS}
  # No outer no_grad: the IoU-Net refinement differentiates w.r.t. the boxes (the tracker scopes its own).
  t0 = time.perf_counter()
  tracker.initialize(images[0] if images else np.array(frames[0]), {"init_bbox": box})
  times[0] = time.perf_counter() - t0
  tracker._tracking = True  # record_crops: the init's augmented crops are not tracked frames
  follower = None
  if args.lockstep:  # compare_pytorch.py --speed --lockstep: each frame waits for its turn (scripts/lockstep.py)
    import lockstep  # pylint: disable=g-import-not-at-top  (scripts/ is on sys.path)
    follower = lockstep.Follower()
    follower.ready()
  for t in range(1, n):
    if timer:
      timer.frame = {}
    if follower:
      follower.wait_turn()
    t0 = time.perf_counter()
    res = tracker.track(images[t] if images else np.array(frames[t]))
    times[t] = time.perf_counter() - t0
    if follower:
      follower.done()
    for p in timer.frame if timer else ():
      parts[p][t] = timer.frame[p]
    boxes.append(res["target_bbox"])
    scores.append(tracker.debug_info.get("max_score", np.nan))
    flags.append(str(tracker.debug_info.get("flag", "")))
    if args.save_filters:
      filters.append(_np(tracker.target_filter[0]))
      positions.append(_np(tracker.pos))
    if args.verbose and t % 10 == 0:
      print(f"frame {t}/{n - 1}", flush=True)
  if follower:
    follower.wait_end()  # nothing of this process runs beside the leader's last frame
  out = {"boxes": np.asarray(boxes, np.float64), "max_scores": np.asarray(scores, np.float64),
         "flags": np.asarray(flags)}
  out.update({f"dump/{k}": v for k, v in dump.items()})
  out.update({f"match/{k}": v for k, v in matches.items()})
  out.update(crops)
  out["times"] = times  # [T] seconds: frame 0 = initialize, then tracker.track per frame
  if args.timing:
    out.update({f"parts/{p}": v for p, v in parts.items()})  # [T] exclusive seconds per part (0 at frame 0)
  if args.save_filters:
    out["filters"] = np.stack(filters)  # [T - 1, D, 4, 4] after each frame's update
    out["pos"] = np.stack(positions)  # [T - 1, 2] (y, x) target centre after each frame
  np.savez(args.out, **out)
  print(f"wrote {args.out}: {n} frames")
  return 0


def cmd_matmul_peak(args) -> int:
  """Prints torch's achieved fp32 GFLOP/s on an n x n x n matmul (median of 5 after 2 warm-ups)."""
  a, b = torch.randn(args.n, args.n), torch.randn(args.n, args.n)
  times = []
  for i in range(7):
    t0 = time.perf_counter()
    torch.mm(a, b)
    if i >= 2:
      times.append(time.perf_counter() - t0)
  print(f"torch matmul peak: {2 * args.n**3 / float(np.median(times)) / 1e9:.1f} GFLOP/s "
        f"({torch.get_num_threads()} threads, n={args.n})")
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  sub.add_parser("matmul-peak").add_argument("--n", type=int, default=2048)
  for name in ("make-checkpoint", "stages", "track"):
    p = sub.add_parser(name)
    p.add_argument("--reference-root", required=True, help="pytracking (dimp18, superdimp) or CIA (cia18, cia50) "
                                                                 "checkout")
    p.add_argument("--arch", required=True, choices=ARCHS)
    p.add_argument("--out", required=True)
    if name == "make-checkpoint":
      p.add_argument("--seed", type=int, default=0)
      p.add_argument("--base-out", default=None, help="keeptrack: where the SuperDiMP base goes (--out: the "
                                                     "target candidate matching net)")
      p.add_argument("--randomize-bn", type=int, default=1, help="1: random BN running stats / affines")
      p.add_argument("--keeptrack-base", default="superdimp", choices=KEEPTRACK_BASES,
                     help="keeptrack: the base network written to --base-out (superdimp_simple = dimpnet50_simple, "
                          "the released KeepTrack base)")
    else:
      p.add_argument("--checkpoint", required=True)
      p.add_argument("--frames", required=True, help="[T, H, W, 3] uint8 RGB .npy")
      p.add_argument("--box", required=True, help="initial box x,y,w,h (0-based pixels)")
      p.add_argument("--float64", type=int, default=0, help="1: run the reference in float64 (see use_float64)")
      p.add_argument("--crop-from", default=None, help="checkout whose pytracking/features/preprocessing.py "
                                                      "sample_patch replaces the reference's (see use_crop_of)")
      p.add_argument("--tcm-checkpoint", default=None, help="keeptrack: the target candidate matching net "
                                                           "(keep_track.pth.tar layout); --checkpoint is the base")
      p.add_argument("--candidate-threshold", type=float, default=None,
                     help="keeptrack: local_max_candidate_score_th (default: the parameter file's 0.05)")
    if name == "track":
      p.add_argument("--num-frames", type=int, default=None)
      p.add_argument("--deterministic", type=int, default=1)
      p.add_argument("--target-not-found-threshold", type=float, default=0.0)
      p.add_argument("--save-filters", type=int, default=0)
      p.add_argument("--verbose", type=int, default=0)
      p.add_argument("--dump-frame", type=int, default=None, help="record the internals of this 0-based frame")
      p.add_argument("--record-matches", type=int, default=0,
                     help="keeptrack: record the first N association-net calls (inputs, outputs; see record_matches)")
      p.add_argument("--timing", type=int, default=0,
                     help="1: decode all frames first and record per-part times (PARTS) of every frame")
      p.add_argument("--lockstep", type=int, default=0,
                     help="1: run each frame on the leader's turn over stdin / stdout (scripts/lockstep.py)")
  args = parser.parse_args(argv)
  torch.set_num_threads(int(os.environ.get("TORCH_REF_THREADS", "1")))
  if getattr(args, "float64", 0):
    use_float64(pathlib.Path(args.reference_root))
  if getattr(args, "keeptrack_base", None):
    set_keeptrack_base(args.keeptrack_base)
  return {"make-checkpoint": cmd_make_checkpoint, "stages": cmd_stages, "track": cmd_track,
          "matmul-peak": cmd_matmul_peak}[args.command](args)


if __name__ == "__main__":
  sys.exit(main())
