"""RCA-IUnet post-processing on tiny hand-made probability maps."""
from __future__ import annotations

import numpy as np
import pytest

from busjax.postprocess import postprocess


def _blob_with_hole_and_speck(size: int = 10) -> np.ndarray:
  """5x5 blob (rows/cols 2-6) at 0.9 with a 0.1 hole at (4,4), 0.8 speck at (0, size-1)."""
  prob = np.zeros((size, size), np.float32)
  prob[2:7, 2:7] = 0.9
  prob[4, 4] = 0.1
  prob[0, size - 1] = 0.8
  return prob


def test_fills_hole_and_removes_speck():
  prob = _blob_with_hole_and_speck()
  # 1-px speck < 0.02 * 100 = 2 px -> removed; the 25-px blob stays.
  out = postprocess(prob, min_region_fraction=0.02)
  expected = np.zeros((10, 10), bool)
  expected[2:7, 2:7] = True  # hole at (4,4) filled
  np.testing.assert_array_equal(out, expected)
  assert out.dtype == bool


def test_switches():
  prob = _blob_with_hole_and_speck()
  out = postprocess(prob, fill_holes=False, min_region_fraction=0.0)
  np.testing.assert_array_equal(out, prob > 0.5)  # plain threshold: hole and speck kept
  out = postprocess(prob, min_region_fraction=0.0, keep_largest=True)
  assert out.sum() == 25 and not out[0, 9]
  out = postprocess(prob, threshold=0.85, min_region_fraction=0.0)
  assert not out[0, 9] and out[4, 4]  # speck (0.8) under threshold; hole still filled


def test_default_fraction_is_relative_to_image_area():
  # 64x64: default 5e-4 * 4096 = 2.05 px -> a 1-px speck goes, a 3-px one stays.
  prob = np.zeros((64, 64))
  prob[10, 10] = 1.0
  prob[40, 40:43] = 1.0
  out = postprocess(prob)
  assert not out[10, 10] and out[40, 40:43].all() and out.sum() == 3
  # Diagonal neighbours form one 8-connected component (2 px) and are kept at 0.04%.
  prob = np.zeros((64, 64))
  prob[5, 5] = prob[6, 6] = 1.0
  assert postprocess(prob, min_region_fraction=4e-4).sum() == 2
  assert postprocess(prob, min_region_fraction=6e-4).sum() == 0


def test_empty_and_channel_axis():
  assert not postprocess(np.zeros((8, 8, 1)), keep_largest=True).any()
  with pytest.raises(ValueError):
    postprocess(np.zeros((2, 8, 8)))


def test_select_min_region_fraction_on_validation_images():
  from busjax.metrics import dice
  from busjax.postprocess import select_min_region_fraction
  # 100x100 images: a 20x20 lesion (4% of the area) predicted exactly, and a 6x6
  # speck (0.36%) on a lesion-free image. Removing regions under 0.4% or 0.8%
  # drops the speck (that image's Dice: 0 -> undefined, excluded): a tie, the
  # smaller wins; 5% also removes the lesion.
  lesion = np.zeros((100, 100))
  lesion[10:30, 10:30] = 1.0
  gt_lesion = lesion > 0
  speck = np.zeros((100, 100))
  speck[60:66, 60:66] = 0.9
  gt_empty = np.zeros((100, 100), bool)
  f, scores = select_min_region_fraction([lesion, speck], [gt_lesion, gt_empty],
                                         grid=(0.0, 2e-3, 4e-3, 8e-3, 5e-2))
  assert scores[0.0] == pytest.approx(0.5)       # the speck scores 0
  assert scores[2e-3] == pytest.approx(0.5)      # 36 px >= 20 px: kept
  assert scores[4e-3] == scores[8e-3] == pytest.approx(1.0)
  assert scores[5e-2] == 0.0                     # the lesion is gone too
  assert f == 4e-3
  assert dice(gt_empty, gt_empty) != dice(gt_empty, gt_empty)  # NaN
  with pytest.raises(ValueError):
    select_min_region_fraction([lesion], [])
