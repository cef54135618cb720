"""BUS-BRA: a Breast Ultrasound Dataset for Assessing CAD Systems
(Gómez-Flores, Gregorio-Calas, Pereira, Medical Physics 2024).

1,875 grey PNG images of 1,064 patients (benign 1,268, malignant 607), one
lesion each, with its mask, BI-RADS, histology, device, bounding box and the
publisher's patient-level 5- and 10-fold partitions. Publisher layout::

  BUSBRA/Images/bus_XXXX-{l,r,s}.png   XXXX = patient (Case), l/r/s = side
  BUSBRA/Masks/mask_XXXX-{l,r,s}.png
  BUSBRA/bus_data.csv                  ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX
  BUSBRA/5-fold-cv.csv, 10-fold-cv.csv ID,Pathology,kFold,valid_1..valid_k
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from tfds_builders import common
from tfds_builders import io as bio

_ID_RE = re.compile(r"^bus_(?P<case>\d+)-(?P<side>[lrs])$")
_CSV = "bus_data.csv"
_FOLDS = {5: "5-fold-cv.csv", 10: "10-fold-cv.csv"}


def _read_csv(path: epath.Path) -> list[dict[str, str]]:
  """Rows of a publisher CSV (BOM and surrounding spaces tolerated)."""
  try:
    text = path.read_bytes().decode("utf-8-sig")
    rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()}
            for r in csv.DictReader(io.StringIO(text, newline=""))]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise bio.BuilderInputError(f"{path}: cannot read the CSV: {e}") from e
  if not rows or "ID" not in rows[0]:
    raise bio.BuilderInputError(f"{path}: expected a CSV with an 'ID' column and one row per image")
  return rows


def _bbox(text: str, height: int, width: int, where: str) -> tuple[list[int], tfds.features.BBox]:
  """The publisher's ``[x, y, w, h]`` (1-based MATLAB corner) -> raw ints and a
  normalised TFDS box covering 0-based pixels ``x-1 .. x-1+w`` (inclusive; this
  matches the masks' extent exactly)."""
  try:
    x, y, w, h = (int(round(float(v))) for v in json.loads(text))
  except (ValueError, TypeError) as e:
    raise bio.BuilderInputError(f"{where}: BBOX {text!r} is not [x, y, w, h]") from e
  clip = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
  box = tfds.features.BBox(ymin=clip((y - 1) / height), xmin=clip((x - 1) / width),
                           ymax=clip((y + h) / height), xmax=clip((x + w) / width))
  return [x, y, w, h], box


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for BUS-BRA (the publisher's layout)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download BUS-BRA from Zenodo (https://doi.org/10.5281/zenodo.7730709; the
  archive unpacks to a folder `BUSBRA/`). Put into the manual dir (default
  `~/tensorflow_datasets/downloads/manual/`, or `DownloadConfig(manual_dir=...)`) either the
  archive as downloaded (`*.zip`, extracted at build time) or the
  unpacked folder holding `Images/`, `Masks/`, `bus_data.csv`,
  `5-fold-cv.csv`, `10-fold-cv.csv` (the folder itself or its parent, e.g.
  `manual/BUSBRA/`).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Common busjax features plus the publisher's metadata and folds."""
    return self.dataset_info_from_configs(
        features=common.bus_features(
            birads=tfds.features.Text(doc="BI-RADS category (2, 3, 4 or 5)."),
            histology=tfds.features.Text(doc="Histology (biopsy), e.g. 'fibroadenoma'."),
            device=tfds.features.Text(doc="Scanner and probe frequency."),
            side=tfds.features.Text(doc="left, right or single (file suffix -l/-r/-s)."),
            publisher_fold_5=tfds.features.Scalar(
                dtype=np.int32, doc="Test fold (1-5) of the publisher's patient-level 5-fold CV; -1 if absent."),
            publisher_fold_10=tfds.features.Scalar(
                dtype=np.int32, doc="Test fold (1-10) of the publisher's 10-fold CV; -1 if absent."),
            bbox=tfds.features.BBoxFeature(doc="Lesion box from BBOX, normalised to the image size."),
            bbox_xywh=tfds.features.Tensor(
                shape=(4,), dtype=np.int32, doc="BBOX as published: [x, y, w, h], 1-based corner."),
        ),
        supervised_keys=("image", "mask"),
        homepage="https://doi.org/10.5281/zenodo.7730709",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """A single ``train`` split holding every example (busjax makes the folds)."""
    root = bio.resolve_builder_manual_dir(
        dl_manager, dataset="busbra", markers=("Images", "Masks", _CSV),
        expected="the BUS-BRA zip archive or the BUSBRA folder (Images/, Masks/, bus_data.csv, 5-fold-cv.csv, "
                 "10-fold-cv.csv)")
    return {"train": self._generate_examples(root)}

  def _folds(self, root: epath.Path, k: int, ids: set[str]) -> dict[str, int]:
    """ID -> publisher test fold of ``k``-fold-cv.csv (empty if the file is absent)."""
    path = root / _FOLDS[k]
    if not path.exists():
      bio.warn(f"{path}: missing; publisher_fold_{k} is -1 for every image")
      return {}
    folds: dict[str, int] = {}
    for row in _read_csv(path):
      try:
        folds[row["ID"]] = int(row["kFold"])
      except (KeyError, ValueError) as e:
        raise bio.BuilderInputError(f"{path}: row {row.get('ID')!r} has no integer kFold") from e
    if missing := sorted(ids - set(folds)):
      raise bio.BuilderInputError(f"{path}: no fold for {len(missing)} image(s), e.g. {missing[:3]}")
    return folds

  def _generate_examples(self, root: epath.Path) -> Iterator[tuple[str, dict]]:
    """Yields ``ID -> example``; checks files against the CSVs first."""
    csv_path = root / _CSV
    rows = _read_csv(csv_path)
    for col in ("Case", "Histology", "Pathology", "BIRADS", "Device", "Width", "Height", "BBOX"):
      if col not in rows[0]:
        raise bio.BuilderInputError(f"{csv_path}: missing column {col!r}")
    images_dir, masks_dir = root / "Images", root / "Masks"
    listed = {r["ID"] for r in rows}
    on_disk = {p.stem for p in bio.list_images(images_dir)}
    if unlisted := sorted(on_disk - listed):
      raise bio.BuilderInputError(f"{images_dir / (unlisted[0] + '.png')}: image not listed in {csv_path}"
                                  + (f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else ""))
    folds = {k: self._folds(root, k, listed) for k in _FOLDS}

    # Pre-pass on headers only: missing files, CSV/file size disagreements,
    # patient-inconsistent publisher folds.
    size_mismatch = []
    patient_folds: dict[tuple[int, str], set[int]] = {}
    for row in rows:
      m = _ID_RE.match(row["ID"])
      if not m or int(m.group("case")) != int(row["Case"] or -1):
        raise bio.BuilderInputError(
            f"{csv_path}: ID {row['ID']!r} does not match 'bus_<Case>-<l|r|s>' with Case={row['Case']!r}")
      image_path = images_dir / f"{row['ID']}.png"
      mask_path = masks_dir / f"mask_{row['ID'][len('bus_'):]}.png"
      for p in (image_path, mask_path):
        if not p.exists():
          raise bio.BuilderInputError(f"{p}: file does not exist (listed in {csv_path} as {row['ID']})")
      try:
        with image_path.open("rb") as f:
          width, height = Image.open(f).size
      except (OSError, SyntaxError) as e:
        raise bio.BuilderInputError(f"{image_path}: not a readable image: {e}") from e
      if (height, width) != (int(row["Height"]), int(row["Width"])):
        size_mismatch.append(f"{row['ID']}.png is {height}x{width} but the CSV says "
                             f"{row['Height']}x{row['Width']}")
      for k, fk in folds.items():
        if fk:
          patient_folds.setdefault((k, m.group("case")), set()).add(fk[row["ID"]])
    if size_mismatch:
      bio.warn(f"busbra: {len(size_mismatch)} image(s) disagree with the Height/Width of {csv_path} "
               f"(HxW; the file is trusted): " + "; ".join(size_mismatch))
    if split := sorted(f"{case} ({k}-fold: {sorted(v)})" for (k, case), v in patient_folds.items() if len(v) > 1):
      bio.warn(f"busbra: publisher folds split {len(split)} patient(s) across folds: " + ", ".join(split[:10]))

    for row in rows:
      image_path = images_dir / f"{row['ID']}.png"
      mask_path = masks_dir / f"mask_{row['ID'][len('bus_'):]}.png"
      image = bio.read_image(image_path)
      mask = bio.read_mask(mask_path)
      bio.check_mask_matches(image, mask, image_path, mask_path)
      label = row["Pathology"].lower()
      if label not in common.LABELS:
        raise bio.BuilderInputError(f"{csv_path}: {row['ID']} has Pathology {row['Pathology']!r}")
      xywh, box = _bbox(row["BBOX"], image.shape[0], image.shape[1], f"{csv_path}: {row['ID']}")
      side = _ID_RE.match(row["ID"]).group("side")
      yield row["ID"], {
          "image": image,
          "mask": mask,
          "label": label,
          "patient_id": f"{int(row['Case']):04d}",
          "file_name": f"Images/{row['ID']}.png",
          "height": image.shape[0],
          "width": image.shape[1],
          "birads": row["BIRADS"],
          "histology": row["Histology"],
          "device": row["Device"],
          "side": row.get("Side") or {"l": "left", "r": "right", "s": "single"}[side],
          "publisher_fold_5": folds[5].get(row["ID"], -1),
          "publisher_fold_10": folds[10].get(row["ID"], -1),
          "bbox": box,
          "bbox_xywh": np.asarray(xywh, np.int32),
      }
