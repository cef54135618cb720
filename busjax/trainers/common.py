"""Pieces every trainer shares: run folder, config files, optimiser, logging,
the epoch loop (validation, plateau, checkpoints, stop signals), evaluation and
the loss plot.

A trainer supplies its state and its jitted step; :func:`train_and_evaluate`
does the rest, identically for the supervised and the adversarial trainer:

* ``state.step`` is the global step; the step function is pure
  ``(state, uint8 images [B,S,S,1], uint8 masks [B,S,S,1]) -> (state, metrics)``
  with scalar metrics that include ``loss`` (and ``dice``);
* ``eval_state(state)`` is the TrainState whose ``params``/``batch_stats``
  predict masks (the state itself, or a GAN's generator);
* ``set_lr(state, lr)`` sets the learning rate the validation plateau chose.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import time
from typing import Any, Callable

import jax
import numpy as np
import optax


def run_dir(workdir: str, cfg) -> str:
  """``<workdir>/<dataset>/<model>/fold_<k>`` (the dataset's ``/`` becomes ``__``)."""
  return os.path.join(workdir, cfg.dataset.replace("/", "__"), cfg.model_name, f"fold_{cfg.fold}")


def config_hash(cfg) -> str:
  """Short hash of the config's JSON (benchmark rows and checkpoints carry it)."""
  return hashlib.sha1(cfg.to_json(sort_keys=True).encode()).hexdigest()[:12]


def write_json(path: str, obj: Any) -> None:
  """Writes strict JSON atomically (temp file + rename): a killed run never leaves
  half a file. NaN and infinities (undefined metrics) become ``null``."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(json_safe(obj), f, indent=1, allow_nan=False)
  os.replace(tmp, path)


def json_safe(x: Any) -> Any:
  """``x`` with numpy scalars/arrays as Python values and non-finite floats as None."""
  if isinstance(x, dict):
    return {k: json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [json_safe(v) for v in x]
  if isinstance(x, np.ndarray):
    return json_safe(x.tolist())
  if isinstance(x, (np.floating, float)):
    x = float(x)
    return x if math.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  return x


_OPTIMIZERS: dict[tuple, optax.GradientTransformation] = {}


def make_optimizer(opt_cfg) -> optax.GradientTransformation:
  """Adam/AdamW with an injectable learning rate (so plateau halving needs no recompile).

  The same settings return the same object: a TrainState's ``tx`` is a static
  part of its pytree structure, so a fresh ``tx`` per run would make every
  jitted step recompile for every fold (or resumed run) of one process.
  """
  name = opt_cfg.name
  key = (name, float(opt_cfg.learning_rate), float(opt_cfg.b1), float(opt_cfg.b2),
         float(opt_cfg.get("weight_decay", 0.0)))
  if key in _OPTIMIZERS:
    return _OPTIMIZERS[key]
  if name == "adam":
    tx = optax.inject_hyperparams(optax.adam)(
        learning_rate=opt_cfg.learning_rate, b1=opt_cfg.b1, b2=opt_cfg.b2)
  elif name == "adamw":
    tx = optax.inject_hyperparams(optax.adamw)(
        learning_rate=opt_cfg.learning_rate, b1=opt_cfg.b1, b2=opt_cfg.b2,
        weight_decay=opt_cfg.weight_decay)
  else:
    raise ValueError(f"unknown optimizer {name!r}; expected adam or adamw")
  _OPTIMIZERS[key] = tx
  return tx


def set_learning_rate(opt_state, lr: float):
  """Returns ``opt_state`` (of :func:`make_optimizer`) with learning rate ``lr``."""
  hp = dict(opt_state.hyperparams)
  old = hp["learning_rate"]
  new = np.asarray(lr, old.dtype)
  if isinstance(old, jax.Array):  # same placement: a numpy leaf would recompile the step
    new = jax.device_put(new, old.sharding)
  hp["learning_rate"] = new
  return opt_state._replace(hyperparams=hp)


def schedule_factor(opt_cfg, epoch: int, epochs: int) -> float:
  """Multiplier of the learning rate in ``epoch`` (0-based) of ``epochs``.

  ``opt_cfg.schedule``: ``"constant"`` (1, the papers' Adam runs) or
  ``"cosine"``: half-cosine decay per epoch from 1 to ``min_lr_fraction``
  (Loshchilov & Hutter, SGDR, without restarts). It multiplies the plateau's
  learning rate, so plateau halving and early stopping still apply.
  """
  name = opt_cfg.get("schedule", "constant")
  if name == "constant":
    return 1.0
  if name == "cosine":
    floor = float(opt_cfg.get("min_lr_fraction", 0.0))
    t = min(max(epoch / max(epochs, 1), 0.0), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
  raise ValueError(f"unknown learning-rate schedule {name!r}; expected constant or cosine")


class Plateau:
  """Host-side 'reduce LR on plateau' + early stopping on validation Dice.

  Keras' ReduceLROnPlateau/EarlyStopping semantics with ``mode='max'``: after
  ``patience`` epochs without improvement the LR is multiplied by ``factor``;
  after ``stop_patience`` epochs without improvement training stops.
  Patience 0 disables either. Its state is saved in checkpoint metadata.
  """

  def __init__(self, lr: float, factor: float, patience: int, stop_patience: int,
               best: float = -math.inf, bad_epochs: int = 0, lr_bad_epochs: int = 0):
    self.lr, self.factor, self.patience, self.stop_patience = lr, factor, patience, stop_patience
    self.best, self.bad_epochs, self.lr_bad_epochs = best, bad_epochs, lr_bad_epochs

  def update(self, value: float) -> tuple[bool, bool]:
    """Records an epoch's validation Dice; returns (improved, should_stop)."""
    improved = value > self.best
    if improved:
      self.best, self.bad_epochs, self.lr_bad_epochs = value, 0, 0
    else:
      self.bad_epochs += 1
      self.lr_bad_epochs += 1
      if self.patience and self.lr_bad_epochs >= self.patience:
        self.lr *= self.factor
        self.lr_bad_epochs = 0
    stop = bool(self.stop_patience) and self.bad_epochs >= self.stop_patience
    return improved, stop

  def state(self) -> dict:
    return dict(lr=self.lr, best=self.best, bad_epochs=self.bad_epochs,
                lr_bad_epochs=self.lr_bad_epochs)


class MetricsLog:
  """``metrics.jsonl``: one JSON row per logged step, appended and flushed.

  On resume, rows past the restored step are dropped so the file matches the
  uninterrupted run.
  """

  def __init__(self, path: str, resume_step: int):
    self.path = path
    rows = [r for r in read_jsonl(path) if r.get("step", 0) <= resume_step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    self._f = open(path, "a")

  def write(self, row: dict) -> None:
    self._f.write(json.dumps(json_safe(row), allow_nan=False) + "\n")
    self._f.flush()

  def close(self) -> None:
    self._f.close()


# ----------------------------------------------------------------------------- jitted functions

_JIT_CACHE: dict[tuple, Any] = {}


def cached(kind: str, cfg, build: Callable[[], Any], *extra: str) -> Any:
  """Reuses what ``build()`` returns (a jitted function, a module's ``apply``)
  across runs with the same model/loss/augment config and the config sections
  named in ``extra`` (a benchmark or test trains many folds in one process:
  compile once)."""
  key = (kind, cfg.model_name, cfg.model.to_json(sort_keys=True),
         cfg.loss.to_json(sort_keys=True), cfg.augment.to_json(sort_keys=True),
         *(cfg[e].to_json(sort_keys=True) for e in extra))
  if key not in _JIT_CACHE:
    _JIT_CACHE[key] = build()
  return _JIT_CACHE[key]


def global_norm(tree) -> jax.Array:
  """The L2 norm of all leaves of ``tree`` together (float32 scalar)."""
  import jax.numpy as jnp
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------- prediction


def predict_all(predict, state, data, batch_size: int) -> np.ndarray:
  """Probabilities ``[N,S,S,1]`` of every example of ``data`` (a
  :class:`busjax.data.pipeline.SegmentationData`) from ``predict(params,
  batch_stats, uint8 images)`` at ``state``'s parameters (padded last batch, one
  compile)."""
  out = []
  n = len(data.images)
  for b in range(0, n, batch_size):
    imgs = data.images[b:b + batch_size]
    pad = batch_size - len(imgs)
    if pad:
      imgs = np.concatenate([imgs, np.zeros((pad,) + imgs.shape[1:], imgs.dtype)])
    out.append(np.asarray(predict(state.params, state.batch_stats, imgs))[:batch_size - pad])
  return np.concatenate(out) if out else np.zeros((0,) + data.images.shape[1:], np.float32)


def validation_dice(predict, state, data, cfg) -> float:
  """Mean hard Dice at the model resolution (normal-inclusive: empty+empty = 1)."""
  probs = predict_all(predict, state, data, cfg.batch_size)
  pred = probs > cfg.threshold
  gt = data.masks > 0
  inter = (pred & gt).sum((1, 2, 3))
  denom = pred.sum((1, 2, 3)) + gt.sum((1, 2, 3))
  dice = np.where(denom == 0, 1.0, 2 * inter / np.maximum(denom, 1))
  return float(dice.mean())


# ----------------------------------------------------------------------------- the run


class StopRequests:
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


def prepare_run(cfg, workdir: str, data=None) -> tuple[str, Any, dict]:
  """Creates the run folder, writes ``config.json`` and ``splits.json``.

  Returns ``(run_dir, data, parts)``: the loaded :class:`SegmentationData`
  (``data`` itself when given) and its ``train``/``validation``/``test`` parts.
  """
  from busjax.data import pipeline
  from busjax.data import splits as splits_lib

  rdir = run_dir(workdir, cfg)
  os.makedirs(rdir, exist_ok=True)
  write_json(os.path.join(rdir, "config.json"), cfg.to_dict())
  if data is None:
    data = pipeline.load_data(cfg)
  parts = pipeline.fold_splits(data, cfg)
  splits_lib.save_splits(
      os.path.join(rdir, "splits.json"), names=data.names,
      splits=splits_lib.split_indices(data.folds, cfg.fold, cfg.num_folds),
      info=dict(dataset=cfg.dataset, num_folds=cfg.num_folds, fold=cfg.fold, seed=cfg.seed,
                fold_source=data.fold_source, include_normal_in_train=cfg.include_normal))
  return rdir, data, parts


def _identity(state):
  return state


def train_and_evaluate(cfg, workdir: str, *, data, quiet: bool, init_state: Callable[[], Any],
                       make_step: Callable[[], Callable], predict: Callable,
                       set_lr: Callable[[Any, float], Any],
                       eval_state: Callable[[Any], Any] = _identity) -> dict:
  """The run every trainer shares: train fold ``cfg.fold`` (resuming), then evaluate.

  Writes ``config.json``, ``splits.json``, ``checkpoints/`` (latest + best by
  validation Dice: the whole state pytree), ``metrics.jsonl``, ``losses.png``,
  ``eval.json`` and ``overlays/`` under :func:`run_dir`. Running again resumes
  from the latest checkpoint; ``cfg.eval_only`` only evaluates the best one.

  Args:
    cfg: the full config.
    workdir: the root folder of runs.
    data: an already loaded ``SegmentationData`` or None (load ``cfg.dataset``).
    quiet: no progress bar or table.
    init_state: builds the initial state (its ``step`` is the global step).
    make_step: builds the jitted ``(state, images, masks) -> (state, metrics)``
      (called only when there is training left to do).
    predict: jitted ``(params, batch_stats, uint8 images) -> probabilities``.
    set_lr: ``(state, lr) -> state`` with the plateau's learning rate.
    eval_state: the TrainState of ``state`` that ``predict`` evaluates.
  Returns:
    the ``eval.json`` dictionary.
  """
  from busjax import checkpointing, evaluate
  from busjax.data import pipeline

  ckpt = checkpointing.Checkpoints(os.path.join(run_dir(workdir, cfg), "checkpoints"),
                                   model_name=cfg.model_name, keep=cfg.keep_checkpoints,
                                   identity=checkpointing.run_identity(cfg))
  # The managers' background threads end on every way out (a NaN, a mismatch).
  try:
    ckpt.check()  # a folder of another model or run is refused before its files are rewritten
    rdir, data, parts = prepare_run(cfg, workdir, data)
    # Committed to the device like the arrays a checkpoint restores: jit caches on
    # committedness, and a mismatch recompiles the step and predict after a resume.
    state = jax.device_put(init_state(), jax.devices()[0])
    spe = pipeline.steps_per_epoch(len(parts["train"].images), cfg.batch_size)
    total = spe * cfg.epochs
    if cfg.max_steps:
      total = min(total, cfg.max_steps)
    opt = cfg.optimizer
    plateau = Plateau(opt.learning_rate, opt.plateau_factor, opt.plateau_patience,
                      cfg.early_stopping_patience)
    meta = {"stopped_early": False}
    restored = ckpt.restore(state)
    if restored is not None:
      state, meta = restored
      plateau = Plateau(opt.learning_rate, opt.plateau_factor, opt.plateau_patience,
                        cfg.early_stopping_patience,
                        **{k: meta["plateau"][k] for k in ("best", "bad_epochs", "lr_bad_epochs")})
      plateau.lr = meta["plateau"]["lr"]
    start = int(state.step)
    state = set_lr(state, plateau.lr * schedule_factor(opt, start // spe, cfg.epochs))
    if start < total and not meta.get("stopped_early") and not cfg.get("eval_only", False):
      if start and not quiet:
        print(f"resuming {rdir} from step {start}/{total}")
      try:
        state = _loop(cfg, make_step(), state, parts, ckpt, plateau,
                      lambda s: validation_dice(predict, eval_state(s), parts["validation"], cfg),
                      set_lr, rdir, start, total, spe, quiet)
      finally:
        try:
          plot_losses(os.path.join(rdir, "metrics.jsonl"), os.path.join(rdir, "losses.png"))
        except Exception as e:  # a plot must never hide the training outcome
          print(f"[busjax] could not plot {rdir}/losses.png: {type(e).__name__}: {e}")
    best = ckpt.restore(state, which="best")
    if best is None:
      raise FileNotFoundError(f"no best checkpoint under {rdir}/checkpoints/best: train first")
  finally:
    ckpt.close()
  return evaluate.evaluate_run(cfg, rdir, eval_state(best[0]), predict, parts["test"],
                               validation=parts["validation"], quiet=quiet)


def _loop(cfg, train_step, state, parts, ckpt, plateau, validate, set_lr, rdir, start, total,
          spe, quiet):
  """Epochs of ``train_step`` from step ``start`` to ``total``: logs every
  ``cfg.log_every`` steps, validates and checkpoints at each epoch's end,
  saves and raises ``KeyboardInterrupt`` after a SIGINT/SIGTERM."""
  from tqdm.auto import tqdm

  from busjax.data import pipeline

  log = MetricsLog(os.path.join(rdir, "metrics.jsonl"), resume_step=start)
  bar = tqdm(total=total, initial=start, desc=f"{cfg.model_name} fold {cfg.fold}",
             unit="step", disable=quiet, dynamic_ncols=True)
  pending: list = []
  step = start
  t0 = time.time()
  stop = False

  def lr_now() -> float:
    return plateau.lr * schedule_factor(cfg.optimizer, step // spe, cfg.epochs)

  def flush():
    nonlocal pending
    if not pending:
      return
    rows = jax.device_get(pending)
    pending = []
    for s, m in rows:
      row = {"step": s, **{k: float(v) for k, v in m.items()}, "lr": lr_now()}
      for key in ("loss", "d_loss"):
        if key in row and not math.isfinite(row[key]):
          raise FloatingPointError(
              f"{cfg.model_name}: the training {key} became {row[key]} at step {s} "
              f"(run {rdir}); the last good checkpoint is in {rdir}/checkpoints/latest. "
              "Lower the learning rate (--set optimizer.learning_rate=...) and rerun to resume.")
      log.write(row)
    bar.set_postfix({k: f"{row[k]:.4f}" for k in ("loss", "d_loss", "dice") if k in row})

  def save(best: bool, extra: dict | None = None):
    ckpt.save(int(state.step), state, {"plateau": plateau.state(),
                                       "config_hash": config_hash(cfg), **(extra or {})},
              best=best)

  try:
    with StopRequests() as stops:
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
        # A signal during an epoch's last step still gets that epoch's validation
        # and checkpoint first: the resumed run starts the next epoch, so skipping
        # them here would lose the epoch from the plateau and best-checkpoint choice.
        epoch_end = step % spe == 0 or step >= total
        if epoch_end:  # validate, checkpoint
          val = validate(state)
          improved, stop = plateau.update(val)
          state = set_lr(state, lr_now())
          log.write({"step": step, "epoch": step // spe, "val_dice": val, "lr": lr_now(),
                     "elapsed_s": time.time() - t0})
          save(improved, {"val_dice": val, "stopped_early": stop})
          bar.set_postfix_str(f"val_dice={val:.3f}")
        if stops.signum is not None:
          if not epoch_end:
            save(False)
          print(f"\nstopped by signal {stops.signum} at step {step}; state saved in "
                f"{rdir}/checkpoints/latest. Run the same command again to resume.")
          raise KeyboardInterrupt(f"signal {stops.signum}")
  finally:
    bar.close()
    log.close()
  return state


# ----------------------------------------------------------------------------- plots

# Panels of :func:`plot_losses`: title -> predicate on a metrics.jsonl key.
LOSS_PANELS: dict[str, Callable[[str], bool]] = {
    "generator / model loss terms": lambda k: k == "loss" or k.startswith("g_"),
    "discriminator losses": lambda k: k.startswith("d_loss"),
    "discriminator accuracy": lambda k: k.startswith("d_acc"),
    "validation Dice": lambda k: k == "val_dice",
}


def read_jsonl(path: str) -> list[dict]:
  """The JSON-object rows of a JSONL file (``[]`` if it does not exist); blank
  lines and lines cut by a kill are skipped."""
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:  # a line cut by a kill
        continue
      if isinstance(row, dict):
        rows.append(row)
  return rows


read_metrics = read_jsonl  # the rows of a run's metrics.jsonl


def plot_losses(metrics_path: str, out_path: str,
                panels: dict[str, Callable[[str], bool]] | None = None) -> str | None:
  """Plots the loss terms of a run's ``metrics.jsonl`` over steps into a PNG.

  One panel per entry of ``panels`` (default :data:`LOSS_PANELS`: the
  generator's or supervised model's loss terms, discriminator losses,
  discriminator accuracies, validation Dice), each with one line per matching
  key; panels without data are left out. Works for supervised runs (``loss``,
  ``val_dice``) and adversarial ones. Uses matplotlib's Agg canvas directly
  (no pyplot, no global backend change). Returns ``out_path``, or None when
  the file has no numeric rows to plot.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  rows = read_metrics(metrics_path)
  series: dict[str, tuple[list, list]] = {}
  for r in rows:
    for k, v in r.items():
      if k == "step" or not isinstance(v, (int, float)) or isinstance(v, bool):
        continue
      xs, ys = series.setdefault(k, ([], []))
      xs.append(r["step"])
      ys.append(v)
  chosen = []
  for title, pred in (panels or LOSS_PANELS).items():
    keys = sorted(k for k in series if pred(k))
    if keys:
      chosen.append((title, keys))
  if not chosen:
    return None
  fig = Figure(figsize=(5 * len(chosen), 3.6), layout="constrained")
  FigureCanvasAgg(fig)
  for i, (title, keys) in enumerate(chosen):
    ax = fig.add_subplot(1, len(chosen), i + 1)
    for k in keys:
      xs, ys = series[k]
      ax.plot(xs, ys, label=k, marker="." if len(xs) < 20 else None, linewidth=1)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  tmp = out_path + ".tmp.png"
  fig.savefig(tmp, dpi=100)
  os.replace(tmp, out_path)
  return out_path
