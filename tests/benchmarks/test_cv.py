"""benchmarks.cv: two models x two folds on fake data, cross-dataset rows, resume."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

import busjax.trainers
from benchmarks import common, cv
from conftest import make_fake_source

OVERRIDES = ["unet:model.depth=2"]  # a shallower U-Net compiles faster


@pytest.fixture(scope="module")
def sources():
  return {"fake_a": make_fake_source(24, seed=0), "fake_b": make_fake_source(8, seed=1)}


def _kwargs(tmp_path, sources, models, folds, log):
  return dict(models=models, dataset="fake_a", num_folds=4, folds=folds,
              test_datasets=["fake_b"], schedule="tiny", overrides=OVERRIDES,
              workdir=str(tmp_path / "runs"), results=str(tmp_path / "results.jsonl"),
              sources=sources, timing_repeats=2, log=log)


@pytest.mark.parametrize("models", [
    ["unet"],
    pytest.param(["unet", "stan"], marks=pytest.mark.slow),  # ~2 min on a contended 2-core CPU
])
def test_cv_rows_resume_and_cross_dataset(tmp_path, sources, monkeypatch, models):
  calls = []
  real_run = busjax.trainers.run

  def counting_run(cfg, workdir, **kw):
    calls.append((cfg.model_name, cfg.fold))
    return real_run(cfg, workdir, **kw)

  monkeypatch.setattr(busjax.trainers, "run", counting_run)
  lines: list[str] = []
  kw = _kwargs(tmp_path, sources, models, [0, 1], lines.append)
  rows = cv.run_benchmark(**kw)
  n = len(models)

  # Every (model, fold) trained once, through busjax.trainers.run; one cv and one cross row each.
  assert sorted(calls) == sorted((m, f) for m in models for f in (0, 1))
  assert len(rows) == 4 * n
  assert common.read_rows(kw["results"]) == rows
  assert sum(r["kind"] == "cv" for r in rows) == sum(r["kind"] == "cross" for r in rows) == 2 * n
  for r in rows:
    assert r["dataset"] == r["train_dataset"] == "fake_a" and r["num_folds"] == 4
    assert r["device_kind"] and r["platform"] == "cpu" and r["jax_version"] and r["flax_version"]
    assert r["params"] > 0 and r["wall_s"] > 0 and r["inference_ms_per_image"] > 0
    assert len(r["config_hash"]) == 12 and r["train_images"] > 0
    assert len(r["per_image"]["dice"]) == r["test_images"]
    assert set(r["summary"]) >= {"dice", "jaccard", "tpr", "fpr", "aer", "hd", "mae"}
    assert "small_tumour_summary" in r

  cv_rows = [r for r in rows if r["kind"] == "cv"]
  for r in cv_rows:
    assert r["test_dataset"] == "fake_a"
    ev = json.loads(open(os.path.join(r["run_dir"], "eval.json")).read())
    assert r["summary"] == ev["summary"]  # the row carries the run's own evaluation
    assert r["per_image"]["name"] == [p["name"] for p in ev["per_image"]]
  # The folds' test sets are disjoint, and each model saw the same ones.
  names = {(r["model"], r["fold"]): set(r["per_image"]["name"]) for r in cv_rows}
  assert not names[("unet", 0)] & names[("unet", 1)]
  assert all(names[(m, f)] == names[("unet", f)] for m in models for f in (0, 1))
  # Folds of one model share an experiment hash; models and folds differ in config hash.
  assert len({r["experiment_hash"] for r in cv_rows if r["model"] == "unet"}) == 1
  assert len({r["config_hash"] for r in cv_rows}) == 2 * n

  for r in (r for r in rows if r["kind"] == "cross"):
    assert r["test_dataset"] == "fake_b" and r["test_images"] == len(sources["fake_b"])
    assert os.path.isfile(os.path.join(r["run_dir"], "eval.json"))
    assert r["run_dir"].endswith(os.path.join(f"fold_{r['fold']}", "cross", "fake_b"))

  progress = [s for s in lines if s.startswith("[") and "ETA" in s]
  assert len(progress) == 4 * n
  assert re.search(r"0 left, ETA 0:00:00$", progress[-1])

  # Resume: a cut last line (a killed run) is ignored, finished cells are skipped.
  with open(kw["results"], "a") as f:
    f.write('{"kind": "cv", "model": "unet", "fo')
  calls.clear()
  assert cv.run_benchmark(**kw) == []
  assert calls == []
  # Asking for one more fold trains only that fold's cells.
  new = cv.run_benchmark(**_kwargs(tmp_path, sources, models, [0, 1, 2], lines.append))
  assert sorted(calls) == [(m, 2) for m in sorted(models)]
  assert sorted((r["model"], r["kind"], r["fold"]) for r in new) == sorted(
      (m, k, 2) for m in models for k in ("cv", "cross"))
  assert len(common.read_rows(kw["results"])) == 6 * n  # the cut line did not swallow a row


def test_plan_and_errors():
  plan = cv.plan_cells(["unet"], dataset="a", num_folds=3, folds=[2], test_datasets=["b", "a"],
                       schedule="tiny")
  assert [(c.kind, c.train_dataset, c.test_dataset, c.fold) for c, _, _ in plan] == [
      ("cv", "a", "a", 2), ("cross", "a", "b", 2)]
  cfg = plan[0][1]
  assert cfg.dataset == "a" and cfg.fold == 2 and cfg.num_folds == 3 and cfg.variant == "tiny"
  with pytest.raises(KeyError, match="unknown model"):
    cv.plan_cells(["nope"], dataset="a", num_folds=3)
  with pytest.raises(ValueError, match="out of range"):
    cv.plan_cells(["unet"], dataset="a", num_folds=3, folds=[3])
  # Per-model overrides: a prefixed key reaches only its model.
  plan = cv.plan_cells(["unet", "stan"], dataset="a", num_folds=3, folds=[0], schedule="tiny",
                       overrides=["unet:model.width=6", "epochs=3"])
  (_, unet, _), (_, stan, _) = plan
  assert unet.model.width == 6 and stan.model.width != 6 and unet.epochs == stan.epochs == 3
  with pytest.raises(KeyError, match="depth"):
    cv.plan_cells(["stan"], dataset="a", num_folds=3, overrides=["model.depth=2"])
  # Repeated seeds: one cell per seed and fold, each in its own folder.
  plan = cv.plan_cells(["unet"], dataset="a", num_folds=3, folds=[0, 1], seeds=[3, 4],
                       schedule="tiny")
  assert [(c.seed, c.fold, cfg.seed) for c, cfg, _ in plan] == [
      (3, 0, 3), (3, 1, 3), (4, 0, 4), (4, 1, 4)]
  assert plan[0][0].workdir("w") == os.path.join("w", "seed_3")
  assert "fold 1 seed 4" in plan[-1][0].describe()
  assert cv.series_hash(plan[0][1]) == cv.series_hash(plan[-1][1])
  assert cv.experiment_hash(plan[0][1]) != cv.experiment_hash(plan[-1][1])
  with pytest.raises(ValueError, match="not both"):
    cv.plan_cells(["unet"], dataset="a", num_folds=3, seed=1, seeds=[1, 2])
  with pytest.raises(ValueError, match="distinct"):
    cv.plan_cells(["unet"], dataset="a", num_folds=3, seeds=[1, 1])


def test_seeds_repeat_cells_in_their_own_folders(tmp_path, sources):
  kw = dict(models=["unet"], dataset="fake_a", num_folds=4, folds=[0], schedule="tiny",
            overrides=OVERRIDES, workdir=str(tmp_path / "runs"),
            results=str(tmp_path / "results.jsonl"), sources=sources, timing_repeats=1,
            log=lambda s: None)
  rows = cv.run_benchmark(**kw, seeds=[0, 1])
  assert [r["seed"] for r in rows] == [0, 1]
  assert len({r["series_hash"] for r in rows}) == 1
  assert len({r["experiment_hash"] for r in rows}) == 2
  for r in rows:
    assert r["run_dir"] == os.path.join(str(tmp_path / "runs"), f"seed_{r['seed']}", "fake_a",
                                        "unet", "fold_0")
  # The seed draws the folds: the two test splits differ.
  assert set(rows[0]["per_image"]["name"]) != set(rows[1]["per_image"]["name"])
  assert cv.run_benchmark(**kw, seeds=[0, 1]) == []  # both already in the results


def test_append_row_is_one_valid_line_per_row(tmp_path):
  path = str(tmp_path / "r.jsonl")
  common.append_row(path, {"a": 1, "x": float("nan"), "v": np.float32(0.5)})
  with open(path, "a") as f:
    f.write('{"cut": ')  # a kill mid-write
  common.append_row(path, {"a": 2})
  assert common.read_rows(path) == [{"a": 1, "x": None, "v": 0.5}, {"a": 2}]


def test_parse_manual_dirs():
  assert cv.parse_manual_dirs(["busi=/d/BUSI", "/d/x"], "busbra") == {
      "busi": "/d/BUSI", "busbra": "/d/x"}


def test_a_folder_of_another_run_ends_the_command_with_one_line(tmp_path, sources, capsys):
  from busjax import checkpointing
  kw = dict(dataset="fake_a", num_folds=4, folds=[0], schedule="tiny", overrides=OVERRIDES,
            workdir=str(tmp_path / "runs"), results=str(tmp_path / "results.jsonl"),
            sources=sources, timing_repeats=1, log=lambda s: None)
  (_, cfg, _), = cv.plan_cells(["unet"], dataset="fake_a", num_folds=4, folds=[0],
                               schedule="tiny", overrides=OVERRIDES)
  ckpt_dir = os.path.join(str(tmp_path / "runs"), "fake_a", "unet", "fold_0", "checkpoints")
  ckpt = checkpointing.Checkpoints(ckpt_dir, model_name="unet",
                                   identity={**checkpointing.run_identity(cfg), "seed": 9})
  ckpt.save(1, {"w": np.zeros(2)}, {})
  ckpt.close()
  with pytest.raises(SystemExit) as exit_info:
    cv.run_or_exit(["unet"], **kw)
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert "\nerror: checkpoint " in "\n" + err.split("\r")[-1].lstrip()
  assert "seed: 9 (checkpoint) vs 0 (this run)" in err and "Traceback" not in err
  assert str(tmp_path / "results.jsonl") in err
  assert not os.path.exists(tmp_path / "results.jsonl")
