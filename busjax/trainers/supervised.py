"""Supervised segmentation training: one jitted, pure train step.

``train_step(state, images, masks) -> (state, metrics)`` augments on device,
runs the model in train mode, applies ``cfg.loss`` and one optimiser update.
The step's rng is ``fold_in(state.rng, state.step)``, so a resumed run draws
the same augmentations and dropout masks as an uninterrupted one. The state is
donated (updated in place on the accelerator).
"""
from __future__ import annotations

import functools
import math
import os
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from busjax import checkpointing, losses, metrics as metrics_lib, registry
from busjax.data import pipeline
from busjax.data import splits as splits_lib
from busjax.trainers import common


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics and the run's base rng."""
  batch_stats: Any
  rng: jax.Array


def create_train_state(cfg, model: nn.Module, rng: jax.Array) -> TrainState:
  """Initialises parameters at ``[1, S, S, 1]`` and the optimiser of ``cfg.optimizer``."""
  init_rng, state_rng = jax.random.split(rng)
  x = jnp.zeros((1, cfg.image_size, cfg.image_size, 1), jnp.float32)
  init = _cached("init", cfg, lambda: jax.jit(functools.partial(model.init, train=False)))
  variables = init({"params": init_rng, "dropout": init_rng}, x)
  return TrainState.create(apply_fn=model.apply, params=variables["params"],
                           batch_stats=variables.get("batch_stats", {}),
                           tx=common.make_optimizer(cfg.optimizer), rng=state_rng)


_JIT_CACHE: dict[tuple, Any] = {}


def _cached(kind: str, cfg, build):
  """Reuses a jitted function across runs with the same model/loss/augment config
  (a benchmark or test trains many folds in one process: compile once)."""
  key = (kind, cfg.model_name, cfg.model.to_json(sort_keys=True),
         cfg.loss.to_json(sort_keys=True), cfg.augment.to_json(sort_keys=True))
  if key not in _JIT_CACHE:
    _JIT_CACHE[key] = build()
  return _JIT_CACHE[key]


def make_train_step(cfg, model: nn.Module):
  """The jitted train step of ``model`` under ``cfg`` (loss, augmentation)."""
  return _cached("train_step", cfg, lambda: _make_train_step(cfg, model))


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
           "grad_norm": _global_norm(grads)}
    return state, out

  return jax.jit(step, donate_argnums=0)


def _global_norm(tree) -> jnp.ndarray:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def make_predict_fn(cfg, model: nn.Module):
  """Jitted ``(params, batch_stats, uint8 images [B,S,S,1]) -> probabilities [B,S,S,1]``."""
  return _cached("predict", cfg, lambda: _make_predict_fn(model))


def _make_predict_fn(model: nn.Module):

  @jax.jit
  def predict(params, batch_stats, images):
    logits, _ = model.apply({"params": params, "batch_stats": batch_stats},
                            pipeline.normalize(images), train=False)
    return jax.nn.sigmoid(logits.astype(jnp.float32))

  return predict


def predict_all(predict, state, data: pipeline.SegmentationData, batch_size: int) -> np.ndarray:
  """Probabilities of every example of ``data`` (padded last batch, one compile)."""
  out = []
  n = len(data.images)
  for b in range(0, n, batch_size):
    imgs = data.images[b:b + batch_size]
    pad = batch_size - len(imgs)
    if pad:
      imgs = np.concatenate([imgs, np.zeros((pad,) + imgs.shape[1:], imgs.dtype)])
    out.append(np.asarray(predict(state.params, state.batch_stats, imgs))[:batch_size - pad])
  return np.concatenate(out) if out else np.zeros((0,) + data.images.shape[1:], np.float32)


def validation_dice(predict, state, data: pipeline.SegmentationData, cfg) -> float:
  """Mean hard Dice at the model resolution (normal-inclusive: empty+empty = 1)."""
  probs = predict_all(predict, state, data, cfg.batch_size)
  pred = probs > cfg.threshold
  gt = data.masks > 0
  inter = (pred & gt).sum((1, 2, 3))
  denom = pred.sum((1, 2, 3)) + gt.sum((1, 2, 3))
  dice = np.where(denom == 0, 1.0, 2 * inter / np.maximum(denom, 1))
  return float(dice.mean())


class _StopRequests:
  """Catches SIGINT/SIGTERM during training: the loop finishes the step in
  flight, saves the latest checkpoint and then stops (a signal that interrupted
  a donated step mid-flight would otherwise lose the state)."""

  def __enter__(self):
    self.signum = None
    self._old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: signals stay as they are
        pass
    return self

  def _handle(self, signum, frame):
    if self.signum is not None:  # a second Ctrl-C: stop at once
      raise KeyboardInterrupt
    self.signum = signum

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
    return False


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
  from busjax import evaluate

  rdir = common.run_dir(workdir, cfg)
  os.makedirs(rdir, exist_ok=True)
  common.write_json(os.path.join(rdir, "config.json"), cfg.to_dict())
  if data is None:
    data = pipeline.load_data(cfg)
  parts = pipeline.fold_splits(data, cfg)
  splits_lib.save_splits(
      os.path.join(rdir, "splits.json"), names=data.names,
      splits=splits_lib.split_indices(data.folds, cfg.fold, cfg.num_folds),
      info=dict(dataset=cfg.dataset, num_folds=cfg.num_folds, fold=cfg.fold, seed=cfg.seed,
                fold_source=data.fold_source, include_normal_in_train=cfg.include_normal))
  model = registry.build_model(cfg)
  state = create_train_state(cfg, model, jax.random.key(cfg.seed))
  ckpt = checkpointing.Checkpoints(os.path.join(rdir, "checkpoints"), model_name=cfg.model_name,
                                   keep=cfg.keep_checkpoints)
  spe = pipeline.steps_per_epoch(len(parts["train"].images), cfg.batch_size)
  total = spe * cfg.epochs
  if cfg.max_steps:
    total = min(total, cfg.max_steps)
  plateau = common.Plateau(cfg.optimizer.learning_rate, cfg.optimizer.plateau_factor,
                           cfg.optimizer.plateau_patience, cfg.early_stopping_patience)
  meta = {"stopped_early": False}
  restored = ckpt.restore(state)
  if restored is not None:
    state, meta = restored
    plateau = common.Plateau(cfg.optimizer.learning_rate, cfg.optimizer.plateau_factor,
                             cfg.optimizer.plateau_patience, cfg.early_stopping_patience,
                             **{k: meta["plateau"][k] for k in ("best", "bad_epochs",
                                                                "lr_bad_epochs")})
    plateau.lr = meta["plateau"]["lr"]
    state = state.replace(opt_state=common.set_learning_rate(state.opt_state, plateau.lr))
  start = int(state.step)
  predict = make_predict_fn(cfg, model)
  if start < total and not meta.get("stopped_early") and not cfg.get("eval_only", False):
    if start and not quiet:
      print(f"resuming {rdir} from step {start}/{total}")
    state = _loop(cfg, model, state, parts, ckpt, plateau, predict, rdir, start, total, spe,
                  quiet)
  best = ckpt.restore(state, which="best")
  if best is None:
    raise FileNotFoundError(f"no best checkpoint under {rdir}/checkpoints/best: train first")
  ckpt.close()
  return evaluate.evaluate_run(cfg, rdir, best[0], predict, parts["test"], quiet=quiet)


def _loop(cfg, model, state, parts, ckpt, plateau, predict, rdir, start, total, spe, quiet):
  from tqdm.auto import tqdm

  train_step = make_train_step(cfg, model)
  log = common.MetricsLog(os.path.join(rdir, "metrics.jsonl"), resume_step=start)
  bar = tqdm(total=total, initial=start, desc=f"{cfg.model_name} fold {cfg.fold}",
             unit="step", disable=quiet, dynamic_ncols=True)
  pending: list = []
  step = start
  t0 = time.time()
  stop = False

  def flush():
    nonlocal pending
    if not pending:
      return
    rows = jax.device_get(pending)
    pending = []
    for s, m in rows:
      row = {"step": s, **{k: float(v) for k, v in m.items()}, "lr": plateau.lr}
      if not math.isfinite(row["loss"]):
        raise FloatingPointError(
            f"{cfg.model_name}: the training loss became {row['loss']} at step {s} "
            f"(run {rdir}); the last good checkpoint is in {rdir}/checkpoints/latest. "
            "Lower the learning rate (--set optimizer.learning_rate=...) and rerun to resume.")
      log.write(row)
    bar.set_postfix(loss=f"{row['loss']:.4f}", dice=f"{row['dice']:.3f}")

  def save(best: bool, extra: dict | None = None):
    ckpt.save(int(state.step), state, {"plateau": plateau.state(),
                                       "config_hash": common.config_hash(cfg), **(extra or {})},
              best=best)

  with _StopRequests() as stops:
    while step < total and not stop:
      epoch, offset = divmod(step, spe)
      for images, masks in pipeline.batches(parts["train"], cfg.batch_size, seed=cfg.seed,
                                            epoch=epoch, start=offset):
        state, m = train_step(state, images, masks)
        step += 1
        pending.append((step, m))
        bar.update(1)
        if step % cfg.log_every == 0:
          flush()
        if step >= total or stops.signum is not None:
          break
      flush()
      if stops.signum is not None:
        save(False)
        bar.close()
        log.close()
        print(f"\nstopped by signal {stops.signum} at step {step}; state saved in "
              f"{rdir}/checkpoints/latest. Run the same command again to resume.")
        raise KeyboardInterrupt(f"signal {stops.signum}")
      if step % spe == 0 or step >= total:  # end of an epoch: validate, checkpoint
        val = validation_dice(predict, state, parts["validation"], cfg)
        improved, stop = plateau.update(val)
        state = state.replace(opt_state=common.set_learning_rate(state.opt_state, plateau.lr))
        log.write({"step": step, "epoch": step // spe, "val_dice": val, "lr": plateau.lr,
                   "elapsed_s": time.time() - t0})
        save(improved, {"val_dice": val, "stopped_early": stop})
        bar.set_postfix_str(f"val_dice={val:.3f}")
  bar.close()
  log.close()
  return state
