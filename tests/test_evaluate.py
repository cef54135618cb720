"""busjax.evaluate: the per-group summaries and the printed table."""
import math

import pytest

from busjax import evaluate, metrics


def _row(name, label, gt, pred):
  import numpy as np
  g = np.zeros((8, 8), bool)
  p = np.zeros((8, 8), bool)
  if gt:
    g[2:6, 2:6] = True
  if pred == "exact":
    p[:] = g
  elif pred == "half":
    p[2:6, 2:4] = True
  elif pred == "blob":
    p[0:2, 0:2] = True
  return {"name": name, "label": label,
          **metrics.segmentation_metrics(p.astype(float), g, threshold=0.5)}


def test_group_summaries_three_readings_of_mean_dice():
  rows = [_row("a", "benign", True, "exact"), _row("b", "malignant", True, "half"),
          _row("c", "normal", False, "none"), _row("d", "normal", False, "blob")]
  g = evaluate.group_summaries(rows)
  assert g["lesion_summary"]["dice"]["n"] == 2
  assert g["lesion_summary"]["dice"]["mean"] == pytest.approx((1 + 2 * 8 / 24) / 2)
  assert g["empty_mask_false_positives"] == {"n": 1, "of": 2}
  assert g["label_summary"]["benign"]["dice"]["mean"] == pytest.approx(1.0)
  assert g["label_summary"]["normal"]["dice"]["n"] == 1        # the false positive, scored 0
  assert g["label_summary"]["normal"]["dice_incl"]["mean"] == pytest.approx(0.5)
  s = metrics.summarize(rows)
  assert s["dice"]["n"] == 3 and s["dice_incl"]["n"] == 4
  result = {"model": "unet", "dataset": "synthetic_bus", "fold": 0, "num_test_images": 4,
            "summary": s, "small_tumour_summary": metrics.summarize([]), **g}
  text = evaluate.format_table(result)
  assert "mean Dice over lesion images 0.8333 (2)" in text
  assert "lesion-free images with a false positive: 1 of 2" in text
  assert "Dice by class: benign 1.0000 (1), malignant 0.6667 (1), normal 0.0000 (1)" in text


def test_group_summaries_after_json_round_trip():
  # eval.json stores NaN as null: an empty-mask row's small flag comes back as None.
  row = _row("c", "normal", False, "none")
  row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
  g = evaluate.group_summaries([row])
  assert g["empty_mask_false_positives"] == {"n": 0, "of": 1}
  assert g["lesion_summary"]["dice"]["n"] == 0
