"""Shared by the adversarial trainer tests (tiny configs, fake data, the checks
both GAN models run)."""
from __future__ import annotations

import json
import os
import signal

import jax
import numpy as np
import pytest
from PIL import Image

from busjax import checkpointing, registry
from busjax.data import pipeline
from busjax.trainers import adversarial
from conftest import make_fake_source


def tiny_cfg(name: str, **kw):
  cfg = registry.get_config(name, "tiny")
  cfg.dataset = "fake"
  cfg.num_folds = 4
  cfg.log_every = 1
  for k, v in kw.items():
    cfg[k] = v
  return cfg


def run_cfg(name: str):
  """The config of the end-to-end runs: the discriminators' own learning rate;
  cgan (the cheaper compile) with two discriminator updates per generator update."""
  cfg = tiny_cfg(name, max_steps=4)
  cfg.adversarial.d_learning_rate = 2e-3
  if name == "cgan_ac_caw":
    cfg.adversarial.d_steps = 2
  return cfg


def load_fake_data():
  return pipeline.load_data(tiny_cfg("unet"), source=make_fake_source())


def new_state(cfg):
  model = registry.build_model(cfg)
  adv = adversarial.make_adversary(cfg)
  return adversarial.create_gan_state(cfg, model, adv, jax.random.key(0, impl=cfg.prng_impl))


def restore(rdir, cfg):
  ckpt = checkpointing.Checkpoints(os.path.join(rdir, "checkpoints"), model_name=cfg.model_name)
  state, meta = ckpt.restore(new_state(cfg))
  ckpt.close()
  return state, meta


def host(tree):
  """numpy copies of every leaf (PRNG keys as their key data)."""
  def one(a):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      a = jax.random.key_data(a)
    return np.asarray(a)
  return jax.tree.map(one, tree)


def check_step_isolation(name: str, data) -> None:
  """Traced (no compile): every generator leaf d_step returns IS its input
  (forwarded unchanged for any input), while every discriminator's params,
  BatchNorm statistics and step are computed; and the reverse for g_step."""
  cfg = tiny_cfg(name)
  state = new_state(cfg)
  steps = adversarial.make_steps(cfg, registry.build_model(cfg))
  imgs, masks = data.images[:2], data.masks[:2]
  x, y, real, fake, drop = jax.eval_shape(steps.prepare, state, imgs, masks)
  n_state = len(jax.tree.leaves(state))
  idx = {jax.tree_util.keystr(p): i
         for i, (p, _) in enumerate(jax.tree_util.tree_flatten_with_path(state)[0])}
  g_paths = [p for p in idx if p.startswith(".generator")]
  d_paths = [p for p in idx if p.startswith(".discriminators")]
  assert len(d_paths) > 0 and len(g_paths) > 0

  def forwarded(closed, path):
    j = closed.jaxpr
    return j.outvars[idx[path]] is j.invars[idx[path]]

  def updated(path):  # params, BatchNorm statistics and the step counter
    return ".params" in path or ".batch_stats" in path or path.endswith(".step")

  d_jaxpr = jax.make_jaxpr(steps.d_step)(state, x, real, fake)
  g_jaxpr = jax.make_jaxpr(steps.g_step)(state, x, y, drop)
  for closed in (d_jaxpr, g_jaxpr):
    assert len(closed.jaxpr.invars) >= n_state and len(closed.jaxpr.outvars) >= n_state
  assert all(forwarded(d_jaxpr, p) for p in g_paths)
  assert not any(forwarded(d_jaxpr, p) for p in d_paths if updated(p))
  assert all(forwarded(g_jaxpr, p) for p in d_paths)
  assert not any(forwarded(g_jaxpr, p) for p in g_paths if updated(p))
  keys = ({f"stage{n}" for n in range(1, 5)} if name == "lpm_unet" else {"d"})
  assert set(state.discriminators) == keys


def kill_at(step_no: int, real):
  """Wraps a ``make_train_step`` so that the step reaching ``step_no`` sends SIGTERM."""
  def make(cfg_, model):
    step = real(cfg_, model)

    def wrapped(state, *a):
      out = step(state, *a)
      if int(out[0].step) == step_no:
        os.kill(os.getpid(), signal.SIGTERM)
      return out
    return wrapped
  return make


def check_stop_and_resume(name: str, tmp_path, data, monkeypatch) -> None:
  """A run stopped by SIGTERM at step 2 and resumed equals the uninterrupted run
  in every state leaf; separate optimiser states; outputs and metrics rows."""
  cfg = run_cfg(name)
  result = adversarial.train(cfg, str(tmp_path / "u"), data=data, quiet=True)
  real = adversarial.make_train_step
  monkeypatch.setattr(adversarial, "make_train_step", kill_at(2, real))
  with pytest.raises(KeyboardInterrupt):
    adversarial.train(cfg, str(tmp_path / "k"), data=data, quiet=True)
  kdir = str(tmp_path / "k" / "fake" / name / "fold_0")
  stopped, meta = restore(kdir, cfg)
  assert meta["step"] == 2 and int(stopped.step) == 2
  monkeypatch.setattr(adversarial, "make_train_step", real)
  adversarial.train(cfg, str(tmp_path / "k"), data=data, quiet=True)  # resumes at step 2

  # One compile for the three runs (a resumed state must not retrace the step).
  assert adversarial.make_train_step(cfg, registry.build_model(cfg))._cache_size() == 1
  udir = tmp_path / "u" / "fake" / name / "fold_0"
  u, mu = restore(str(udir), cfg)
  k, mk = restore(kdir, cfg)
  assert mu["step"] == mk["step"] == 4
  # Every state: generator and discriminators, parameters, statistics, optimisers, rngs.
  jax.tree.map(np.testing.assert_array_equal, host(u), host(k))
  init = new_state(cfg)
  for n in u.discriminators:  # the discriminators did train
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), u.discriminators[n].params,
                         init.discriminators[n].params)
    assert all(jax.tree.leaves(moved)), n

  # Separate optimiser states: own counts, own learning rates, own moment trees.
  d_steps = cfg.adversarial.d_steps
  g_opt = u.generator.opt_state
  assert int(u.generator.step) == int(g_opt.inner_state[0].count) == 4
  assert float(g_opt.hyperparams["learning_rate"]) == pytest.approx(cfg.optimizer.learning_rate)
  d_opts = [d.opt_state for d in u.discriminators.values()]
  assert len({id(o) for o in d_opts} | {id(g_opt)}) == len(d_opts) + 1
  for n, d in u.discriminators.items():
    assert int(d.step) == int(d.opt_state.inner_state[0].count) == 4 * d_steps
    assert float(d.opt_state.hyperparams["learning_rate"]) == pytest.approx(
        cfg.adversarial.d_learning_rate)
    assert (jax.tree.structure(d.opt_state.inner_state[0].mu) == jax.tree.structure(d.params))
  if name == "lpm_unet":
    mus = [jax.tree.leaves(d.opt_state.inner_state[0].mu)[0] for d in u.discriminators.values()]
    assert len({m.shape for m in mus}) == 1 and not np.array_equal(mus[0], mus[1])

  # Outputs: the supervised trainer's, plus losses.png; metrics with every term.
  for f in ("config.json", "splits.json", "metrics.jsonl", "eval.json", "losses.png"):
    assert (udir / f).is_file(), f
  assert list((udir / "overlays").glob("*.png"))
  assert len(json.loads((udir / "eval.json").read_text())["per_image"]) == result["num_test_images"]
  assert Image.open(udir / "losses.png").format == "PNG"
  rows = [json.loads(l) for l in open(os.path.join(kdir, "metrics.jsonl"))]
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
  expect = {"loss", "g_adv", "dice", "d_loss", "d_acc_real", "d_acc_fake", "grad_norm_g"}
  if name == "lpm_unet":
    expect |= {"g_dice"} | {f"{t}_stage{n}" for n in range(1, 5) for t in (
        "g_adv", "d_loss", "d_acc_real", "d_acc_fake", "grad_norm_d")}
  else:
    expect |= {"g_l1", "g_ssim", "grad_norm_d"}
  for r in train_rows:
    assert expect <= set(r), expect - set(r)
    assert 0.0 <= r["d_acc_real"] <= 1.0 and 0.0 <= r["d_acc_fake"] <= 1.0
    assert all(np.isfinite(r[k]) for k in expect)
  assert any("val_dice" in r for r in rows)
