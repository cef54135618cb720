"""benchmarks.speed: positive finite rates and a FLOP count that matches a hand count."""
from __future__ import annotations

import math
import subprocess
import sys

import jax
import pytest

from benchmarks import common, speed
from busjax import registry
from busjax.trainers import supervised


def unet_forward_flops(size: int, width: int, depth: int) -> int:
  """Hand count of the U-Net's convolution FLOPs per image (2 per multiply-add):
  two 3x3 convs per stage, a 2x2 stride-2 transposed conv per up-sampling (one
  kernel tap per output pixel), a 1x1 head. BN, ReLU, pooling not counted."""
  w = [width * 2**i for i in range(depth + 1)]
  s = [size // 2**i for i in range(depth + 1)]

  def conv(hw, cin, cout, k=3):
    return 2 * hw * hw * k * k * cin * cout

  f = 0
  for i in range(depth):
    f += conv(s[i], 1 if i == 0 else w[i - 1], w[i]) + conv(s[i], w[i], w[i])
    f += 2 * s[i] ** 2 * w[i + 1] * w[i]                 # up-sampling into stage i
    f += conv(s[i], 2 * w[i], w[i]) + conv(s[i], w[i], w[i])  # decoder stage i
  f += conv(s[depth], w[depth - 1], w[depth]) + conv(s[depth], w[depth], w[depth])
  return f + conv(size, w[0], 1, k=1)


def test_tiny_unet_speed_row():
  cfg = common.build_config("unet", schedule="tiny", overrides=["model.depth=2"], batch_size=2)
  row = speed.measure(cfg, steps=2, repeats=2)
  for k in ("compile_s", "train_images_per_s", "infer_images_per_s", "train_step_ms",
            "infer_ms_per_image"):
    assert math.isfinite(row[k]) and row[k] > 0, k
  assert math.isfinite(row["final_loss"])
  assert row["train_step"] == "supervised" and row["device_kind"] == jax.devices()[0].device_kind
  # The count (from shapes alone) matches the initialised parameters (init jit already cached).
  state = supervised.create_train_state(cfg, registry.build_model(cfg),
                                        jax.random.key(0, impl=cfg.prng_impl))
  assert row["params"] == sum(a.size for a in jax.tree.leaves(state.params)) > 0
  assert row["train_step_temp_bytes"] is None or row["train_step_temp_bytes"] > 0
  hand = unet_forward_flops(64, cfg.model.width, cfg.model.depth) / 1e9
  # Counted on XLA's kernels even when the step ran oneDNN's (FFI calls have no cost analysis).
  assert hand / 1.5 < row["gflops_per_image"] < hand * 1.5, (row["gflops_per_image"], hand)
  assert row["conv_backend"] in ("onednn", "xla")
  assert row["dtype"] == "float32" and row["peak_tflops"] is None  # a CPU has no listed peak
  assert row["train_tflops"] == pytest.approx(
      3 * row["gflops_per_image"] * row["train_images_per_s"] / 1e3)


def test_cli_unknown_model_exits_2():
  r = subprocess.run([sys.executable, "-m", "benchmarks.speed", "--model=nope"],
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and "unknown model" in r.stderr and "unet" in r.stderr


@pytest.mark.slow
def test_cli_one_json_line_per_model(tmp_path):
  r = subprocess.run([sys.executable, "-m", "benchmarks.speed", "--model=unet",
                      "--schedule=tiny", "--steps=1", "--repeats=1",
                      f"--results={tmp_path / 's.jsonl'}"],
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr
  (line,) = [s for s in r.stdout.splitlines() if s.startswith("{")]
  assert common.read_rows(str(tmp_path / "s.jsonl"))[0]["model"] == "unet"
  assert '"kind": "speed"' in line
