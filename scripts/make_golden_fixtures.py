"""Golden fixtures from the PyTorch reference (visionml/pytracking) for the DiMP core.

Runs the real reference modules on small random inputs and writes `.npz` files that the JAX tests
(`tests/models/test_golden_pytorch.py`) compare against; the tests need neither torch nor the reference.

  python3 -m venv ../torchref && ../torchref/bin/pip install torch==2.13.0 numpy
  ../torchref/bin/python scripts/make_golden_fixtures.py \
      --reference-root third_party/pytracking --out tests/data/golden

Import shims (installed in `_install_import_shims`, nothing of the reference is copied here):
* `ltr` and `pytracking` are registered as bare packages so their `__init__` files, which pull in the
  training/tracking stacks (cv2, tensorboard, visdom...), are not executed; submodules import normally.
* `ltr.external.PreciseRoIPooling.pytorch.prroi_pool` (a git submodule with a CUDA-only op) is replaced by
  `TorchPrRoIPool2D` below: a pure-torch CPU Precise RoI Pooling written from design.md §3.3.
* `torchvision.models.resnet` gets a minimal `BasicBlock` (conv3x3-BN-ReLU-conv3x3-BN + identity, ReLU; the
  torchvision attribute names) and a `Bottleneck` placeholder that refuses construction (only imported).
* `cv2` is an empty module: `ltr.data.processing_utils` imports it at module level, `gaussian_label_function`
  does not use it.

Fixtures (NCHW / torch layouts throughout; `state/<torch key>` holds a module's state_dict entries):
* dimp_optimizer.npz: `DiMPSteepestDescentGN` with the constructor values of design.md §2.4.
* dimp_features.npz: the R18 classification feature extractor (BasicBlock + conv3x3 + InstanceL2Norm), the
  R50 variant (conv3x3 + InstanceL2Norm) and `FilterInitializerLinear`.
* iou_net.npz: `AtomIoUNet` in eval and train mode; its weights are quantised to `q * 2**e` (int8 q, stored as
  `qstate/<key>` + `qexp/<key>`) to keep the file small; the values the reference ran with are exactly these.
* labels.npz: `gaussian_label_function`.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import subprocess
import sys
import types

import numpy as np
import torch
import torch.nn as nn

# ------------------------------------------------------------------------------------------------------------
# Precise RoI Pooling on CPU (our own code, design.md §3.3).


def _hat_antiderivative(u: torch.Tensor) -> torch.Tensor:
  """G(u) = integral of the hat max(0, 1 - |t|) from -inf to u: C1 and piecewise quadratic."""
  return torch.where(u <= -1, torch.zeros_like(u),
                     torch.where(u <= 0, 0.5 * (1 + u) ** 2,
                                 torch.where(u <= 1, 1 - 0.5 * (1 - u) ** 2, torch.ones_like(u))))


def torch_prroi_pool(features: torch.Tensor, rois: torch.Tensor, pooled_h: int, pooled_w: int,
                     spatial_scale: float) -> torch.Tensor:
  """Precise RoI Pooling, pure torch (differentiable w.r.t. features and RoI coordinates).

  Bin (ph, pw) of a RoI (x1, y1, x2, y2) scaled by `spatial_scale` (no half-pixel shift) is the integral of
  the zero-padded bilinear interpolant over the bin divided by the bin area; 0 for an empty bin. The bilinear
  interpolant is a sum of separable hats, so the integral over [a, b] x [c, d] is sum_ij f_ij (G(b - j) -
  G(a - j)) (G(d - i) - G(c - i)) with G the hat's antiderivative (design.md §3.3). G is C1, so the derivative with
  respect to a window edge is the same from both sides of every knot: an earlier cell-by-cell form (max / min
  window limits and an `inside` mask) split the derivative when an edge landed exactly on an integer, which
  happens in float32 tracking (the IoU-Net box gradient came out several times too large there).

  Args:
    features: `[N, C, H, W]`.
    rois: `[K, 5]` rows (batch index, x1, y1, x2, y2) in image pixels.
    pooled_h, pooled_w: output bins.
    spatial_scale: feature cells per pixel (1 / stride).

  Returns:
    `[K, C, pooled_h, pooled_w]`.
  """
  _, _, height, width = features.shape
  dtype = features.dtype
  idx = rois[:, 0].long()
  x1, y1, x2, y2 = (rois[:, i].to(dtype) * spatial_scale for i in range(1, 5))
  bin_w = torch.clamp(x2 - x1, min=0.0) / pooled_w
  bin_h = torch.clamp(y2 - y1, min=0.0) / pooled_h
  xs = x1[:, None] + bin_w[:, None] * torch.arange(pooled_w, dtype=dtype)  # [K, pw] bin starts
  ys = y1[:, None] + bin_h[:, None] * torch.arange(pooled_h, dtype=dtype)
  jx = torch.arange(width, dtype=dtype)
  iy = torch.arange(height, dtype=dtype)
  g = _hat_antiderivative
  wx = g((xs + bin_w[:, None])[..., None] - jx) - g(xs[..., None] - jx)  # [K, pw, W]
  wy = g((ys + bin_h[:, None])[..., None] - iy) - g(ys[..., None] - iy)  # [K, ph, H]
  total = torch.einsum("kpi,kqj,kcij->kcpq", wy, wx, features[idx])
  area = (bin_h * bin_w)[:, None, None, None]
  nonempty = area > 0
  return torch.where(nonempty, total / torch.where(nonempty, area, torch.ones_like(area)),
                     torch.zeros_like(total))


class TorchPrRoIPool2D(nn.Module):
  """Drop-in for the reference's `PrRoIPool2D(pooled_height, pooled_width, spatial_scale)` (CPU)."""

  def __init__(self, pooled_height: int, pooled_width: int, spatial_scale: float):
    super().__init__()
    self.pooled_height = int(pooled_height)
    self.pooled_width = int(pooled_width)
    self.spatial_scale = float(spatial_scale)

  def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    return torch_prroi_pool(features, rois, self.pooled_height, self.pooled_width, self.spatial_scale)


def _prroi_dense_check() -> None:
  """Self-check of `torch_prroi_pool`: dense midpoint-rule integral, finite-difference gradients (float64)."""
  gen = torch.Generator().manual_seed(5)
  feat = torch.randn(1, 2, 5, 7, generator=gen, dtype=torch.float64)
  rois = torch.tensor([[0, -1.3, 0.4, 5.2, 3.9], [0, 2.0, 1.0, 2.0, 3.0], [0, 0.25, -0.75, 7.5, 4.6]],
                      dtype=torch.float64)
  out = torch_prroi_pool(feat, rois, 2, 3, 1.0)
  n = 600
  for k in range(rois.shape[0]):
    _, rx1, ry1, rx2, ry2 = rois[k].tolist()
    for i in range(2):
      for j in range(3):
        bw, bh = (rx2 - rx1) / 3, (ry2 - ry1) / 2
        if bw * bh == 0:
          assert float(out[k, :, i, j].abs().max()) == 0.0
          continue
        ys = ry1 + bh * i + bh * (torch.arange(n, dtype=torch.float64) + 0.5) / n
        xs = rx1 + bw * j + bw * (torch.arange(n, dtype=torch.float64) + 0.5) / n
        hy = torch.clamp(1 - (ys[:, None] - torch.arange(5.0, dtype=torch.float64)).abs(), min=0)
        hx = torch.clamp(1 - (xs[:, None] - torch.arange(7.0, dtype=torch.float64)).abs(), min=0)
        dense = torch.einsum("yi,xj,cij->c", hy, hx, feat[0]) / (n * n)
        assert torch.allclose(out[k, :, i, j], dense, atol=1e-5), (k, i, j, out[k, :, i, j], dense)
  # Coordinate and feature gradients (the IoU-Net box refinement) against finite differences.
  coords = rois[[0, 2], 1:].clone().requires_grad_(True)
  feat_g = feat.clone().requires_grad_(True)

  def pool(f, c):
    return torch_prroi_pool(f, torch.cat([torch.zeros(len(c), 1, dtype=c.dtype), c], 1), 2, 3, 0.9)

  assert torch.autograd.gradcheck(pool, (feat_g, coords), eps=1e-6, atol=1e-6)
  # Window edges exactly on feature positions (spatial scale 1: x1 = 1, y1 = 2, y2 = 4), in float32 as in
  # tracking: the coordinate gradient equals the float64 central difference (the earlier cell-by-cell form
  # gave -0.67 instead of -1.93 for y2 here).
  def pool1(f, c):
    return torch_prroi_pool(f, torch.cat([torch.zeros(len(c), 1, dtype=c.dtype), c], 1), 2, 3, 1.0)
  edge = torch.tensor([[1.0, 2.0, 4.5, 4.0]], dtype=torch.float32, requires_grad=True)
  (grad,) = torch.autograd.grad(pool1(feat.float(), edge).sum(), edge)
  for i in range(4):
    step = torch.zeros(1, 4, dtype=torch.float64)
    step[0, i] = 1e-6
    base = edge.detach().double()
    fd = (pool1(feat, base + step).sum() - pool1(feat, base - step).sum()) / 2e-6
    assert abs(float(grad[0, i]) - float(fd)) < 1e-4 * max(1.0, abs(float(fd))), (i, grad, fd)


# ------------------------------------------------------------------------------------------------------------
# Import shims.


class _BasicBlock(nn.Module):
  """torchvision-style ResNet BasicBlock (torchvision attribute names: conv1, bn1, conv2, bn2, downsample)."""

  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample
    self.stride = stride

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class _BottleneckPlaceholder(nn.Module):
  """Only imported by the reference module; never constructed by this script."""

  expansion = 4

  def __init__(self, *args, **kwargs):
    raise NotImplementedError("torchvision stub: Bottleneck is not provided")


def _module(name: str, path: pathlib.Path | None = None, **attrs) -> types.ModuleType:
  mod = types.ModuleType(name)
  if path is not None:
    mod.__path__ = [str(path)]
  for key, value in attrs.items():
    setattr(mod, key, value)
  sys.modules[name] = mod
  return mod


def _install_import_shims(root: pathlib.Path) -> None:
  if not (root / "ltr" / "models" / "target_classifier" / "optimizer.py").is_file():
    raise FileNotFoundError(f"--reference-root {root}: not a pytracking checkout (no ltr/models/...)")
  sys.path.insert(0, str(root))
  _module("ltr", root / "ltr")
  _module("ltr.data", root / "ltr" / "data")
  _module("pytracking", root / "pytracking")
  import pytracking.libs.tensorlist as tensorlist
  sys.modules["pytracking"].TensorList = tensorlist.TensorList
  _module("ltr.external", root / "ltr" / "external")
  _module("ltr.external.PreciseRoIPooling", root / "ltr" / "external" / "PreciseRoIPooling")
  _module("ltr.external.PreciseRoIPooling.pytorch", None)
  _module("ltr.external.PreciseRoIPooling.pytorch.prroi_pool", None, PrRoIPool2D=TorchPrRoIPool2D)
  _module("torchvision", None)
  _module("torchvision.models", None)
  _module("torchvision.models.resnet", None, BasicBlock=_BasicBlock, Bottleneck=_BottleneckPlaceholder)
  _module("cv2", None)


# ------------------------------------------------------------------------------------------------------------
# Helpers.


def _np(t: torch.Tensor) -> np.ndarray:
  return t.detach().cpu().numpy().astype(np.float32) if t.is_floating_point() else t.detach().cpu().numpy()


def _state(prefix: str, module: nn.Module) -> dict[str, np.ndarray]:
  return {f"{prefix}/{k}": _np(v) for k, v in module.state_dict().items()
          if not k.endswith("num_batches_tracked")}


def _randomise_bn(module: nn.Module, gen: torch.Generator) -> None:
  """Random affine parameters and running statistics for every BatchNorm (non-trivial values to test)."""
  for m in module.modules():
    if isinstance(m, nn.BatchNorm2d):
      c = m.num_features
      m.weight.data = 0.5 + torch.rand(c, generator=gen)
      m.bias.data = 0.2 * torch.randn(c, generator=gen)
      m.running_mean.data = 0.2 * torch.randn(c, generator=gen)
      m.running_var.data = 0.5 + torch.rand(c, generator=gen)


def _randomise_convs(module: nn.Module, gen: torch.Generator) -> None:
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.Linear)):
      fan_in = m.weight[0].numel()
      m.weight.data = torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in)
      if m.bias is not None:
        m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)


def _rand_boxes_xywh(gen: torch.Generator, shape: tuple[int, ...], img: float, min_sz: float,
                     max_sz: float) -> torch.Tensor:
  """Random boxes (x, y, w, h) in pixels whose centre lies inside [0, img)^2."""
  wh = min_sz + (max_sz - min_sz) * torch.rand(shape + (2,), generator=gen)
  ctr = img * (0.1 + 0.8 * torch.rand(shape + (2,), generator=gen))
  return torch.cat([ctr - wh / 2, wh], dim=-1)


# ------------------------------------------------------------------------------------------------------------
# (a) DiMPSteepestDescentGN.


def make_optimizer_fixture(out: pathlib.Path) -> None:
  from ltr.models.target_classifier.optimizer import DiMPSteepestDescentGN

  ctor = dict(num_iter=5, feat_stride=16, init_step_length=0.9, init_filter_reg=0.1, init_gauss_sigma=0.9,
              num_dist_bins=100, bin_displacement=0.1, mask_init_factor=3.0, score_act="relu", act_param=None,
              min_filter_reg=1e-3, mask_act="sigmoid", detach_length=float("inf"), alpha_eps=0.0)
  num_images, num_seq, dim, feat_sz, filter_sz, num_iter = 3, 2, 8, 6, 4, 2
  image_sz = feat_sz * ctor["feat_stride"]
  gen = torch.Generator().manual_seed(1234)
  # Magnitudes like InstanceL2Norm output (rms sqrt(1 / (16 D)) per element).
  feat = torch.randn(num_images, num_seq, dim, feat_sz, feat_sz, generator=gen)
  feat = feat / math.sqrt(dim * filter_sz**2)
  bb = _rand_boxes_xywh(gen, (num_images, num_seq), image_sz, 16.0, 48.0)
  weights0 = 0.1 * torch.randn(num_seq, dim, filter_sz, filter_sz, generator=gen)
  sample_weight = torch.rand(num_images, num_seq, generator=gen) + 0.2
  sample_weight = sample_weight / sample_weight.sum(0, keepdim=True)
  projections = torch.randn(num_iter + 1, num_seq, dim, filter_sz, filter_sz, generator=gen)

  data = {"feat": _np(feat), "bb": _np(bb), "weights0": _np(weights0), "sample_weight": _np(sample_weight),
          "num_iter": np.int32(num_iter), "grad_projections": _np(projections)}
  for key, value in ctor.items():
    if key not in ("score_act", "mask_act", "act_param"):
      data[f"ctor/{key}"] = np.float64(value)

  # Run 1: constructor init, training mode, no sample weights (the training path), plus gradients.
  opt = DiMPSteepestDescentGN(**ctor)
  data.update(_state("init_state", opt))
  opt.train()
  captured = {}
  hooks = [getattr(opt, name).register_forward_hook(
      lambda mod, inp, out, name=name: captured.update({name: (inp[0].detach(), out.detach())}))
      for name in ("label_map_predictor", "target_mask_predictor", "spatial_weight_predictor")]
  feat_g = feat.clone().requires_grad_(True)
  w0_g = weights0.clone().requires_grad_(True)
  final, iterates, losses = opt(w0_g, feat_g, bb, num_iter=num_iter, compute_losses=True)
  for h in hooks:
    h.remove()
  objective = sum((it * projections[t]).sum() for t, it in enumerate(iterates))
  params = dict(opt.named_parameters())
  grads = torch.autograd.grad(objective, [w0_g, feat_g] + list(params.values()))
  data["train/iterates"] = np.stack([_np(w) for w in iterates])
  data["train/losses"] = np.stack([_np(l).reshape(()) for l in losses])
  data["train/final"] = _np(final)
  data["train/grad_weights0"] = _np(grads[0])
  data["train/grad_feat"] = _np(grads[1])
  for name, g in zip(params, grads[2:]):
    data[f"train/grad_param/{name}"] = _np(g)
  # Intermediates on the score grid (distance-bin map, label y, mask m after sigmoid, spatial weight v_s).
  data["train/dist_map"] = _np(captured["label_map_predictor"][0])
  data["train/label_map"] = _np(captured["label_map_predictor"][1])
  data["train/target_mask"] = _np(captured["target_mask_predictor"][1])
  data["train/spatial_weight"] = _np(captured["spatial_weight_predictor"][1])

  # Run 2: perturbed parameters (filter_reg small enough that min_filter_reg clamps lambda), eval mode (the
  # tracker's transposed-conv path), per-sample weights as the tracker's memory passes them.
  opt2 = DiMPSteepestDescentGN(**ctor)
  with torch.no_grad():
    opt2.log_step_length.fill_(math.log(1.3))
    opt2.filter_reg.fill_(7e-4)
    for name in ("label_map_predictor", "spatial_weight_predictor"):
      w = getattr(opt2, name).weight
      w.add_(0.2 * torch.randn(w.shape, generator=gen))
    w = opt2.target_mask_predictor[0].weight
    w.add_(0.5 * torch.randn(w.shape, generator=gen))
  data.update(_state("tracker_state", opt2))
  opt2.eval()
  with torch.no_grad():
    final2, iterates2, losses2 = opt2(weights0, feat, bb, sample_weight=sample_weight, num_iter=num_iter,
                                      compute_losses=True)
    opt2.train()  # the training-mode transpose must agree (sanity check of the reference itself)
    final2t, _, _ = opt2(weights0, feat, bb, sample_weight=sample_weight, num_iter=num_iter)
  assert torch.allclose(final2, final2t, rtol=1e-5, atol=1e-7)
  data["tracker/iterates"] = np.stack([_np(w) for w in iterates2])
  data["tracker/losses"] = np.stack([_np(l).reshape(()) for l in losses2])
  _save(out / "dimp_optimizer.npz", data)


# ------------------------------------------------------------------------------------------------------------
# (b) Classification feature extractors and filter initializer.


def make_features_fixture(out: pathlib.Path) -> None:
  from ltr.models.target_classifier import features as clf_features
  from ltr.models.target_classifier.initializer import FilterInitializerLinear

  gen = torch.Generator().manual_seed(42)
  data = {}
  dim, filter_sz, feat_sz, n = 8, 4, 6, 4
  norm_scale = math.sqrt(1.0 / (dim * filter_sz * filter_sz))
  data["norm_scale"] = np.float64(norm_scale)

  # R18: BasicBlock(dim -> dim) + conv3x3 + InstanceL2Norm (dimpnet18's residual_basic_block).
  r18 = clf_features.residual_basic_block(feature_dim=dim, num_blocks=1, l2norm=True, final_conv=True,
                                          norm_scale=norm_scale, out_dim=dim)
  _randomise_convs(r18, gen)
  _randomise_bn(r18, gen)
  x = torch.randn(n, dim, feat_sz, feat_sz, generator=gen)
  data.update(_state("r18/state", r18))
  data["r18/input"] = _np(x)
  r18.eval()
  with torch.no_grad():
    data["r18/eval_output"] = _np(r18(x))
    r18.train()
    data["r18/train_output"] = _np(r18(x))
  data.update(_state("r18/state_after_train", r18))

  # R50: conv3x3 (input_dim -> out_dim) + InstanceL2Norm (superdimp's residual_bottleneck, num_blocks=0).
  in_dim = 16
  r50 = clf_features.residual_bottleneck(feature_dim=in_dim // 4, num_blocks=0, l2norm=True, final_conv=True,
                                         norm_scale=norm_scale, out_dim=dim)
  _randomise_convs(r50, gen)
  x50 = torch.randn(n, in_dim, feat_sz, feat_sz, generator=gen)
  data.update(_state("r50/state", r50))
  data["r50/input"] = _np(x50)
  with torch.no_grad():
    data["r50/output"] = _np(r50(x50))

  # FilterInitializerLinear: conv3x3 with bias, PrRoIPool 4x4 @ 1/16 of the target box, mean over images.
  num_images, num_seq = 3, 2
  init = FilterInitializerLinear(filter_size=filter_sz, feature_dim=dim, feature_stride=16, pool_square=False,
                                 filter_norm=False)
  _randomise_convs(init, gen)
  feat = torch.randn(num_images, num_seq, dim, feat_sz, feat_sz, generator=gen)
  bb = _rand_boxes_xywh(gen, (num_images, num_seq), feat_sz * 16, 12.0, 60.0)
  data.update(_state("initializer/state", init))
  data["initializer/feat"] = _np(feat)
  data["initializer/bb"] = _np(bb)
  with torch.no_grad():
    data["initializer/filter"] = _np(init(feat, bb))
  _save(out / "dimp_features.npz", data)


# ------------------------------------------------------------------------------------------------------------
# (c) AtomIoUNet.


def _quantise_(t: torch.Tensor, levels: int = 15) -> tuple[np.ndarray, int]:
  """Rounds t in place to q * 2**e with int8 |q| <= levels; returns (q, e)."""
  peak = float(t.abs().max())
  e = math.ceil(math.log2(peak / levels)) if peak > 0 else 0
  q = torch.clamp(torch.round(t / 2.0**e), -levels, levels)
  t.copy_(q * 2.0**e)
  return q.numpy().astype(np.int8), e


def make_iou_net_fixture(out: pathlib.Path) -> None:
  from ltr.models.bbreg.atom_iou_net import AtomIoUNet

  gen = torch.Generator().manual_seed(7)
  torch.manual_seed(7)  # the reference's own init draws from the global generator
  input_dim, pred_input_dim, pred_inter_dim = (8, 16), (16, 16), (16, 16)
  n_tr, n_te, b, p = 2, 2, 3, 4
  img, s2, s3 = 128, 16, 8
  net = AtomIoUNet(input_dim=input_dim, pred_input_dim=pred_input_dim, pred_inter_dim=pred_inter_dim)
  train2 = torch.randn(n_tr, b, input_dim[0], s2, s2, generator=gen)
  train3 = torch.randn(n_tr, b, input_dim[1], s3, s3, generator=gen)
  test2 = torch.randn(n_te, b, input_dim[0], s2, s2, generator=gen)
  test3 = torch.randn(n_te, b, input_dim[1], s3, s3, generator=gen)
  train_bb = _rand_boxes_xywh(gen, (n_tr, b), img, 20.0, 70.0)
  proposals = _rand_boxes_xywh(gen, (n_te, b, p), img, 10.0, 80.0)

  data = {"ctor/input_dim": np.int32(input_dim), "ctor/pred_input_dim": np.int32(pred_input_dim),
          "ctor/pred_inter_dim": np.int32(pred_inter_dim)}
  with torch.no_grad():
    for name, param in net.named_parameters():
      if param.dim() > 1:  # conv / linear weights: quantised (size); the reference runs with these values
        q, e = _quantise_(param.data)
        data[f"qstate/{name}"], data[f"qexp/{name}"] = q, np.int32(e)
    # BN affine: reference init is U(0, 1) weight, 0 bias; give the bias random values too.
    for m in net.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.bias.data = 0.2 * torch.randn(m.num_features, generator=gen)
    for m in net.modules():
      if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.bias is not None):
        m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)
    # Running statistics near the real activation statistics (so every unit is in a sensible range): one
    # train-mode pass with momentum 1 (running = batch statistics), then random perturbations.
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
      m.momentum = 1.0
    net.train()
    net([train2, train3], [test2, test3], train_bb, proposals)
    for m in bns:
      m.momentum = 0.1
      # Layers on 1x1 maps see only B samples per batch: floor the variances so no channel divides by a
      # near-zero running std (that would amplify float32 rounding far beyond the test tolerance).
      var = torch.clamp(m.running_var, min=0.5 * float(m.running_var.mean()))
      m.running_var.copy_(var * (0.8 + 0.45 * torch.rand(m.num_features, generator=gen)))
      m.running_mean.add_(0.1 * m.running_var.sqrt() * torch.randn(m.num_features, generator=gen))
      m.num_batches_tracked.zero_()
  for key, value in _state("state", net).items():
    if f"q{key}" not in data:
      data[key] = value

  data.update({"train_feat2": _np(train2), "train_feat3": _np(train3), "test_feat2": _np(test2),
               "test_feat3": _np(test3), "train_bb": _np(train_bb), "proposals": _np(proposals)})

  # Eval mode, stage by stage (the tracker's path).
  net.eval()
  with torch.no_grad():
    mod3, mod4 = net.get_modulation([train2[0], train3[0]], train_bb[0])
    c3t, c4t = net.get_iou_feat([test2, test3])
  mod3, mod4 = mod3.reshape(b, -1), mod4.reshape(b, -1)
  data.update({"eval/mod3": _np(mod3), "eval/mod4": _np(mod4), "eval/c3t": _np(c3t), "eval/c4t": _np(c4t)})
  # predict_iou on (frame-major) test images with each sequence's modulation, and the box gradient the
  # tracker's refinement ascends (d sum(iou) / d proposals_xywh).
  mods = [m.reshape(1, b, -1).repeat(n_te, 1, 1).reshape(n_te * b, -1) for m in (mod3, mod4)]
  props = proposals.reshape(n_te * b, p, 4).clone().requires_grad_(True)
  iou = net.predict_iou(mods, [c3t, c4t], props)
  (grad_props,) = torch.autograd.grad(iou.sum(), props)
  data["eval/iou"] = _np(iou.reshape(n_te, b, p))
  data["eval/grad_proposals"] = _np(grad_props.reshape(n_te, b, p, 4))
  with torch.no_grad():
    full = net([train2, train3], [test2, test3], train_bb, proposals)
  assert torch.allclose(full, iou.reshape(n_te, b, p), rtol=1e-5, atol=1e-6)

  # Train mode (batch statistics per call, running statistics updated with momentum 0.1).
  net.train()
  with torch.no_grad():
    data["train/iou"] = _np(net([train2, train3], [test2, test3], train_bb, proposals))
  for key, value in _state("state_after_train", net).items():
    if "running_" in key:
      data[key] = value
  _save(out / "iou_net.npz", data)


# ------------------------------------------------------------------------------------------------------------
# (d) Gaussian labels.


def make_labels_fixture(out: pathlib.Path) -> None:
  from ltr.data.processing_utils import gaussian_label_function

  gen = torch.Generator().manual_seed(3)
  cases = [("dimp18", 288, 18, 0.25 / 5, 4, True), ("cia50", 352, 22, 0.25 / 6, 4, True),
           ("no_end_pad", 288, 18, 0.25 / 5, 4, False), ("odd_kernel", 288, 18, 0.25 / 5, 5, True)]
  data = {}
  for name, img, feat_sz, sigma_factor, kernel_sz, end_pad in cases:
    boxes = _rand_boxes_xywh(gen, (4,), img, 20.0, 120.0)
    boxes = torch.cat([boxes, torch.tensor([[img / 2 - 20.0, img / 2 - 30.0, 40.0, 60.0],
                                            [-30.0, img - 25.0, 50.0, 40.0]])], dim=0)
    label = gaussian_label_function(boxes, sigma_factor, kernel_sz, feat_sz, img, end_pad_if_even=end_pad)
    data[f"{name}/box_xywh"] = _np(boxes)
    data[f"{name}/label"] = _np(label)
    data[f"{name}/params"] = np.array([img, feat_sz, sigma_factor, kernel_sz, float(end_pad)], np.float64)
  _save(out / "labels.npz", data)


_META = {"reference_repo": "https://github.com/visionml/pytracking", "reference_commit": "",
         "torch_version": ""}


def _git_commit(root: pathlib.Path) -> str:
  """HEAD of `root` if it is the top of its own git work tree (not for a tree exported into another repo)."""
  try:
    top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True, check=False).stdout.strip()
    if not top or pathlib.Path(top).resolve() != root:
      return "unknown"
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=False).stdout.strip() or "unknown"
  except OSError:
    return "unknown"


def _save(path: pathlib.Path, data: dict[str, np.ndarray]) -> None:
  meta = {f"meta/{k}": np.array(v) for k, v in _META.items()}
  np.savez_compressed(path, **meta, **data)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reference-root", required=True, type=pathlib.Path,
                      help="work tree of visionml/pytracking (never committed)")
  parser.add_argument("--reference-commit", default="",
                      help="commit the work tree was exported from (default: `git rev-parse HEAD` when "
                           "--reference-root is itself the top of a git work tree)")
  parser.add_argument("--out", required=True, type=pathlib.Path, help="output folder for the .npz files")
  args = parser.parse_args(argv)
  root = args.reference_root.resolve()
  _META["reference_commit"] = args.reference_commit or _git_commit(root)
  _META["torch_version"] = torch.__version__
  _install_import_shims(root)
  _prroi_dense_check()
  torch.set_num_threads(1)
  args.out.mkdir(parents=True, exist_ok=True)
  make_optimizer_fixture(args.out)
  make_features_fixture(args.out)
  make_iou_net_fixture(args.out)
  make_labels_fixture(args.out)
  print(f"torch {torch.__version__}, reference {root} at {_META['reference_commit']}")
  for f in sorted(args.out.glob("*.npz")):
    print(f"{f.name}: {f.stat().st_size / 1024:.1f} KiB")
  return 0


if __name__ == "__main__":
  sys.exit(main())
