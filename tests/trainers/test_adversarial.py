"""Adversarial trainer, lpm_unet (Li et al., MICCAI 2023): step isolation, beta = 0
against the supervised deep-supervision step, separate optimiser states,
stop-and-resume, outputs; the loss plot and dispatch. cgan_ac_caw:
test_adversarial_cgan.py (one file per model keeps each under 2 minutes on 2 cores)."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from busjax import registry, trainers
from busjax.trainers import adversarial, common, supervised
from gan_test_utils import (check_step_isolation, check_stop_and_resume, load_fake_data,
                            new_state, tiny_cfg)

MODELS = ("lpm_unet", "cgan_ac_caw")


@pytest.fixture(scope="module")
def data():
  return load_fake_data()


def test_d_step_and_g_step_touch_only_their_networks(data):
  check_step_isolation("lpm_unet", data)


def test_stop_and_resume_reproduces_uninterrupted_run(tmp_path, data, monkeypatch):
  check_stop_and_resume("lpm_unet", tmp_path, data, monkeypatch)


def test_lpm_generator_update_with_beta_zero_equals_supervised_step(data):
  """beta = 0: prepare + g_step (the adversarial step's generator half) gives the
  supervised deep-supervision step's parameters, BatchNorm statistics and Adam
  state, from the same state and batch (same step rng, augmentation included)."""
  cfg = tiny_cfg("lpm_unet")
  cfg.adversarial.beta = 0.0
  model = registry.build_model(cfg)
  state = new_state(cfg)
  # Step 3: the step rng is fold_in(rng, 3) in both trainers.
  state = state.replace(generator=state.generator.replace(step=jnp.asarray(3)))
  imgs, masks = data.images[2:4], data.masks[2:4]
  steps = adversarial.make_steps(cfg, model)

  @jax.jit
  def generator_update(state, imgs, masks):
    x, y, _, _, drop = steps.prepare(state, imgs, masks)
    return steps.g_step(state, x, y, drop)

  gan, m = generator_update(state, imgs, masks)
  gan = jax.device_get(gan.generator)
  sup, sm = supervised.make_train_step(cfg, model)(state.generator, imgs, masks)  # donates
  sup = jax.device_get(sup)
  assert float(m["g_adv"]) != 0.0  # the adversarial term is computed, weighted by 0
  np.testing.assert_array_equal(m["loss"], sm["loss"])
  for field in ("params", "batch_stats", "opt_state", "step"):
    jax.tree.map(np.testing.assert_array_equal, getattr(gan, field), getattr(sup, field))
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), gan.params,
                         jax.device_get(new_state(cfg).generator.params))
  assert all(jax.tree.leaves(changed))


def test_lpm_shared_discriminator_optimizer_option():
  cfg = tiny_cfg("lpm_unet")
  cfg.adversarial.separate_d_optimizers = False
  state = new_state(cfg)
  assert list(state.discriminators) == ["d"]
  assert sorted(state.discriminators["d"].params) == ["stage1", "stage2", "stage3", "stage4"]
  sep = new_state(tiny_cfg("lpm_unet"))
  # Same initial weights either way: the per-stage states are subtrees of one init.
  for k in sep.discriminators:
    jax.tree.map(np.testing.assert_array_equal, sep.discriminators[k].params,
                 state.discriminators["d"].params[k])


def test_plot_losses_supervised_rows(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": s, "loss": 1.0 / s, "dice": 0.1, "lr": 1e-3} for s in range(1, 6)]
  rows.append({"step": 5, "epoch": 1, "val_dice": 0.4, "lr": 1e-3})
  # The last line was cut by a kill: skipped.
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')
  out = common.plot_losses(str(path), str(tmp_path / "losses.png"))
  img = Image.open(out)
  assert img.format == "PNG" and img.size == (1000, 360)  # two panels: loss, val_dice
  (tmp_path / "empty.jsonl").write_text("")
  assert common.plot_losses(str(tmp_path / "empty.jsonl"), str(tmp_path / "x.png")) is None
  assert not (tmp_path / "x.png").exists()


def test_run_dispatches_adversarial_models(monkeypatch):
  calls = []
  monkeypatch.setattr(adversarial, "train", lambda cfg, workdir, **kw: calls.append(
      cfg.model_name) or {"ok": True})
  for name in MODELS:
    assert trainers.run(tiny_cfg(name), "/nonexistent") == {"ok": True}
  assert calls == list(MODELS)
