"""Pieces every trainer shares: run folder, config files, optimiser, logging."""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any

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


def make_optimizer(opt_cfg) -> optax.GradientTransformation:
  """Adam/AdamW with an injectable learning rate (so plateau halving needs no recompile)."""
  name = opt_cfg.name
  if name == "adam":
    return optax.inject_hyperparams(optax.adam)(
        learning_rate=opt_cfg.learning_rate, b1=opt_cfg.b1, b2=opt_cfg.b2)
  if name == "adamw":
    return optax.inject_hyperparams(optax.adamw)(
        learning_rate=opt_cfg.learning_rate, b1=opt_cfg.b1, b2=opt_cfg.b2,
        weight_decay=opt_cfg.weight_decay)
  raise ValueError(f"unknown optimizer {name!r}; expected adam or adamw")


def set_learning_rate(opt_state, lr: float):
  """Returns ``opt_state`` (of :func:`make_optimizer`) with learning rate ``lr``."""
  hp = dict(opt_state.hyperparams)
  hp["learning_rate"] = np.asarray(lr, np.asarray(hp["learning_rate"]).dtype)
  return opt_state._replace(hyperparams=hp)


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
    rows = []
    if os.path.exists(path):
      with open(path) as f:
        for line in f:
          line = line.strip()
          if not line:
            continue
          try:
            row = json.loads(line)
          except json.JSONDecodeError:  # a line cut by a kill
            continue
          if row.get("step", 0) <= resume_step:
            rows.append(row)
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
