"""Shared blocks: the fast 2x2 pool and up-convolution equal their Flax/lax originals."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from busjax.models import layers


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 7, 5, 2)])
def test_max_pool2_equals_reduce_window(shape):
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  ref = nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(layers.max_pool2(x), ref)
  # Without ties the gradients agree too (each window's maximum gets it all).
  g = jax.grad(lambda x: jnp.sum(layers.max_pool2(x) * jnp.arange(ref.size).reshape(ref.shape)))(x)
  g_ref = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2))
                                     * jnp.arange(ref.size).reshape(ref.shape)))(x)
  np.testing.assert_allclose(g, g_ref)


def test_upconv2x2_equals_conv_transpose():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 6, 3)), jnp.float32)
  ref_mod = nn.ConvTranspose(4, (2, 2), strides=(2, 2))
  v = ref_mod.init(jax.random.key(0), x)
  # Same parameter tree, so a checkpoint of either loads into the other.
  v_fast = layers.UpConv2x2(4).init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, v_fast) == jax.tree.map(jnp.shape, v)
  v = jax.tree.map(lambda a: a + 0.1, v)  # non-zero bias
  y = layers.UpConv2x2(4).apply(v, x)
  assert y.shape == (2, 10, 12, 4)
  np.testing.assert_allclose(y, ref_mod.apply(v, x), rtol=1e-5, atol=1e-5)
  f = lambda m: lambda v: jnp.sum(jnp.sin(m.apply(v, x)))
  g, g_ref = jax.grad(f(layers.UpConv2x2(4)))(v), jax.grad(f(ref_mod))(v)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g, g_ref)


def test_max_pool2_same_equals_reduce_window():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 7, 6, 3)), jnp.float32)
  ref = nn.max_pool(x, (2, 2), strides=(1, 1), padding="SAME")
  np.testing.assert_array_equal(layers.max_pool2_same(x), ref)


@pytest.mark.parametrize("k", [1, 3, 4, 5])
def test_depthwise_conv_equals_grouped_conv(k):
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 9, 8, 5)), jnp.float32)
  ref_mod = nn.Conv(5, (k, k), padding="SAME", feature_group_count=5, use_bias=False)
  v = ref_mod.init(jax.random.key(0), x)
  v_fast = layers.DepthwiseConv(k).init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, v_fast) == jax.tree.map(jnp.shape, v)
  np.testing.assert_allclose(layers.DepthwiseConv(k).apply(v, x), ref_mod.apply(v, x),
                             rtol=1e-5, atol=1e-5)
  f = lambda m: lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)))
  g = jax.grad(f(layers.DepthwiseConv(k)), argnums=(0, 1))(v, x)
  g_ref = jax.grad(f(ref_mod), argnums=(0, 1))(v, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), g, g_ref)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("use_bias", [True, False])
def test_conv_transpose_2x_equals_flax(k, use_bias):
  x = jnp.asarray(np.random.default_rng(k).normal(size=(2, 5, 4, 3)), jnp.float32)
  ref_mod = nn.ConvTranspose(6, (k, k), strides=(2, 2), padding="SAME", use_bias=use_bias)
  mod = layers.ConvTranspose2x(6, k, use_bias=use_bias)
  v = ref_mod.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, mod.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, v)
  v = jax.tree.map(lambda a: a + 0.1, v)
  y = mod.apply(v, x)
  assert y.shape == (2, 10, 8, 6)
  np.testing.assert_allclose(y, ref_mod.apply(v, x), rtol=1e-5, atol=1e-5)
  f = lambda m: lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)))
  g = jax.grad(f(mod), argnums=(0, 1))(v, x)
  g_ref = jax.grad(f(ref_mod), argnums=(0, 1))(v, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), g, g_ref)


def test_batch_norm_relu_equals_flax_batch_norm_then_relu():
  x = jax.random.normal(jax.random.key(7), (3, 6, 5, 4)) * 2 + 0.5

  class Ref(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      return nn.relu(layers.batch_norm(train, "bn")(x))

  class Fused(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      return layers.BatchNormReLU(name="bn")(x, train=train)

  v = Ref().init(jax.random.key(1), x, True)
  # Same variables (names, shapes, initial values): checkpoints load either way.
  jax.tree.map(np.testing.assert_array_equal, Fused().init(jax.random.key(1), x, True), v)
  v = jax.tree.map(lambda a: a + 0.3 * jnp.arange(a.size).reshape(a.shape) / a.size, v)
  for train in (True, False):
    (y, st), (y_ref, st_ref) = (m.apply(v, x, train, mutable=["batch_stats"])
                                for m in (Fused(), Ref()))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), st, st_ref)

  def loss(m):
    return lambda p, x: jnp.sum(jnp.sin(m.apply({"params": p, "batch_stats": v["batch_stats"]}, x,
                                                True, mutable=["batch_stats"])[0]))

  g = jax.grad(loss(Fused()), argnums=(0, 1))(v["params"], x)
  g_ref = jax.grad(loss(Ref()), argnums=(0, 1))(v["params"], x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g, g_ref)
