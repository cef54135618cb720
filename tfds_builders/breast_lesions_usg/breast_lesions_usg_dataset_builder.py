"""BrEaST-Lesions_USG: 256 breast-ultrasound scans with clinical data (TCIA, CC BY 4.0).

Pawłowska et al., "Curated benchmark dataset for ultrasound based breast
lesion analysis", Scientific Data 11:148, 2024. One scan per patient (256
patients): benign, malignant and normal cases, each an image ``caseNNN.png``
with, for lesions, a tumour mask ``caseNNN_tumor.png`` and, for some,
masks of OTHER findings ``caseNNN_otherK.png`` (not the tumour). A separate
spreadsheet ``BrEaST-Lesions-USG-clinical-data-*.xlsx`` gives one row per
case: ``CaseID``, ``Image_filename``, ``Mask_tumor_filename``,
``Mask_other_filename`` (several joined by ``&``), ``Pixel_size``, ``Age``,
BI-RADS descriptors, ``BIRADS``, ``Verification``, ``Diagnosis``,
``Classification`` (benign / malignant / normal).

Choices (see README.md): the label is ``Classification``; ``mask`` is the
tumour mask only (the union of the files listed in ``Mask_tumor_filename``;
empty for normal cases); other findings go to ``other_mask`` and are never
merged into ``mask``; masks carry the shape in their alpha channel, read by
``tfds_builders.io.read_mask``; ``patient_id`` is ``''`` (one scan per
patient, so each image is its own group).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from tfds_builders import common
from tfds_builders import io as bio

_IMAGE_RE = re.compile(r"^case(\d+)\.png$", re.IGNORECASE)
#: Clinical columns kept as text features (normalised column name -> feature name).
TEXT_COLUMNS = {
    "tissuecomposition": "tissue_composition", "signs": "signs", "symptoms": "symptoms",
    "shape": "shape", "margin": "margin", "echogenicity": "echogenicity",
    "posteriorfeatures": "posterior_features", "halo": "halo", "calcifications": "calcifications",
    "skinthickening": "skin_thickening", "interpretation": "interpretation",
    "verification": "verification", "birads": "birads", "diagnosis": "diagnosis",
}
_HEADER_SCAN_ROWS = 10


def norm(name: Any) -> str:
  """A column name without case, spaces or punctuation (``"Mask_tumor_filename"`` -> ``"masktumorfilename"``)."""
  return re.sub(r"[^a-z0-9]", "", str(name).lower())


def text(value: Any) -> str:
  """A cell as text: ``''`` for empty, integral floats without ``.0``."""
  if value is None:
    return ""
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value).strip()


def number(value: Any, default: float) -> float:
  """A numeric cell, or ``default`` when empty or not a number (e.g. "not available")."""
  if isinstance(value, bool) or value is None:
    return default
  if isinstance(value, (int, float)):
    return float(value)
  try:
    return float(str(value).strip().replace(",", "."))
  except ValueError:
    return default


def file_list(value: Any) -> list[str]:
  """File names of a ``Mask_*_filename`` cell (several are joined by ``&``)."""
  return [n.strip() for n in re.split(r"[&;,\n]", text(value)) if n.strip()]


def read_clinical_xlsx(path: epath.Path) -> list[dict[str, Any]]:
  """The rows of the clinical spreadsheet, keyed by normalised column name.

  The sheet used is the first whose header row (within the first 10 rows)
  has a ``CaseID`` or ``Image_filename`` column (so a "data dictionary" sheet
  is skipped). Empty rows are dropped; ``"_row"`` holds the 1-based row number.

  Raises:
    ImportError: openpyxl is not installed (``pip install 'busjax[xlsx]'``).
    BuilderInputError: the file is not a readable workbook, or no sheet has
      the expected header (names the file).
  """
  try:
    import openpyxl  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"breast_lesions_usg needs openpyxl to read {path}: pip install 'busjax[xlsx]' "
        "(or pip install openpyxl)") from e
  try:
    with path.open("rb") as f:
      wb = openpyxl.load_workbook(f, read_only=True, data_only=True)
      sheets = {ws.title: [list(r) for r in ws.iter_rows(values_only=True)] for ws in wb.worksheets}
      wb.close()
  except Exception as e:  # noqa: BLE001 -- openpyxl raises many types; re-raised naming the file
    raise bio.BuilderInputError(f"{path}: not a readable .xlsx workbook: {e}") from e
  for rows in sheets.values():
    for i, row in enumerate(rows[:_HEADER_SCAN_ROWS]):
      header = [norm(c) if c is not None else "" for c in row]
      if "caseid" in header or "imagefilename" in header:
        out = []
        for j, values in enumerate(rows[i + 1:], start=i + 2):
          if all(v is None or text(v) == "" for v in values):
            continue
          rec = {h: v for h, v in zip(header, values) if h}
          rec["_row"] = j
          out.append(rec)
        return out
  raise bio.BuilderInputError(
      f"{path}: no sheet with a CaseID / Image_filename header row (sheets: {', '.join(sheets)})")


def _walk_xlsx(folder: epath.Path, depth: int) -> Iterator[epath.Path]:
  """``.xlsx`` files in ``folder`` and its sub-folders (Excel lock files ``~$*`` skipped)."""
  if not folder.is_dir():
    return
  for p in sorted(folder.iterdir(), key=lambda p: p.name):
    if p.name.startswith((".", "~$", "__MACOSX")):
      continue
    if p.is_dir() and depth > 0:
      yield from _walk_xlsx(p, depth - 1)
    elif p.is_file() and p.name.lower().endswith(".xlsx"):
      yield p


def find_clinical_xlsx(places: list[tuple[epath.Path | None, int]]) -> epath.Path:
  """The one clinical spreadsheet in ``places``: (folder, how many levels down to search).

  A file with "clinical" in its name is preferred; otherwise a lone ``.xlsx``
  is taken.

  Raises:
    BuilderInputError: none found, or several (names them).
  """
  found: dict[str, epath.Path] = {}
  for folder, depth in places:
    if folder is not None:
      for p in _walk_xlsx(folder, depth):
        found.setdefault(str(p), p)
  files = list(found.values())
  clinical = [p for p in files if "clinical" in p.name.lower()] or files
  where = ", ".join(str(f) for f, _ in places if f is not None)
  if not clinical:
    raise bio.BuilderInputError(
        f"{where}: no clinical spreadsheet found (expected BrEaST-Lesions-USG-clinical-data-*.xlsx, "
        "a separate download from TCIA, in the manual dir)")
  if len(clinical) > 1:
    raise bio.BuilderInputError(
        f"several clinical spreadsheets found, keep one in the manual dir: {', '.join(map(str, clinical))}")
  return clinical[0]


def _mask_paths(rec: dict[str, Any], column: str, pattern: str, files: dict[str, epath.Path],
                root: epath.Path, where: str) -> list[epath.Path]:
  """The mask files a spreadsheet row names in ``column``; without that column,
  the files in ``files`` (lower-case name -> path) whose name matches ``pattern``.

  Raises:
    BuilderInputError: a named file does not exist (names it and the row).
  """
  if column not in rec:
    return [files[n] for n in sorted(files) if re.fullmatch(pattern, n)]
  paths = []
  for n in file_list(rec[column]):
    if n.lower() not in files:
      raise bio.BuilderInputError(f"{root / n}: mask listed in {where} does not exist")
    paths.append(files[n.lower()])
  return paths


def _is_breast_root(folder: epath.Path) -> bool:
  """A folder holding ``caseNNN.png`` images."""
  return folder.is_dir() and any(p.is_file() and _IMAGE_RE.match(p.name) for p in folder.iterdir())


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for BrEaST-Lesions_USG (TCIA)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download from The Cancer Imaging Archive
  (https://www.cancerimagingarchive.net/collection/breast-lesions-usg/, CC BY 4.0)
  both the images-and-masks zip (`BrEaST-Lesions_USG-images_and_masks-*.zip`)
  and the clinical spreadsheet (`BrEaST-Lesions-USG-clinical-data-*.xlsx`).
  Put both into the manual dir (default `~/tensorflow_datasets/downloads/manual/`,
  or `--manual_dir`): the zip as downloaded (extracted at build time) or the
  unpacked folder `BrEaST-Lesions_USG-images_and_masks/` (one extra folder
  level is fine), and the .xlsx beside it or inside that folder. Reading the
  .xlsx needs openpyxl (`pip install 'busjax[xlsx]'`).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Common busjax features plus the other-findings mask and clinical fields."""
    clinical = {name: tfds.features.Text(doc=f"Clinical column '{name}' as published ('' if empty).")
                for name in TEXT_COLUMNS.values()}
    return self.dataset_info_from_configs(
        features=common.bus_features(
            other_mask=tfds.features.Tensor(
                shape=(None, None, 1), dtype=np.uint8, encoding="zlib",
                doc="uint8 {0, 1}: union of the caseNNN_otherK.png masks (other findings, NOT the tumour)."),
            num_tumor_masks=tfds.features.Scalar(dtype=np.int32, doc="Tumour mask files merged into mask."),
            num_other_masks=tfds.features.Scalar(dtype=np.int32, doc="Other-finding mask files."),
            age=tfds.features.Scalar(dtype=np.int32, doc="Age in years; -1 when unknown."),
            pixel_size=tfds.features.Scalar(
                dtype=np.float32, doc="The Pixel_size column as published (cm per pixel); -1 when unknown."),
            **clinical,
        ),
        supervised_keys=("image", "mask"),
        homepage="https://www.cancerimagingarchive.net/collection/breast-lesions-usg/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """A single ``train`` split holding every example (busjax makes the folds)."""
    root = bio.resolve_builder_manual_dir(
        dl_manager, dataset="breast_lesions_usg", markers=_is_breast_root,
        expected="the TCIA images zip (BrEaST-Lesions_USG-images_and_masks-*.zip) or its unpacked "
                 "folder with caseNNN.png, plus BrEaST-Lesions-USG-clinical-data-*.xlsx")
    # The manual dir (two levels down), the image folder and the folder around it (an archive's
    # extraction folder, or the manual dir) -- not deeper, to stay out of unrelated folders.
    xlsx = find_clinical_xlsx([(bio.manual_dir_of(dl_manager), 2), (root, 0), (root.parent, 0)])
    return {"train": self._generate_examples(root, xlsx)}

  def _generate_examples(self, root: epath.Path, xlsx: epath.Path) -> Iterator[tuple[str, dict]]:
    """Yields ``image file name -> example`` for every spreadsheet row."""
    files = {p.name.lower(): p for p in root.iterdir() if p.is_file()}
    seen: set[str] = set()
    for rec in read_clinical_xlsx(xlsx):
      where = f"{xlsx} row {rec['_row']}"
      case = text(rec.get("caseid"))
      image_name = text(rec.get("imagefilename"))
      if not image_name:
        if not case:
          raise bio.BuilderInputError(f"{where}: neither Image_filename nor CaseID given")
        image_name = f"case{int(case):03d}.png" if case.isdigit() else f"{case}.png"
      image_path = files.get(image_name.lower())
      if image_path is None:
        raise bio.BuilderInputError(f"{root / image_name}: image listed in {where} does not exist")
      if image_path.name in seen:
        raise bio.BuilderInputError(f"{where}: {image_path.name} is listed twice")
      seen.add(image_path.name)
      stem = image_path.stem.lower()

      label = text(rec.get("classification")).lower()
      if label not in common.LABELS:
        raise bio.BuilderInputError(
            f"{where} ({image_path.name}): Classification {text(rec.get('classification'))!r} is not one "
            f"of {', '.join(common.LABELS)}")

      tumour_paths = _mask_paths(rec, "masktumorfilename", re.escape(stem) + r"_tumou?r\.png", files, root, where)
      other_paths = _mask_paths(rec, "maskotherfilename", re.escape(stem) + r"_other\d*\.png", files, root, where)
      if label != "normal" and not tumour_paths:
        bio.warn(f"{image_path}: {label} case without a tumour mask in {where}; skipped "
                 "(an empty mask would be a false 'no lesion')")
        continue
      if label == "normal" and tumour_paths:
        bio.warn(f"{image_path}: normal case with a tumour mask ({tumour_paths[0].name}); mask kept")

      image = bio.read_image(image_path)
      masks = {}
      for kind, paths in (("mask", tumour_paths), ("other_mask", other_paths)):
        read = [bio.read_mask(p) for p in paths]
        for p, m in zip(paths, read):
          bio.check_mask_matches(image, m, image_path, p)
        masks[kind] = bio.union_masks(read, paths) if read else np.zeros_like(image)
      example = {
          "image": image,
          **masks,
          "label": label,
          "patient_id": "",
          "file_name": image_path.name,
          "height": image.shape[0],
          "width": image.shape[1],
          "num_tumor_masks": len(tumour_paths),
          "num_other_masks": len(other_paths),
          "age": int(number(rec.get("age"), -1)),
          "pixel_size": number(rec.get("pixelsize"), -1.0),
      }
      for column, feature in TEXT_COLUMNS.items():
        example[feature] = text(rec.get(column))
      yield image_path.name, example
    for name in sorted(files):
      if _IMAGE_RE.match(name) and files[name].name not in seen:
        bio.warn(f"{files[name]}: image not listed in {xlsx}; ignored (no label)")
