"""Features and helpers shared by every busjax TFDS builder.

Every 2D breast-ultrasound builder yields the same core features so that the
busjax pipeline (and other projects) can read any of them the same way:

  image      uint8 [H, W, 1], original resolution, grey levels
  mask       uint8 [H, W, 1], 0 = background, 1 = tumour (all zeros if normal)
  label      ClassLabel: normal / benign / malignant
  patient_id str ('' when the publisher names no patients; then each image is
             its own group)
  file_name  str, the image's path relative to the dataset root
  height, width  int32, the original size (== image shape)

Images and masks are stored as zlib-compressed tensors (not
``tfds.features.Image``) so that building and reading need no TensorFlow:
array_record files read with ``tfds.data_source``.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

LABELS = ("normal", "benign", "malignant")


def bus_features(**extra) -> tfds.features.FeaturesDict:
  """The common features plus dataset-specific ``extra`` ones."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(None, None, 1), dtype=np.uint8, encoding="zlib"),
      "mask": tfds.features.Tensor(shape=(None, None, 1), dtype=np.uint8, encoding="zlib"),
      "label": tfds.features.ClassLabel(names=list(LABELS)),
      "patient_id": tfds.features.Text(),
      "file_name": tfds.features.Text(),
      "height": tfds.features.Scalar(dtype=np.int32),
      "width": tfds.features.Scalar(dtype=np.int32),
      **extra,
  })
