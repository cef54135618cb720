"""U-Net: shapes, finite outputs, jit, gradients everywhere, paper parameter count."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from busjax import registry


def test_unet_tiny_forward_backward():
  cfg = registry.get_config("unet", "tiny")
  model = registry.build_model(cfg)
  x = jnp.asarray(np.random.default_rng(0).random((2, 64, 64, 1)), jnp.float32)
  v = jax.jit(lambda k, x: model.init(k, x))(jax.random.key(0, impl="rbg"), x)
  logits, aux = jax.jit(lambda v, x: model.apply(v, x, train=False))(v, x)
  assert logits.shape == (2, 64, 64, 1) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()
  assert [f.shape[1] for f in aux["decoder_features"]] == [8, 16, 32, 64]

  def loss(p):
    (out, _), _ = model.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True,
                              mutable=["batch_stats"])
    return jnp.mean(out ** 2)

  grads = jax.jit(jax.grad(loss))(v["params"])
  assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))


def test_unet_paper_parameter_count():
  # 31,036,481 = the PyTorch reference (shared/bench/torch_unet_reference.py) at width 64.
  cfg = registry.get_config("unet", "paper")
  model = registry.build_model(cfg)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 256, 256, 1))))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"])) == 31_036_481


def _batch(seed):
  """Images ``[2,64,64,1]`` in [0,1] and 0/1 masks."""
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.random((2, 64, 64, 1)), jnp.float32),
          jnp.asarray(rng.random((2, 64, 64, 1)) > 0.7, jnp.float32))


def test_unet_train_step_and_inference_same_on_xla_and_onednn_kernels():
  from busjax.ops import onednn
  from busjax.trainers import supervised
  ok, why = onednn.available()
  if not ok:
    pytest.skip(why)
  x, y = _batch(1)
  out = {}
  for backend in ("xla", "onednn"):
    cfg = registry.get_config("unet", "tiny")
    cfg.model.conv_backend = backend
    state = supervised.create_train_state(cfg, registry.build_model(cfg),
                                          jax.random.key(0, impl=cfg.prng_impl))
    state, metrics = supervised.make_train_step(cfg, registry.build_model(cfg))(state, x, y)
    # Inference: on oneDNN each conv-BatchNorm-ReLU runs folded into one kernel.
    pred = supervised.make_predict_fn(cfg, registry.build_model(cfg))(
        state.params, state.batch_stats, (x * 255).astype(jnp.uint8))
    out[backend] = (state.params, state.batch_stats, metrics["loss"], pred)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               out["onednn"], out["xla"])


def test_unet_bfloat16_policy_computes_in_bf16_keeps_float32_parameters():
  from busjax.trainers import supervised
  x, y = _batch(2)
  out = {}
  for dtype in ("float32", "bfloat16"):
    cfg = registry.get_config("unet", "tiny")
    cfg.model.dtype = dtype
    model = registry.build_model(cfg)
    state = supervised.create_train_state(cfg, model, jax.random.key(0, impl=cfg.prng_impl))
    logits, aux = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x)
    assert logits.dtype == jnp.float32
    assert aux["decoder_features"][-1].dtype == jnp.dtype(dtype)
    state, metrics = supervised.make_train_step(cfg, model)(state, x, y)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    assert all(m.dtype == jnp.float32 for m in jax.tree.leaves(state.opt_state)
               if hasattr(m, "dtype") and jnp.issubdtype(m.dtype, jnp.floating))
    out[dtype] = (logits, float(metrics["loss"]))
  # Same parameters, bfloat16 arithmetic: logits within bf16 rounding of fp32.
  np.testing.assert_allclose(out["bfloat16"][0], out["float32"][0], rtol=0.1, atol=0.1)
  assert abs(out["bfloat16"][1] - out["float32"][1]) < 0.02
  assert np.isfinite(out["bfloat16"][1])
