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


def test_missing_publisher_folds_fall_back_to_our_folds():
  src = [dict(ex, publisher_fold_5=-1) for ex in make_fake_source(10)]
  cfg = registry.get_config("unet", "tiny")
  data = pipeline.load_data(cfg, source=src)
  assert data.fold_source.startswith("stratified_group_kfold")
  assert set(data.folds) == set(range(5))


def test_label_names():
  assert [pipeline.label_name(i) for i in (-1, 0, 1, 2)] == ["unknown", "normal", "benign",
                                                              "malignant"]
