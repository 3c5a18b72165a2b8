"""Golden fixture of KeepTrack's association network (`tests/data/interop/keeptrack_matcher.npz`), made by torch.

The reference's `DescriptorExtractor(1024, 256, 4)` and `SuperGlue` (with the conf of
`target_candidate_matching_net_resnet50`: GNN layers self, cross, self, cross; 10 Sinkhorn iterations) are
imported from pytracking and run in eval mode. Their weights are not stored (27 MB): every tensor is a
deterministic formula (`scripts/tcm_fixture_values.py`), which the test evaluates again in NumPy; the inputs
likewise. The file also holds the reference loss (`TargetCandidateMatchingLoss`) of the training-convention
assignment with the labels of `loss_labels`, the state-dict layout (key -> shape, in the constructor's order)
and the network outputs.

  ../torchref/bin/python scripts/make_tcm_fixture.py --pytracking-root third_party/pytracking

Only `superglue.py` and `target_candidate_matching.py` are loaded (by file), with `ltr`, `ltr.model_constructor`
and `ltr.models.backbone` registered as bare stand-ins (the backbone is not built: its keys are SuperDiMP's
ResNet-50, already in `reference_keys.json.gz`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import types

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_interop_fixtures import load_file as _load  # noqa: E402  (a reference file as a named module)
from tcm_fixture_values import B, IMAGE_HW, inputs, loss_labels, tensor_value  # noqa: E402

_HERE = pathlib.Path(__file__).resolve().parent
def build_reference(root: pathlib.Path):
  """(descriptor_extractor, matcher) of the KeepTrack constructor, imported from `root` with bare `ltr` stand-ins."""
  pkg = root / "ltr" / "models" / "target_candidate_matching"
  for name in ("ltr", "ltr.models", "ltr.models.backbone", "ltr.models.target_candidate_matching"):
    sys.modules[name] = types.ModuleType(name)
  sys.modules["ltr"].model_constructor = lambda f: f
  superglue = _load("ltr.models.target_candidate_matching.superglue", pkg / "superglue.py")
  tcm = _load("ltr.models.target_candidate_matching.target_candidate_matching", pkg / "target_candidate_matching.py")
  conf = {"skip_gnn": False, "GNN_layers": ["self", "cross"] * 2, "num_sinkhorn_iterations": 10,
          "output_normalization": "sinkhorn"}  # exactly what target_candidate_matching_net_resnet50 passes
  return tcm.DescriptorExtractor(backbone_feat_dim=1024, descriptor_dim=256, kernel_size=4), superglue.SuperGlue(conf)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--pytracking-root", required=True)
  parser.add_argument("--out", default=str(_HERE.parent / "tests" / "data" / "interop" / "keeptrack_matcher.npz"))
  args = parser.parse_args(argv)
  desc_net, matcher = build_reference(pathlib.Path(args.pytracking_root).resolve())
  net = torch.nn.ModuleDict({"descriptor_extractor": desc_net, "matcher": matcher}).eval()
  state = net.state_dict()
  layout = {k: list(v.shape) for k, v in state.items()}
  new_state = {k: torch.as_tensor(tensor_value(i, k, tuple(v.shape))) if v.is_floating_point() else v
               for i, (k, v) in enumerate(state.items())}
  net.load_state_dict(new_state)
  x = inputs()
  out = {}
  with torch.no_grad():
    d0 = desc_net(torch.as_tensor(x["layer3_0"]), torch.as_tensor(x["cells0"]))
    d1 = desc_net(torch.as_tensor(x["layer3_1"]), torch.as_tensor(x["cells1"]))
    for mode, size in (("training", torch.as_tensor(np.tile(x["image_hw"], (B, 1)))),
                       ("tracker", torch.Size([1, 3, int(IMAGE_HW[0]), int(IMAGE_HW[1])]))):
      pred = matcher({"descriptors0": d0, "descriptors1": d1, "img_coords0": torch.as_tensor(x["coords0"]),
                      "img_coords1": torch.as_tensor(x["coords1"]), "scores0": torch.as_tensor(x["scores0"]),
                      "scores1": torch.as_tensor(x["scores1"]), "image_size0": size, "image_size1": size})
      for k in ("log_assignment", "matches0", "matches1", "match_scores0", "match_scores1"):
        out[f"{mode}/{k}"] = pred[k].numpy()
  # The reference's TargetCandidateMatchingLoss on the training-convention assignment (its inputs carry the
  # loader's extra leading axis, removed by the loss with [0]).
  loss_mod = _load("target_candidate_matching_loss", pathlib.Path(args.pytracking_root).resolve() / "ltr" / "models"
                   / "loss" / "target_candidate_matching_loss.py")
  labels = {k: torch.as_tensor(v)[None] for k, v in loss_labels().items()}
  terms = loss_mod.TargetCandidateMatchingLoss()(log_assignment=torch.as_tensor(out["training/log_assignment"]),
                                                 bin_score=torch.tensor(-1.0), **labels)
  for k in ("total", "nll_pos", "nll_neg", "sinkhorn_norm"):
    out[f"loss/{k}"] = terms[k].numpy()
  out["descriptors0"], out["descriptors1"] = d0.permute(0, 2, 1).numpy(), d1.permute(0, 2, 1).numpy()
  np.savez_compressed(args.out, layout=json.dumps(layout), torch_version=torch.__version__, **out)
  print(f"{args.out}  {pathlib.Path(args.out).stat().st_size} bytes")
  return 0


if __name__ == "__main__":
  sys.exit(main())
