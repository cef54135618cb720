"""Tests for the BUS-UCLM builder on its look-alike dummy_data.

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow, so these are plain
pytest builds into ``tmp_path`` with ``file_format="array_record"``, read
back with the data source. dummy_data (written by make_dummy_data.py):
BUS-UCLM/{images,masks}/ with ALWI_000 benign (green), ALWI_001 normal,
BEMA_000 malignant (red), BEMA_001 benign, COPE_000 normal, and INFO.csv
(``;``-separated, with a byte-order mark).
"""
from __future__ import annotations

import functools
import os
import zipfile

import numpy as np
import pytest
from etils import epath
from PIL import Image

from tfds_builders import common
from tfds_builders import io as bio
from tfds_builders import testing
from tfds_builders.bus_uclm import bus_uclm_dataset_builder as uclm

DUMMY = epath.Path(__file__).parent / "dummy_data"
ROOT = DUMMY / "BUS-UCLM"
EXPECTED = {"ALWI_000.png": ("benign", "ALWI"), "ALWI_001.png": ("normal", "ALWI"),
            "BEMA_000.png": ("malignant", "BEMA"), "BEMA_001.png": ("benign", "BEMA"),
            "COPE_000.png": ("normal", "COPE")}


# _build(tmp_path, manual_dir) -> the examples by file_name.
_build = functools.partial(testing.build_examples, uclm.Builder)


def _copy(tmp_path) -> epath.Path:
  """A writable copy of the dummy data; returns the dataset folder in it."""
  return testing.copy_dummy(DUMMY, tmp_path) / ROOT.name


def _rgb(path) -> np.ndarray:
  with Image.open(os.fspath(path)) as im:
    return np.asarray(im.convert("RGB"))


def test_counts_labels_patients_and_masks(tmp_path):
  examples = _build(tmp_path, DUMMY)
  assert {k: (common.LABELS[int(v["label"])], v["patient_id"].decode()) for k, v in examples.items()} == {
      f"images/{n}": e for n, e in EXPECTED.items()}
  for name, ex in examples.items():
    rgb = _rgb(ROOT / "masks" / name.split("/")[1])
    np.testing.assert_array_equal(ex["mask"][..., 0], (rgb > 127).any(-1).astype(np.uint8))
    assert ex["image"].shape == rgb.shape[:2] + (1,) and ex["image"].dtype == np.uint8
    assert (int(ex["height"]), int(ex["width"])) == rgb.shape[:2]
    assert ex["info_label"].decode() == common.LABELS[int(ex["label"])]
    assert ex["mask_colour_label"].decode() == common.LABELS[int(ex["label"])]
    assert (ex["mask"].sum() == 0) == (common.LABELS[int(ex["label"])] == "normal")
  green = examples["images/ALWI_000.png"]
  red = examples["images/BEMA_000.png"]
  np.testing.assert_array_equal(green["class_mask"], green["mask"])  # 1 = benign
  np.testing.assert_array_equal(red["class_mask"], red["mask"] * 2)  # 2 = malignant
  assert red["doppler"] == b"Yes" and examples["images/BEMA_001.png"]["marks"] == b"Yes"


def test_colour_decoding_by_hand():
  rgb = np.zeros((2, 4, 3), np.uint8)
  rgb[0, 0] = (0, 255, 0)  # benign
  rgb[0, 1] = (30, 200, 10)  # benign, not pure
  rgb[0, 2] = (255, 0, 0)  # malignant
  rgb[0, 3] = (255, 255, 255)  # lesion of neither colour
  rgb[1, 0] = (100, 100, 100)  # background (below 128)
  lesion, green, red = uclm.decode_colour_mask(rgb)
  np.testing.assert_array_equal(lesion, [[1, 1, 1, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(green, [[1, 1, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(red, [[0, 0, 1, 0], [0, 0, 0, 0]])
  assert uclm.colour_label(lesion, green, red) == "both"
  assert uclm.colour_label(*uclm.decode_colour_mask(rgb[:, :2])) == "benign"
  assert uclm.colour_label(*uclm.decode_colour_mask(rgb[:, 2:3])) == "malignant"
  assert uclm.colour_label(*uclm.decode_colour_mask(rgb[:, 3:])) == "uncoloured"
  assert uclm.colour_label(*uclm.decode_colour_mask(rgb[1:])) == "normal"


def test_info_csv_comma_variant(tmp_path):
  path = epath.Path(tmp_path / "INFO.csv")
  path.write_text("image,LABEL\nA_1.png,Benign\n")
  assert uclm.read_info_csv(path) == {"a_1.png": {"image": "A_1.png", "label": "Benign"}}
  path.write_text("Name;Class\nA_1.png;Benign\n")
  with pytest.raises(bio.BuilderInputError, match=r"INFO\.csv: no 'Image' column"):
    uclm.read_info_csv(path)


def test_disagreement_both_colours_and_size_mismatch(tmp_path):
  root = _copy(tmp_path)
  info = root / "INFO.csv"
  info.write_text(info.read_text(encoding="utf-8-sig").replace("ALWI_000.png;Benign", "ALWI_000.png;Malignant"))
  both = _rgb(root / "masks" / "BEMA_001.png").copy()
  lesion = both.any(-1)
  rows = np.nonzero(lesion.any(1))[0]
  both[rows[0]:rows[len(rows) // 2]][lesion[rows[0]:rows[len(rows) // 2]]] = (255, 0, 0)
  Image.fromarray(both).save(os.fspath(root / "masks" / "BEMA_001.png"))
  Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(os.fspath(root / "masks" / "COPE_000.png"))
  with pytest.warns(bio.BuilderWarning) as record:
    examples = _build(tmp_path, root.parent)
  messages = "\n".join(str(w.message) for w in record)
  assert "ALWI_000.png: mask colour says benign but INFO.csv says malignant; using the mask's" in messages
  assert "BEMA_001.png: mask has both green and red; label benign from INFO.csv" in messages
  assert "COPE_000.png: skipped, its mask" in messages and "30x40 (HxW)" in messages
  assert sorted(examples) == ["images/ALWI_000.png", "images/ALWI_001.png", "images/BEMA_000.png",
                              "images/BEMA_001.png"]
  disagree = examples["images/ALWI_000.png"]
  assert common.LABELS[int(disagree["label"])] == "benign" and disagree["info_label"] == b"malignant"
  mixed = examples["images/BEMA_001.png"]
  assert common.LABELS[int(mixed["label"])] == "benign" and mixed["mask_colour_label"] == b"both"
  assert set(np.unique(mixed["class_mask"]).tolist()) == {0, 1, 2}
  np.testing.assert_array_equal(mixed["mask"][..., 0], lesion.astype(np.uint8))


def test_both_colours_without_a_lesion_label_is_an_error(tmp_path):
  root = _copy(tmp_path)
  rgb = _rgb(root / "masks" / "ALWI_000.png").copy()
  rgb[0, 0] = (255, 0, 0)
  Image.fromarray(rgb).save(os.fspath(root / "masks" / "ALWI_000.png"))
  info = root / "INFO.csv"
  info.write_text(info.read_text(encoding="utf-8-sig").replace("ALWI_000.png;Benign", "ALWI_000.png;Normal"))
  with pytest.raises(bio.BuilderInputError,
                     match=r"masks/ALWI_000\.png: mask has both green and red and INFO\.csv gives no lesion "
                           r"label \('Normal'\)"):
    _build(tmp_path, root.parent)


def test_builds_from_zip_with_other_case_and_nesting(tmp_path):
  manual = tmp_path / "zipped"
  manual.mkdir()
  top = "BUS-UCLM Breast ultrasound lesion segmentation dataset/BUS-UCLM"
  with zipfile.ZipFile(manual / "7fvgj4jsp7-2.zip", "w") as zf:
    zf.write(os.fspath(ROOT / "INFO.csv"), f"{top}/info.csv")
    for p in sorted(ROOT.glob("*/*.png")):
      zf.write(os.fspath(p), f"{top}/{p.parent.name.capitalize()}/{p.name}")
  examples = _build(tmp_path / "z", manual)
  assert sorted(examples) == [f"Images/{n}" for n in EXPECTED]


def test_missing_and_empty_manual_dir(tmp_path):
  testing.assert_manual_dir_errors(uclm.Builder, tmp_path)


def test_missing_mask(tmp_path):
  testing.assert_missing_file_error(
      uclm.Builder, tmp_path, DUMMY, f"{ROOT.name}/masks/BEMA_000.png",
      r"images/BEMA_000\.png: no mask file \(expected .*masks/BEMA_000\.png")


@pytest.mark.parametrize("folder", ["images", "masks"])
def test_unreadable_image_or_mask(tmp_path, folder):
  testing.assert_unreadable_file_error(
      uclm.Builder, tmp_path, DUMMY, f"{ROOT.name}/{folder}/BEMA_001.png",
      rf"{folder}/BEMA_001\.png: not a readable image", content=b"garbage")
