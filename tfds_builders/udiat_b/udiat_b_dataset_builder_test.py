"""Tests for the UDIAT Dataset B builder on look-alike dummy data (written by
make_dummy_data.py; no real UDIAT file). Plain pytest builds into tmp_path
with ``file_format="array_record"`` (``DatasetBuilderTestCase`` needs
TensorFlow)."""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import sys

import numpy as np
import pytest
from etils import epath
from PIL import Image

from tfds_builders import io as bio
from tfds_builders import testing
from tfds_builders.udiat_b import udiat_b_dataset_builder

# openpyxl is the optional extra `xlsx`: tests reading the workbook need it;
# the error when it is missing is tested without it.
needs_openpyxl = pytest.mark.skipif(importlib.util.find_spec("openpyxl") is None,
                                    reason="openpyxl (busjax[xlsx]) not installed")

DUMMY = epath.Path(__file__).parent / "dummy_data"
ROOT = DUMMY / "BUS"


# _build(tmp_path, manual_dir) -> the examples by file_name.
_build = functools.partial(testing.build_examples, udiat_b_dataset_builder.Builder)


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
  manual = testing.copy_dummy(DUMMY, tmp_path)
  os.replace(os.fspath(manual / "BUS" / "DatasetB.xlsx"), os.fspath(manual / "DatasetB.xlsx"))
  assert len(_build(tmp_path / "a", manual)) == 4
  zdir = tmp_path / "zipped"
  zdir.mkdir()
  testing.zip_folder(ROOT, zdir / "DatasetB.zip", "BUS")
  assert len(_build(tmp_path / "b", zdir)) == 4


def test_openpyxl_missing_gives_clear_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "openpyxl", None)  # import fails
  with pytest.raises(bio.BuilderInputError, match=r"DatasetB\.xlsx: reading the labels needs openpyxl"):
    _build(tmp_path, DUMMY)


@needs_openpyxl
def test_label_rows_and_images_must_agree(tmp_path):
  import openpyxl  # pylint: disable=g-import-not-at-top
  manual = testing.copy_dummy(DUMMY, tmp_path)
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
  testing.assert_manual_dir_errors(
      udiat_b_dataset_builder.Builder, tmp_path,
      missing=r"nowhere: manual dir for udiat_b does not exist.*original/, GT/")


@needs_openpyxl
def test_missing_mask(tmp_path):
  testing.assert_missing_file_error(
      udiat_b_dataset_builder.Builder, tmp_path, DUMMY, "BUS/GT/000040.png",
      r"000040\.png: no mask file \(expected .*GT/000040\.png\)")


@needs_openpyxl
def test_mask_of_another_size(tmp_path):
  testing.assert_resized_mask_error(
      udiat_b_dataset_builder.Builder, tmp_path, DUMMY, "BUS/GT/000163.png", (50, 40),
      r"GT/000163\.png: mask size 40x50 .*original/000163\.png \(88x136")


@needs_openpyxl
def test_corrupt_image(tmp_path):
  testing.assert_unreadable_file_error(
      udiat_b_dataset_builder.Builder, tmp_path, DUMMY, "BUS/original/000009.png",
      r"original/000009\.png: corrupt or truncated", keep_bytes=2000)
