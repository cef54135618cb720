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
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from tfds_builders import io as bio
from tfds_builders.busi import busi_dataset_builder

DUMMY = epath.Path(__file__).parent / "dummy_data"
ROOT = DUMMY / "Dataset_BUSI_with_GT"


def _build(tmp_path, manual_dir, config: str = "with_normal") -> dict[str, dict]:
  """Builds ``config`` from ``manual_dir``; returns examples by file_name."""
  builder = busi_dataset_builder.Builder(
      data_dir=os.fspath(tmp_path / "data"), config=config, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  assert list(builder.info.splits.keys()) == ["train"]
  source = builder.as_data_source()["train"]
  examples = {}
  for ex in source:
    name = ex["file_name"].decode() if isinstance(ex["file_name"], bytes) else ex["file_name"]
    assert name not in examples
    examples[name] = ex
  assert len(examples) == builder.info.splits["train"].num_examples
  return examples


def _copy(tmp_path) -> epath.Path:
  """A writable copy of the dummy data; returns the manual dir."""
  manual = tmp_path / "manual"
  shutil.copytree(os.fspath(DUMMY), os.fspath(manual))
  return epath.Path(manual)


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
  with zipfile.ZipFile(manual / "archive.zip", "w") as zf:
    for p in sorted(ROOT.glob("*/*.png")):
      zf.write(os.fspath(p), f"Dataset_BUSI_with_GT/{p.parent.name}/{p.name}")
  assert len(_build(tmp_path / "z", manual)) == 5
  nested = tmp_path / "nested" / "archive"
  shutil.copytree(os.fspath(ROOT), os.fspath(nested / "Dataset_BUSI_with_GT"))
  assert len(_build(tmp_path / "n", tmp_path / "nested")) == 5


def test_missing_and_empty_manual_dir(tmp_path):
  with pytest.raises(bio.BuilderInputError, match=r"does not exist.*Dataset_BUSI_with_GT"):
    _build(tmp_path, tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(bio.BuilderInputError, match=r"empty\..*archive\.zip"):
    _build(tmp_path, tmp_path / "empty")
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("x")
  with pytest.raises(bio.BuilderInputError, match=r"found no busi dataset.*notes\.txt"):
    _build(tmp_path, tmp_path / "other")


def test_missing_mask(tmp_path):
  manual = _copy(tmp_path)
  (manual / "Dataset_BUSI_with_GT" / "malignant" / "malignant (14)_mask.png").unlink()
  with pytest.raises(bio.BuilderInputError, match=r"malignant \(14\)\.png: no mask file"):
    _build(tmp_path, manual)


@pytest.mark.filterwarnings("ignore::tfds_builders.io.BuilderWarning")
def test_mask_of_another_size(tmp_path):
  manual = _copy(tmp_path)
  path = manual / "Dataset_BUSI_with_GT" / "benign" / "benign (4)_mask_1.png"
  with Image.open(os.fspath(path)) as im:
    im.resize((100, 80)).save(os.fspath(path))
  with pytest.raises(bio.BuilderInputError,
                     match=r"benign \(4\)_mask_1\.png: mask size 80x100 .*benign \(4\)\.png \(465x555"):
    _build(tmp_path, manual)


@pytest.mark.filterwarnings("ignore::tfds_builders.io.BuilderWarning")
def test_corrupt_image(tmp_path):
  manual = _copy(tmp_path)
  path = manual / "Dataset_BUSI_with_GT" / "normal" / "normal (10).png"
  path.write_bytes(path.read_bytes()[:5000])  # truncated PNG
  with pytest.raises(bio.BuilderInputError, match=r"normal \(10\)\.png: corrupt or truncated"):
    _build(tmp_path, manual)
