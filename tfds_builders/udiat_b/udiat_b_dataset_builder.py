"""UDIAT Dataset B (Yap et al., IEEE JBHI 2018).

163 breast-ultrasound images (benign 110, malignant 53) from the UDIAT
Diagnostic Centre, Parc Taulí, Sabadell, each with one lesion delineated.
Publisher layout (release agreement; redistribution forbidden)::

  BUS/original/000001.png ...   numbered, not contiguously
  BUS/GT/000001.png ...         same names
  BUS/DatasetB.xlsx             Image (number), Type (Benign/Malignant), histology

The images name no patients: ``patient_id`` is ``''`` (each image its own
group).
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import tensorflow_datasets as tfds
from etils import epath

from tfds_builders import common
from tfds_builders import io as bio

_IMAGE_DIRS = ("original", "originals", "images", "image")
_MASK_DIRS = ("GT", "ground truth", "groundtruth", "masks", "mask")
_ID_HEADERS = ("image", "images", "imagen", "id", "image id", "file", "filename", "file name", "name")
_TYPE_HEADERS = ("type", "class", "label", "pathology", "diagnosis", "tumor type", "tumour type")


def _is_root(folder: epath.Path) -> bool:
  """A folder holding an image folder (``original``) and a mask folder (``GT``)."""
  return (bio.find_child(folder, *_IMAGE_DIRS) is not None
          and bio.find_child(folder, *_MASK_DIRS) is not None)


def _number(value: object) -> int | None:
  """The image number in a cell or file stem (``1``, ``1.0``, ``'000001'``,
  ``'000001.png'``) or ``None``."""
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return int(value) if float(value).is_integer() else None
  m = re.fullmatch(r"\s*(?:[A-Za-z_]*?)0*(\d+)(?:\.0)?(?:\.(?:png|bmp|jpg|tif+))?\s*", str(value or ""),
                   flags=re.IGNORECASE)
  return int(m.group(1)) if m else None


def _norm(header: object) -> str:
  return " ".join(str(header or "").strip().lower().replace("_", " ").split())


def read_labels(xlsx: epath.Path) -> dict[int, tuple[str, str]]:
  """``DatasetB.xlsx`` -> {image number: (label, histology)}.

  The header row is found by name (image column: Image/ID/File...; class
  column: Type/Class/Label/Pathology...); histology is the first other
  non-empty text column ('' if none). Needs openpyxl (busjax extra ``xlsx``).

  Raises:
    BuilderInputError: openpyxl missing, unreadable file, no such columns, or
      a class other than benign/malignant (names the file and the row).
  """
  try:
    import openpyxl  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise bio.BuilderInputError(
        f"{xlsx}: reading the labels needs openpyxl: pip install 'busjax[xlsx]' (or openpyxl)") from e
  try:
    with xlsx.open("rb") as f:
      book = openpyxl.load_workbook(f, read_only=True, data_only=True)
      rows = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
      book.close()
  except Exception as e:  # noqa: BLE001 -- openpyxl raises many types; re-raised naming the file
    raise bio.BuilderInputError(f"{xlsx}: cannot read the workbook: {e}") from e
  for h, header in enumerate(rows[:10]):
    names = [_norm(c) for c in header]
    id_col = next((i for i, n in enumerate(names) if n in _ID_HEADERS), None)
    type_col = next((i for i, n in enumerate(names) if n in _TYPE_HEADERS), None)
    if id_col is not None and type_col is not None:
      break
  else:
    raise bio.BuilderInputError(
        f"{xlsx}: no header row with an image column ({'/'.join(_ID_HEADERS[:3])}) and a class "
        f"column ({'/'.join(_TYPE_HEADERS[:3])})")
  others = [i for i in range(len(header)) if i not in (id_col, type_col) and names[i]]
  hist_col = next((i for i in others if "histo" in names[i] or "lesion" in names[i]), others[0] if others else None)
  labels: dict[int, tuple[str, str]] = {}
  for r, row in enumerate(rows[h + 1:], start=h + 2):
    row = row + [None] * (len(header) - len(row))
    if all(c is None or str(c).strip() == "" for c in row):
      continue
    num = _number(row[id_col])
    kind = str(row[type_col] or "").strip().lower()
    if num is None:
      raise bio.BuilderInputError(f"{xlsx}: row {r}: image {row[id_col]!r} is not an image number")
    if kind not in ("benign", "malignant"):
      raise bio.BuilderInputError(f"{xlsx}: row {r}: class {row[type_col]!r} is not Benign/Malignant")
    if num in labels:
      raise bio.BuilderInputError(f"{xlsx}: row {r}: image {num} listed twice")
    hist = row[hist_col] if hist_col is not None else None
    labels[num] = (kind, "" if hist is None else str(hist).strip())
  if not labels:
    raise bio.BuilderInputError(f"{xlsx}: no labelled rows")
  return labels


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for UDIAT Dataset B (the publisher's layout)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  UDIAT Dataset B is released on request under an agreement that forbids
  redistribution: ask the authors (Moi Hoon Yap, Manchester Metropolitan
  University; see http://www2.docm.mmu.ac.uk/STAFF/m.yap/dataset.php). Put into
  the manual dir (default `~/tensorflow_datasets/downloads/manual/`, or
  `--manual_dir`) either the archive you receive (`*.zip`, extracted at build
  time) or the unpacked folder `BUS/` holding `original/`, `GT/` and
  `DatasetB.xlsx` (the xlsx may also sit beside `BUS/`). Reading the xlsx
  needs openpyxl (`pip install 'busjax[xlsx]'`).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Common busjax features plus ``histology``."""
    return self.dataset_info_from_configs(
        features=common.bus_features(
            histology=tfds.features.Text(doc="Lesion type from DatasetB.xlsx ('' if none given)."),
        ),
        supervised_keys=("image", "mask"),
        homepage="http://www2.docm.mmu.ac.uk/STAFF/m.yap/dataset.php",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """A single ``train`` split holding every example (busjax makes the folds)."""
    root = bio.resolve_builder_manual_dir(
        dl_manager, dataset="udiat_b", markers=_is_root,
        expected="the UDIAT Dataset B archive or its folder BUS/ (original/, GT/, DatasetB.xlsx)")
    # The xlsx may sit beside BUS/ -- look there too, but never above the manual dir.
    manual = bio.manual_dir_of(dl_manager)
    search = [root] if manual is not None and root == manual else [root, root.parent]
    return {"train": self._generate_examples(root, search)}

  def _generate_examples(self, root: epath.Path,
                         search: list[epath.Path]) -> Iterator[tuple[str, dict]]:
    """Yields ``original/<name> -> example``, labels from the xlsx found in
    ``search`` (DatasetB.xlsx preferred, else the only/first ``*.xlsx``)."""
    image_dir = bio.find_child(root, *_IMAGE_DIRS)
    mask_dir = bio.find_child(root, *_MASK_DIRS)
    candidates = [p for folder in search for p in sorted(folder.glob("*.xlsx"))
                  if not p.name.startswith(("~$", "."))]
    preferred = [p for p in candidates if _norm(p.stem).replace(" ", "") == "datasetb"]
    if not (preferred or candidates):
      raise bio.BuilderInputError(f"{root / 'DatasetB.xlsx'}: label workbook not found (looked in "
                                  f"{', '.join(map(str, search))})")
    xlsx = (preferred or candidates)[0]
    labels = read_labels(xlsx)
    images = bio.list_images(image_dir)
    if not images:
      raise bio.BuilderInputError(f"{image_dir}: no images")
    masks = {p.stem.lower(): p for p in bio.list_images(mask_dir)}
    seen = set()
    for image_path in images:
      num = _number(image_path.stem)
      if num is None or num not in labels:
        raise bio.BuilderInputError(f"{image_path}: no row for this image in {xlsx}")
      seen.add(num)
      mask_path = next((masks[k] for k in (image_path.stem.lower(), f"{image_path.stem.lower()}_gt",
                                           f"{image_path.stem.lower()}_mask") if k in masks), None)
      if mask_path is None:
        raise bio.BuilderInputError(
            f"{image_path}: no mask file (expected {mask_dir / image_path.name})")
      image = bio.read_image(image_path)
      mask = bio.read_mask(mask_path)
      bio.check_mask_matches(image, mask, image_path, mask_path)
      label, histology = labels[num]
      name = f"{image_dir.name}/{image_path.name}"
      yield name, {
          "image": image,
          "mask": mask,
          "label": label,
          "patient_id": "",
          "file_name": name,
          "height": image.shape[0],
          "width": image.shape[1],
          "histology": histology,
      }
    if unused := sorted(set(labels) - seen):
      bio.warn(f"udiat_b: {xlsx} lists {len(unused)} image(s) not in {image_dir}: "
               + ", ".join(f"{n:06d}" for n in unused[:20]))
