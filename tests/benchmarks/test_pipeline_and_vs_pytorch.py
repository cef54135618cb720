"""benchmarks.pipeline rates and benchmarks.vs_pytorch's rows, table and skip path."""
from __future__ import annotations

import math

import pytest

from benchmarks import common, pipeline, vs_pytorch


def test_pipeline_row(fake_source):
  cfg = common.build_config("unet", schedule="tiny", overrides=["model.depth=2"], batch_size=2)
  row = pipeline.measure(cfg, source=fake_source, max_examples=10, repeats=2, train_steps=2)
  assert row["examples"] == 10
  for k in ("read_images_per_s", "batch_images_per_s", "augment_images_per_s",
            "pipeline_images_per_s", "train_images_per_s", "per_step_over_train"):
    assert math.isfinite(row[k]) and row[k] > 0, k
  # The steady-state rate is the harmonic combination of its two stages.
  assert row["pipeline_images_per_s"] < min(row["batch_images_per_s"], row["augment_images_per_s"])


def _jax_row(params=100):
  return {"image_size": 128, "batch_size": 4, "params": params, "compile_s": 5.0,
          "train_images_per_s": 3.0, "infer_images_per_s": 12.0, "device_kind": "cpu",
          "platform": "cpu", "jax_version": "x", "flax_version": "y"}


def test_vs_pytorch_rows_and_table():
  torch_row = {"params": 100, "train_images_per_s": 2.0, "infer_images_per_s": 16.0}
  row = vs_pytorch.compare_row(_jax_row(), torch_row, width=16)
  assert row["train_ratio"] == pytest.approx(1.5) and row["infer_ratio"] == pytest.approx(0.75)
  skipped = vs_pytorch.compare_row(_jax_row(), None, width=64)
  assert skipped["train_ratio"] is None
  md = vs_pytorch.table([row, skipped])
  assert "| 16 | 128 | 4 | 100 | 3.00 | 2.00 | 1.50x | 12.00 | 16.00 | 0.75x | 5.0 |" in md
  assert md.count("skipped") == 4
  with pytest.raises(ValueError, match="not the same network"):
    vs_pytorch.compare_row(_jax_row(params=101), torch_row, width=16)


def test_vs_pytorch_peer_overrides_build_a_dice_config():
  cfg = common.build_config("unet", overrides=["model.width=8", *vs_pytorch.PEER_OVERRIDES])
  assert dict(cfg.loss) == {"name": "dice"} and cfg.augment.shift == 0.0
  assert cfg.optimizer.learning_rate == 1e-4 and cfg.optimizer.schedule == "constant"
