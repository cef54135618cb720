"""Test-split evaluation at the original resolution: ``eval.json``, overlays, table.

Each test image's probability map (model resolution) is resized bilinearly to
the image's original size and scored there with :mod:`busjax.metrics` against
the publisher's mask, so distances (HD, HD95, AHD) are in original pixels and
the small-tumour flag uses STAN's 120-px criterion at the original resolution.
With ``cfg.postprocess`` the post-processed prediction
(:mod:`busjax.postprocess`) is scored too (RCA-IUnet, Table 2); with
``cfg.postprocess_select`` its small-region criterion is first chosen on the
validation split (nnU-Net's way), and ``eval.json`` records the choice and
each candidate's validation Dice under ``postprocess``.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from busjax import metrics as metrics_lib
from busjax.data import pipeline
from busjax.trainers import common


def resize_prob(prob: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of a ``[S,S]`` probability map to ``[height,width]``."""
  out = Image.fromarray(prob.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR)
  return np.clip(np.asarray(out), 0.0, 1.0)


def original_size_probs(predict, state, data: pipeline.SegmentationData, batch_size: int):
  """Yields ``(example, probability map at the example's original size, gt mask)``."""
  from busjax.trainers import supervised

  probs = supervised.predict_all(predict, state, data, batch_size)[..., 0]
  for i in range(len(probs)):
    ex = data.source[int(data.indices[i])]
    gt = ex["mask"][..., 0] > 0
    yield ex, resize_prob(probs[i], *gt.shape), gt


def choose_postprocess(cfg, state: Any, predict,
                       validation: pipeline.SegmentationData | None) -> dict:
  """The post-processing settings scored on the test split: the fixed default,
  or with ``cfg.postprocess_select`` the small-region criterion with the best
  validation Dice at the original resolution."""
  from busjax import postprocess

  choice = {"fill_holes": True, "min_region_fraction": postprocess.DEFAULT_MIN_REGION_FRACTION,
            "selected_on": None}
  if cfg.get("postprocess_select", False):
    if validation is None or not len(validation.images):
      raise ValueError("postprocess_select needs a validation split to choose on")
    pairs = [(p, g) for _, p, g in original_size_probs(predict, state, validation,
                                                         cfg.batch_size)]
    f, scores = postprocess.select_min_region_fraction(
        [p for p, _ in pairs], [g for _, g in pairs], threshold=cfg.threshold)
    choice.update(min_region_fraction=f, selected_on="validation",
                  validation_dice={str(k): v for k, v in scores.items()})
  return choice


def evaluate_run(cfg, rdir: str, state: Any, predict, test: pipeline.SegmentationData, *,
                 validation: pipeline.SegmentationData | None = None,
                 quiet: bool = False) -> dict:
  """Scores ``state`` on the ``test`` split and writes ``eval.json`` and ``overlays/``
  (``validation``: where ``cfg.postprocess_select`` chooses the post-processing)."""
  from tqdm.auto import tqdm

  pp = choose_postprocess(cfg, state, predict, validation) if cfg.postprocess else None
  per_image, per_image_pp = [], []
  overlay_dir = os.path.join(rdir, "overlays")
  os.makedirs(overlay_dir, exist_ok=True)
  scored = original_size_probs(predict, state, test, cfg.batch_size)
  for i, (ex, prob, gt) in enumerate(tqdm(scored, total=len(test.images), desc="evaluating",
                                          disable=quiet, leave=False)):
    row = {"name": test.names[i], "label": pipeline.label_name(int(test.labels[i])),
           **metrics_lib.segmentation_metrics(prob, gt, threshold=cfg.threshold)}
    per_image.append(row)
    if cfg.postprocess:
      from busjax import postprocess
      pred = postprocess.postprocess(prob, threshold=cfg.threshold, fill_holes=pp["fill_holes"],
                                     min_region_fraction=pp["min_region_fraction"])
      per_image_pp.append({"name": row["name"], "label": row["label"],
                           **metrics_lib.segmentation_metrics(prob, gt, threshold=cfg.threshold,
                                                              pred=pred)})
    if i < cfg.num_overlays:
      save_overlay(os.path.join(overlay_dir, f"{_safe(test.names[i])}.png"),
                   ex["image"][..., 0], gt, prob > cfg.threshold, row["dice_incl"])
  small = [r for r in per_image if r["small"] == 1.0]
  result = {
      "model": cfg.model_name, "dataset": cfg.dataset, "fold": cfg.fold,
      "num_test_images": len(per_image),
      "summary": metrics_lib.summarize(per_image),
      "small_tumour_summary": metrics_lib.summarize(small),
      **group_summaries(per_image),
      "per_image": per_image,
  }
  if cfg.postprocess:
    result["postprocess"] = pp
    result["postprocessed_summary"] = metrics_lib.summarize(per_image_pp)
    result["postprocessed_lesion_free_false_positives"] = group_summaries(
        per_image_pp)["empty_mask_false_positives"]
    result["postprocessed_small_tumour_summary"] = metrics_lib.summarize(
        [r for r in per_image_pp if r["small"] == 1.0])
    result["postprocessed_per_image"] = per_image_pp
  common.write_json(os.path.join(rdir, "eval.json"), result)
  if not quiet:
    print(format_table(result, rdir))
  return result


def _has_lesion(row: dict) -> bool:
  """True when the image's ground truth is non-empty (its ``small`` flag is
  defined; :func:`busjax.metrics.segmentation_metrics` gives NaN/None for an
  empty mask)."""
  s = row["small"]
  return s is not None and s == s


def group_summaries(per_image: list[dict]) -> dict:
  """The three readings of "mean Dice" over a test split, side by side.

  ``summary["dice"]`` (nnU-Net) drops images whose masks are both empty and
  scores a false positive on a lesion-free image 0; ``dice_incl`` (DSC*)
  counts empty-on-empty as 1; papers that leave normal images out average
  over lesion images only. Returns ``lesion_summary`` (:func:`busjax.metrics.
  summarize` over images with a non-empty ground truth), ``label_summary``
  (one summary per class label, e.g. benign / malignant / normal) and
  ``empty_mask_false_positives`` (``{"n", "of"}``: lesion-free images with a
  non-empty prediction, out of all lesion-free images).
  """
  empty = [r for r in per_image if not _has_lesion(r)]
  fp = sum(1 for r in empty if r["dice"] is not None and r["dice"] == r["dice"])
  labels = sorted({r["label"] for r in per_image})
  return {
      "lesion_summary": metrics_lib.summarize([r for r in per_image if _has_lesion(r)]),
      "label_summary": {lab: metrics_lib.summarize([r for r in per_image if r["label"] == lab])
                        for lab in labels},
      "empty_mask_false_positives": {"n": fp, "of": len(empty)},
  }


def _safe(name: str) -> str:
  stem = os.path.splitext(os.path.basename(name))[0]
  return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)


def save_overlay(path: str, image: np.ndarray, gt: np.ndarray, pred: np.ndarray,
                 dice: float) -> None:
  """Writes ``image | ground truth (green) | prediction (red)`` side by side as PNG."""
  grey = np.repeat(image[..., None], 3, -1).astype(np.float32)

  def tint(mask, colour):
    out = grey.copy()
    out[mask] = 0.55 * out[mask] + 0.45 * np.asarray(colour, np.float32)
    return out

  gap = np.full((grey.shape[0], 4, 3), 255, np.float32)
  panel = np.concatenate([grey, gap, tint(gt, (0, 255, 0)), gap, tint(pred, (255, 0, 0))], 1)
  Image.fromarray(panel.astype(np.uint8)).save(path)


def format_table(result: dict, rdir: str = "") -> str:
  """The metric table printed at the end of a run (mean ± std over test images)."""
  lines = [f"\n{result['model']} on {result['dataset']} fold {result['fold']}: "
           f"{result['num_test_images']} test images" + (f" ({rdir})" if rdir else ""),
           f"{'metric':<13}{'all':>26}{'small tumours':>26}"]
  for k in metrics_lib.METRIC_KEYS + metrics_lib.EXTRA_KEYS:
    cells = []
    for summ in (result["summary"], result["small_tumour_summary"]):
      s = summ.get(k)
      cells.append("n/a" if not s or not s["n"] else f"{s['mean']:.4g} ± {s['std']:.4g} ({s['n']})")
    lines.append(f"{k:<13}{cells[0]:>26}{cells[1]:>26}")
  les, fp = result.get("lesion_summary", {}).get("dice"), result.get("empty_mask_false_positives")
  if les and les["n"]:
    line = f"mean Dice over lesion images {les['mean']:.4f} ({les['n']})"
    if fp and fp["of"]:
      line += f"; lesion-free images with a false positive: {fp['n']} of {fp['of']}"
    lines.append(line)
  by_label = [f"{lab} {summ['dice']['mean']:.4f} ({summ['dice']['n']})"
              for lab, summ in result.get("label_summary", {}).items() if summ["dice"]["n"]]
  if by_label:
    lines.append("Dice by class: " + ", ".join(by_label))
  pps, pp = result.get("postprocessed_summary"), result.get("postprocess")
  if pps and pps["dice"]["n"]:
    how = "" if not pp else (f" (holes filled, regions under {pp['min_region_fraction']:.2%} of "
                             "the image removed" + (", chosen on the validation split"
                                                    if pp.get("selected_on") else "") + ")")
    line = (f"post-processed{how}: dice {pps['dice']['mean']:.4f} ({pps['dice']['n']}), "
            f"dice_incl {pps['dice_incl']['mean']:.4f}")
    fp = result.get("postprocessed_lesion_free_false_positives")
    if fp and fp["of"]:
      line += f"; lesion-free images with a false positive: {fp['n']} of {fp['of']}"
    lines.append(line)
  lines.append("(dice: both-empty images excluded, a false positive on a lesion-free image "
               "scores 0; dice_incl: both-empty scores 1)")
  return "\n".join(lines)
