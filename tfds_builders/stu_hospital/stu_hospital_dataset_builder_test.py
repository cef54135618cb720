"""Tests for the STU-Hospital builder on its look-alike dummy_data.

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow, so these are plain
pytest builds into ``tmp_path`` with ``file_format="array_record"``, read
back with the data source. dummy_data (written by make_dummy_data.py) holds
three synthetic ``Test_Image_N.png`` with anti-aliased ``mask_N.png`` of
other sizes, under ``STU-Hospital-master/``.
"""
from __future__ import annotations

import functools
import os
import zipfile

import numpy as np
from etils import epath
from PIL import Image

from tfds_builders import testing
from tfds_builders.stu_hospital import make_dummy_data
from tfds_builders.stu_hospital import stu_hospital_dataset_builder as stu

DUMMY = epath.Path(__file__).parent / "dummy_data"
ROOT = DUMMY / "STU-Hospital-master"


# _build(tmp_path, manual_dir) -> the examples by file_name.
_build = functools.partial(testing.build_examples, stu.Builder)


def test_counts_labels_and_sizes(tmp_path):
  examples = _build(tmp_path, DUMMY)
  assert sorted(examples) == ["Test_Image_1.png", "Test_Image_2.png", "Test_Image_3.png"]
  for name, ex in examples.items():
    assert int(ex["label"]) == -1 and not bool(ex["label_known"])
    assert ex["patient_id"] == b""
    with Image.open(os.fspath(ROOT / name)) as im:
      assert im.size == (ex["image"].shape[1], ex["image"].shape[0])  # original resolution
    with Image.open(os.fspath(ROOT / name.replace("Test_Image", "mask"))) as im:
      assert im.size != (ex["image"].shape[1], ex["image"].shape[0])  # the quirk under test
    assert ex["image"].dtype == np.uint8 and ex["image"].shape[-1] == 1
    assert ex["mask"].shape == ex["image"].shape
    assert (int(ex["height"]), int(ex["width"])) == ex["image"].shape[:2]
    assert set(np.unique(ex["mask"]).tolist()) == {0, 1}


def test_resized_mask_matches_the_lesion_at_image_size(tmp_path):
  examples = _build(tmp_path, DUMMY)
  for num, (h, w), _, centre, radii in make_dummy_data.CASES:
    ex = examples[f"Test_Image_{num}.png"]
    expected = make_dummy_data.ellipse(h, w, centre, radii) > 0.5
    got = ex["mask"][..., 0].astype(bool)
    iou = (got & expected).sum() / (got | expected).sum()
    assert iou > 0.9, (num, iou)
    # The lesion is dark in the image: the mask sits on it.
    img = ex["image"][..., 0].astype(float)
    assert img[got].mean() < 0.5 * img[~got].mean()


def test_resize_soft_mask_threshold_is_half():
  up = lambda v, dtype=np.uint8: stu.resize_soft_mask(np.full((4, 6), v, dtype), 9, 11)  # noqa: E731
  assert up(128).shape == (9, 11, 1)
  assert up(128).all() and not up(127).any()  # 128/255 >= 0.5 > 127/255
  assert up(1).all() and not up(0).any()  # a 0/1 mask is taken as it is
  half = np.zeros((4, 8), np.uint8)
  half[:, 4:] = 255
  out = stu.resize_soft_mask(half, 2, 4)[..., 0]
  np.testing.assert_array_equal(out, [[0, 0, 1, 1], [0, 0, 1, 1]])


def test_builds_from_zip_with_images_and_masks_folders(tmp_path):
  manual = tmp_path / "zipped"
  manual.mkdir()
  with zipfile.ZipFile(manual / "STU-Hospital-master.zip", "w") as zf:
    for p in sorted(ROOT.glob("*.png")):
      folder = "images" if p.name.startswith("Test_Image") else "masks"
      zf.write(os.fspath(p), f"STU-Hospital-master/{folder}/{p.name.lower()}")
  examples = _build(tmp_path / "z", manual)
  assert sorted(examples) == [f"images/test_image_{n}.png" for n in (1, 2, 3)]


def test_missing_and_empty_manual_dir(tmp_path):
  testing.assert_manual_dir_errors(stu.Builder, tmp_path)


def test_missing_mask(tmp_path):
  testing.assert_missing_file_error(
      stu.Builder, tmp_path, DUMMY, f"{ROOT.name}/mask_2.png",
      r"Test_Image_2\.png: no mask file \(expected mask_2\.png")


def test_unreadable_image(tmp_path):
  testing.assert_unreadable_file_error(
      stu.Builder, tmp_path, DUMMY, f"{ROOT.name}/Test_Image_3.png",
      r"Test_Image_3\.png: not a readable image", content=b"not a png at all")
