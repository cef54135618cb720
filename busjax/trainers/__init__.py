"""Trainers by registry kind. ``run(cfg, workdir)`` trains and evaluates one fold."""
from __future__ import annotations

from busjax import registry


def run(cfg, workdir: str, **kwargs) -> dict:
  """Trains ``cfg.model_name`` with the trainer its registration names."""
  from busjax.trainers import supervised
  kind = registry.get_model(cfg.model_name).trainer
  if kind == "supervised":
    return supervised.train(cfg, workdir, **kwargs)
  if kind == "adversarial":
    try:
      from busjax.trainers import adversarial
    except ImportError:
      print(f"[busjax] {cfg.model_name}: the adversarial trainer has not landed yet; "
            "training the generator with its supervised loss alone.")
      return supervised.train(cfg, workdir, **kwargs)
    return adversarial.train(cfg, workdir, **kwargs)
  raise NotImplementedError(f"trainer {kind!r} of model {cfg.model_name!r} is not implemented yet")
