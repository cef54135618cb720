"""benchmarks.scaling on forced host devices (set before JAX starts: subprocesses)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks import common


def _env(**kw) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env.update(kw)
  return env


def test_strong_scaling_on_two_devices_matches_one_device(tmp_path):
  results = tmp_path / "scaling.jsonl"
  r = subprocess.run(
      [sys.executable, "-m", "benchmarks.scaling", "--model=unet", "--schedule=tiny",
       "--set=model.depth=2", "--devices=1,2", "--mode=strong", "--per_device_batch=2",
       "--steps=1", "--repeats=1", f"--results={results}"],
      env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
      capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  one, two = common.read_rows(str(results))
  assert (one["devices"], two["devices"]) == (1, 2)
  assert one["global_batch"] == two["global_batch"] == 4
  assert (one["per_device_batch"], two["per_device_batch"]) == (4, 2)
  assert (one["batch_devices"], two["batch_devices"]) == (1, 2)  # the batch really was split
  assert one["num_devices"] == 2 and one["platform"] == "cpu"
  # Same initial state and global batch: the sharded step computes the same loss.
  assert two["first_loss"] == pytest.approx(one["first_loss"], abs=1e-5)
  for row in (one, two):
    assert row["images_per_s"] > 0 and row["compile_s"] > 0
  assert one["speedup"] == 1.0 and one["efficiency"] == 1.0
  assert two["efficiency"] == pytest.approx(two["speedup"] / 2)
  png = tmp_path / "scaling_unet.png"
  assert png.is_file() and png.stat().st_size > 1000


def test_weak_mode_batches():
  from benchmarks import scaling
  assert scaling.global_batches([1, 2, 4], 3, "weak") == {1: 3, 2: 6, 4: 12}
  assert scaling.global_batches([1, 2, 4], 3, "strong") == {1: 12, 2: 12, 4: 12}
  with pytest.raises(ValueError, match="divisible"):
    scaling.global_batches([1, 3, 4], 1, "strong")


@pytest.mark.parametrize("xla_flags,expected", [
    (None, 8), ("--xla_force_host_platform_device_count=3", 3)])
def test_module_forces_host_devices_only_when_unset(xla_flags, expected):
  env = _env(JAX_PLATFORMS="cpu") if xla_flags is None else _env(XLA_FLAGS=xla_flags)
  r = subprocess.run([sys.executable, "-c",
                      "import benchmarks.scaling, jax; print(jax.device_count())"],
                     env=env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  assert int(r.stdout.split()[-1]) == expected


def test_too_many_devices_exits_2():
  r = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--devices=1,16"],
                     env=_env(), capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and "8 device(s) available" in r.stderr
