"""Command-line contract: unknown names exit 2 with the valid list; --set overrides;
a run folder of another run is a one-line error."""
from __future__ import annotations

import subprocess
import sys

import pytest

from busjax import main, registry


def _run(*args):
  return subprocess.run([sys.executable, "-m", "busjax.main", *args], capture_output=True,
                        text=True, timeout=300)


def test_unknown_model_exits_2_with_list():
  r = _run("--model=nope")
  assert r.returncode == 2
  assert "unknown model 'nope'" in r.stderr and "unet" in r.stderr


def test_unknown_dataset_exits_2_with_list():
  r = _run("--model=unet", "--dataset=nope")
  assert r.returncode == 2
  assert "busbra" in r.stderr and "synthetic_bus" in r.stderr


def test_folder_of_another_run_exits_1_without_traceback(tmp_path):
  import numpy as np

  from busjax import checkpointing
  ckpt_dir = tmp_path / "synthetic_bus" / "unet" / "fold_0" / "checkpoints"
  identity = {**checkpointing.run_identity(registry.get_config("unet", "tiny")), "seed": 7}
  ckpt = checkpointing.Checkpoints(str(ckpt_dir), model_name="unet", identity=identity)
  ckpt.save(1, {"w": np.zeros(2)}, {})
  ckpt.close()
  r = _run("--model=unet", "--schedule=tiny", f"--workdir={tmp_path}")
  assert r.returncode == 1, r.stderr[-2000:]
  assert ("belongs to another run of 'unet': seed: 7 (checkpoint) vs 0 (this run). "
          "Resuming") in r.stderr
  assert "Traceback" not in r.stderr
  assert not (ckpt_dir.parent / "config.json").exists()  # refused before writing


def test_set_overrides_typed_fields():
  cfg = registry.get_config("unet", "default")
  main.apply_overrides(cfg, ["model.width=8", "optimizer.learning_rate=1", "augment.hflip=false"])
  assert cfg.model.width == 8 and cfg.optimizer.learning_rate == 1.0 and cfg.augment.hflip is False
  with pytest.raises(KeyError, match="no config field 'widht'"):
    main.apply_overrides(cfg, ["model.widht=8"])
  with pytest.raises(ValueError, match="key=value"):
    main.apply_overrides(cfg, ["model.width"])
