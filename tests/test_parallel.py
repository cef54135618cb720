"""busjax.parallel: the sharded train step equals the single-device step.

The host device count is fixed when JAX starts, so the check runs in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r"""
import json, jax, numpy as np
from busjax import parallel, registry
from busjax.trainers import supervised
cfg = registry.get_config("unet", "tiny")
cfg.model.depth = 2
model = registry.build_model(cfg)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (4, 64, 64, 1), dtype=np.uint8)
masks = (rng.random((4, 64, 64, 1)) > 0.7).astype(np.uint8)
out = {}
for n in (1, 2):
  mesh = parallel.make_mesh(n)
  state = parallel.replicate(
      supervised.create_train_state(cfg, model, jax.random.key(0, impl=cfg.prng_impl)), mesh)
  step = parallel.make_sharded_train_step(supervised.make_train_step(cfg, model), mesh)
  losses = []
  for _ in range(3):
    x, y = parallel.shard_batch(mesh, images, masks)
    state, m = step(state, x, y)
    losses.append(float(m["loss"]))
  leaf = state.params["head"]["kernel"]
  out[n] = {"losses": losses, "head": np.asarray(leaf).ravel().tolist(),
            "stats": float(jax.tree.leaves(state.batch_stats)[0].sum()),
            "x_devices": len(x.sharding.device_set),
            "replicated": leaf.sharding.is_fully_replicated,
            "step": int(state.step)}
try:
  parallel.shard_batch(parallel.make_mesh(2), images[:3])
  out["odd_batch_error"] = ""
except ValueError as e:
  out["odd_batch_error"] = str(e)
print(json.dumps(out))
"""


def test_two_devices_match_one_device():
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  one, two = out["1"], out["2"]
  assert two["x_devices"] == 2 and one["x_devices"] == 1
  assert two["replicated"]  # parameters on every device
  assert one["step"] == two["step"] == 3
  # Three updates later: same losses, parameters and BatchNorm statistics (global batch).
  np.testing.assert_allclose(two["losses"], one["losses"], atol=1e-5)
  np.testing.assert_allclose(two["head"], one["head"], atol=1e-5)
  np.testing.assert_allclose(two["stats"], one["stats"], rtol=1e-5)
  assert "not divisible by 2 devices" in out["odd_batch_error"]


def test_single_device_mesh_and_bad_counts():
  from busjax import parallel
  mesh = parallel.make_mesh(1)
  (x,) = parallel.shard_batch(mesh, np.zeros((3, 2), np.float32))
  assert x.shape == (3, 2)
  with pytest.raises(ValueError, match="asked for 10000 devices"):
    parallel.make_mesh(10_000)
