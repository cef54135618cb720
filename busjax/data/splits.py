"""Leakage-free k-fold splits: seeded, stratified by class, grouped by patient.

Fold ``k`` of ``K`` uses fold ``k`` as the test set, fold ``(k + 1) % K`` as
the validation set (best-checkpoint choice, LR plateau, early stopping) and
the other ``K - 2`` folds for training (60/20/20 at K = 5). Every example is
in exactly one test fold; all images of a patient share a fold.

Where a publisher gives patient-level folds (BUS-BRA's ``5-fold-cv.csv`` and
``10-fold-cv.csv``) and ``num_folds`` matches, those folds are used as-is.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np


def stratified_group_folds(labels: Sequence[int], groups: Sequence[str], num_folds: int,
                           seed: int) -> np.ndarray:
  """Assigns each example a fold in ``[0, num_folds)``.

  Groups (patients) are visited in a seeded random order, largest first, and
  each goes to the fold that keeps every class's share per fold closest to
  ``1 / num_folds`` (the greedy rule of scikit-learn's StratifiedGroupKFold),
  ties broken by the smallest fold, then the lowest index. An empty group id
  means "own group" (datasets that name no patients).

  Args:
    labels: int class per example, length N.
    groups: patient id per example ('' = the example is its own group).
    num_folds: K >= 2.
    seed: the fold assignment is a pure function of (labels, groups, K, seed).
  Returns:
    int32 [N] fold ids.
  """
  labels = np.asarray(labels, np.int64)
  n = len(labels)
  if num_folds < 2:
    raise ValueError(f"num_folds must be >= 2, got {num_folds}")
  keys = [g if g else f"__example_{i}" for i, g in enumerate(groups)]
  uniq = sorted(set(keys))
  if len(uniq) < num_folds:
    raise ValueError(f"{len(uniq)} groups cannot fill {num_folds} folds")
  gid = {g: i for i, g in enumerate(uniq)}
  gidx = np.array([gid[k] for k in keys])
  classes = np.unique(labels)
  cidx = np.searchsorted(classes, labels)
  counts = np.zeros((len(uniq), len(classes)), np.int64)
  np.add.at(counts, (gidx, cidx), 1)
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(uniq))
  order = order[np.argsort(-counts[order].sum(1), kind="stable")]
  totals = np.maximum(counts.sum(0), 1)
  fold_counts = np.zeros((num_folds, len(classes)), np.int64)
  group_fold = np.empty(len(uniq), np.int32)
  for g in order:
    best, best_key = 0, None
    for k in range(num_folds):
      trial = fold_counts.copy()
      trial[k] += counts[g]
      spread = float(np.mean(np.std(trial / totals, axis=0)))
      key = (round(spread, 12), int(fold_counts[k].sum()), k)
      if best_key is None or key < best_key:
        best, best_key = k, key
    fold_counts[best] += counts[g]
    group_fold[g] = best
  folds = group_fold[gidx]
  assert len(folds) == n
  return folds.astype(np.int32)


def split_indices(folds: np.ndarray, fold: int, num_folds: int) -> dict[str, np.ndarray]:
  """Train/validation/test example indices of ``fold`` (see module docstring)."""
  if not 0 <= fold < num_folds:
    raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
  folds = np.asarray(folds)
  val_fold = (fold + 1) % num_folds
  return {
      "train": np.flatnonzero((folds != fold) & (folds != val_fold)),
      "validation": np.flatnonzero(folds == val_fold),
      "test": np.flatnonzero(folds == fold),
  }


def save_splits(path: str, *, names: Sequence[str], splits: dict[str, np.ndarray],
                info: dict) -> None:
  """Writes ``splits.json``: the file names of each split and how they were made."""
  out = dict(info)
  for k, idx in splits.items():
    out[k] = [names[i] for i in idx]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(out, f, indent=1)
  os.replace(tmp, path)
