"""BUSI: the Breast Ultrasound Images dataset (Al-Dhabyani et al., 2020).

780 images of 600 women (benign 437, malignant 210, normal 133), PNG,
published on Kaggle as ``Dataset_BUSI_with_GT/{benign,malignant,normal}/``
with ``X (n).png`` and its mask(s) ``X (n)_mask.png``, ``X (n)_mask_1.png``,
``X (n)_mask_2.png`` (one file per lesion; merged here by union).

BUSI names no patients, so ``patient_id`` is ``''`` and busjax treats every
image as its own group when making folds.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from tfds_builders import common
from tfds_builders import io as bio

_CLASSES = ("benign", "malignant", "normal")  # Kaggle folder order; also the keep-order of `dedup`.
_IMAGE_RE = re.compile(r"^(?P<cls>[a-z]+) \((?P<num>\d+)\)\.png$", re.IGNORECASE)
_MASK_RE = re.compile(r"^(?P<cls>[a-z]+) \((?P<num>\d+)\)_mask(?:_(?P<k>\d+))?\.png$", re.IGNORECASE)


def _is_busi_root(folder: epath.Path) -> bool:
  """A folder holding ``benign/`` and ``malignant/`` (``normal/`` optional)."""
  return (folder / "benign").is_dir() and (folder / "malignant").is_dir()


def _sort_key(path: epath.Path) -> tuple[int, int, str]:
  """Class order of :data:`_CLASSES`, then the case number (numeric)."""
  m = _IMAGE_RE.match(path.name)
  cls = path.parent.name.lower()
  return (_CLASSES.index(cls) if cls in _CLASSES else len(_CLASSES),
          int(m.group("num")) if m else 0, path.name)


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for BUSI (Kaggle layout)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name="with_normal",
          description="All 780 images: normal, benign and malignant (the publisher's set)."),
      tfds.core.BuilderConfig(
          name="lesions_only",
          description="Benign and malignant images only (647); no normal class."),
      tfds.core.BuilderConfig(
          name="dedup",
          description=("All classes minus pixel-identical duplicate images: of each group of "
                       "identical images the first in (benign, malignant, normal; case number) "
                       "order is kept.")),
  ]
  DEFAULT_CONFIG_NAME = "with_normal"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download BUSI from Kaggle
  (https://www.kaggle.com/datasets/aryashah2k/breast-ultrasound-images-dataset, the
  archive is called `archive.zip`) or from the authors' page
  (https://scholar.cu.edu.eg/?q=afahmy/pages/dataset). Put into the manual dir
  (default `~/tensorflow_datasets/downloads/manual/`, or `DownloadConfig(manual_dir=...)`) either
  the archive as downloaded (`*.zip`, extracted at build time) or the unpacked
  folder `Dataset_BUSI_with_GT/` holding `benign/`, `malignant/`, `normal/`
  (possibly nested one level, e.g. `manual/archive/Dataset_BUSI_with_GT/`).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Common busjax features plus ``num_masks`` and ``duplicate_of``."""
    return self.dataset_info_from_configs(
        features=common.bus_features(
            num_masks=tfds.features.Scalar(
                dtype=np.int32, doc="Number of mask files merged (one per lesion; 1 for normal)."),
            duplicate_of=tfds.features.Text(
                doc=("file_name of the kept image when this image's pixels are identical to an "
                     "earlier one ((benign, malignant, normal; number) order), else ''.")),
        ),
        supervised_keys=("image", "mask"),
        homepage="https://scholar.cu.edu.eg/?q=afahmy/pages/dataset",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """A single ``train`` split holding every example (busjax makes the folds)."""
    root = bio.resolve_builder_manual_dir(
        dl_manager, dataset="busi", markers=_is_busi_root,
        expected="the Kaggle archive (archive.zip) or the folder Dataset_BUSI_with_GT/ "
                 "with benign/, malignant/, normal/")
    return {"train": self._generate_examples(root)}

  def _cases(self, root: epath.Path) -> list[tuple[epath.Path, list[epath.Path]]]:
    """(image, masks) of every case of the classes this config keeps.

    Raises:
      BuilderInputError: an image without mask, or no image at all.
    """
    classes = ("benign", "malignant") if self.builder_config.name == "lesions_only" else _CLASSES
    cases = []
    for cls in classes:
      folder = root / cls
      if not folder.is_dir():
        if cls == "normal":
          bio.warn(f"{folder}: no normal/ folder; building without the normal class")
          continue
        raise bio.BuilderInputError(f"{folder}: missing class folder")
      files = [p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(".png")]
      masks: dict[str, list[epath.Path]] = {}
      images: dict[str, epath.Path] = {}
      for p in files:
        if m := _MASK_RE.match(p.name):
          masks.setdefault(m.group("num"), []).append(p)
        elif m := _IMAGE_RE.match(p.name):
          images[m.group("num")] = p
        else:
          bio.warn(f"{p}: unexpected file name (expected '{cls} (n).png' or '{cls} (n)_mask[_k].png'); ignored")
      for num, image in images.items():
        if num not in masks:
          raise bio.BuilderInputError(
              f"{image}: no mask file (expected {folder / (image.stem + '_mask.png')})")
        cases.append((image, sorted(masks[num], key=lambda p: (len(p.name), p.name))))
      for num in sorted(set(masks) - set(images), key=int):
        bio.warn(f"{masks[num][0]}: mask without image ({cls} ({num}).png is missing); ignored")
    if not cases:
      raise bio.BuilderInputError(f"{root}: no BUSI images found under {', '.join(classes)}/")
    return sorted(cases, key=lambda c: _sort_key(c[0]))

  def _generate_examples(self, root: epath.Path) -> Iterator[tuple[str, dict]]:
    """Yields ``file_name -> example`` for every (kept) case."""
    cases = self._cases(root)
    rel = lambda p: f"{p.parent.name}/{p.name}"  # noqa: E731
    duplicate_of: dict[str, str] = {}
    for group in bio.find_pixel_duplicates([img for img, _ in cases]):
      kept = rel(group[0])
      for other in group[1:]:
        duplicate_of[rel(other)] = kept
      classes = {p.parent.name.lower() for p in group}
      if len(classes) > 1:
        bio.warn("busi: identical images in different classes (label conflict): "
                 + " = ".join(f"{p.parent.name}/{p.name}" for p in group)
                 + f"; kept {kept}" + (" (dedup drops the others)" if self.builder_config.name == "dedup" else ""))
    for image_path, mask_paths in cases:
      name = rel(image_path)
      if self.builder_config.name == "dedup" and name in duplicate_of:
        continue
      image = bio.read_image(image_path)
      masks = [bio.read_mask(p) for p in mask_paths]
      for p, m in zip(mask_paths, masks):
        bio.check_mask_matches(image, m, image_path, p)
      mask = bio.union_masks(masks, mask_paths)
      yield name, {
          "image": image,
          "mask": mask,
          "label": image_path.parent.name.lower(),
          "patient_id": "",
          "file_name": name,
          "height": image.shape[0],
          "width": image.shape[1],
          "num_masks": len(mask_paths),
          "duplicate_of": duplicate_of.get(name, ""),
      }
