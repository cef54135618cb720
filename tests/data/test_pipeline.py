"""Input pipeline: resizing, fold subsets, deterministic batches, on-device augmentation."""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest

from busjax import registry
from busjax.data import pipeline
from conftest import make_fake_source


def test_load_data_resizes_and_keeps_binary_masks(fake_source):
  cfg = registry.get_config("unet", "tiny")
  cfg.num_folds = 4
  data = pipeline.load_data(cfg, source=fake_source)
  assert data.images.shape == (24, 64, 64, 1) and data.images.dtype == np.uint8
  assert set(np.unique(data.masks)) <= {0, 1}
  assert (data.masks[data.labels == 0] == 0).all()
  assert (data.masks[data.labels > 0].sum((1, 2, 3)) > 0).all()
  assert data.fold_source.startswith("stratified_group_kfold")


def test_mask_image_mismatch_names_the_file():
  src = make_fake_source(4)
  src[2] = dict(src[2], mask=np.zeros((5, 5, 1), np.uint8))
  cfg = registry.get_config("unet", "tiny")
  with pytest.raises(ValueError, match="fake_002.png: mask"):
    pipeline.load_data(cfg, source=src)


def test_publisher_folds_are_used_when_present():
  src = [dict(ex, publisher_fold_5=1 + i % 5) for i, ex in enumerate(make_fake_source(10))]
  cfg = registry.get_config("unet", "tiny")
  data = pipeline.load_data(cfg, source=src)
  np.testing.assert_array_equal(data.folds, np.arange(10) % 5)
  assert data.fold_source.startswith("publisher")


def test_batches_are_a_pure_function_of_seed_epoch_and_start(fake_source):
  cfg = registry.get_config("unet", "tiny")
  cfg.num_folds = 4
  data = pipeline.load_data(cfg, source=fake_source)
  full = list(pipeline.batches(data, 4, seed=3, epoch=2))
  tail = list(pipeline.batches(data, 4, seed=3, epoch=2, start=2))
  assert len(full) == 6
  for (a, _), (b, _) in zip(full[2:], tail):
    np.testing.assert_array_equal(a, b)
  other = list(pipeline.batches(data, 4, seed=3, epoch=3))
  assert any((a != b).any() for (a, _), (b, _) in zip(full, other))


def test_augment_moves_image_and_mask_together():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 255, (8, 32, 32, 1)).astype(np.uint8)
  mask = (img > 128).astype(np.uint8)
  aug = ml_collections.ConfigDict(dict(hflip=True, vflip=True, shift=0.2))
  a_img, a_mask = jax.jit(lambda k, i, m: pipeline.augment(k, i, m, aug))(
      jax.random.key(1), img, mask)
  a_img, a_mask = np.asarray(a_img), np.asarray(a_mask)
  assert a_img.dtype == np.uint8 and a_mask.shape == mask.shape
  assert (a_img != img).any()
  # Where the image was not zero-filled, the mask is still "image > 128".
  inside = a_img > 0
  np.testing.assert_array_equal(a_mask[inside], (a_img[inside] > 128).astype(np.uint8))
  none = ml_collections.ConfigDict(dict(hflip=False, vflip=False, shift=0.0))
  same, _ = pipeline.augment(jax.random.key(1), img, mask, none)
  np.testing.assert_array_equal(np.asarray(same), img)


def test_intensity_jitter_changes_the_image_alone():
  rng = np.random.default_rng(2)
  img = rng.integers(100, 151, (16, 24, 24, 1)).astype(np.uint8)
  mask = (rng.random((16, 24, 24, 1)) > 0.5).astype(np.uint8)
  geo = dict(hflip=True, vflip=False, shift=0.1)
  plain_img, plain_mask = pipeline.augment(jax.random.key(3), img, mask,
                                           ml_collections.ConfigDict(geo))
  aug = lambda **kw: pipeline.augment(jax.random.key(3), img, mask,
                                      ml_collections.ConfigDict(dict(geo, **kw)))
  # Zero strength is the identity; the mask and the geometry never change.
  np.testing.assert_array_equal(aug(contrast=0.0, brightness=0.0, gamma=0.0)[0], plain_img)
  for kw in (dict(contrast=0.3), dict(brightness=0.2), dict(gamma=0.4)):
    j_img, j_mask = (np.asarray(a) for a in aug(**kw))
    np.testing.assert_array_equal(j_mask, plain_mask)
    assert j_img.dtype == np.uint8 and (j_img != np.asarray(plain_img)).any(), kw
    if "contrast" not in kw:  # scaling and gamma keep the shift's zero fill at 0
      np.testing.assert_array_equal(j_img == 0, np.asarray(plain_img) == 0)
  # Contrast scales deviations from each image's mean: the mean stays (no clipping here).
  no_shift = ml_collections.ConfigDict(dict(geo, shift=0.0, contrast=0.3))
  c_img = np.asarray(pipeline.augment(jax.random.key(3), img, mask, no_shift)[0]).astype(float)
  np.testing.assert_allclose(c_img.mean((1, 2, 3)), img.astype(float).mean((1, 2, 3)), atol=0.6)
  assert not np.allclose(c_img.std((1, 2, 3)), img.astype(float).std((1, 2, 3)), rtol=0.01)
  p_img = np.asarray(plain_img).astype(float)
  # Brightness scales every pixel of an image by one factor within [0.8, 1.2].
  b_img = np.asarray(aug(brightness=0.2)[0]).astype(float)
  ratio = b_img[p_img > 0] / p_img[p_img > 0]
  assert 0.79 < ratio.min() and ratio.max() < 1.21
  # Gamma keeps the order of intensities within an image.
  g_img = np.asarray(aug(gamma=0.4)[0]).astype(float)
  for a, b in zip(p_img, g_img):
    order = np.argsort(a.ravel(), kind="stable")
    assert (np.diff(b.ravel()[order]) >= 0).all()


def test_missing_publisher_folds_fall_back_to_our_folds():
  src = [dict(ex, publisher_fold_5=-1) for ex in make_fake_source(10)]
  cfg = registry.get_config("unet", "tiny")
  data = pipeline.load_data(cfg, source=src)
  assert data.fold_source.startswith("stratified_group_kfold")
  assert set(data.folds) == set(range(5))


def test_label_names():
  assert [pipeline.label_name(i) for i in (-1, 0, 1, 2)] == ["unknown", "normal", "benign",
                                                              "malignant"]
