"""benchmarks.summarize: hand-made rows with known numbers -> known Markdown/CSV cells."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from benchmarks import common, summarize
from busjax import metrics as metrics_lib

KEYS = metrics_lib.METRIC_KEYS + metrics_lib.EXTRA_KEYS


def summary(n: int = 5, **means) -> dict:
  """A per-fold summary: every metric 0.5 unless given, std 0.01."""
  return {k: {"mean": means.get(k, 0.5), "std": 0.01, "n": n, "n_nan": 0} for k in KEYS}


def row(model, fold, kind="cv", test="busi", **extra) -> dict:
  r = {"kind": kind, "model": model, "dataset": "busi", "train_dataset": "busi",
       "test_dataset": test, "fold": fold, "num_folds": 5, "config_hash": f"{model}{fold}",
       "experiment_hash": f"{model}-exp", "device_kind": "cpu", "platform": "cpu",
       "params": 1_500_000, "inference_ms_per_image": 2.0}
  r.update(extra)
  return r


@pytest.fixture
def rows():
  return [
      # U-Net, two folds: DSC 0.8 and 0.6 -> 0.7 ± 0.1 (population std); HD 10, 20 -> 15 ± 5.
      row("unet", 0, summary=summary(dice=0.8, hd=10.0, tpr=0.9),
          small_tumour_summary=summary(n=2, dice=0.5), inference_ms_per_image=1.0,
          per_image={"dice": [0.8, None, 0.7]}),
      row("unet", 1, summary=summary(dice=0.6, hd=20.0, tpr=0.7),
          small_tumour_summary=summary(n=3, dice=0.3), inference_ms_per_image=3.0,
          per_image={"dice": [0.6, 0.5]}),
      # RCA-IUnet, one fold, with post-processing.
      row("rca_iunet", 0, summary=summary(dice=0.75, n=4), small_tumour_summary=summary(n=1),
          postprocessed_summary=summary(dice=0.78, n=4), params=2_000_000,
          per_image={"dice": [0.75, 0.7]}),
      # Cross-dataset: U-Net trained on busi, tested on busbra (two folds: 0.4, 0.2).
      row("unet", 0, kind="cross", test="busbra", summary=summary(dice=0.4)),
      row("unet", 1, kind="cross", test="busbra", summary=summary(dice=0.2)),
  ]


def md_table(text: str, heading: str) -> dict[str, dict[str, str]]:
  """The Markdown table under ``heading``: {first cell: {column: cell}}."""
  lines = text.splitlines()
  i = next(k for k, line in enumerate(lines) if line.startswith("### " + heading))
  table = []
  for line in lines[i + 1:]:
    if line.startswith("|"):
      table.append([c.strip() for c in line.strip("|").split("|")])
    elif table:
      break
  header, body = table[0], table[2:]
  return {r[0]: dict(zip(header, r)) for r in body}


def test_tables_reproduce_hand_computed_cells(tmp_path, rows):
  written = summarize.render(rows, str(tmp_path))
  md = open(written["summary"]).read()

  overall = md_table(md, "All test images: busi")
  assert list(overall) == ["unet", "rca_iunet"]
  assert overall["unet"]["DSC"] == "0.7000 ± 0.1000"
  assert overall["unet"]["TPR"] == "0.8000 ± 0.1000"
  assert overall["unet"]["HD"] == "15.00 ± 5.00"
  assert overall["unet"]["JI"] == "0.5000 ± 0.0000"
  assert overall["unet"]["Folds"] == "2" and overall["unet"]["Images"] == "10"
  assert overall["unet"]["ms/img"] == "2.00" and overall["unet"]["Params"] == "1.500M"
  assert overall["rca_iunet"]["DSC"] == "0.7500"  # one fold: no spread to report
  assert overall["rca_iunet"]["Folds"] == "1" and overall["rca_iunet"]["Params"] == "2.000M"

  small = md_table(md, "Small tumours: busi")
  assert small["unet"]["DSC"] == "0.4000 ± 0.1000" and small["unet"]["Images"] == "5"

  pp = md_table(md, "With and without post-processing: busi")
  assert list(pp) == ["rca_iunet"]  # keyed by first cell: the later (post-processed) row
  body = [line for line in md.splitlines() if line.startswith("| rca_iunet | ")]
  assert any("| no |" in line and "| 0.7500 |" in line for line in body)
  assert any("| yes |" in line and "| 0.7800 |" in line for line in body)

  cross = md_table(md, "Trained on busi: DSC on each test dataset")
  assert cross["unet"]["busi (own CV)"] == "0.7000 ± 0.1000"
  assert cross["unet"]["busbra"] == "0.3000 ± 0.1000"

  with open(written["overall"]) as f:
    table = {r["model"]: r for r in csv.DictReader(f)}
  assert float(table["unet"]["dice_mean"]) == pytest.approx(0.7)
  assert float(table["unet"]["dice_std"]) == pytest.approx(0.1)
  assert float(table["unet"]["hd_mean"]) == pytest.approx(15.0)
  assert float(table["unet"]["inference_ms_per_image"]) == pytest.approx(2.0)
  assert int(table["unet"]["n_folds"]) == 2 and table["unet"]["dataset"] == "busi"
  assert float(table["rca_iunet"]["dice_mean"]) == pytest.approx(0.75)
  assert table["rca_iunet"]["dice_std"] == ""  # one fold: std undefined, not 0
  with open(written["cross_dataset"]) as f:
    (c,) = list(csv.DictReader(f))
  assert (c["train_dataset"], c["test_dataset"]) == ("busi", "busbra")
  assert float(c["dice_mean"]) == pytest.approx(0.3)

  for name in ("dice_boxplot_busi", "dice_vs_time_busi"):
    assert os.path.getsize(written[name]) > 1000
    with open(written[name], "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_latest_row_of_a_fold_wins_and_configs_stay_apart(rows):
  again = row("unet", 1, summary=summary(dice=1.0))  # fold 1 rerun: replaces 0.6
  other = row("unet", 0, summary=summary(dice=0.1), experiment_hash="unet-wide")
  text, _ = summarize.metric_tables(rows + [again, other], "summary", "All")
  t = md_table(text, "All: busi")
  assert t["unet [unet-e]"]["DSC"] == "0.9000 ± 0.1000"
  assert t["unet [unet-w]"]["DSC"] == "0.1000"


def test_repeated_seeds_pool_into_one_group_by_series_hash():
  def seeded(seed, fold, dice):
    return row("stan", fold, seed=seed, series_hash="stan-series",
               experiment_hash=f"stan-exp-{seed}", config_hash=f"stan{seed}{fold}",
               summary=summary(dice=dice))
  runs = [seeded(0, 0, 0.8), seeded(0, 1, 0.7), seeded(1, 0, 0.6), seeded(1, 1, 0.5),
          seeded(1, 1, 0.9)]  # the rerun of seed 1, fold 1 replaces 0.5
  (g,) = summarize.group_rows(runs, "cv")
  assert g["n_seeds"] == 2 and [(r["seed"], r["fold"]) for r in g["rows"]] == [
      (0, 0), (0, 1), (1, 0), (1, 1)]
  text, csv_text = summarize.metric_tables(runs, "summary", "All")
  t = md_table(text, "All: busi")
  assert t["stan"]["DSC"] == "0.7500 ± 0.1118"  # 0.8, 0.7, 0.6, 0.9: population std
  assert t["stan"]["Folds"] == "4 (2 seeds)"
  (line,) = list(csv.DictReader(csv_text.splitlines()))
  assert line["n_folds"] == "4" and line["experiment_hash"] == "stan-series"


def test_cli_writes_files_and_rejects_missing(tmp_path, rows):
  path = str(tmp_path / "results.jsonl")
  for r in rows:
    common.append_row(path, r)
  out = tmp_path / "out"
  r = subprocess.run([sys.executable, "-m", "benchmarks.summarize", path, f"--out={out}"],
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  assert "0.7000 ± 0.1000" in r.stdout
  assert {p.name for p in out.iterdir()} >= {"summary.md", "overall.csv", "small_tumours.csv",
                                             "postprocessing.csv", "cross_dataset.csv",
                                             "dice_boxplot_busi.png", "dice_vs_time_busi.png"}
  r = subprocess.run([sys.executable, "-m", "benchmarks.summarize", str(tmp_path / "nope")],
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and "no such file" in r.stderr
