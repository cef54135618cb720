"""Tests for the BUS-BRA builder on its dummy_data (5 real BUS-BRA images of 3
patients, their masks, the publisher's CSVs trimmed to those rows, and the
licence notice).

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow, so these are plain
pytest builds into ``tmp_path`` (``file_format="array_record"``) read back
with the data source. bus_0856-l is one of the 4 images whose height
disagrees with bus_data.csv (353 in the file, 405 in the CSV).
"""
from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from tfds_builders import io as bio
from tfds_builders import testing
from tfds_builders.busbra import busbra_dataset_builder

DUMMY = epath.Path(__file__).parent / "dummy_data"
ROOT = DUMMY / "BUSBRA"
IDS = ["bus_0856-l", "bus_0856-r", "bus_0957-s", "bus_1001-l", "bus_1001-r"]


def _build(tmp_path, manual_dir) -> dict[str, dict]:
  """Builds from ``manual_dir``; returns examples by image ID."""
  return testing.build_examples(busbra_dataset_builder.Builder, tmp_path, manual_dir,
                                key=lambda name: name.removeprefix("Images/").removesuffix(".png"))


def _csv(name: str) -> dict[str, dict[str, str]]:
  with open(os.fspath(ROOT / name), newline="") as f:
    return {r["ID"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
  with pytest.warns(bio.BuilderWarning) as record:
    out = _build(tmp_path_factory.mktemp("busbra"), DUMMY)
  out["_warnings"] = [str(w.message) for w in record]
  return out


def test_counts_patients_and_metadata(examples):
  assert sorted(k for k in examples if not k.startswith("_")) == IDS
  data = _csv("bus_data.csv")
  patients = {}
  for key in IDS:
    ex, row = examples[key], data[key]
    assert busbra_dataset_builder.common.LABELS[int(ex["label"])] == row["Pathology"]
    assert ex["patient_id"].decode() == f"{int(row['Case']):04d}"
    patients.setdefault(ex["patient_id"], []).append(key)
    assert ex["birads"].decode() == row["BIRADS"] and ex["histology"].decode() == row["Histology"]
    assert ex["device"].decode() == row["Device"] and ex["side"].decode() == row["Side"]
    assert ex["image"].dtype == np.uint8 and ex["mask"].shape == ex["image"].shape
    assert set(np.unique(ex["mask"])) == {0, 1}
    with Image.open(os.fspath(ROOT / "Images" / f"{key}.png")) as im:
      np.testing.assert_array_equal(ex["image"][..., 0], np.asarray(im))  # mode L, unchanged
  assert sorted(len(v) for v in patients.values()) == [1, 2, 2]


def test_size_disagreement_warns_once_and_trusts_the_file(examples):
  size_warnings = [w for w in examples["_warnings"] if "disagree" in w]
  assert len(size_warnings) == 1
  assert "1 image(s)" in size_warnings[0]
  assert "bus_0856-l.png is 353x387 but the CSV says 405x387" in size_warnings[0]
  assert "bus_0856-r" not in size_warnings[0]
  ex = examples["bus_0856-l"]
  assert (int(ex["height"]), int(ex["width"])) == (353, 387) == ex["image"].shape[:2]


def test_publisher_folds_present_and_patient_consistent(examples):
  for k in (5, 10):
    published = _csv(f"{k}-fold-cv.csv")
    by_patient = {}
    for key in IDS:
      fold = int(examples[key][f"publisher_fold_{k}"])
      assert fold == int(published[key]["kFold"]) and 1 <= fold <= k
      by_patient.setdefault(examples[key]["patient_id"], set()).add(fold)
    assert all(len(f) == 1 for f in by_patient.values())
  assert not [w for w in examples["_warnings"] if "across folds" in w]


def test_bbox_matches_mask(examples):
  for key in IDS:
    ex = examples[key]
    ys, xs = np.nonzero(ex["mask"][..., 0])
    h, w = ex["image"].shape[:2]
    ymin, xmin, ymax, xmax = ex["bbox"]
    assert abs(ymin * h - ys.min()) <= 1 and abs(xmin * w - xs.min()) <= 1, key
    assert abs(ymax * h - (ys.max() + 1)) <= 1 and abs(xmax * w - (xs.max() + 1)) <= 1, key


@pytest.mark.filterwarnings("ignore:busbra. 1 image:tfds_builders.io.BuilderWarning")
def test_split_patient_folds_warn(tmp_path):
  manual = testing.copy_dummy(DUMMY, tmp_path)
  path = manual / "BUSBRA" / "5-fold-cv.csv"
  path.write_text(path.read_text().replace("bus_1001-r,benign,5,", "bus_1001-r,benign,2,"))
  with pytest.warns(bio.BuilderWarning, match=r"split 1 patient\(s\) across folds: 1001 \(5-fold: \[2, 5\]\)"):
    _build(tmp_path, manual)


@pytest.mark.filterwarnings("ignore::tfds_builders.io.BuilderWarning")
def test_builds_from_publisher_zip(tmp_path):
  manual = tmp_path / "zipped"
  manual.mkdir()
  testing.zip_folder(ROOT, manual / "BUSBRA.zip", "BUSBRA")
  assert len(_build(tmp_path, manual)) == 5


def test_missing_and_empty_manual_dir(tmp_path):
  testing.assert_manual_dir_errors(
      busbra_dataset_builder.Builder, tmp_path,
      missing=r"nowhere: manual dir for busbra does not exist.*BUSBRA folder \(Images/",
      empty=r"empty: manual dir for busbra is empty.*bus_data\.csv")


def test_missing_mask(tmp_path):
  testing.assert_missing_file_error(busbra_dataset_builder.Builder, tmp_path, DUMMY,
                                    "BUSBRA/Masks/mask_0957-s.png", r"mask_0957-s\.png: file does not exist")


@pytest.mark.filterwarnings("ignore::tfds_builders.io.BuilderWarning")
def test_mask_of_another_size(tmp_path):
  testing.assert_resized_mask_error(
      busbra_dataset_builder.Builder, tmp_path, DUMMY, "BUSBRA/Masks/mask_1001-l.png", (100, 50),
      r"mask_1001-l\.png: mask size 50x100 .*bus_1001-l\.png \(303x276")


@pytest.mark.filterwarnings("ignore::tfds_builders.io.BuilderWarning")
def test_corrupt_image(tmp_path):
  testing.assert_unreadable_file_error(  # truncated PNG
      busbra_dataset_builder.Builder, tmp_path, DUMMY, "BUSBRA/Images/bus_1001-r.png",
      r"bus_1001-r\.png: corrupt or truncated", keep_bytes=3000)


def test_image_missing_from_csv(tmp_path):
  manual = testing.copy_dummy(DUMMY, tmp_path)
  shutil.copy(os.fspath(manual / "BUSBRA" / "Images" / "bus_0957-s.png"),
              os.fspath(manual / "BUSBRA" / "Images" / "bus_0958-s.png"))
  with pytest.raises(bio.BuilderInputError, match=r"bus_0958-s\.png: image not listed in .*bus_data\.csv"):
    _build(tmp_path, manual)


REAL = epath.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "busbra"


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / "bus_data.csv").exists(), reason="real BUS-BRA not beside the repo")
def test_real_busbra_counts(tmp_path):
  """The complete BUS-BRA in ../shared/data/busbra: 1,875 images of 1,064 patients,
  1,268 benign and 607 malignant, every patient in one publisher fold (about 45 s)."""
  builder = busbra_dataset_builder.Builder(data_dir=os.fspath(tmp_path / "data"),
                                           file_format="array_record")
  with pytest.warns(bio.BuilderWarning, match="4"):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(REAL)))
  ds = builder.as_data_source()["train"]
  assert len(ds) == 1875
  patients, labels, folds = set(), [], {}
  for ex in ds:
    pid = ex["patient_id"].decode()
    patients.add(pid)
    labels.append(int(ex["label"]))
    folds.setdefault(pid, set()).add(int(ex["publisher_fold_5"]))
  assert len(patients) == 1064
  assert labels.count(1) == 1268 and labels.count(2) == 607
  assert all(len(f) == 1 for f in folds.values())
