"""Tests for the BUSI builder on its dummy_data (real BUSI files, CC0).

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow (``as_dataset``,
``tf.test``), so these are plain pytest builds into ``tmp_path`` with
``file_format="array_record"``, read back with the data source.

dummy_data/Dataset_BUSI_with_GT holds: benign (4) (two mask files, the second
RGBA), benign (433) and malignant (145) (pixel-identical images),
malignant (14), normal (10) (an empty RGB mask).
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from etils import epath
from PIL import Image

from tfds_builders import io as bio
from tfds_builders import testing
from tfds_builders.busi import busi_dataset_builder

DUMMY = epath.Path(__file__).parent / "dummy_data"
ROOT = DUMMY / "Dataset_BUSI_with_GT"


def _build(tmp_path, manual_dir, config: str = "with_normal") -> dict[str, dict]:
  """Builds ``config`` from ``manual_dir``; returns examples by file_name."""
  return testing.build_examples(busi_dataset_builder.Builder, tmp_path, manual_dir, config=config)


def _label(ex) -> str:
  return busi_dataset_builder.common.LABELS[int(ex["label"])]


@pytest.mark.filterwarnings("ignore::tfds_builders.io.BuilderWarning")
@pytest.mark.parametrize("config,expected", [
    ("with_normal", {"benign/benign (4).png": "benign", "benign/benign (433).png": "benign",
                     "malignant/malignant (145).png": "malignant",
                     "malignant/malignant (14).png": "malignant", "normal/normal (10).png": "normal"}),
    ("lesions_only", {"benign/benign (4).png": "benign", "benign/benign (433).png": "benign",
                      "malignant/malignant (145).png": "malignant",
                      "malignant/malignant (14).png": "malignant"}),
    ("dedup", {"benign/benign (4).png": "benign", "benign/benign (433).png": "benign",
               "malignant/malignant (14).png": "malignant", "normal/normal (10).png": "normal"}),
])
def test_counts_and_labels(tmp_path, config, expected):
  examples = _build(tmp_path, DUMMY, config)
  assert {k: _label(v) for k, v in examples.items()} == expected
  for name, ex in examples.items():
    assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3 and ex["image"].shape[-1] == 1
    assert ex["mask"].shape == ex["image"].shape
    assert set(np.unique(ex["mask"])) <= {0, 1}
    assert (int(ex["height"]), int(ex["width"])) == ex["image"].shape[:2]
    assert ex["patient_id"] in (b"", "")
    with Image.open(os.fspath(ROOT / name)) as im:
      assert im.size == (ex["image"].shape[1], ex["image"].shape[0])  # original resolution


@pytest.mark.filterwarnings("ignore::tfds_builders.io.BuilderWarning")
def test_multi_mask_union_is_or_of_files_and_rgba_read(tmp_path):
  ex = _build(tmp_path, DUMMY)["benign/benign (4).png"]
  assert int(ex["num_masks"]) == 2
  with Image.open(os.fspath(ROOT / "benign" / "benign (4)_mask.png")) as im:
    assert im.mode == "1"
    first = np.asarray(im).astype(bool)
  with Image.open(os.fspath(ROOT / "benign" / "benign (4)_mask_1.png")) as im:
    assert im.mode == "RGBA"
    second = np.asarray(im)[..., :3].max(-1) > 127
  assert first.any() and second.any() and not (first & second).all()
  np.testing.assert_array_equal(ex["mask"][..., 0], (first | second).astype(np.uint8))
  assert ex["mask"].sum() > max(first.sum(), second.sum())


@pytest.mark.filterwarnings("ignore::tfds_builders.io.BuilderWarning")
def test_normal_has_empty_mask_and_grey_image_matches_file(tmp_path):
  examples = _build(tmp_path, DUMMY)
  assert examples["normal/normal (10).png"]["mask"].sum() == 0
  with Image.open(os.fspath(ROOT / "malignant" / "malignant (14).png")) as im:
    assert im.mode == "RGB"
    rgb = np.asarray(im)
  assert (rgb[..., 0] == rgb[..., 1]).all()  # a grey picture stored as RGB keeps its values
  np.testing.assert_array_equal(examples["malignant/malignant (14).png"]["image"][..., 0], rgb[..., 0])


def test_duplicate_pair_detected_and_dropped_by_dedup(tmp_path):
  with pytest.warns(bio.BuilderWarning, match=r"benign \(433\)\.png = malignant/malignant \(145\)\.png"):
    full = _build(tmp_path / "a", DUMMY, "with_normal")
  assert full["malignant/malignant (145).png"]["duplicate_of"] == b"benign/benign (433).png"
  assert full["benign/benign (433).png"]["duplicate_of"] == b""
  np.testing.assert_array_equal(full["malignant/malignant (145).png"]["image"],
                                full["benign/benign (433).png"]["image"])
  with pytest.warns(bio.BuilderWarning, match="dedup drops"):
    dedup = _build(tmp_path / "b", DUMMY, "dedup")
  assert "malignant/malignant (145).png" not in dedup and "benign/benign (433).png" in dedup
  assert all(ex["duplicate_of"] == b"" for ex in dedup.values())


@pytest.mark.filterwarnings("ignore::tfds_builders.io.BuilderWarning")
def test_builds_from_publisher_zip_and_nested_folder(tmp_path):
  manual = tmp_path / "zipped"
  manual.mkdir()
  testing.zip_folder(ROOT, manual / "archive.zip", "Dataset_BUSI_with_GT", patterns=["*/*.png"])
  assert len(_build(tmp_path / "z", manual)) == 5
  nested = tmp_path / "nested" / "archive"
  shutil.copytree(os.fspath(ROOT), os.fspath(nested / "Dataset_BUSI_with_GT"))
  assert len(_build(tmp_path / "n", tmp_path / "nested")) == 5


def test_missing_and_empty_manual_dir(tmp_path):
  testing.assert_manual_dir_errors(busi_dataset_builder.Builder, tmp_path, config="with_normal",
                                   missing=r"does not exist.*Dataset_BUSI_with_GT",
                                   empty=r"empty\..*archive\.zip")
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("x")
  with pytest.raises(bio.BuilderInputError, match=r"found no busi dataset.*notes\.txt"):
    _build(tmp_path, tmp_path / "other")


def test_missing_mask(tmp_path):
  testing.assert_missing_file_error(
      busi_dataset_builder.Builder, tmp_path, DUMMY, "Dataset_BUSI_with_GT/malignant/malignant (14)_mask.png",
      r"malignant \(14\)\.png: no mask file", config="with_normal")


@pytest.mark.filterwarnings("ignore::tfds_builders.io.BuilderWarning")
def test_mask_of_another_size(tmp_path):
  testing.assert_resized_mask_error(
      busi_dataset_builder.Builder, tmp_path, DUMMY, "Dataset_BUSI_with_GT/benign/benign (4)_mask_1.png",
      (100, 80), r"benign \(4\)_mask_1\.png: mask size 80x100 .*benign \(4\)\.png \(465x555",
      config="with_normal")


@pytest.mark.filterwarnings("ignore::tfds_builders.io.BuilderWarning")
def test_corrupt_image(tmp_path):
  testing.assert_unreadable_file_error(  # truncated PNG
      busi_dataset_builder.Builder, tmp_path, DUMMY, "Dataset_BUSI_with_GT/normal/normal (10).png",
      r"normal \(10\)\.png: corrupt or truncated", keep_bytes=5000, config="with_normal")
