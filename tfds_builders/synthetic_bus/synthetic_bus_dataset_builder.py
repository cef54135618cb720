"""synthetic_bus: procedural breast-ultrasound images with exact tumour masks.

The embedded default dataset of busjax: generated from a seed, no download,
no TensorFlow. Build and read with::

  import tensorflow_datasets as tfds
  import tfds_builders  # registers the builders
  builder = tfds.builder("synthetic_bus/small", data_dir=..., file_format="array_record")
  builder.download_and_prepare()
  ds = tfds.data_source("synthetic_bus/small", data_dir=...)["train"]

One split, ``train``, holds every example; busjax makes its own stratified
cross-validation folds from it. Each image is its own patient.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import common
from tfds_builders.synthetic_bus import generator

@dataclasses.dataclass
class SyntheticBusConfig(tfds.core.BuilderConfig):
  """How many examples to generate and from which seed.

  Example ``i`` is ``generator.generate_example(seed, i)``, so a config with
  fewer examples and the same seed is a prefix of one with more.
  """
  num_examples: int = 600
  seed: int = 0


def file_name(index: int) -> str:
  """The file name of example ``index`` (``synthetic_00042.png``)."""
  return f"synthetic_{index:05d}.png"


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for the procedural synthetic BUS dataset."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: layered tissue, Rayleigh speckle, benign/"
               "malignant/normal images, posterior features, look-alikes.",
  }
  BUILDER_CONFIGS = [
      SyntheticBusConfig(name="default", num_examples=600, seed=0,
                         description="600 images, seed 0 (the busjax default dataset)."),
      SyntheticBusConfig(name="small", num_examples=60, seed=0,
                         description="60 images, seed 0 (the first 60 of 'default'); for tests."),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    """Common BUS features plus the generator's lesion descriptors."""
    return self.dataset_info_from_configs(
        features=common.bus_features(
            lesion_shape=tfds.features.Text(doc="oval / irregular / none"),
            longest_axis_px=tfds.features.Scalar(
                dtype=np.float32, doc="max Feret diameter of the mask, px (0 if normal)"),
            posterior=tfds.features.Text(doc="shadowing / enhancement / none"),
        ),
        supervised_keys=("image", "mask"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    """A single ``train`` split; nothing to download."""
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ``(file_name, example)`` for every index of the config."""
    cfg = self.builder_config
    for index in range(cfg.num_examples):
      yield file_name(index), example_dict(cfg.seed, index)


def example_dict(seed: int, index: int) -> dict[str, Any]:
  """The feature dict of example ``index`` as the builder stores it."""
  ex = generator.generate_example(seed, index)
  name = file_name(index)
  return {
      "image": ex.image[..., None],
      "mask": ex.mask[..., None],
      "label": ex.label,
      "patient_id": name.rsplit(".", 1)[0],
      "file_name": name,
      "height": np.int32(ex.height),
      "width": np.int32(ex.width),
      "lesion_shape": ex.lesion_shape,
      "longest_axis_px": np.float32(ex.longest_axis_px),
      "posterior": ex.posterior,
  }
