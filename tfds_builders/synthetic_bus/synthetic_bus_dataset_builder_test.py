"""Tests for the synthetic_bus builder and its image generator.

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow (tf.data,
tf.executing_eagerly), which busjax does not require, so the builder test
builds the ``small`` config into a temporary directory as array_record and
reads it back with ``tfds.data_source``.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import ndimage as ndi

import tfds_builders  # noqa: F401  (registers the builders)
from tfds_builders.common import LABELS
from tfds_builders.synthetic_bus import generator
from tfds_builders.synthetic_bus import synthetic_bus_dataset_builder as sbb

N_SMALL = 60


@pytest.fixture(scope="module")
def examples() -> list[generator.SyntheticExample]:
  """The 60 examples of the ``small`` config, generated directly."""
  return [generator.generate_example(0, i) for i in range(N_SMALL)]


@pytest.fixture(scope="module")
def lesions(examples: list[generator.SyntheticExample]) -> list[generator.SyntheticExample]:
  return [e for e in examples if e.label != "normal"]


def _brute_force_feret(mask: np.ndarray) -> float:
  """Max distance between two boundary-pixel centres, by exhaustive search."""
  m = mask.astype(bool)
  boundary = m & ~ndi.binary_erosion(m)
  pts = np.argwhere(boundary).astype(np.float64)
  d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
  return float(np.sqrt(d2.max()))


def test_build_small_and_read_back(tmp_path, examples):
  builder = tfds.builder("synthetic_bus/small", data_dir=tmp_path, file_format="array_record")
  assert isinstance(builder, sbb.Builder)
  assert builder.builder_config.num_examples == N_SMALL
  assert builder.builder_config.seed == 0
  builder.download_and_prepare()
  info = builder.info
  assert list(info.splits.keys()) == ["train"]
  assert info.splits["train"].num_examples == N_SMALL
  assert str(info.version) == "1.0.0"
  assert info.features["label"].names == list(LABELS)
  assert "synthetic" in info.citation.lower()
  ds = tfds.data_source("synthetic_bus/small", data_dir=tmp_path)["train"]
  assert len(ds) == N_SMALL
  seen = set()
  for k in range(len(ds)):
    rec = ds[k]
    name = rec["file_name"].decode()
    index = int(name[len("synthetic_"):-len(".png")])
    assert name == f"synthetic_{index:05d}.png"
    assert rec["patient_id"].decode() == f"synthetic_{index:05d}"
    seen.add(index)
    ex = examples[index]
    assert rec["image"].dtype == np.uint8 and rec["mask"].dtype == np.uint8
    assert rec["image"].shape == (rec["height"], rec["width"], 1)
    np.testing.assert_array_equal(rec["image"][..., 0], ex.image)
    np.testing.assert_array_equal(rec["mask"][..., 0], ex.mask)
    assert LABELS[rec["label"]] == ex.label
    assert rec["lesion_shape"].decode() == ex.lesion_shape
    assert rec["posterior"].decode() == ex.posterior
    assert rec["longest_axis_px"] == pytest.approx(ex.longest_axis_px, abs=1e-3)
  assert seen == set(range(N_SMALL))


def test_default_config_fields():
  configs = {c.name: c for c in sbb.Builder.BUILDER_CONFIGS}
  assert configs["default"].num_examples == 600 and configs["default"].seed == 0
  assert configs["small"].num_examples == 60
  assert sbb.Builder.DEFAULT_CONFIG_NAME == "default"
  assert sbb.Builder.name == "synthetic_bus"


def test_deterministic_and_order_independent(examples):
  later = generator.generate_example(0, 9)       # generated first, out of order
  again = generator.generate_example(0, 5)
  for a, b in ((again, examples[5]), (later, examples[9])):
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert (a.label, a.lesion_shape, a.posterior, a.longest_axis_px) == (
        b.label, b.lesion_shape, b.posterior, b.longest_axis_px)
  assert examples[5].image.shape != examples[6].image.shape or not np.array_equal(
      examples[5].image, examples[6].image)
  other_seed = generator.generate_example(1, 5)
  assert other_seed.image.shape != examples[5].image.shape or not np.array_equal(
      other_seed.image, examples[5].image)


def test_mask_binary_and_empty_iff_normal(examples):
  for e in examples:
    assert e.mask.shape == e.image.shape and e.mask.dtype == np.uint8
    assert set(np.unique(e.mask)) <= {0, 1}
    assert (e.label == "normal") == (not e.mask.any())
    assert (e.label == "normal") == (e.lesion_shape == "none")
    assert e.lesion_shape in ("oval", "irregular", "none")
    assert e.posterior in ("shadowing", "enhancement", "none")
    if e.label == "normal":
      assert e.posterior == "none" and e.longest_axis_px == 0.0


def test_lesion_is_one_region_away_from_the_border(lesions):
  for e in lesions:
    _, n = ndi.label(e.mask)
    assert n == 1
    assert not (e.mask[0].any() or e.mask[-1].any() or e.mask[:, 0].any() or e.mask[:, -1].any())


def test_longest_axis_matches_mask(lesions):
  for e in lesions:
    assert abs(e.longest_axis_px - _brute_force_feret(e.mask)) <= 2.0


def test_max_feret_diameter_known_shapes():
  m = np.zeros((50, 60), np.uint8)
  m[10:21, 5:46] = 1                                   # 11 x 41 rectangle
  assert generator.max_feret_diameter(m) == pytest.approx(np.hypot(10, 40))
  assert generator.max_feret_diameter(np.zeros((5, 5))) == 0.0
  single = np.zeros((5, 5))
  single[2, 3] = 1
  assert generator.max_feret_diameter(single) == 0.0


def test_sizes_and_class_mix(examples):
  hs = [e.height for e in examples]
  ws = [e.width for e in examples]
  assert min(hs) >= generator.HEIGHT_RANGE[0] and max(hs) <= generator.HEIGHT_RANGE[1]
  assert min(ws) >= generator.WIDTH_RANGE[0] and max(ws) <= generator.WIDTH_RANGE[1]
  assert max(hs) - min(hs) > 80 and max(ws) - min(ws) > 100  # sizes really vary
  counts = {c: sum(e.label == c for e in examples) for c in LABELS}
  assert all(counts[c] >= 5 for c in LABELS), counts


def test_small_and_large_lesions(lesions):
  axes = np.array([e.longest_axis_px for e in lesions])
  small = axes < generator.SMALL_AXIS_PX
  assert 0.2 <= small.mean() <= 0.6, small.mean()
  assert axes.min() < 40.0
  assert axes.max() > 150.0
  for e in lesions:
    assert e.longest_axis_px <= 0.5 * e.width + 2


def test_lesions_darker_than_surroundings(lesions):
  diffs = []
  for e in lesions:
    m = e.mask.astype(bool)
    ring = ndi.binary_dilation(m, iterations=8) & ~m & (e.image > 0)
    diffs.append(e.image[ring].mean() - e.image[m].mean())
  diffs = np.array(diffs)
  assert (diffs > 0).mean() >= 0.9, diffs
  assert np.median(diffs) > 15.0, diffs


def test_shapes_follow_class_tendencies(lesions):
  def aspect(e):  # height / width of the mask's bounding box
    ys, xs = np.nonzero(e.mask)
    return (np.ptp(ys) + 1) / (np.ptp(xs) + 1)
  ben = [aspect(e) for e in lesions if e.label == "benign"]
  mal = [aspect(e) for e in lesions if e.label == "malignant"]
  assert np.median(ben) < 0.9 < np.median(mal)
  ben_oval = np.mean([e.lesion_shape == "oval" for e in lesions if e.label == "benign"])
  mal_irr = np.mean([e.lesion_shape == "irregular" for e in lesions if e.label == "malignant"])
  assert ben_oval > 0.7 and mal_irr > 0.7
