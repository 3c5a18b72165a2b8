"""DiMP training-sample processing as small named NumPy/OpenCV ops (design.md §4.9, 2.5, 3.4).

Every op is a pure function of its inputs and an explicit `np.random.Generator`; `process_sample` composes
them in the reference's order:

1. joint transforms, rolled once per sample and applied to all 6 frames: grayscale (p = 0.05) and, for
   CIA50/SuperDiMP, a horizontal flip of the full frames (p = 0.5);
2. per frame: `jitter_box` (train or test jitter) -> `crop_box_xywh` (square crop of side
   ceil(sqrt(w h) * search_area_factor), 'replicate' / 'inside' / 'inside_major' modes) -> `crop_and_resize`
   (replicate padding, cv2 bilinear) and `box_to_crop` for the ground truth;
3. per crop, rolled independently: grayscale (the joint decision), brightness factor U(0.8, 1.2), horizontal
   flip (CIA50/SuperDiMP, p = 0.5), `normalize`;
4. test frames: `gaussian_label` (design.md §2.5) and IoU-Net proposals, `mse_proposals` (8, target 2 IoU - 1) or
   `kl_proposals` (128, proposal and ground-truth densities) (design.md §3.4).

Modules: `config` (ProcessingConfig, PROCESSING_PRESETS), `crop` (1-2), `photometric` (3), `targets` (4, the
proposals; the label is `cia_jax.ops.image.gaussian_label`, shared with the tracker), `compose`
(`process_sample`, `output_specs`) and `tf_op` (`as_tf_op`).

Conventions: images are `[H, W, 3]` uint8 RGB; boxes are `[x, y, w, h]` in 0-based pixels with continuous
corners (x2 = x + w, centre x + w / 2) for crops, labels and IoUs (`cia_jax.ops.boxes`). A horizontal flip of
an image of width W maps u -> W - 1 - u, so a box's x becomes W - 1 - x - w (design.md §4.9).

Grayscale is applied to the crop rather than to the full frame (the reference's order): the conversion is per
pixel, so the two differ only by uint8 rounding inside the bilinear resize, and the crop is ~10x cheaper.

`as_tf_op` wraps any op as a TensorFlow op (`tf.numpy_function` with static output shapes) so the ops run the
same way eagerly and inside `tf.data.Dataset.map`.
"""

from cia_jax.data.processing.compose import output_specs, process_sample
from cia_jax.data.processing.config import CROP_TYPES, PROCESSING_PRESETS, PROPOSAL_MODES, ProcessingConfig
from cia_jax.data.processing.crop import (
    box_from_crop, box_to_crop, crop_and_resize, crop_box_xywh, crop_with_jitter, jitter_box)
from cia_jax.data.processing.photometric import grayscale, hflip_box_xywh, hflip_image, normalize
from cia_jax.data.processing.targets import kl_proposals, mse_proposals
from cia_jax.data.processing.tf_op import as_tf_op
# The normalisation constants and the label are shared with the tracker; listed here with the ops that use them.
from cia_jax.ops.image import IMAGENET_MEAN, IMAGENET_STD, gaussian_label

__all__ = [
    "CROP_TYPES", "IMAGENET_MEAN", "IMAGENET_STD", "PROCESSING_PRESETS", "PROPOSAL_MODES", "ProcessingConfig",
    "as_tf_op", "box_from_crop", "box_to_crop", "crop_and_resize", "crop_box_xywh", "crop_with_jitter",
    "gaussian_label", "grayscale", "hflip_box_xywh", "hflip_image", "jitter_box", "kl_proposals",
    "mse_proposals", "normalize", "output_specs", "process_sample",
]
