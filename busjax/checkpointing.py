"""Orbax checkpoints: the latest state (resume) and the best by validation Dice.

Layout under ``<run>/checkpoints/``: ``latest/<step>/`` and ``best/<step>/``,
each holding ``state`` (the whole train-state pytree: parameters, batch
statistics, every optimizer state, rng, step) and ``meta`` (JSON: model name,
config hash, epoch, host-side schedule state, validation Dice). Orbax writes
each checkpoint to a temporary folder and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """A checkpoint written by another model (or an incompatible config)."""


class Checkpoints:
  """Latest + best checkpoint managers of one run directory."""

  def __init__(self, directory: str, *, model_name: str, keep: int = 1):
    directory = os.path.abspath(directory)
    self.model_name = model_name
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                        enable_async_checkpointing=False)
    self.latest = ocp.CheckpointManager(os.path.join(directory, "latest"), options=opts)
    self.best = ocp.CheckpointManager(
        os.path.join(directory, "best"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             enable_async_checkpointing=False))

  def save(self, step: int, state: Any, meta: dict, *, best: bool = False) -> None:
    """Saves ``state`` with ``meta`` as the latest (and, if ``best``, the best) checkpoint."""
    meta = {**meta, "model_name": self.model_name, "step": int(step)}
    managers = [self.latest] + ([self.best] if best else [])
    for m in managers:
      m.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(meta)), force=True)
      m.wait_until_finished()

  def restore(self, state_like: Any, *, which: str = "latest") -> tuple[Any, dict] | None:
    """Restores into the structure of ``state_like``; ``None`` if there is no checkpoint.

    Raises ``CheckpointMismatchError`` naming the folder when the checkpoint
    belongs to another model or its arrays do not fit this model.
    """
    m = self.latest if which == "latest" else self.best
    step = m.latest_step()
    if step is None:
      return None
    path = os.path.join(str(m.directory), str(step))
    meta = m.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if meta.get("model_name") != self.model_name:
      raise CheckpointMismatchError(
          f"checkpoint {path} was written by model {meta.get('model_name')!r}, not "
          f"{self.model_name!r}: use another --workdir or delete that folder")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    try:
      restored = m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except (ValueError, KeyError) as e:
      raise CheckpointMismatchError(
          f"checkpoint {path} does not fit model {self.model_name!r} with this config "
          f"(different widths or options?): {e}") from e
    return restored["state"], meta

  def close(self) -> None:
    self.latest.close()
    self.best.close()
