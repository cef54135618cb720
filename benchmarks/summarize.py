"""Tables and plots from benchmark rows alone.

  python -m benchmarks.summarize runs/benchmarks/cv.jsonl [more.jsonl ...] [--out DIR]

Reads the JSONL rows of :mod:`benchmarks.cv` (and, when present, of
:mod:`benchmarks.speed` and :mod:`benchmarks.scaling`) and writes to ``--out``
(default: ``summary/`` beside the first results file):

* ``summary.md``: every table below, in the papers' form;
* ``overall.csv``: per dataset and model, each metric's mean and std over
  folds of the per-fold means (TPR, FPR, JI, DSC, AER, HD, MAE first, as in
  STAN's and RCA-IUnet's tables, then the rest of the suite);
* ``small_tumours.csv``: the same on small tumours only (STAN, Table 2);
* ``postprocessing.csv``: with and without post-processing (RCA-IUnet,
  Table 2), for runs with ``postprocess=True``;
* ``cross_dataset.csv``: models trained on one dataset, tested on others;
* ``speed.csv``, ``scaling.csv`` for speed and scaling rows;
* ``dice_boxplot_<dataset>.png``: per-image Dice of every model (all folds);
* ``dice_vs_time_<dataset>.png``: Dice (mean ± std over folds) against
  inference milliseconds per image.

Rows are grouped by (kind, training dataset, test dataset, model,
series hash: the config hash without fold and seed; older rows without one
use the experiment hash, the config hash without the fold); when one (seed,
fold) appears twice in a group the later row counts. A model run with two
configs on one dataset appears twice, labelled ``model [hash]``. A group's
statistics are over its runs: its folds, and with ``benchmarks.cv --seeds``
every fold of every seed (the "Folds" column then reads e.g. ``15 (3
seeds)``). "Images" counts the test images scored over all runs.
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
from typing import Any, Iterable, Sequence

from benchmarks import common

# (metric key, column title): the papers' columns first.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("tpr", "TPR"), ("fpr", "FPR"), ("jaccard", "JI"), ("dice", "DSC"), ("aer", "AER"),
    ("hd", "HD"), ("mae", "MAE"), ("hd95", "HD95"), ("ahd", "AHD"), ("precision", "Precision"),
    ("accuracy", "Accuracy"), ("rmse", "RMSE"), ("miou_50_95", "mIoU"),
    ("dice_incl", "DSC*"), ("jaccard_incl", "JI*"))
DISTANCE_KEYS = ("hd", "hd95", "ahd")
FOOTNOTE = ("Mean ± std over folds (every fold of every seed where seeds were repeated) of "
            "the per-fold mean over test images (the mean alone for one fold). HD, HD95, AHD in "
            "pixels at the original resolution; FPR and AER are normalised by the ground-truth "
            "area (BUSIS). DSC*/JI*: normal-inclusive (an empty prediction on an empty mask "
            "scores 1); DSC/JI exclude such images. See busjax/metrics.py.")


# ----------------------------------------------------------------------------- aggregation


def _nan(v: Any) -> float:
  return float("nan") if v is None else float(v)


def group_rows(rows: Iterable[dict], kind: str) -> list[dict]:
  """Rows of ``kind`` grouped into ``{key fields, label, n_seeds, rows (one per
  run, by seed and fold)}``; ``experiment_hash`` is the group's series hash."""
  groups: dict[tuple, dict[tuple, dict]] = {}
  for r in rows:
    if r.get("kind") != kind:
      continue
    key = (r["train_dataset"], r["test_dataset"], r["model"],
           r.get("series_hash", r.get("experiment_hash", r.get("config_hash"))))
    run = (r.get("seed") if "series_hash" in r else None, int(r["fold"]))
    groups.setdefault(key, {})[run] = r  # a later row of a run wins
  hashes: dict[tuple, set] = {}
  for td, sd, m, h in groups:
    hashes.setdefault((td, sd, m), set()).add(h)
  out = []
  for (td, sd, m, h), by_run in groups.items():
    label = m if len(hashes[(td, sd, m)]) == 1 else f"{m} [{(h or '')[:6]}]"
    order = sorted(by_run, key=lambda k: (k[0] is None, k[0] or 0, k[1]))
    out.append({"train_dataset": td, "test_dataset": sd, "model": m, "experiment_hash": h,
                "label": label, "n_seeds": len({s for s, _ in by_run}),
                "rows": [by_run[k] for k in order]})
  return out


def runs_cell(group: dict, n_runs: int) -> str:
  """The "Folds" cell: the number of runs, with the number of seeds when repeated."""
  n_seeds = group.get("n_seeds", 1)
  return str(n_runs) if n_seeds <= 1 else f"{n_runs} ({n_seeds} seeds)"


def aggregate(group: dict, summary_key: str = "summary") -> dict | None:
  """Over-fold statistics of one group's ``summary_key`` (None if no row has it).

  Returns ``{"metrics": summarize_over_folds(...), "n_folds", "n_images",
  "params", "inference_ms"}``; ``n_images`` counts the images of every fold's
  summary, ``inference_ms`` is the mean over folds.
  """
  from busjax import metrics as metrics_lib

  rows = [r for r in group["rows"] if r.get(summary_key)]
  if not rows:
    return None
  summaries = [r[summary_key] for r in rows]
  ms = [_nan(r.get("inference_ms_per_image")) for r in rows]
  ms = [v for v in ms if math.isfinite(v)]
  n_images = 0
  for s in summaries:
    d = s.get("dice") or {}
    n_images += int(d.get("n") or 0) + int(d.get("n_nan") or 0)
  return {"metrics": metrics_lib.summarize_over_folds(summaries), "n_folds": len(rows),
          "n_images": n_images, "params": rows[0].get("params"),
          "inference_ms": sum(ms) / len(ms) if ms else float("nan")}


# ----------------------------------------------------------------------------- formatting


def format_cell(stat: dict | None, key: str) -> str:
  """``mean ± std`` (4 decimals; 2 for distances in pixels); ``–`` when undefined.

  The mean alone when fewer than two folds have a value: the spread over one
  fold is not zero but unknown, and ``± 0.0000`` would read as a measured one.
  """
  if not stat:
    return "–"
  mean, std = _nan(stat.get("mean")), _fold_std(stat)
  if not math.isfinite(mean):
    return "–"
  d = 2 if key in DISTANCE_KEYS else 4
  return f"{mean:.{d}f} ± {std:.{d}f}" if math.isfinite(std) else f"{mean:.{d}f}"


def _fold_std(stat: dict) -> float:
  """The over-fold std of ``stat``, NaN unless at least two folds have a value."""
  if int(stat.get("n_folds", 2)) < 2:
    return float("nan")
  return _nan(stat.get("std"))


def _num(v: Any) -> str:
  if v is None:
    return ""
  if isinstance(v, float):
    return f"{v:.10g}" if math.isfinite(v) else ""
  return str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(lines)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(header)
  for r in rows:
    w.writerow([_num(c) for c in r])
  return buf.getvalue()


def _params(v: Any) -> str:
  return "–" if v is None else f"{v / 1e6:.3f}M"


def _ms(v: float) -> str:
  return f"{v:.2f}" if math.isfinite(v) else "–"


def _metric_csv_cells(agg: dict) -> list:
  out = []
  for k, _ in COLUMNS:
    s = agg["metrics"].get(k) or {}
    out += [_nan(s.get("mean")), _fold_std(s)]
  return out


_METRIC_CSV_HEADER = [f"{k}_{s}" for k, _ in COLUMNS for s in ("mean", "std")]


# ----------------------------------------------------------------------------- tables


def metric_tables(rows: Sequence[dict], summary_key: str, title: str
                  ) -> tuple[str, str] | None:
  """One Markdown table per dataset (rows: models) and one CSV of ``cv`` rows'
  ``summary_key``; None when no row has it."""
  groups = group_rows(rows, "cv")
  md, csv_rows = [], []
  datasets = list(dict.fromkeys(g["train_dataset"] for g in groups))
  for ds in datasets:
    body = []
    for g in groups:
      if g["train_dataset"] != ds:
        continue
      agg = aggregate(g, summary_key)
      if agg is None:
        continue
      body.append([g["label"], runs_cell(g, agg["n_folds"]), agg["n_images"]]
                  + [format_cell(agg["metrics"].get(k), k) for k, _ in COLUMNS]
                  + [_params(agg["params"]), _ms(agg["inference_ms"])])
      csv_rows.append([ds, g["model"], g["experiment_hash"], agg["n_folds"], agg["n_images"]]
                      + _metric_csv_cells(agg) + [agg["params"], agg["inference_ms"]])
    if body:
      md.append(f"### {title}: {ds}\n\n" + markdown_table(
          ["Model", "Folds", "Images"] + [t for _, t in COLUMNS] + ["Params", "ms/img"], body))
  if not csv_rows:
    return None
  header = (["dataset", "model", "experiment_hash", "n_folds", "n_images"] + _METRIC_CSV_HEADER
            + ["params", "inference_ms_per_image"])
  return "\n\n".join(md), csv_text(header, csv_rows)


def postprocessing_table(rows: Sequence[dict]) -> tuple[str, str] | None:
  """Each post-processed model without and with post-processing (RCA-IUnet, Table 2)."""
  groups = group_rows(rows, "cv")
  md, csv_rows = [], []
  for ds in dict.fromkeys(g["train_dataset"] for g in groups):
    body = []
    for g in groups:
      if g["train_dataset"] != ds:
        continue
      pp = aggregate(g, "postprocessed_summary")
      if pp is None:
        continue
      raw = aggregate(g, "summary")
      for name, agg in (("no", raw), ("yes", pp)):
        body.append([g["label"], name, runs_cell(g, agg["n_folds"])]
                    + [format_cell(agg["metrics"].get(k), k) for k, _ in COLUMNS])
        csv_rows.append([ds, g["model"], g["experiment_hash"], name == "yes", agg["n_folds"]]
                        + _metric_csv_cells(agg))
    if body:
      md.append(f"### With and without post-processing: {ds}\n\n" + markdown_table(
          ["Model", "Post-processing", "Folds"] + [t for _, t in COLUMNS], body))
  if not csv_rows:
    return None
  header = ["dataset", "model", "experiment_hash", "postprocessed", "n_folds"] + _METRIC_CSV_HEADER
  return "\n\n".join(md), csv_text(header, csv_rows)


def cross_dataset_table(rows: Sequence[dict]) -> tuple[str, str] | None:
  """Per training dataset: a DSC matrix (models x test datasets, the training
  dataset's own cross-validation first) and the full metric table."""
  cross = group_rows(rows, "cross")
  if not cross:
    return None
  cv = {(g["train_dataset"], g["model"], g["experiment_hash"]): g
        for g in group_rows(rows, "cv")}
  md, csv_rows = [], []
  for train in dict.fromkeys(g["train_dataset"] for g in cross):
    mine = [g for g in cross if g["train_dataset"] == train]
    tests = list(dict.fromkeys(g["test_dataset"] for g in mine))
    models = list(dict.fromkeys((g["label"], g["model"], g["experiment_hash"]) for g in mine))
    matrix, full = [], []
    for label, model, h in models:
      line = [label]
      own = cv.get((train, model, h))
      agg = aggregate(own) if own else None
      line.append(format_cell(agg["metrics"].get("dice"), "dice") if agg else "–")
      for t in tests:
        g = next((g for g in mine if g["test_dataset"] == t and g["model"] == model
                  and g["experiment_hash"] == h), None)
        agg = aggregate(g) if g else None
        line.append(format_cell(agg["metrics"].get("dice"), "dice") if agg else "–")
        if agg:
          full.append([label, t, runs_cell(g, agg["n_folds"]), agg["n_images"]]
                      + [format_cell(agg["metrics"].get(k), k) for k, _ in COLUMNS])
          csv_rows.append([train, t, model, h, agg["n_folds"], agg["n_images"]]
                          + _metric_csv_cells(agg))
      matrix.append(line)
    md.append(f"### Trained on {train}: DSC on each test dataset\n\n"
              + markdown_table(["Model", f"{train} (own CV)"] + tests, matrix))
    md.append(f"### Trained on {train}, tested on other datasets (no fine-tuning)\n\n"
              + markdown_table(["Model", "Test dataset", "Folds", "Images"]
                               + [t for _, t in COLUMNS], full))
  header = (["train_dataset", "test_dataset", "model", "experiment_hash", "n_folds", "n_images"]
            + _METRIC_CSV_HEADER)
  return "\n\n".join(md), csv_text(header, csv_rows)


SPEED_FIELDS = ("model", "image_size", "batch_size", "params", "gflops_per_image", "compile_s",
                "train_images_per_s", "infer_images_per_s", "peak_memory_bytes", "device_kind",
                "train_step")


def speed_table(rows: Sequence[dict]) -> tuple[str, str] | None:
  """Speed rows (:mod:`benchmarks.speed`) as a Markdown table and CSV."""
  rows = [r for r in rows if r.get("kind") == "speed"]
  if not rows:
    return None

  def f(v, d):
    return "–" if v is None else f"{v:.{d}f}"

  body = [[r["model"], r["image_size"], r["batch_size"], _params(r.get("params")),
           "–" if r.get("gflops_per_image") is None else f"{r['gflops_per_image']:.4g}",
           f(r.get("compile_s"), 1),
           f(r.get("train_images_per_s"), 1), f(r.get("infer_images_per_s"), 1),
           "–" if r.get("peak_memory_bytes") is None else f"{r['peak_memory_bytes'] / 2**20:.0f}",
           r.get("device_kind", "?"), r.get("train_step", "")] for r in rows]
  md = markdown_table(["Model", "Image", "Batch", "Params", "GFLOPs/img", "Compile (s)",
                       "Train img/s", "Infer img/s", "Peak MiB", "Device", "Train step"], body)
  return md, csv_text(SPEED_FIELDS, [[r.get(k) for k in SPEED_FIELDS] for r in rows])


SCALING_FIELDS = ("model", "mode", "devices", "per_device_batch", "global_batch",
                  "images_per_s", "speedup", "efficiency", "first_loss", "device_kind")


def scaling_table(rows: Sequence[dict]) -> tuple[str, str] | None:
  """Scaling rows (:mod:`benchmarks.scaling`) as a Markdown table and CSV."""
  rows = [r for r in rows if r.get("kind") == "scaling"]
  if not rows:
    return None
  body = [[r["model"], r["mode"], r["devices"], r["global_batch"], f"{r['images_per_s']:.1f}",
           f"{r['speedup']:.2f}", f"{r['efficiency']:.2f}", r.get("device_kind", "?")]
          for r in rows]
  md = markdown_table(["Model", "Mode", "Devices", "Global batch", "img/s", "Speed-up",
                       "Efficiency", "Device"], body)
  return md, csv_text(SCALING_FIELDS, [[r.get(k) for k in SCALING_FIELDS] for r in rows])


# ----------------------------------------------------------------------------- plots


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_dice_boxes(rows: Sequence[dict], out_dir: str) -> list[str]:
  """Per dataset: box plots of per-image Dice (all folds pooled) per model."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  written = []
  groups = group_rows(rows, "cv")
  for ds in dict.fromkeys(g["train_dataset"] for g in groups):
    labels, data = [], []
    for g in groups:
      if g["train_dataset"] != ds:
        continue
      vals = [v for r in g["rows"] for v in (r.get("per_image") or {}).get("dice", [])
              if v is not None]
      if vals:
        labels.append(f"{g['label']}\n(n={len(vals)})")
        data.append(vals)
    if not data:
      continue
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(data) + 1), 4))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(data) + 1))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("Dice per test image")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{ds}: per-image Dice, all folds\n(images with a tumour or a prediction)",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    written.append(_save_figure(fig, os.path.join(out_dir, f"dice_boxplot_{_safe(ds)}.png")))
  return written


def _save_figure(fig, path: str) -> str:
  """Lays out, writes (PNG, 120 dpi) and closes ``fig``; returns ``path``."""
  import matplotlib.pyplot as plt
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_dice_vs_time(rows: Sequence[dict], out_dir: str) -> list[str]:
  """Per dataset: DSC (mean ± std over folds) against inference ms per image."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  written = []
  groups = group_rows(rows, "cv")
  for ds in dict.fromkeys(g["train_dataset"] for g in groups):
    pts = []
    for g in groups:
      if g["train_dataset"] != ds:
        continue
      agg = aggregate(g)
      if agg is None:
        continue
      d = agg["metrics"].get("dice") or {}
      mean, std = _nan(d.get("mean")), _fold_std(d)
      if math.isfinite(mean) and math.isfinite(agg["inference_ms"]):
        pts.append((g["label"], agg["inference_ms"], mean, std if math.isfinite(std) else 0.0,
                    g["rows"][0].get("device_kind", "?")))
    if not pts:
      continue
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, x, y, e, _ in pts:
      ax.errorbar([x], [y], yerr=[e], fmt="o", capsize=3)
      ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    xs = [p[1] for p in pts]
    if min(xs) > 0 and max(xs) / min(xs) > 10:
      ax.set_xscale("log")
    devices = sorted({p[4] for p in pts})
    ax.set_xlabel(f"inference ms / image ({', '.join(devices)})")
    ax.set_ylabel("DSC (mean ± std over folds)")
    ax.set_title(f"{ds}: accuracy against inference time")
    ax.grid(alpha=0.3)
    written.append(_save_figure(fig, os.path.join(out_dir, f"dice_vs_time_{_safe(ds)}.png")))
  return written


# ----------------------------------------------------------------------------- all of it


def render(rows: Sequence[dict], out_dir: str) -> dict[str, str]:
  """Writes every table and plot that ``rows`` support into ``out_dir``.

  Returns ``{name: path}`` of the files written (``summary.md`` always).
  """
  os.makedirs(out_dir, exist_ok=True)
  sections = [
      ("overall", "Overall", metric_tables(rows, "summary", "All test images")),
      ("small_tumours", "Small tumours (longest axis < 120 px, STAN Table 2)",
       metric_tables(rows, "small_tumour_summary", "Small tumours")),
      ("postprocessing", "With and without post-processing (RCA-IUnet Table 2)",
       postprocessing_table(rows)),
      ("cross_dataset", "Cross-dataset evaluation", cross_dataset_table(rows)),
      ("speed", "Speed", speed_table(rows)),
      ("scaling", "Data-parallel scaling", scaling_table(rows)),
  ]
  written: dict[str, str] = {}
  md = ["# busjax benchmark summary", ""]
  for name, title, table in sections:
    if table is None:
      continue
    text, csv_body = table
    md += [f"## {title}", "", text, ""]
    if name in ("overall", "small_tumours", "postprocessing", "cross_dataset"):
      md += [FOOTNOTE, ""]
    path = os.path.join(out_dir, f"{name}.csv")
    with open(path, "w") as f:
      f.write(csv_body)
    written[name] = path
  for path in plot_dice_boxes(rows, out_dir) + plot_dice_vs_time(rows, out_dir):
    written[os.path.splitext(os.path.basename(path))[0]] = path
    md += [f"![{os.path.basename(path)}]({os.path.basename(path)})", ""]
  path = os.path.join(out_dir, "summary.md")
  with open(path, "w") as f:
    f.write("\n".join(md))
  written["summary"] = path
  return written


def _define_flags():
  from absl import flags

  flags.DEFINE_string("out", None, "Output folder (default: summary/ beside the first file).")


def main(argv):
  from absl import flags

  paths = argv[1:]
  if not paths:
    print("usage: python -m benchmarks.summarize RESULTS.jsonl [MORE.jsonl ...] [--out DIR]",
          file=sys.stderr)
    sys.exit(2)
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
    sys.exit(2)
  rows = common.read_rows(*paths)
  if not rows:
    print(f"error: no rows in {', '.join(paths)}", file=sys.stderr)
    sys.exit(2)
  out = flags.FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(paths[0])), "summary")
  written = render(rows, out)
  with open(written["summary"]) as f:
    print(f.read())
  print(f"\n[summarize] {len(rows)} rows -> {out}: "
        + ", ".join(sorted(os.path.basename(p) for p in written.values())))


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
