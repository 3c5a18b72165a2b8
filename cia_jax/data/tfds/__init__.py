"""TFDS versions of the training benchmarks, read by the same sampler and pipeline as the raw folders.

* `builders.py`: TFDS builders `cia_got10k`, `cia_lasot`, `cia_trackingnet`, `cia_coco` (manual download;
  configs `sequences` = one metadata example per sequence, `frames` = one record per frame file, array_record)
  and `build(name, manual_dir, data_dir)`; the module docstring explains the layout.
* `reader.py`: `load_tfds_dataset(...)`, the `load_sequences(..., source="folders"|"tfds")` switch and
  host sharding; frames are fetched by `cia_jax.data.pipeline.load_image` from `tfds:` frame URIs.
* `python -m cia_jax.data.tfds build <builder> --imports cia_jax.data.tfds.builders --manual_dir ...
  --data_dir ...`: TFDS's `tfds build` command (see `__main__.py`); `cia-jax tfds-build` (`cia_jax/cli/
  tfds_build.py`) builds both configs of a benchmark and can verify them against the folders.

Importing this package imports tensorflow_datasets (~0.3 s, not TensorFlow itself) and registers the builders.
"""

from cia_jax.data.tfds.reader import (  # noqa: F401
    SOURCES, host_sequence_range, load_sequences, load_tfds_dataset, read_frame_bytes)
