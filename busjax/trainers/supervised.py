"""Supervised segmentation training: one jitted, pure train step.

``train_step(state, images, masks) -> (state, metrics)`` augments on device,
runs the model in train mode, applies ``cfg.loss`` and one optimiser update.
The step's rng is ``fold_in(state.rng, state.step)``, so a resumed run draws
the same augmentations and dropout masks as an uninterrupted one. The state is
donated (updated in place on the accelerator). The run around the step (data,
splits, epoch loop, validation, checkpoints, stop signals, evaluation) is
:func:`busjax.trainers.common.train_and_evaluate`, shared with the adversarial
trainer.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.training import train_state

from busjax import losses, metrics as metrics_lib, registry
from busjax.data import pipeline
from busjax.trainers import common

# Re-exported: busjax.evaluate and the benchmarks predict through these.
predict_all = common.predict_all
validation_dice = common.validation_dice


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics and the run's base rng."""
  batch_stats: Any
  rng: jax.Array


def create_train_state(cfg, model: nn.Module, rng: jax.Array) -> TrainState:
  """Initialises parameters at ``[1, S, S, 1]`` and the optimiser of ``cfg.optimizer``."""
  init_rng, state_rng = jax.random.split(rng)
  x = jnp.zeros((1, cfg.image_size, cfg.image_size, 1), jnp.float32)
  init = common.cached("init", cfg, lambda: jax.jit(functools.partial(model.init, train=False)))
  variables = init({"params": init_rng, "dropout": init_rng}, x)
  # One apply_fn and tx object per config: both are static parts of the state's
  # pytree structure, and fresh ones would recompile the jitted step every run.
  return strong_step(TrainState.create(
      apply_fn=common.cached("apply", cfg, lambda: model.apply), params=variables["params"],
      batch_stats=variables.get("batch_stats", {}), tx=common.make_optimizer(cfg.optimizer),
      rng=state_rng))


def strong_step(state: TrainState) -> TrainState:
  """``state`` with its step as an int32 array, not the weakly typed Python 0 of
  ``TrainState.create``: a checkpoint restores a strongly typed int32, and a
  weak/strong mismatch would recompile the jitted step after every resume."""
  return state.replace(step=jnp.asarray(state.step, jnp.int32))


def set_learning_rate(state: TrainState, lr: float) -> TrainState:
  """``state`` with its optimiser's (injected) learning rate set to ``lr``."""
  return state.replace(opt_state=common.set_learning_rate(state.opt_state, lr))


def make_train_step(cfg, model: nn.Module):
  """The jitted train step of ``model`` under ``cfg`` (loss, augmentation)."""
  return common.cached("train_step", cfg, lambda: _make_train_step(cfg, model))


def _make_train_step(cfg, model: nn.Module):

  def step(state: TrainState, images: jnp.ndarray, masks: jnp.ndarray):
    rng = jax.random.fold_in(state.rng, state.step)
    aug_rng, drop_rng = jax.random.split(rng)
    images, masks = pipeline.augment(aug_rng, images, masks, cfg.augment)
    x = pipeline.normalize(images)
    y = masks.astype(jnp.float32)

    def loss_fn(params):
      (logits, aux), new_vars = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, x, train=True,
          rngs={"dropout": drop_rng}, mutable=["batch_stats"])
      return losses.segmentation_loss(cfg.loss, logits, aux, y), (logits, new_vars)

    (loss, (logits, new_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=new_vars.get("batch_stats", {}))
    out = {"loss": loss, "dice": jnp.mean(metrics_lib.batch_dice(logits, y)),
           "grad_norm": common.global_norm(grads)}
    return state, out

  return jax.jit(step, donate_argnums=0)


def make_predict_fn(cfg, model: nn.Module):
  """Jitted ``(params, batch_stats, uint8 images [B,S,S,1]) -> probabilities [B,S,S,1]``."""
  return common.cached("predict", cfg, lambda: _make_predict_fn(model))


def _make_predict_fn(model: nn.Module):

  @jax.jit
  def predict(params, batch_stats, images):
    logits, _ = model.apply({"params": params, "batch_stats": batch_stats},
                            pipeline.normalize(images), train=False)
    return jax.nn.sigmoid(logits.astype(jnp.float32))

  return predict


def train(cfg, workdir: str, *, data=None, quiet: bool = False) -> dict:
  """Trains ``cfg.model_name`` on fold ``cfg.fold`` (resuming if possible), then evaluates.

  Args:
    cfg: the full config (``busjax.registry.get_config`` plus overrides).
    workdir: the root folder; the run lives in ``common.run_dir(workdir, cfg)``.
    data: an already loaded :class:`pipeline.SegmentationData` (benchmarks reuse it).
    quiet: no progress bar or table (tests, benchmarks).
  Returns:
    the ``eval.json`` dictionary.
  """
  model = registry.build_model(cfg)
  return common.train_and_evaluate(
      cfg, workdir, data=data, quiet=quiet,
      init_state=lambda: create_train_state(cfg, model, jax.random.key(cfg.seed,
                                                                       impl=cfg.prng_impl)),
      make_step=lambda: make_train_step(cfg, model),
      predict=make_predict_fn(cfg, model), set_lr=set_learning_rate)
