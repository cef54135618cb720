"""busjax.checkpointing: the run identity stored with checkpoints and its check."""
from __future__ import annotations

import numpy as np
import pytest

from busjax import checkpointing, registry


def test_run_identity_is_flat_and_leaves_out_free_fields():
  cfg = registry.get_config("unet", "tiny")
  ident = checkpointing.run_identity(cfg)
  assert ident["seed"] == 0 and ident["model.width"] == cfg.model.width
  assert ident["augment.hflip"] is True and ident["loss.name"] == cfg.loss.name
  for free in checkpointing.FREE_FIELDS:
    assert free not in ident
  assert not any(isinstance(v, dict) for v in ident.values())
  cfg.epochs, cfg.threshold, cfg.model.conv_backend = 99, 0.3, "xla"
  assert checkpointing.run_identity(cfg) == ident
  cfg.optimizer.learning_rate = 0.5
  assert checkpointing.identity_differences(ident, checkpointing.run_identity(cfg)) == [
      "optimizer.learning_rate: 0.001 (checkpoint) vs 0.5 (this run)"]
  # Fields only one side has (added or removed by another busjax version) are not compared.
  assert checkpointing.identity_differences({"a": 1, "c": [1]}, {"b": 2, "c": [1, 2]}) == [
      "c: [1] (checkpoint) vs [1, 2] (this run)"]


def test_check_refuses_another_run_and_passes_older_checkpoints(tmp_path):
  state = {"w": np.arange(3.0)}
  ckpt = checkpointing.Checkpoints(str(tmp_path / "a"), model_name="unet", identity={"seed": 0})
  ckpt.save(1, state, {}, best=True)
  ckpt.close()
  same = checkpointing.Checkpoints(str(tmp_path / "a"), model_name="unet", identity={"seed": 0})
  same.check()
  restored, meta = same.restore(state, which="best")
  same.close()
  assert meta["run_identity"] == {"seed": 0}
  np.testing.assert_array_equal(restored["w"], state["w"])
  other = checkpointing.Checkpoints(str(tmp_path / "a"), model_name="unet", identity={"seed": 1})
  with pytest.raises(checkpointing.CheckpointMismatchError, match="seed: 0 .* vs 1"):
    other.check()
  with pytest.raises(checkpointing.CheckpointMismatchError, match="another run"):
    other.restore(state)
  other.close()
  # A checkpoint written without an identity (older runs) passes on the model name.
  legacy = checkpointing.Checkpoints(str(tmp_path / "b"), model_name="unet")
  legacy.save(1, state, {})
  legacy.close()
  now = checkpointing.Checkpoints(str(tmp_path / "b"), model_name="unet", identity={"seed": 1})
  now.check()
  assert now.restore(state) is not None
  now.close()
