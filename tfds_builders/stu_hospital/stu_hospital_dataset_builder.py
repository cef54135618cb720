"""STU-Hospital: 42 breast-ultrasound images with lesion masks (Zhuang et al., 2019).

Released by Shantou University with "An RDAU-NET model for lesion segmentation
in breast ultrasound images" (PLoS ONE 14(8): e0221535) on GitHub: images
``Test_Image_N.png`` and their masks ``mask_N.png`` (N = 1..42). The masks
are NOT at their image's size and have anti-aliased (grey) edges.

Choices (see README.md):

* mask: the mask's grey levels are scaled to [0, 1] (divided by 255, or kept
  when the file holds only 0/1), resized to the image's size with bilinear
  interpolation (PIL, which low-pass filters when shrinking) and thresholded
  at 0.5 (foreground = value >= 0.5).
* label: the publisher gives no pathology. Every example has
  ``label_known = False`` and ``label = -1``, TFDS's "no label" value for a
  ``ClassLabel`` (it is not a class: never pass it to ``int2str`` or index
  ``LABELS`` with it, where Python would read -1 as "malignant"). Every image
  shows a lesion (the mask is never empty), so STU is a segmentation-only set.
* patient_id: ``''`` (no patients named; each image is its own group).
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from tfds_builders import common
from tfds_builders import io as bio

_IMAGE_RE = re.compile(r"^test_image_(\d+)\.(?:png|jpe?g|bmp|tiff?)$", re.IGNORECASE)
_MASK_RE = re.compile(r"^mask_(\d+)\.(?:png|jpe?g|bmp|tiff?)$", re.IGNORECASE)
#: How far below the dataset root the images and masks are searched.
_SEARCH_DEPTH = 2
#: Threshold applied to the resized [0, 1] mask.
MASK_THRESHOLD = 0.5
#: The value of ``label`` for every STU example (TFDS's "no label").
UNKNOWN_LABEL = -1


def _walk(folder: epath.Path, depth: int) -> Iterator[epath.Path]:
  """Files in ``folder`` and its sub-folders down to ``depth`` levels (hidden ones skipped)."""
  for p in sorted(folder.iterdir(), key=lambda p: p.name):
    if p.name.startswith((".", "__MACOSX")):
      continue
    if p.is_dir():
      if depth > 0:
        yield from _walk(p, depth - 1)
    elif p.is_file():
      yield p


def _has_images(folder: epath.Path | None) -> bool:
  """Whether ``folder`` directly holds a ``Test_Image_N`` file."""
  return folder is not None and any(_IMAGE_RE.match(p.name) for p in bio.list_images(folder))


def _is_stu_root(folder: epath.Path) -> bool:
  """A folder holding the ``Test_Image_N`` files, or an ``images/`` folder holding them."""
  return _has_images(folder) or _has_images(bio.find_child(folder, "images", "image", "img", "imgs"))


def find_cases(root: epath.Path) -> list[tuple[int, epath.Path, epath.Path]]:
  """``(N, image, mask)`` of every ``Test_Image_N`` under ``root``, by N.

  Images and masks are searched in ``root`` and its sub-folders (two levels),
  names matched ignoring case.

  Raises:
    BuilderInputError: no image, an image without its mask, or two files with
      one number (names the files).
  """
  images: dict[int, epath.Path] = {}
  masks: dict[int, epath.Path] = {}
  for p in _walk(root, _SEARCH_DEPTH):
    for regex, found in ((_IMAGE_RE, images), (_MASK_RE, masks)):
      if m := regex.match(p.name):
        num = int(m.group(1))
        if num in found:
          raise bio.BuilderInputError(f"{p}: a second file for number {num} (first: {found[num]})")
        found[num] = p
  if not images:
    raise bio.BuilderInputError(f"{root}: no Test_Image_N.png files found")
  for num in sorted(set(masks) - set(images)):
    bio.warn(f"{masks[num]}: mask without image (Test_Image_{num}.png is missing); ignored")
  cases = []
  for num in sorted(images):
    if num not in masks:
      raise bio.BuilderInputError(
          f"{images[num]}: no mask file (expected mask_{num}.png under {root})")
    cases.append((num, images[num], masks[num]))
  return cases


def resize_soft_mask(grey: np.ndarray, height: int, width: int,
                     threshold: float = MASK_THRESHOLD) -> np.ndarray:
  """An anti-aliased mask at another size -> ``uint8 {0, 1} [height, width, 1]``.

  Args:
    grey: ``[h, w]`` or ``[h, w, 1]`` uint8 grey levels: 0..255, or only 0/1.
    height, width: the image's size.
    threshold: foreground is resized value >= threshold, on [0, 1].

  The grey levels are scaled to [0, 1] and resized with PIL's bilinear filter
  (which averages over the source footprint when shrinking), then thresholded.
  """
  g = grey[..., 0] if grey.ndim == 3 else grey
  scale = 1.0 if g.size and g.max() <= 1 else 255.0
  soft = Image.fromarray(g.astype(np.float32) / scale)  # mode F
  if soft.size != (width, height):
    soft = soft.resize((width, height), Image.Resampling.BILINEAR)
  return (np.asarray(soft) >= threshold).astype(np.uint8)[..., None]


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for STU-Hospital (segmentation only; no pathology labels)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download STU-Hospital from the authors' GitHub repository
  (https://github.com/xbhlk/STU-Hospital, "Code" -> "Download ZIP", usually
  `STU-Hospital-master.zip`). Put into the manual dir (default
  `~/tensorflow_datasets/downloads/manual/`, or `--manual_dir`) either that zip
  as downloaded (extracted at build time) or the unpacked folder holding the
  42 `Test_Image_N.png` images and their `mask_N.png` masks (side by side or
  in sub-folders; names are matched ignoring case; one extra folder level is
  fine).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Common busjax features plus ``label_known`` (always False here)."""
    return self.dataset_info_from_configs(
        features=common.bus_features(
            label_known=tfds.features.Scalar(
                dtype=np.bool_,
                doc="False: the publisher gives no pathology; label is -1 (TFDS 'no label')."),
        ),
        supervised_keys=("image", "mask"),
        homepage="https://github.com/xbhlk/STU-Hospital",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """A single ``train`` split holding every example (busjax makes the folds)."""
    root = bio.resolve_builder_manual_dir(
        dl_manager, dataset="stu_hospital", markers=_is_stu_root,
        expected="the GitHub zip (STU-Hospital-master.zip) or a folder with Test_Image_N.png "
                 "and mask_N.png")
    return {"train": self._generate_examples(root)}

  def _generate_examples(self, root: epath.Path) -> Iterator[tuple[str, dict]]:
    """Yields ``file_name -> example`` for every ``Test_Image_N``."""
    for _, image_path, mask_path in find_cases(root):
      image = bio.read_image(image_path)
      mask = resize_soft_mask(bio.read_image(mask_path), image.shape[0], image.shape[1])
      if not mask.any():
        bio.warn(f"{mask_path}: the mask is empty after resizing to {image_path}'s size")
      name = str(image_path.relative_to(root))
      yield name, {
          "image": image,
          "mask": mask,
          "label": UNKNOWN_LABEL,
          "label_known": False,
          "patient_id": "",
          "file_name": name,
          "height": image.shape[0],
          "width": image.shape[1],
      }
