"""Mask post-processing after RCA-IUnet (Punn & Agarwal, Machine Vision and
Applications 2022, arXiv 2108.02508, section 3 and Fig. 7 / Table 2 "PP").

What the paper specifies: the predicted mask "is further refined with
post-processing morphological operations such as the flood fill algorithm,
mask extraction and binary thresholding to fill the minor holes left in the
generated mask based on the surrounding or connected pixels (reducing the
false negative predictions), remove the small masked regions (reducing the
false positive predictions) and filter the masked regions, respectively."
It gives no size criterion, connectivity or threshold value, and the official
code (nspunn1993/RCA-IUnet) ships only the model.

What we chose:
  1. binary threshold ``prob > threshold`` (0.5, the sigmoid midpoint);
  2. flood fill = ``scipy.ndimage.binary_fill_holes`` (background regions not
     4-connected to the image border become foreground);
  3. small-region removal: 8-connected foreground components with fewer than
     ``min_region_fraction * H * W`` pixels are removed. The criterion is
     relative to the image area so it means the same at 256x256 and at the
     original resolution. Default 5e-4 (0.05 %): ~33 px at 256x256, ~240 px
     (a disc of ~17 px diameter) at 600x800 - well below the smallest
     tumours STAN counts as "small" (longest axis < 120 px), so real small
     lesions survive while specks go;
  4. optionally keep only the largest component (``keep_largest``; off by
     default because BUS images can hold several lesions).

:func:`select_min_region_fraction` picks the size criterion on validation
images instead (``cfg.postprocess_select``), as nnU-Net decides its
connected-component post-processing on the validation cases (Isensee et al.,
Nature Methods 2021): the fraction of :data:`SELECTION_GRID` with the highest
mean validation Dice (nnU-Net's reading), the smallest on ties.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from busjax import metrics

DEFAULT_MIN_REGION_FRACTION = 5e-4
# Candidate size criteria (fractions of the image area) for the validation choice.
SELECTION_GRID = (0.0, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3)
_EIGHT = np.ones((3, 3), dtype=bool)


def postprocess(prob: np.ndarray, *, threshold: float = 0.5, fill_holes: bool = True,
                min_region_fraction: float = DEFAULT_MIN_REGION_FRACTION,
                keep_largest: bool = False) -> np.ndarray:
  """Threshold, fill holes, drop small regions (RCA-IUnet post-processing).

  Args:
    prob: float ``[H, W]`` (or ``[H, W, 1]``) probability map in ``[0, 1]``;
      a binary mask is fine.
    threshold: foreground is ``prob > threshold``.
    fill_holes: fill enclosed background holes (flood fill).
    min_region_fraction: remove 8-connected components whose area is below
      this fraction of ``H * W`` (0 disables the removal).
    keep_largest: keep only the largest remaining component.
  Returns:
    bool ``[H, W]`` mask.
  """
  prob = np.asarray(prob)
  if prob.ndim == 3 and prob.shape[-1] == 1:
    prob = prob[..., 0]
  if prob.ndim != 2:
    raise ValueError(f"prob must be [H, W] (or [H, W, 1]), got shape {prob.shape}")
  if min_region_fraction < 0:
    raise ValueError(f"min_region_fraction must be >= 0, got {min_region_fraction}")
  mask = prob > threshold
  if fill_holes:
    mask = ndimage.binary_fill_holes(mask)
  if min_region_fraction > 0 or keep_largest:
    labels, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
      return mask
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0  # background
    keep = sizes >= min_region_fraction * mask.size
    keep[0] = False
    if keep_largest and keep.any():
      largest = int(np.argmax(np.where(keep, sizes, -1)))
      keep[:] = False
      keep[largest] = True
    mask = keep[labels]
  return mask


def select_min_region_fraction(probs: Sequence[np.ndarray], gts: Sequence[np.ndarray], *,
                               threshold: float = 0.5, fill_holes: bool = True,
                               grid: Sequence[float] = SELECTION_GRID) -> tuple[float, dict]:
  """The small-region criterion that maximises the mean validation Dice.

  Args:
    probs: validation probability maps ``[H_i, W_i]`` (any sizes, e.g. each
      image's original one).
    gts: the matching boolean ground-truth masks.
    threshold, fill_holes: as in :func:`postprocess`.
    grid: candidate ``min_region_fraction`` values.
  Returns:
    ``(fraction, {fraction: mean Dice})``: the mean over images whose Dice is
    defined (:func:`busjax.metrics.dice`), the smallest fraction on ties.
  """
  if len(probs) != len(gts) or not len(probs):
    raise ValueError(f"need matching, non-empty probs and gts, got {len(probs)} and {len(gts)}")
  scores = {}
  for f in sorted(grid):
    d = [metrics.dice(postprocess(p, threshold=threshold, fill_holes=fill_holes,
                                  min_region_fraction=f), g) for p, g in zip(probs, gts)]
    d = [x for x in d if x == x]
    scores[float(f)] = float(np.mean(d)) if d else float("nan")
  best = max(scores, key=lambda f: (scores[f] if scores[f] == scores[f] else -1.0, -f))
  return best, scores
