"""Metric suite against hand-computed cases on tiny arrays."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from busjax import metrics as M


def _square(h: int, w: int, r0: int, c0: int, size: int) -> np.ndarray:
  m = np.zeros((h, w), bool)
  m[r0:r0 + size, c0:c0 + size] = True
  return m


# 8x8 image; GT = 4x4 square rows 1-4, cols 1-4 (16 px); prediction = the same
# square shifted right by one column (rows 1-4, cols 2-5).
# TP = 4 rows x 3 cols = 12, FP = column 5 = 4, FN = column 1 = 4,
# TN = 64 - 20 = 44, |G| = 16.
GT = _square(8, 8, 1, 1, 4)
PRED = _square(8, 8, 1, 2, 4)


def test_shifted_square_every_metric():
  r = M.segmentation_metrics(PRED.astype(np.float32), GT)
  assert r["dice"] == pytest.approx(24 / 32)  # 2TP / (2TP + FP + FN)
  assert r["jaccard"] == pytest.approx(12 / 20)
  assert r["dice_incl"] == r["dice"] and r["jaccard_incl"] == r["jaccard"]
  assert r["tpr"] == pytest.approx(12 / 16)
  assert r["fpr"] == pytest.approx(4 / 16)  # FP / |G| (BUSIS), not FP / negatives
  assert r["precision"] == pytest.approx(12 / 16)
  assert r["accuracy"] == pytest.approx(56 / 64)
  assert r["aer"] == pytest.approx(8 / 16)
  # Boundaries are the two 12-pixel rings. P-ring -> G-ring: the six P-ring
  # pixels in rows 1/4 at cols 2-4 lie on the G ring (0); (1,5),(4,5),(2,5),
  # (3,5) are one column right of G's ring, (2,2),(3,2) one step from (2,1)
  # -> six 1s. Symmetric the other way. HD = 1; 95th pct of six 0s and six
  # 1s = 1; AHD = (0.5 + 0.5) / 2.
  assert r["hd"] == pytest.approx(1.0)
  assert r["hd95"] == pytest.approx(1.0)
  assert r["ahd"] == pytest.approx(0.5)
  # Binary prob: MAE = (FP + FN) / N; RMSE = sqrt of the same.
  assert r["mae"] == pytest.approx(8 / 64)
  assert r["rmse"] == pytest.approx(math.sqrt(8 / 64))
  # RCA-IUnet formula: IoU 0.6 counts only at t = 0.50, 0.55 (strict >).
  assert r["miou_50_95"] == pytest.approx(2 * 0.6 / 10)
  assert r["miou_prob_50_95"] == pytest.approx(0.6)  # binary map: same IoU at every t
  assert r["gt_area"] == 16 and r["pred_area"] == 16
  assert r["longest_axis"] == pytest.approx(math.sqrt(18) + 1)  # 4x4: sqrt(3^2+3^2)+1
  assert r["small"] == 1.0
  assert set(M.METRIC_KEYS + M.EXTRA_KEYS) <= set(r)


def test_graded_probabilities_mae_rmse_miou_prob():
  # prob 0.9 on the 12 overlap pixels, 0.72 on the 4 FP pixels, 0 elsewhere.
  prob = np.zeros((8, 8))
  prob[PRED] = 0.72
  prob[PRED & GT] = 0.9
  r = M.segmentation_metrics(prob, GT)
  assert r["dice"] == pytest.approx(0.75)  # same binary prediction at 0.5
  # |err|: 12 x 0.1 + 4 x 0.72 (FP) + 4 x 1 (FN) = 8.08
  assert r["mae"] == pytest.approx(8.08 / 64)
  # err^2: 12 x 0.01 + 4 x 0.5184 + 4 x 1 = 6.1936
  assert r["rmse"] == pytest.approx(math.sqrt(6.1936 / 64))
  # t = .50-.70 (5): pred = P, IoU 0.6; t = .75, .80, .85: pred = overlap
  # (12 px inside G), IoU 12/16; t = .90, .95: nothing above -> IoU 0.
  assert r["miou_prob_50_95"] == pytest.approx((5 * 0.6 + 3 * 0.75) / 10)
  # pred override: a perfect mask wins over the threshold for overlap metrics.
  r2 = M.segmentation_metrics(prob, GT, pred=GT)
  assert r2["dice"] == 1.0 and r2["hd"] == 0.0
  assert r2["mae"] == pytest.approx(r["mae"])  # still from prob
  assert M.segmentation_metrics(prob, GT, threshold=0.8)["dice"] == pytest.approx(24 / 28)


def test_both_empty():
  z = np.zeros((5, 5))
  r = M.segmentation_metrics(z, z.astype(bool))
  for k in ("dice", "jaccard", "hd", "hd95", "ahd", "tpr", "fpr", "aer", "precision", "small"):
    assert math.isnan(r[k]), k
  assert r["dice_incl"] == 1.0 and r["jaccard_incl"] == 1.0
  assert r["accuracy"] == 1.0 and r["mae"] == 0.0 and r["rmse"] == 0.0
  assert r["miou_50_95"] == 1.0 and r["miou_prob_50_95"] == 1.0
  assert r["longest_axis"] == 0.0


def test_exactly_one_empty_uses_diagonal():
  gt = _square(6, 8, 1, 1, 3)  # 9 px in a 6x8 image; diagonal sqrt(36+64) = 10
  r = M.segmentation_metrics(np.zeros((6, 8)), gt)
  assert (r["hd"], r["hd95"], r["ahd"]) == (10.0, 10.0, 10.0)
  assert r["dice"] == 0.0 and r["jaccard"] == 0.0 and r["dice_incl"] == 0.0
  assert r["tpr"] == 0.0 and r["fpr"] == 0.0 and r["aer"] == 1.0
  assert math.isnan(r["precision"])
  assert r["miou_50_95"] == 0.0
  r = M.segmentation_metrics(gt.astype(float), np.zeros((6, 8), bool))  # GT empty
  assert r["hd"] == 10.0 and r["dice"] == 0.0 and r["precision"] == 0.0
  assert math.isnan(r["tpr"]) and math.isnan(r["fpr"]) and math.isnan(r["small"])


def test_perfect_prediction():
  r = M.segmentation_metrics(GT.astype(float), GT)
  assert r["dice"] == 1.0 and r["jaccard"] == 1.0 and r["tpr"] == 1.0
  assert r["fpr"] == 0.0 and r["aer"] == 0.0 and r["precision"] == 1.0
  assert r["hd"] == 0.0 and r["hd95"] == 0.0 and r["ahd"] == 0.0
  assert r["miou_50_95"] == 1.0 and r["mae"] == 0.0


def test_hd95_differs_from_hd():
  # GT: 4x4 square rows/cols 2-5 (12-px boundary ring). Prediction: the same
  # square plus a one-pixel speck at (2,15), 10 px right of the ring's (2,5).
  gt = _square(10, 20, 2, 2, 4)
  pred = gt.copy()
  pred[2, 15] = True
  r = M.segmentation_metrics(pred.astype(float), gt)
  # P->G: twelve 0s and one 10; G->P: all 0.
  assert r["hd"] == pytest.approx(10.0)
  # 95th pct of 13 sorted values: index 0.95 * 12 = 11.4 -> 0 + 0.4 * 10 = 4.
  assert r["hd95"] == pytest.approx(4.0)
  assert r["ahd"] == pytest.approx((10 / 13 + 0) / 2)
  assert r["dice"] == pytest.approx(32 / 33)


def _brute_distances(p: np.ndarray, g: np.ndarray) -> tuple[float, float, float]:
  """All-pairs reference on boundary pixels (definition, not the EDT path)."""
  cross = ndimage.generate_binary_structure(2, 1)
  bp = np.argwhere(p & ~ndimage.binary_erosion(p, cross, border_value=0))
  bg = np.argwhere(g & ~ndimage.binary_erosion(g, cross, border_value=0))
  d = cdist(bp, bg)
  d_pg, d_gp = d.min(axis=1), d.min(axis=0)
  return (max(d_pg.max(), d_gp.max()),
          max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)),
          (d_pg.mean() + d_gp.mean()) / 2)


def test_distances_match_brute_force_on_random_blobs():
  rng = np.random.default_rng(0)
  for _ in range(5):
    p = ndimage.binary_opening(rng.random((24, 30)) > 0.55)
    g = ndimage.binary_opening(rng.random((24, 30)) > 0.55)
    if not (p.any() and g.any()):
      continue
    got = M.distance_metrics(p, g)
    ref = _brute_distances(p, g)
    assert (got["hd"], got["hd95"], got["ahd"]) == pytest.approx(ref)


def test_longest_axis():
  line = np.zeros((3, 10), bool)
  line[1, 2:9] = True  # 1x7 line: centres 6 apart, + 1 = 7
  assert M.longest_axis(line) == pytest.approx(7.0)
  rect = np.zeros((6, 6), bool)
  rect[1:4, 1:5] = True  # 3x4 rectangle: sqrt(2^2 + 3^2) + 1
  assert M.longest_axis(rect) == pytest.approx(math.sqrt(13) + 1)
  big = np.zeros((60, 90), bool)
  big[5:55, 3:83] = True  # 50x80 filled: hull path, sqrt(49^2 + 79^2) + 1
  assert M.longest_axis(big) == pytest.approx(math.hypot(49, 79) + 1)
  diag = np.eye(5, dtype=bool)  # collinear (degenerate hull): sqrt(32) + 1
  assert M.longest_axis(diag) == pytest.approx(math.sqrt(32) + 1)
  two = np.zeros((5, 6), bool)
  two[0, 0] = two[3, 4] = True  # union of two regions: 5 apart, + 1
  assert M.longest_axis(two) == pytest.approx(6.0)
  single = np.zeros((4, 4), bool)
  single[2, 1] = True
  assert M.longest_axis(single) == 1.0
  assert M.longest_axis(np.zeros((4, 4), bool)) == 0.0


def test_small_flag():
  img = np.zeros((3, 130), bool)
  img[1, :119] = True  # longest axis 119 < 120
  assert M.is_small_tumour(img)
  assert M.segmentation_metrics(img.astype(float), img)["small"] == 1.0
  img[1, :120] = True  # longest axis 120: not small (strict <)
  assert not M.is_small_tumour(img)
  assert M.segmentation_metrics(img.astype(float), img)["small"] == 0.0
  assert M.is_small_tumour(img, threshold_px=121)
  assert not M.is_small_tumour(np.zeros((3, 3), bool))


def test_summarize_with_nans():
  rows = [{"dice": 0.5, "hd": float("nan")}, {"dice": float("nan"), "hd": None},
          {"dice": 1.0, "hd": float("nan")}]
  s = M.summarize(rows, keys=("dice", "hd"))
  assert s["dice"]["mean"] == pytest.approx(0.75)
  assert s["dice"]["std"] == pytest.approx(0.25)  # ddof = 0
  assert (s["dice"]["n"], s["dice"]["n_nan"]) == (2, 1)
  assert math.isnan(s["hd"]["mean"]) and math.isnan(s["hd"]["std"])
  assert (s["hd"]["n"], s["hd"]["n_nan"]) == (0, 3)
  # Real rows: an empty-empty image adds a NaN dice but a 1.0 dice_incl.
  rows = [M.segmentation_metrics(PRED.astype(float), GT),
          M.segmentation_metrics(np.zeros((8, 8)), np.zeros((8, 8), bool))]
  s = M.summarize(rows)
  assert set(s) == set(M.METRIC_KEYS + M.EXTRA_KEYS)
  assert s["dice"]["mean"] == pytest.approx(0.75) and s["dice"]["n_nan"] == 1
  assert s["dice_incl"]["mean"] == pytest.approx(0.875) and s["dice_incl"]["n"] == 2


def test_summarize_over_folds():
  f1 = M.summarize([{"dice": 0.6}, {"dice": float("nan")}], keys=("dice",))
  f2 = M.summarize([{"dice": 0.7}, {"dice": 0.9}], keys=("dice",))
  f3 = M.summarize([{"dice": float("nan")}], keys=("dice",))
  s = M.summarize_over_folds([f1, f2, f3])["dice"]
  assert s["mean"] == pytest.approx(0.7)  # folds 0.6 and 0.8; NaN fold skipped
  assert s["std"] == pytest.approx(0.1)
  assert s["n_folds"] == 2 and len(s["fold_means"]) == 3


def test_batch_dice():
  masks = np.zeros((3, 4, 4, 1), np.float32)
  logits = np.full((3, 4, 4, 1), -5.0, np.float32)
  masks[0, :2, :2] = 1.0
  logits[0, :2, :2] = 5.0  # image 0: perfect -> 1
  # image 1: both empty -> 1 (normal-inclusive, no NaN)
  masks[2, 0, 0:2] = 1.0
  logits[2, 0, 1:3] = 5.0  # image 2: 2 vs 2 px, 1 overlap -> 2*1/4
  d = jax.jit(M.batch_dice)(jnp.asarray(logits), jnp.asarray(masks))
  np.testing.assert_allclose(np.asarray(d), [1.0, 1.0, 0.5], rtol=1e-6)
  # logit 0 -> sigmoid 0.5, not > 0.5: prediction empty vs a non-empty mask.
  d0 = M.batch_dice(jnp.zeros((1, 4, 4, 1)), jnp.asarray(masks[:1]))
  assert float(d0[0]) == 0.0


def test_rejects_bad_inputs():
  with pytest.raises(ValueError):
    M.segmentation_metrics(np.full((4, 4), 1.5), np.zeros((4, 4), bool))
  with pytest.raises(ValueError):
    M.segmentation_metrics(np.zeros((4, 4)), np.zeros((4, 5), bool))


def test_dice_alone_equals_the_suites_dice():
  rng = np.random.default_rng(3)
  empty = np.zeros((16, 16), bool)
  cases = [(rng.random((16, 16)) > 0.6, rng.random((16, 16)) > 0.5) for _ in range(3)]
  cases += [(empty, empty), (empty, rng.random((16, 16)) > 0.5),
            (rng.random((16, 16)) > 0.5, empty)]
  for p, g in cases:
    want = M.segmentation_metrics(p.astype(float), g)["dice"]
    got = M.dice(p, g)
    assert (got != got and want != want) or got == pytest.approx(want)
  assert M.dice(empty, empty) != M.dice(empty, empty)   # NaN: excluded
  assert M.dice(empty, ~empty) == 0.0
  with pytest.raises(ValueError):
    M.dice(empty, np.zeros((8, 8), bool))
