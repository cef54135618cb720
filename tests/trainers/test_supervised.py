"""Supervised trainer: one step, a tiny end-to-end run, resume, stop signals, bad input."""
from __future__ import annotations

import json
import os
import signal

import jax
import numpy as np
import pytest

from busjax import checkpointing, registry
from busjax.data import pipeline
from busjax.trainers import common, supervised
from conftest import make_fake_source


def tiny_cfg(**kw):
  cfg = registry.get_config("unet", "tiny")
  cfg.dataset = "fake"
  cfg.num_folds = 4
  for k, v in kw.items():
    cfg[k] = v
  return cfg


@pytest.fixture(scope="module")
def data():
  return pipeline.load_data(tiny_cfg(), source=make_fake_source())


def params_of(run_dir, cfg):
  model = registry.build_model(cfg)
  state = supervised.create_train_state(cfg, model, jax.random.key(0, impl=cfg.prng_impl))
  ckpt = checkpointing.Checkpoints(os.path.join(run_dir, "checkpoints"), model_name=cfg.model_name)
  restored, meta = ckpt.restore(state)
  ckpt.close()
  return restored.params, meta


def test_train_step_reduces_loss_and_updates_everything(data):
  cfg = tiny_cfg()
  model = registry.build_model(cfg)
  state = supervised.create_train_state(cfg, model, jax.random.key(0, impl=cfg.prng_impl))
  before = jax.device_get(state.params)
  step = supervised.make_train_step(cfg, model)
  imgs, masks = data.images[:2], data.masks[:2]
  losses = []
  for _ in range(5):
    state, m = step(state, imgs, masks)
    losses.append(float(m["loss"]))
  assert int(state.step) == 5
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, jax.device_get(state.params))
  assert all(jax.tree.leaves(changed))


def test_end_to_end_outputs(tmp_path, data):
  cfg = tiny_cfg(max_steps=3)
  result = supervised.train(cfg, str(tmp_path), data=data, quiet=True)
  rdir = tmp_path / "fake" / "unet" / "fold_0"
  for f in ("config.json", "splits.json", "metrics.jsonl", "eval.json"):
    assert (rdir / f).is_file(), f
  assert list((rdir / "overlays").glob("*.png"))
  ev = json.loads((rdir / "eval.json").read_text())
  assert set(ev["summary"]) >= {"dice", "jaccard", "tpr", "fpr", "precision", "accuracy", "aer",
                                "hd", "hd95", "ahd", "mae", "rmse", "miou_50_95"}
  assert ev["summary"]["dice"]["n"] >= 1
  assert len(ev["per_image"]) == result["num_test_images"] > 0
  splits = json.loads((rdir / "splits.json").read_text())
  all_names = splits["train"] + splits["validation"] + splits["test"]
  assert sorted(all_names) == sorted(data.names)
  assert [r["name"] for r in ev["per_image"]] == splits["test"]


def test_postprocessing_chosen_on_validation(tmp_path, data):
  from busjax import evaluate, postprocess
  cfg = tiny_cfg(max_steps=2, postprocess=True, postprocess_select=True)
  result = supervised.train(cfg, str(tmp_path), data=data, quiet=True)
  pp = result["postprocess"]
  assert pp["selected_on"] == "validation"
  scores = {float(k): v for k, v in pp["validation_dice"].items()}
  assert sorted(scores) == sorted(postprocess.SELECTION_GRID)
  assert pp["min_region_fraction"] in scores
  # The chosen criterion is one of the best on validation, recomputed here.
  state = supervised.create_train_state(cfg, registry.build_model(cfg),
                                        jax.random.key(0, impl=cfg.prng_impl))
  parts = pipeline.fold_splits(data, cfg)
  rdir = os.path.join(str(tmp_path), "fake", "unet", "fold_0")
  ckpt = checkpointing.Checkpoints(os.path.join(rdir, "checkpoints"), model_name="unet")
  best, _ = ckpt.restore(state, which="best")
  ckpt.close()
  predict = supervised.make_predict_fn(cfg, registry.build_model(cfg))
  pairs = [(p, g) for _, p, g in evaluate.original_size_probs(predict, best, parts["validation"],
                                                               cfg.batch_size)]
  f, again = postprocess.select_min_region_fraction([p for p, _ in pairs], [g for _, g in pairs])
  assert f == pp["min_region_fraction"]
  np.testing.assert_allclose([again[k] for k in sorted(again)],
                             [scores[k] for k in sorted(scores)])
  assert result["postprocessed_summary"]["dice_incl"]["n"] == result["num_test_images"]
  assert "chosen on the validation split" in evaluate.format_table(result)


def test_resume_reproduces_uninterrupted_run(tmp_path, data):
  full = tiny_cfg(max_steps=4)
  supervised.train(full, str(tmp_path / "a"), data=data, quiet=True)
  first = tiny_cfg(max_steps=2)
  supervised.train(first, str(tmp_path / "b"), data=data, quiet=True)
  supervised.train(full, str(tmp_path / "b"), data=data, quiet=True)  # resumes at step 2
  pa, ma = params_of(str(tmp_path / "a" / "fake" / "unet" / "fold_0"), full)
  pb, mb = params_of(str(tmp_path / "b" / "fake" / "unet" / "fold_0"), full)
  assert ma["step"] == mb["step"] == 4
  jax.tree.map(np.testing.assert_array_equal, pa, pb)
  rows = [json.loads(l) for l in open(tmp_path / "b" / "fake" / "unet" / "fold_0" / "metrics.jsonl")]
  steps = [r["step"] for r in rows if "loss" in r]
  assert steps == sorted(set(steps))


def _val_rows(run_dir):
  rows = common.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
  return [(r["step"], r["val_dice"]) for r in rows if "val_dice" in r]


# 12 training images, batch 2: an epoch is 6 steps. Step 3 is mid-epoch; step 6
# ends epoch 1, whose validation must not be skipped by the stop.
@pytest.mark.parametrize("kill_at", [3, 6])
def test_signal_saves_state_and_rerun_resumes(tmp_path, data, monkeypatch, kill_at):
  cfg = tiny_cfg(max_steps=0, epochs=2)
  real = supervised.make_train_step

  def killing_step(cfg_, model):
    step = real(cfg_, model)

    def wrapped(state, *a):
      out = step(state, *a)
      if int(out[0].step) == kill_at:
        os.kill(os.getpid(), signal.SIGTERM)
      return out
    return wrapped

  monkeypatch.setattr(supervised, "make_train_step", killing_step)
  with pytest.raises(KeyboardInterrupt):
    supervised.train(cfg, str(tmp_path / "k"), data=data, quiet=True)
  rdir = str(tmp_path / "k" / "fake" / "unet" / "fold_0")
  assert params_of(rdir, cfg)[1]["step"] == kill_at
  monkeypatch.setattr(supervised, "make_train_step", real)
  supervised.train(cfg, str(tmp_path / "k"), data=data, quiet=True)
  supervised.train(cfg, str(tmp_path / "u"), data=data, quiet=True)
  p_k, _ = params_of(rdir, cfg)
  udir = str(tmp_path / "u" / "fake" / "unet" / "fold_0")
  p_u, _ = params_of(udir, cfg)
  jax.tree.map(np.testing.assert_array_equal, p_k, p_u)
  assert _val_rows(rdir) == _val_rows(udir)
  assert [s for s, _ in _val_rows(udir)] == [6, 12]


def test_checkpoint_of_another_model_is_refused(tmp_path, data):
  cfg = tiny_cfg(max_steps=1)
  supervised.train(cfg, str(tmp_path), data=data, quiet=True)
  rdir = tmp_path / "fake" / "unet" / "fold_0"
  ckpt = checkpointing.Checkpoints(str(rdir / "checkpoints"), model_name="stan")
  with pytest.raises(checkpointing.CheckpointMismatchError, match="written by model 'unet'"):
    ckpt.restore({"x": np.zeros(1)})
  wider = tiny_cfg(max_steps=2)
  wider.model.width = 8
  with pytest.raises(checkpointing.CheckpointMismatchError,
                     match=r"model.width: 4 \(checkpoint\) vs 8 \(this run\)"):
    supervised.train(wider, str(tmp_path), data=data, quiet=True)
  # Without the stored identity (older checkpoints) the arrays' shapes still tell.
  state = supervised.create_train_state(wider, registry.build_model(wider),
                                        jax.random.key(0, impl=wider.prng_impl))
  ckpt = checkpointing.Checkpoints(str(rdir / "checkpoints"), model_name="unet")
  try:
    with pytest.raises(checkpointing.CheckpointMismatchError, match="does not fit"):
      ckpt.restore(state)
  finally:
    ckpt.close()


def test_nan_loss_is_a_clear_error(tmp_path, data):
  cfg = tiny_cfg(max_steps=2)
  cfg.log_every = 1
  cfg.optimizer.learning_rate = float("nan")
  with pytest.raises(FloatingPointError, match="loss became nan at step 2"):
    supervised.train(cfg, str(tmp_path), data=data, quiet=True)


def test_eval_only_without_checkpoint_fails(tmp_path, data):
  cfg = tiny_cfg()
  cfg.eval_only = True
  with pytest.raises(FileNotFoundError, match="no best checkpoint"):
    supervised.train(cfg, str(tmp_path), data=data, quiet=True)


def test_checkpoint_of_another_run_is_refused_before_anything_is_written(tmp_path, data):
  cfg = tiny_cfg(max_steps=1)
  supervised.train(cfg, str(tmp_path), data=data, quiet=True)
  rdir = tmp_path / "fake" / "unet" / "fold_0"
  kept = {f: (rdir / f).read_text() for f in ("config.json", "splits.json", "eval.json")}
  # Another seed draws other folds: its test split would hold this run's training images.
  for eval_only in (False, True):
    other = tiny_cfg(max_steps=1, seed=1, eval_only=eval_only)
    with pytest.raises(checkpointing.CheckpointMismatchError,
                       match=r"another run of 'unet': seed: 0 \(checkpoint\) vs 1 \(this run\)"):
      supervised.train(other, str(tmp_path), data=data, quiet=True)
  bigger = tiny_cfg(max_steps=1, image_size=96)  # a fully convolutional net would run
  with pytest.raises(checkpointing.CheckpointMismatchError, match="image_size: 64"):
    supervised.train(bigger, str(tmp_path), data=data, quiet=True)
  assert {f: (rdir / f).read_text() for f in kept} == kept
  # How long, how evaluated: free to change (resumes to step 2, then evaluates).
  longer = tiny_cfg(max_steps=2, threshold=0.4, num_overlays=0)
  supervised.train(longer, str(tmp_path), data=data, quiet=True)
  assert params_of(str(rdir), longer)[1]["step"] == 2
