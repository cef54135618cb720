"""Tests for the UDIAT Dataset B builder on look-alike dummy data (written by
make_dummy_data.py; no real UDIAT file). Plain pytest builds into tmp_path
with ``file_format="array_record"`` (``DatasetBuilderTestCase`` needs
TensorFlow)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from tfds_builders import io as bio
from tfds_builders.udiat_b import udiat_b_dataset_builder

# openpyxl is the optional extra `xlsx`: tests reading the workbook need it;
# the error when it is missing is tested without it.
needs_openpyxl = pytest.mark.skipif(importlib.util.find_spec("openpyxl") is None,
                                    reason="openpyxl (busjax[xlsx]) not installed")

DUMMY = epath.Path(__file__).parent / "dummy_data"
ROOT = DUMMY / "BUS"


def _build(tmp_path, manual_dir) -> dict[str, dict]:
  builder = udiat_b_dataset_builder.Builder(data_dir=os.fspath(tmp_path / "data"), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  assert list(builder.info.splits.keys()) == ["train"]
  examples = {}
  for ex in builder.as_data_source()["train"]:
    name = ex["file_name"].decode()
    assert name not in examples
    examples[name] = ex
  return examples


def _copy(tmp_path) -> epath.Path:
  manual = epath.Path(tmp_path / "manual")
  shutil.copytree(os.fspath(DUMMY), os.fspath(manual))
  return manual


@needs_openpyxl
def test_counts_labels_histology(tmp_path):
  examples = _build(tmp_path, DUMMY)
  got = {k: (udiat_b_dataset_builder.common.LABELS[int(v["label"])], v["histology"].decode())
         for k, v in examples.items()}
  assert got == {"original/000002.png": ("benign", "CYST"), "original/000009.png": ("benign", "FIBROADENOMA"),
                 "original/000040.png": ("malignant", "IDC"), "original/000163.png": ("malignant", "DCIS")}
  for name, ex in examples.items():
    assert ex["patient_id"] == b""
    with Image.open(os.fspath(ROOT / name)) as im:
      grey = np.asarray(im.convert("L"))
    np.testing.assert_array_equal(ex["image"][..., 0], grey)  # also the RGB-stored 000009
    with Image.open(os.fspath(ROOT / "GT" / os.path.basename(name))) as im:
      np.testing.assert_array_equal(ex["mask"][..., 0], (np.asarray(im) > 127).astype(np.uint8))
    assert ex["mask"].sum() > 0


@needs_openpyxl
def test_xlsx_beside_bus_and_zip_archive(tmp_path):
  manual = _copy(tmp_path)
  os.replace(os.fspath(manual / "BUS" / "DatasetB.xlsx"), os.fspath(manual / "DatasetB.xlsx"))
  assert len(_build(tmp_path / "a", manual)) == 4
  zdir = tmp_path / "zipped"
  zdir.mkdir()
  with zipfile.ZipFile(zdir / "DatasetB.zip", "w") as zf:
    for p in sorted(ROOT.glob("*")) + sorted(ROOT.glob("*/*")):
      if p.is_file():
        zf.write(os.fspath(p), "BUS/" + os.path.relpath(os.fspath(p), os.fspath(ROOT)))
  assert len(_build(tmp_path / "b", zdir)) == 4


def test_openpyxl_missing_gives_clear_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "openpyxl", None)  # import fails
  with pytest.raises(bio.BuilderInputError, match=r"DatasetB\.xlsx: reading the labels needs openpyxl"):
    _build(tmp_path, DUMMY)


@needs_openpyxl
def test_label_rows_and_images_must_agree(tmp_path):
  import openpyxl  # pylint: disable=g-import-not-at-top
  manual = _copy(tmp_path)
  xlsx = manual / "BUS" / "DatasetB.xlsx"
  book = openpyxl.load_workbook(os.fspath(xlsx))
  book.active.append([77, "Benign", "CYST"])  # a row without image: warning
  book.save(os.fspath(xlsx))
  with pytest.warns(bio.BuilderWarning, match=r"lists 1 image\(s\) not in .*original: 000077"):
    assert len(_build(tmp_path / "a", manual)) == 4
  shutil.copy(os.fspath(manual / "BUS" / "original" / "000002.png"),
              os.fspath(manual / "BUS" / "original" / "000005.png"))
  with pytest.raises(bio.BuilderInputError, match=r"000005\.png: no row for this image in .*DatasetB\.xlsx"):
    _build(tmp_path / "b", manual)
  (manual / "BUS" / "original" / "000005.png").unlink()
  xlsx.unlink()
  with pytest.raises(bio.BuilderInputError, match=r"DatasetB\.xlsx: label workbook not found"):
    _build(tmp_path / "c", manual)


def test_missing_and_empty_manual_dir(tmp_path):
  with pytest.raises(bio.BuilderInputError, match=r"nowhere: manual dir for udiat_b does not exist.*original/, GT/"):
    _build(tmp_path, tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(bio.BuilderInputError, match=r"empty: manual dir for udiat_b is empty"):
    _build(tmp_path, tmp_path / "empty")


@needs_openpyxl
def test_missing_mask(tmp_path):
  manual = _copy(tmp_path)
  (manual / "BUS" / "GT" / "000040.png").unlink()
  with pytest.raises(bio.BuilderInputError, match=r"000040\.png: no mask file \(expected .*GT/000040\.png\)"):
    _build(tmp_path, manual)


@needs_openpyxl
def test_mask_of_another_size(tmp_path):
  manual = _copy(tmp_path)
  path = manual / "BUS" / "GT" / "000163.png"
  with Image.open(os.fspath(path)) as im:
    im.resize((50, 40)).save(os.fspath(path))
  with pytest.raises(bio.BuilderInputError, match=r"GT/000163\.png: mask size 40x50 .*original/000163\.png \(88x136"):
    _build(tmp_path, manual)


@needs_openpyxl
def test_corrupt_image(tmp_path):
  manual = _copy(tmp_path)
  path = manual / "BUS" / "original" / "000009.png"
  path.write_bytes(path.read_bytes()[:2000])
  with pytest.raises(bio.BuilderInputError, match=r"original/000009\.png: corrupt or truncated"):
    _build(tmp_path, manual)
