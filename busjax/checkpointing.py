"""Orbax checkpoints: the latest state (resume) and the best by validation Dice.

Layout under ``<run>/checkpoints/``: ``latest/<step>/`` and ``best/<step>/``,
each holding ``state`` (the whole train-state pytree: parameters, batch
statistics, every optimizer state, rng, step) and ``meta`` (JSON: model name,
config hash, the run's identity (:func:`run_identity`), epoch, host-side
schedule state, validation Dice). Orbax writes each checkpoint to a temporary
folder and renames it when complete, so a run killed mid-save leaves the
previous checkpoint intact.

A run folder belongs to one run: resuming or evaluating it with another seed,
fold, image size, loss, ... would mix two runs' numbers silently (another seed
draws other folds, so its test split holds the checkpoint's training images).
:meth:`Checkpoints.check` refuses that before anything is written.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """A checkpoint written by another model (or an incompatible config)."""


# Config fields a resumed or re-evaluated run may change: how long it trains
# (a resumed run continues to the new length), how it is validated, evaluated
# and logged, where the data lies, and which kernels compute the same function.
# Every other field defines the run.
FREE_FIELDS = frozenset({
    "epochs", "max_steps", "early_stopping_patience", "eval_every_epochs", "eval_only",
    "threshold", "postprocess", "postprocess_select", "num_overlays", "log_every",
    "keep_checkpoints", "data_dir", "manual_dir", "model.conv_backend"})


def run_identity(cfg) -> dict[str, Any]:
  """The config fields that define a run (all but :data:`FREE_FIELDS`), flat
  (``{"model.width": 16, "seed": 0, ...}``) and JSON-normalised (tuples become
  lists), as stored in every checkpoint's ``meta``."""
  flat: dict[str, Any] = {}

  def walk(prefix: str, d: Mapping[str, Any]) -> None:
    for k, v in d.items():
      key = f"{prefix}{k}"
      if isinstance(v, Mapping):
        walk(key + ".", v)
      elif key not in FREE_FIELDS:
        flat[key] = v

  walk("", cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
  return json.loads(json.dumps(flat, sort_keys=True))


def identity_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  """``["seed: 0 (checkpoint) vs 1 (this run)", ...]`` for every field both
  have with different values. A field only one side has is not compared: a
  newer busjax adds config fields (with defaults that keep the old behaviour)
  and must still resume and evaluate older runs."""
  return [f"{k}: {json.dumps(saved[k])} (checkpoint) vs {json.dumps(current[k])} (this run)"
          for k in sorted(set(saved) & set(current)) if saved[k] != current[k]]


class Checkpoints:
  """Latest + best checkpoint managers of one run directory.

  ``identity`` (:func:`run_identity` of the run's config) is stored with every
  checkpoint and compared on :meth:`check` and :meth:`restore`; None skips the
  comparison (tools that only read a checkpoint).
  """

  def __init__(self, directory: str, *, model_name: str, keep: int = 1,
               identity: Mapping[str, Any] | None = None):
    directory = os.path.abspath(directory)
    self.model_name = model_name
    self.identity = None if identity is None else dict(identity)
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
    if self.identity is not None:
      meta["run_identity"] = self.identity
    managers = [self.latest] + ([self.best] if best else [])
    for m in managers:
      m.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(meta)), force=True)
      m.wait_until_finished()

  def restore(self, state_like: Any, *, which: str = "latest") -> tuple[Any, dict] | None:
    """Restores into the structure of ``state_like``; ``None`` if there is no checkpoint.

    Raises ``CheckpointMismatchError`` naming the folder when the checkpoint
    belongs to another model or another run (see :meth:`check`), or its
    arrays do not fit this model.
    """
    found = self._meta(which)
    if found is None:
      return None
    m, step, path, meta = found
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    try:
      restored = m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except (ValueError, KeyError) as e:
      raise CheckpointMismatchError(
          f"checkpoint {path} does not fit model {self.model_name!r} with this config "
          f"(different widths or options?): {e}") from e
    return restored["state"], meta

  def check(self) -> None:
    """Raises ``CheckpointMismatchError`` when the latest or best checkpoint
    belongs to another model or another run (reads only their ``meta``).
    Checkpoints written before the run identity was stored pass on the model
    name alone."""
    for which in ("latest", "best"):
      self._meta(which)

  def _meta(self, which: str):
    """``(manager, step, path, meta)`` of the ``which`` checkpoint after the
    model and run checks, or None without one."""
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
    saved = meta.get("run_identity")
    if self.identity is not None and saved is not None:
      diff = identity_differences(saved, self.identity)
      if diff:
        raise CheckpointMismatchError(
            f"checkpoint {path} belongs to another run of {self.model_name!r}: "
            + "; ".join(diff) + ". Resuming or evaluating it would mix the two runs (another "
            "seed or fold also draws another test split). Use another --workdir, or delete "
            "that run folder to start over.")
    return m, step, path, meta

  def close(self) -> None:
    self.latest.close()
    self.best.close()
