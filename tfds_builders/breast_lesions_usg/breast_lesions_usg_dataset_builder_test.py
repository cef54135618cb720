"""Tests for the BrEaST-Lesions_USG builder on its look-alike dummy_data.

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow, so these are plain
pytest builds into ``tmp_path`` with ``file_format="array_record"``, read
back with the data source. dummy_data (written by make_dummy_data.py): case001
benign, case002 malignant with two other-finding masks, case003 normal (no
mask), case004 benign with age "not available"; alpha-coded RGBA masks; the
clinical xlsx beside the image folder.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys

import numpy as np
import pytest
from etils import epath
from PIL import Image

from tfds_builders import common
from tfds_builders import io as bio
from tfds_builders import testing
from tfds_builders.breast_lesions_usg import breast_lesions_usg_dataset_builder as breast

openpyxl = pytest.importorskip("openpyxl")

DUMMY = epath.Path(__file__).parent / "dummy_data"
IMAGES = DUMMY / "BrEaST-Lesions_USG-images_and_masks"
XLSX_NAME = "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx"


# _build(tmp_path, manual_dir) -> the examples by file_name.
_build = functools.partial(testing.build_examples, breast.Builder)


def _alpha(name: str) -> np.ndarray:
  """The alpha channel of a dummy mask, as bool; checks the colour is all white."""
  with Image.open(os.fspath(IMAGES / name)) as im:
    assert im.mode == "RGBA"
    a = np.asarray(im)
  assert (a[..., :3] == 255).all()  # a reader ignoring alpha would see a full-image mask
  return a[..., 3] > 127


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, dict]:
  return _build(tmp_path_factory.mktemp("breast"), DUMMY)


def test_counts_labels_and_clinical_fields(examples):
  assert {k: common.LABELS[int(v["label"])] for k, v in examples.items()} == {
      "case001.png": "benign", "case002.png": "malignant", "case003.png": "normal",
      "case004.png": "benign"}
  assert {k: (v["birads"].decode(), int(v["age"]), int(v["num_other_masks"]), int(v["num_tumor_masks"]))
          for k, v in examples.items()} == {
              "case001.png": ("3", 43, 0, 1), "case002.png": ("4c", 67, 2, 1),
              "case003.png": ("1", 38, 0, 0), "case004.png": ("4a", -1, 0, 1)}
  assert examples["case002.png"]["diagnosis"] == b"invasive ductal carcinoma"
  assert examples["case003.png"]["verification"] == b"confirmed by follow-up care"
  assert examples["case002.png"]["margin"] == b"not circumscribed - angular&spiculated"
  assert examples["case001.png"]["pixel_size"] == pytest.approx(0.0075)
  for name, ex in examples.items():
    assert ex["patient_id"] == b""
    with Image.open(os.fspath(IMAGES / name)) as im:
      assert im.size == (ex["image"].shape[1], ex["image"].shape[0])
    assert ex["image"].dtype == np.uint8 and ex["image"].shape[-1] == 1
    for key in ("mask", "other_mask"):
      assert ex[key].shape == ex["image"].shape and set(np.unique(ex[key]).tolist()) <= {0, 1}


def test_tumour_mask_read_from_alpha_and_other_masks_kept_apart(examples):
  ex = examples["case002.png"]
  tumour = _alpha("case002_tumor.png")
  others = _alpha("case002_other1.png") | _alpha("case002_other2.png")
  assert 0 < tumour.sum() < tumour.size / 2 and others.any() and not (tumour & others).any()
  np.testing.assert_array_equal(ex["mask"][..., 0], tumour.astype(np.uint8))
  np.testing.assert_array_equal(ex["other_mask"][..., 0], others.astype(np.uint8))
  np.testing.assert_array_equal(examples["case001.png"]["mask"][..., 0],
                                _alpha("case001_tumor.png").astype(np.uint8))


def test_normal_case_has_empty_masks(examples):
  ex = examples["case003.png"]
  assert not (IMAGES / "case003_tumor.png").exists()
  assert ex["mask"].sum() == 0 and ex["other_mask"].sum() == 0


def test_builds_from_tcia_zip_with_xlsx_beside(tmp_path):
  manual = tmp_path / "zipped"
  manual.mkdir()
  testing.zip_folder(IMAGES, manual / "BrEaST-Lesions_USG-images_and_masks-Dec-15-2023.zip", IMAGES.name,
                     patterns=["*.png"])
  shutil.copy(os.fspath(DUMMY / XLSX_NAME), os.fspath(manual / XLSX_NAME))
  assert sorted(_build(tmp_path / "z", manual)) == [f"case00{i}.png" for i in (1, 2, 3, 4)]


def test_spreadsheet_without_mask_columns_uses_file_names(tmp_path):
  manual = testing.copy_dummy(DUMMY, tmp_path)
  (manual / XLSX_NAME).unlink()
  (manual / IMAGES.name / "case004_tumor.png").unlink()
  wb = openpyxl.Workbook()
  wb.active.append(["CaseID", "Classification", "BIRADS"])
  for case, label, birads in ((1, "benign", 3), (2, "malignant", "4c"), (3, "normal", 1), (4, "benign", 2)):
    wb.active.append([case, label, birads])
  wb.save(os.fspath(manual / "clinical.xlsx"))
  with pytest.warns(bio.BuilderWarning, match=r"case004\.png: benign case without a tumour mask"):
    examples = _build(tmp_path, manual)
  assert sorted(examples) == ["case001.png", "case002.png", "case003.png"]
  assert int(examples["case002.png"]["num_other_masks"]) == 2
  assert examples["case002.png"]["other_mask"].any() and examples["case001.png"]["mask"].any()
  assert examples["case003.png"]["mask"].sum() == 0 and int(examples["case001.png"]["age"]) == -1


def test_missing_and_empty_manual_dir(tmp_path):
  testing.assert_manual_dir_errors(breast.Builder, tmp_path)


def test_missing_spreadsheet(tmp_path):
  manual = testing.copy_dummy(DUMMY, tmp_path)
  (manual / XLSX_NAME).unlink()
  with pytest.raises(bio.BuilderInputError, match=r"no clinical spreadsheet found.*clinical-data-\*\.xlsx"):
    _build(tmp_path, manual)


def test_missing_mask(tmp_path):
  testing.assert_missing_file_error(
      breast.Builder, tmp_path, DUMMY, f"{IMAGES.name}/case002_other2.png",
      r"case002_other2\.png: mask listed in .*xlsx row 3 does not exist")


def test_unreadable_image(tmp_path):
  testing.assert_unreadable_file_error(
      breast.Builder, tmp_path, DUMMY, f"{IMAGES.name}/case004.png",
      r"case004\.png: (not a readable image|corrupt)", content=b"\x89PNG\r\n\x1a\n truncated")


def test_unknown_classification(tmp_path):
  manual = testing.copy_dummy(DUMMY, tmp_path)
  wb = openpyxl.load_workbook(os.fspath(manual / XLSX_NAME))
  ws = wb.worksheets[0]
  col = [c.value for c in ws[1]].index("Classification") + 1
  ws.cell(row=2, column=col, value="probably benign")
  wb.save(os.fspath(manual / XLSX_NAME))
  with pytest.raises(bio.BuilderInputError, match=r"row 2 \(case001\.png\): Classification 'probably benign'"):
    _build(tmp_path, manual)


def test_missing_openpyxl_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "openpyxl", None)
  with pytest.raises(ImportError, match=r"pip install 'busjax\[xlsx\]'"):
    breast.read_clinical_xlsx(DUMMY / XLSX_NAME)
