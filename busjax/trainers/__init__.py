"""Trainers by registry kind. ``run(cfg, workdir)`` trains and evaluates one fold."""
from __future__ import annotations

from busjax import registry


def run(cfg, workdir: str, **kwargs) -> dict:
  """Trains ``cfg.model_name`` with the trainer its registration names."""
  kind = registry.get_model(cfg.model_name).trainer
  if kind == "supervised":
    from busjax.trainers import supervised
    return supervised.train(cfg, workdir, **kwargs)
  if kind == "adversarial":
    from busjax.trainers import adversarial
    return adversarial.train(cfg, workdir, **kwargs)
  raise NotImplementedError(f"trainer {kind!r} of model {cfg.model_name!r} is not implemented yet")
