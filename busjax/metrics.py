"""The segmentation metric suite: one definition for every busjax table.

Every metric is computed **per image, on host, at the image's original
resolution** (predictions are resized back before evaluation), from a
probability map ``prob`` (float ``[H, W]`` in ``[0, 1]``) and a ground-truth
mask ``gt`` (``[H, W]`` bool or 0/1). The binary prediction is
``P = prob > threshold`` (strict, threshold 0.5 by default) unless the caller
passes ``pred`` (e.g. the output of :func:`busjax.postprocess.postprocess`).
``G`` is the ground-truth foreground, ``N = H * W`` the number of pixels.
Summaries are mean ± std over images (:func:`summarize`) and then over folds
(:func:`summarize_over_folds`).

Overlap metrics (counts TP, FP, FN, TN of ``P`` against ``G``)
  * ``tpr``       = TP / |G|                  (recall / sensitivity)
  * ``fpr``       = FP / |G|                  BUSIS convention (Xian et al.,
    arXiv 1801.03182; STAN, Shareef et al. ISBI 2020): normalised by the GT
    area, NOT by the negatives, so it can exceed 1.
  * ``aer``       = (FP + FN) / |G|           area error ratio (BUSIS).
  * ``precision`` = TP / (TP + FP)
  * ``accuracy``  = (TP + TN) / N
  * ``dice``      = 2TP / (2TP + FP + FN)
  * ``jaccard``   = TP / (TP + FP + FN)       (IoU)

Empty-mask policy
  * TP + FP + FN = 0 (GT and prediction both empty, e.g. a correctly
    predicted BUSI "normal" image): ``dice``/``jaccard`` are NaN (nnU-Net
    style: excluded from means by :func:`summarize`, which counts them in
    ``n_nan``) while ``dice_incl``/``jaccard_incl`` are 1.0 (normal-inclusive).
    Otherwise ``*_incl`` equals the plain value.
  * |G| = 0: ``tpr``, ``fpr``, ``aer`` are NaN. Nothing predicted:
    ``precision`` is NaN.
  * Distances: both masks empty -> NaN; exactly one empty -> the image
    diagonal ``sqrt(H^2 + W^2)`` (a finite worst case instead of MONAI's inf,
    so means stay finite).

Boundary-distance metrics (pixels)
  * Boundary of a mask ``M`` = ``M XOR binary_erosion(M)`` with the
    4-connected (cross) structuring element and pixels outside the image
    counted as background, so the boundary is an 8-connected one-pixel-thick
    inner contour and mask pixels on the image edge are boundary pixels.
  * Directed distances ``d(P->G)`` = for every boundary pixel of P, the
    Euclidean distance to the nearest boundary pixel of G, read from ONE
    ``scipy.ndimage.distance_transform_edt`` per mask (computed on the
    bounding box of both boundaries, which is exact); and vice versa.
  * ``hd``   = max(max d(P->G), max d(G->P))                 Hausdorff.
  * ``hd95`` = max(pct95 d(P->G), pct95 d(G->P))  MONAI convention
    (``HausdorffDistanceMetric(percentile=95)``: max of the two directed 95th
    percentiles, ``np.percentile`` linear interpolation), NOT the 95th
    percentile of the pooled distances.
  * ``ahd``  = (mean d(P->G) + mean d(G->P)) / 2   average Hausdorff distance
    as the MEAN of the two directed means (RCA-IUnet, Punn & Agarwal 2022,
    Table 1, ``H(P,G)``), not the max of the two (Dubuisson-Jain modified HD). Computed on boundary
    pixels like ``hd``; RCA-IUnet's Table 1 sums over the mask pixels, which
    gives smaller values (interior overlap pixels contribute 0).

Probability-map metrics (over all N pixels, using ``prob``, not ``P``)
  * ``mae``  = mean |prob - gt|; ``rmse`` = sqrt(mean (prob - gt)^2).
    (Saliency / RCA-IUnet convention. BUSIS/STAN list "MAE" among their
    boundary metrics, i.e. a mean contour distance, closest to ``ahd``; do
    not compare our ``mae`` with theirs.) With a binary ``prob``, mae = (FP + FN) / N.

mIoU over thresholds 0.50:0.05:0.95 (ten thresholds t)
  * ``miou_50_95`` follows the formula of RCA-IUnet's Table 1 literally:
    ``mIoU = 1/10 * sum_t (IoU if IoU > t else 0)`` with ``IoU`` the Jaccard
    index of the binary prediction P (so it reflects post-processing when
    ``pred`` is given). ``t`` thresholds the IoU (Kaggle DSB-2018 style),
    with a strict ``>``; e.g. IoU 0.6 -> (0.6 + 0.6) / 10 = 0.12.
  * ``miou_prob_50_95`` (extra key, not in METRIC_KEYS) is the other common
    reading: ``1/10 * sum_t IoU(prob > t, G)``, thresholding the probability
    map (ignores ``pred``).
  * In both, an IoU whose union is empty (G and the prediction both empty)
    counts as 1, so an empty GT with an empty prediction scores 1.0.
  Note: neither reading reproduces RCA-IUnet's reported numbers (their mIoU
  often exceeds their mean IoU implied by Dice), which suggests the authors
  averaged a two-class (tumour + background) IoU; we implement the formula.

Small tumours
  STAN (Shareef et al., ISBI 2020, section 3.3) selects small tumours by the
  length of the longest axis of the tumour region: < 120 pixels at the
  original resolution. :func:`longest_axis` is the maximum Feret diameter of
  the union of all GT regions (largest distance between two foreground pixel
  centres, + 1 for the pixel extent). ``small`` is 1.0/0.0, NaN for empty GT.

Cost: all boundary work is restricted to the masks' bounding box; longest
axis uses the convex hull of boundary pixels, so nothing is O(N^2) in the
number of pixels. A 600x800 image costs a few milliseconds.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

METRIC_KEYS: tuple[str, ...] = ("dice", "jaccard", "tpr", "fpr", "precision", "accuracy", "aer",
                                "hd", "hd95", "ahd", "mae", "rmse", "miou_50_95")
EXTRA_KEYS: tuple[str, ...] = ("dice_incl", "jaccard_incl")
SMALL_TUMOUR_AXIS_PX = 120
MIOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

_CROSS = ndimage.generate_binary_structure(2, 1)
_NAN = float("nan")


def _as_mask(x: np.ndarray, name: str) -> np.ndarray:
  """bool ``[H, W]`` from bool / 0-1 / 0-255 ``[H, W]`` or ``[H, W, 1]``."""
  x = np.asarray(x)
  if x.ndim == 3 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 2:
    raise ValueError(f"{name} must be [H, W] (or [H, W, 1]), got shape {x.shape}")
  return x if x.dtype == bool else x > 0.5


def _bbox(mask: np.ndarray) -> tuple[slice, slice] | None:
  """Tight bounding box of a bool mask as slices, None when empty."""
  rows = np.flatnonzero(mask.any(axis=1))
  if rows.size == 0:
    return None
  cols = np.flatnonzero(mask.any(axis=0))
  return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def boundary(mask: np.ndarray) -> np.ndarray:
  """Inner boundary ``mask XOR erode(mask)`` (cross element, outside = background).

  Args:
    mask: bool ``[H, W]``.
  Returns:
    bool ``[H, W]``; empty iff ``mask`` is empty.
  """
  mask = _as_mask(mask, "mask")
  return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def _directed_distances(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Directed boundary distances (P->G, G->P), both masks non-empty.

  Works on the union bounding box: the erosion there equals the full-image
  erosion (outside the box is background either way) and every boundary pixel
  lies inside it, so the EDT values are exact.
  """
  box = _bbox(pred | gt)
  p, g = pred[box], gt[box]
  bp = p & ~ndimage.binary_erosion(p, structure=_CROSS, border_value=0)
  bg = g & ~ndimage.binary_erosion(g, structure=_CROSS, border_value=0)
  dist_to_g = ndimage.distance_transform_edt(~bg)  # distance to nearest G-boundary pixel
  dist_to_p = ndimage.distance_transform_edt(~bp)
  return dist_to_g[bp], dist_to_p[bg]


def distance_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
  """``hd``, ``hd95``, ``ahd`` in pixels between two bool ``[H, W]`` masks.

  Definitions and empty-mask policy in the module docstring (NaN when both
  empty, image diagonal when exactly one is empty).
  """
  pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
  has_p, has_g = bool(pred.any()), bool(gt.any())
  if not has_p and not has_g:
    return {"hd": _NAN, "hd95": _NAN, "ahd": _NAN}
  if has_p != has_g:
    diag = math.hypot(*gt.shape)
    return {"hd": diag, "hd95": diag, "ahd": diag}
  d_pg, d_gp = _directed_distances(pred, gt)
  return {
      "hd": float(max(d_pg.max(), d_gp.max())),
      "hd95": float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))),
      "ahd": float(0.5 * (d_pg.mean() + d_gp.mean())),
  }


def longest_axis(mask: np.ndarray) -> float:
  """Maximum Feret diameter of the foreground, in pixels (STAN's "longest axis").

  Largest Euclidean distance between two foreground pixel centres, plus 1 for
  the pixel extent (a 1xN line -> N, a single pixel -> 1, an a x b rectangle
  -> sqrt((a-1)^2 + (b-1)^2) + 1). Uses the union of all regions. Computed on
  the convex hull of the boundary pixels (the farthest pair of a point set is
  a pair of hull vertices).

  Args:
    mask: ``[H, W]`` bool or 0/1 ground truth.
  Returns:
    float >= 0; 0.0 for an empty mask.
  """
  mask = _as_mask(mask, "mask")
  box = _bbox(mask)
  if box is None:
    return 0.0
  sub = mask[box]
  b = sub & ~ndimage.binary_erosion(sub, structure=_CROSS, border_value=0)
  pts = np.argwhere(b).astype(np.float64)
  if len(pts) == 1:
    return 1.0
  if len(pts) > 3:
    try:
      pts = pts[ConvexHull(pts).vertices]
    except QhullError:
      # Degenerate (collinear) set: lexicographic order is monotone along the
      # line, so the first and last points are the extreme pair.
      order = np.lexsort((pts[:, 1], pts[:, 0]))
      pts = pts[[order[0], order[-1]]]
  return float(pdist(pts).max()) + 1.0


def is_small_tumour(mask: np.ndarray, threshold_px: float = SMALL_TUMOUR_AXIS_PX) -> bool:
  """STAN's small-tumour criterion: ``0 < longest_axis(mask) < threshold_px``.

  An empty mask is not a small tumour (False); :func:`segmentation_metrics`
  reports ``small`` = NaN for it instead.
  """
  axis = longest_axis(mask)
  return bool(0.0 < axis < threshold_px)


def _ratio(num: float, den: float) -> float:
  return float(num) / float(den) if den > 0 else _NAN


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
  """The suite's ``dice`` of two masks, without the rest of the suite:
  ``2 |P & G| / (|P| + |G|)``, NaN when both are empty (nnU-Net: excluded),
  0 for a prediction on an empty ground truth. ``[H, W]`` bool or 0/1 masks."""
  p, g = _as_mask(pred, "pred"), _as_mask(gt, "gt")
  if p.shape != g.shape:
    raise ValueError(f"pred {p.shape} and gt {g.shape} differ in shape")
  return _ratio(2 * np.count_nonzero(p & g), np.count_nonzero(p) + np.count_nonzero(g))


def segmentation_metrics(prob: np.ndarray, gt: np.ndarray, *, threshold: float = 0.5,
                         pred: np.ndarray | None = None) -> dict[str, float]:
  """All per-image metrics of the suite (definitions in the module docstring).

  Args:
    prob: float ``[H, W]`` (or ``[H, W, 1]``) probability map in ``[0, 1]``
      at the original image resolution; a binary map is fine.
    gt: ``[H, W]`` bool or 0/1 ground-truth mask (same shape).
    threshold: ``P = prob > threshold`` when ``pred`` is None.
    pred: optional bool ``[H, W]`` binary prediction overriding the threshold
      (e.g. a post-processed mask); ``mae``/``rmse``/``miou_prob_50_95``
      still use ``prob``.
  Returns:
    dict of floats: every key of ``METRIC_KEYS + EXTRA_KEYS``, plus
    ``miou_prob_50_95``, ``gt_area``, ``pred_area`` (pixels), ``longest_axis``
    (of ``gt``, pixels) and ``small`` (1.0 / 0.0, NaN when ``gt`` is empty).
  """
  prob = np.asarray(prob)
  if prob.ndim == 3 and prob.shape[-1] == 1:
    prob = prob[..., 0]
  prob = prob.astype(np.float64)
  g = _as_mask(gt, "gt")
  if prob.shape != g.shape:
    raise ValueError(f"prob {prob.shape} and gt {g.shape} differ in shape")
  lo, hi = float(prob.min()), float(prob.max())
  if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
    raise ValueError(f"prob must lie in [0, 1], got range [{lo}, {hi}]")
  p = prob > threshold if pred is None else _as_mask(pred, "pred")
  if p.shape != g.shape:
    raise ValueError(f"pred {p.shape} and gt {g.shape} differ in shape")

  n = g.size
  g_area = int(np.count_nonzero(g))
  p_area = int(np.count_nonzero(p))
  tp = int(np.count_nonzero(p & g))
  fp, fn = p_area - tp, g_area - tp
  tn = n - tp - fp - fn
  union = tp + fp + fn

  out: dict[str, float] = {}
  out["dice"] = _ratio(2 * tp, 2 * tp + fp + fn)
  out["jaccard"] = _ratio(tp, union)
  out["dice_incl"] = 1.0 if union == 0 else out["dice"]
  out["jaccard_incl"] = 1.0 if union == 0 else out["jaccard"]
  out["tpr"] = _ratio(tp, g_area)
  out["fpr"] = _ratio(fp, g_area)
  out["aer"] = _ratio(fp + fn, g_area)
  out["precision"] = _ratio(tp, p_area)
  out["accuracy"] = (tp + tn) / n
  out.update(distance_metrics(p, g))

  err = prob - g
  out["mae"] = float(np.mean(np.abs(err)))
  out["rmse"] = float(np.sqrt(np.mean(err * err)))

  iou = out["jaccard_incl"]
  out["miou_50_95"] = float(np.mean([iou if iou > t else 0.0 for t in MIOU_THRESHOLDS]))
  # Probability-threshold reading: only pixels above the lowest threshold matter.
  cand = prob > MIOU_THRESHOLDS[0]
  pc, gc = prob[cand], g[cand]
  ious = []
  for t in MIOU_THRESHOLDS:
    above = pc > t
    tp_t = int(np.count_nonzero(above & gc))
    union_t = int(np.count_nonzero(above)) + g_area - tp_t
    ious.append(1.0 if union_t == 0 else tp_t / union_t)
  out["miou_prob_50_95"] = float(np.mean(ious))

  axis = longest_axis(g)
  out["gt_area"] = float(g_area)
  out["pred_area"] = float(p_area)
  out["longest_axis"] = axis
  out["small"] = _NAN if g_area == 0 else float(axis < SMALL_TUMOUR_AXIS_PX)
  return out


def _float_or_nan(v: Any) -> float:
  return _NAN if v is None else float(v)


def summarize(rows: list[dict], keys: Sequence[str] = METRIC_KEYS + EXTRA_KEYS) -> dict[str, dict]:
  """Mean ± std over images, ignoring NaN (nnU-Net style).

  Args:
    rows: per-image dicts from :func:`segmentation_metrics` (``None`` values,
      e.g. from JSON, count as NaN; a missing key raises KeyError).
    keys: metrics to summarise.
  Returns:
    ``{key: {"mean", "std", "n", "n_nan"}}``: nanmean, population std
    (ddof=0), number of non-NaN values, number of NaN values. mean/std are
    ``float('nan')`` when n = 0 (the caller decides how to serialise).
  """
  out: dict[str, dict] = {}
  for k in keys:
    v = np.array([_float_or_nan(r[k]) for r in rows], dtype=np.float64)
    ok = v[~np.isnan(v)]
    out[k] = {
        "mean": float(ok.mean()) if ok.size else _NAN,
        "std": float(ok.std()) if ok.size else _NAN,
        "n": int(ok.size),
        "n_nan": int(v.size - ok.size),
    }
  return out


def summarize_over_folds(fold_summaries: list[dict]) -> dict[str, dict]:
  """Mean ± std across folds of the per-fold means.

  Args:
    fold_summaries: one :func:`summarize` output per fold.
  Returns:
    ``{key: {"mean", "std", "n_folds", "fold_means"}}`` for every key of the
    first fold: mean and population std (ddof=0) over the folds whose mean is
    not NaN, how many such folds, and the list of per-fold means (NaN where a
    fold lacks the key or has no valid value).
  """
  if not fold_summaries:
    return {}
  out: dict[str, dict] = {}
  for k in fold_summaries[0]:
    means = [_float_or_nan(s[k]["mean"]) if k in s else _NAN for s in fold_summaries]
    v = np.array(means, dtype=np.float64)
    ok = v[~np.isnan(v)]
    out[k] = {
        "mean": float(ok.mean()) if ok.size else _NAN,
        "std": float(ok.std()) if ok.size else _NAN,
        "n_folds": int(ok.size),
        "fold_means": means,
    }
  return out


def batch_dice(logits: jax.Array, masks: jax.Array, threshold: float = 0.5) -> jax.Array:
  """Per-image hard Dice on device, for cheap training-time logging.

  Args:
    logits: ``[B, H, W, 1]`` (any ``[B, ...]``) float logits.
    masks: same shape, bool or 0/1 ground truth.
    threshold: prediction is ``sigmoid(logits) > threshold``.
  Returns:
    float32 ``[B]`` in ``[0, 1]``; 1.0 when prediction and mask are both
    empty (normal-inclusive), so it never NaNs. Jit-compatible.
  """
  pred = jax.nn.sigmoid(logits.astype(jnp.float32)) > threshold
  gt = masks > 0.5
  axes = tuple(range(1, pred.ndim))
  inter = jnp.sum(pred & gt, axis=axes, dtype=jnp.float32)
  denom = jnp.sum(pred, axis=axes, dtype=jnp.float32) + jnp.sum(gt, axis=axes, dtype=jnp.float32)
  return jnp.where(denom > 0, 2.0 * inter / jnp.maximum(denom, 1.0), 1.0)
