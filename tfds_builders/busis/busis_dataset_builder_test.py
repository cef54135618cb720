"""Tests for the BUSIS builder on look-alike dummy data (make_dummy_data.py;
no real BUSIS file). Plain pytest builds into tmp_path with
``file_format="array_record"`` (``DatasetBuilderTestCase`` needs TensorFlow)."""
from __future__ import annotations

import functools
import os
import shutil

import numpy as np
import pytest
from etils import epath
from PIL import Image

from tfds_builders import io as bio
from tfds_builders import testing
from tfds_builders.busis import busis_dataset_builder

DUMMY = epath.Path(__file__).parent / "dummy_data"
ROOT = DUMMY / "BUSIS"


# _build(tmp_path, manual_dir) -> the examples by file_name.
_build = functools.partial(testing.build_examples, busis_dataset_builder.Builder)


def test_counts_labels_and_pairing(tmp_path):
  examples = _build(tmp_path, DUMMY)
  labels = {k: busis_dataset_builder.common.LABELS[int(v["label"])] for k, v in examples.items()}
  assert labels == {"Original/case1.bmp": "benign", "Original/case2.bmp": "malignant",
                    "Original/case10.bmp": "benign"}
  for name, ex in examples.items():
    stem = os.path.splitext(os.path.basename(name))[0]
    with Image.open(os.fspath(ROOT / name)) as im:
      np.testing.assert_array_equal(ex["image"][..., 0], np.asarray(im.convert("L")))
    with Image.open(os.fspath(ROOT / "GT" / f"{stem}_GT.bmp")) as im:
      raw = np.asarray(im)
    np.testing.assert_array_equal(ex["mask"][..., 0], (raw > 0).astype(np.uint8))  # 1-bit case2 too
    assert ex["patient_id"] == b"" and 0 < ex["mask"].sum() < ex["mask"].size


def test_other_folder_spellings_csv_beside_and_zip(tmp_path):
  manual = epath.Path(tmp_path / "renamed")
  shutil.copytree(os.fspath(ROOT / "Original"), os.fspath(manual / "busis_v1" / "images"))
  shutil.copytree(os.fspath(ROOT / "GT"), os.fspath(manual / "busis_v1" / "Ground_Truth"))
  shutil.copy(os.fspath(ROOT / "BUSIS562.csv"), os.fspath(manual / "BUSIS562.csv"))
  examples = _build(tmp_path / "a", manual)
  assert sorted(examples) == ["images/case1.bmp", "images/case10.bmp", "images/case2.bmp"]
  zdir = tmp_path / "zipped"
  zdir.mkdir()
  testing.zip_folder(ROOT, zdir / "BUSIS.zip", "BUSIS")
  assert len(_build(tmp_path / "b", zdir)) == 3


def test_csv_and_images_must_agree(tmp_path):
  manual = testing.copy_dummy(DUMMY, tmp_path)
  csv_path = manual / "BUSIS" / "BUSIS562.csv"
  csv_path.write_text(csv_path.read_text() + "case0007,case0007_GT,M\n")
  with pytest.warns(bio.BuilderWarning, match=r"lists 1 image\(s\) not in .*Original: case7"):
    assert len(_build(tmp_path / "a", manual)) == 3
  csv_path.write_text(csv_path.read_text().replace("case0010,case0010_GT,B", "case0010,case0010_GT,X"))
  with pytest.raises(bio.BuilderInputError, match=r"BUSIS562\.csv: row 4: tumor type 'X' is not B/M"):
    _build(tmp_path / "b", manual)
  csv_path.unlink()
  with pytest.raises(bio.BuilderInputError, match=r"BUSIS562\.csv: label CSV not found"):
    _build(tmp_path / "c", manual)


def test_missing_and_empty_manual_dir(tmp_path):
  testing.assert_manual_dir_errors(
      busis_dataset_builder.Builder, tmp_path,
      missing=r"nowhere: manual dir for busis does not exist.*Original/, GT/")


def test_missing_mask(tmp_path):
  testing.assert_missing_file_error(
      busis_dataset_builder.Builder, tmp_path, DUMMY, "BUSIS/GT/case10_GT.bmp",
      r"Original/case10\.bmp: no mask file \(expected .*case10_GT\.bmp\)")


def test_mask_of_another_size(tmp_path):
  testing.assert_resized_mask_error(
      busis_dataset_builder.Builder, tmp_path, DUMMY, "BUSIS/GT/case1_GT.bmp", (60, 45),
      r"case1_GT\.bmp: mask size 45x60 .*case1\.bmp \(90x120")


def test_corrupt_image(tmp_path):
  testing.assert_unreadable_file_error(  # truncated BMP
      busis_dataset_builder.Builder, tmp_path, DUMMY, "BUSIS/Original/case2.bmp",
      r"Original/case2\.bmp: corrupt or truncated", keep_bytes=3000)
