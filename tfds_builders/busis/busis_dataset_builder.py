"""BUSIS: the breast-ultrasound image segmentation benchmark (Xian et al.,
"A Benchmark for Breast Ultrasound Image Segmentation (BUSIS)", 2018 /
Zhang et al., Healthcare 2022).

562 B-mode images (benign and malignant) from several hospitals and
scanners, one lesion each, with a ground-truth mask. Assumed publisher layout
(as the benchmark distributes it and as public loaders use it; the builder
tolerates other spellings of the folder names)::

  BUSIS/Original/case1.bmp ...      image; names case<N>, unpadded
  BUSIS/GT/case1_GT.bmp ...         mask; <image stem>_GT (or the same stem)
  BUSIS/BUSIS562.csv                "img name" (case0001, padded), "Ground Truth Name",
                                    "tumor type" (B / M)

Images and masks are paired by (name prefix, number), so ``case1``,
``case001`` and ``case0001`` are the same case. No patients are named:
``patient_id`` is ``''``.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

import tensorflow_datasets as tfds
from etils import epath

from tfds_builders import common
from tfds_builders import io as bio

_IMAGE_DIRS = ("Original", "originals", "original images", "images", "image", "imgs", "img", "BUS")
_MASK_DIRS = ("GT", "ground truth", "groundtruth", "ground truths", "masks", "mask", "labels", "label")
_NAME_HEADERS = ("img name", "image name", "image", "img", "name", "file name", "filename", "id")
_TYPE_HEADERS = ("tumor type", "tumour type", "type", "class", "label", "pathology", "diagnosis")
_KINDS = {"b": "benign", "benign": "benign", "m": "malignant", "malignant": "malignant"}
_KEY_RE = re.compile(r"^(?P<prefix>.*?)(?P<num>\d+)(?:[ _-]?(?:gt|mask|seg|label))?$", re.IGNORECASE)


def _key(stem: str) -> tuple[str, int] | None:
  """``case0012`` / ``case12`` / ``case12_GT`` -> ``('case', 12)``."""
  m = _KEY_RE.match(stem.strip())
  if not m:
    return None
  return m.group("prefix").lower().strip(" _-"), int(m.group("num"))


def _is_root(folder: epath.Path) -> bool:
  """A folder holding an image folder and a ground-truth folder."""
  return (bio.find_child(folder, *_IMAGE_DIRS) is not None
          and bio.find_child(folder, *_MASK_DIRS) is not None)


def _norm(header: str) -> str:
  return " ".join(header.strip().lower().replace("_", " ").split())


def read_labels(path: epath.Path) -> dict[tuple[str, int], str]:
  """The label CSV -> {(prefix, number): 'benign'|'malignant'}.

  Raises:
    BuilderInputError: unreadable, no name/type columns, an unknown class or a
      name listed twice (names the file and the row).
  """
  try:
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = [r for r in reader]
  except (OSError, csv.Error) as e:
    raise bio.BuilderInputError(f"{path}: cannot read the CSV: {e}") from e
  if not rows:
    raise bio.BuilderInputError(f"{path}: empty CSV")
  names = [_norm(h) for h in rows[0]]
  name_col = next((i for h in _NAME_HEADERS for i, n in enumerate(names) if n == h), None)
  type_col = next((i for h in _TYPE_HEADERS for i, n in enumerate(names) if n == h), None)
  if name_col is None or type_col is None:
    raise bio.BuilderInputError(
        f"{path}: expected columns 'img name' and 'tumor type' (B/M); found {rows[0]}")
  labels: dict[tuple[str, int], str] = {}
  for r, row in enumerate(rows[1:], start=2):
    if not any(c.strip() for c in row):
      continue
    row = row + [""] * (len(names) - len(row))
    key = _key(row[name_col].rsplit(".", 1)[0] if "." in row[name_col] else row[name_col])
    kind = _KINDS.get(row[type_col].strip().lower())
    if key is None:
      raise bio.BuilderInputError(f"{path}: row {r}: image name {row[name_col]!r} has no case number")
    if kind is None:
      raise bio.BuilderInputError(f"{path}: row {r}: tumor type {row[type_col]!r} is not B/M")
    if key in labels:
      raise bio.BuilderInputError(f"{path}: row {r}: {row[name_col]!r} listed twice")
    labels[key] = kind
  return labels


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for the BUSIS benchmark (562 images)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  BUSIS is distributed by the benchmark's authors on request (Min Xian,
  University of Idaho; H. D. Cheng, Utah State University;
  http://cvprip.cs.usu.edu/busbench/). Put into the manual dir (default
  `~/tensorflow_datasets/downloads/manual/`, or `DownloadConfig(manual_dir=...)`) either the
  archive you receive (`*.zip`, extracted at build time) or the unpacked
  folder (e.g. `BUSIS/`) holding the images (`Original/`), the ground truth
  (`GT/`) and the label CSV (`BUSIS562.csv`, columns `img name`, `tumor type`
  B/M; it may also sit beside the folder). Other spellings of the folder names
  (`images/`, `masks/`, `Ground Truth/`...) are accepted.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """The common busjax features."""
    return self.dataset_info_from_configs(
        features=common.bus_features(),
        supervised_keys=("image", "mask"),
        homepage="http://cvprip.cs.usu.edu/busbench/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """A single ``train`` split holding every example (busjax makes the folds)."""
    root = bio.resolve_builder_manual_dir(
        dl_manager, dataset="busis", markers=_is_root,
        expected="the BUSIS archive or its folder (Original/, GT/, BUSIS562.csv)")
    manual = bio.manual_dir_of(dl_manager)
    search = [root] if manual is not None and root == manual else [root, root.parent]
    return {"train": self._generate_examples(root, search)}

  def _generate_examples(self, root: epath.Path,
                         search: list[epath.Path]) -> Iterator[tuple[str, dict]]:
    """Yields ``Original/<name> -> example``."""
    image_dir = bio.find_child(root, *_IMAGE_DIRS)
    mask_dir = bio.find_child(root, *_MASK_DIRS)
    csvs = [p for folder in search for p in sorted(folder.glob("*.csv")) if not p.name.startswith(".")]
    preferred = [p for p in csvs if p.name.lower().startswith("busis")]
    if not (preferred or csvs):
      raise bio.BuilderInputError(
          f"{root / 'BUSIS562.csv'}: label CSV not found (looked in {', '.join(map(str, search))}; "
          "expected columns 'img name' and 'tumor type')")
    csv_path = (preferred or csvs)[0]
    labels = read_labels(csv_path)
    images = bio.list_images(image_dir)
    if not images:
      raise bio.BuilderInputError(f"{image_dir}: no images")
    masks: dict[tuple[str, int], epath.Path] = {}
    for p in bio.list_images(mask_dir):
      if (k := _key(p.stem)) is not None:
        if k in masks:
          raise bio.BuilderInputError(f"{p}: second mask for the case of {masks[k]}")
        masks[k] = p
    seen = set()
    for image_path in sorted(images, key=lambda p: (_key(p.stem) or ("", -1), p.name)):
      key = _key(image_path.stem)
      if key is None or key not in labels:
        raise bio.BuilderInputError(f"{image_path}: no row for this image in {csv_path}")
      if key in seen:
        raise bio.BuilderInputError(f"{image_path}: a second image for case {key[0]}{key[1]}")
      seen.add(key)
      if key not in masks:
        raise bio.BuilderInputError(
            f"{image_path}: no mask file (expected {mask_dir / (image_path.stem + '_GT' + image_path.suffix)})")
      mask_path = masks[key]
      image = bio.read_image(image_path)
      mask = bio.read_mask(mask_path)
      bio.check_mask_matches(image, mask, image_path, mask_path)
      name = f"{image_dir.name}/{image_path.name}"
      yield name, {
          "image": image,
          "mask": mask,
          "label": labels[key],
          "patient_id": "",
          "file_name": name,
          "height": image.shape[0],
          "width": image.shape[1],
      }
    if unused := sorted(set(labels) - seen, key=lambda k: k[1]):
      bio.warn(f"busis: {csv_path} lists {len(unused)} image(s) not in {image_dir}: "
               + ", ".join(f"{p}{n}" for p, n in unused[:20]))
