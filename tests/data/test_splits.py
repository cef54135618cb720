"""Fold assignment: stratified, grouped by patient, seeded, complete."""
from __future__ import annotations

import numpy as np
import pytest

from busjax.data import splits


def _dataset(n=200, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.choice(3, n, p=[0.2, 0.5, 0.3])
  groups = [f"p{i // 3}" if i % 5 else "" for i in range(n)]  # patients of up to 3 images
  return labels, groups


def test_every_example_in_exactly_one_test_fold_and_patients_never_split():
  labels, groups = _dataset()
  folds = splits.stratified_group_folds(labels, groups, 5, seed=0)
  assert folds.shape == (200,) and set(folds) == set(range(5))
  by_patient = {}
  for g, f in zip(groups, folds):
    if g:
      by_patient.setdefault(g, set()).add(int(f))
  assert all(len(v) == 1 for v in by_patient.values())
  tests = np.concatenate([splits.split_indices(folds, k, 5)["test"] for k in range(5)])
  assert sorted(tests) == list(range(200))


def test_stratified_class_shares():
  labels, groups = _dataset()
  folds = splits.stratified_group_folds(labels, groups, 5, seed=0)
  for c in range(3):
    per_fold = np.array([(labels[folds == k] == c).sum() for k in range(5)])
    assert per_fold.max() - per_fold.min() <= 3, per_fold


def test_seeded_and_seed_sensitive():
  labels, groups = _dataset()
  a = splits.stratified_group_folds(labels, groups, 5, seed=0)
  b = splits.stratified_group_folds(labels, groups, 5, seed=0)
  c = splits.stratified_group_folds(labels, groups, 5, seed=1)
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()


def test_split_indices_disjoint_train_val_test():
  folds = np.repeat(np.arange(5), 4)
  s = splits.split_indices(folds, 4, 5)
  assert set(folds[s["test"]]) == {4} and set(folds[s["validation"]]) == {0}
  assert not set(s["train"]) & (set(s["test"]) | set(s["validation"]))
  assert len(s["train"]) + len(s["validation"]) + len(s["test"]) == 20
  with pytest.raises(ValueError, match="fold must be in"):
    splits.split_indices(folds, 5, 5)


def test_too_few_groups_is_an_error():
  with pytest.raises(ValueError, match="cannot fill"):
    splits.stratified_group_folds([0, 1, 0], ["a", "a", "b"], 3, seed=0)
