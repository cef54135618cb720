"""busjax.ops: oneDNN's convolutions equal XLA's (values and gradients); backend choice."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from busjax.models import layers
from busjax.ops import conv, onednn


def _need_onednn():
  ok, why = onednn.available()
  if not ok:  # the wheels are busjax dependencies on x86-64 Linux
    pytest.skip(why)


def _operands(shape, k, seed=0):
  b, h, w, c, o = shape
  kx, kw, kg = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kx, (b, h, w, c)), jax.random.normal(kw, (k, k, c, o)),
          jax.random.normal(kg, (b, h, w, o)))


# Odd sizes, 1x1 and even kernels (lax's asymmetric SAME padding), atrous rates.
CASES = [((2, 9, 7, 3, 4), 3, 1), ((1, 8, 10, 5, 2), 1, 1), ((2, 6, 6, 2, 3), 4, 1),
         ((1, 11, 9, 4, 4), 5, 1), ((2, 13, 12, 3, 5), 3, 2), ((1, 10, 10, 2, 2), 3, 3)]


@pytest.mark.parametrize("shape,k,d", CASES)
def test_onednn_passes_equal_xla(shape, k, d):
  _need_onednn()
  x, w, g = _operands(shape, k)
  f = lambda x, w: conv._xla_conv(x, w, d)
  y, vjp = jax.vjp(f, x, w)
  dx, dw = vjp(g)
  got = jax.jit(lambda x, w, g: (onednn.conv_fwd(x, w, d), onednn.conv_bwd_data(g, w, d),
                                 onednn.conv_bwd_weights(x, g, k, d)))(x, w, g)
  for a, b in zip(got, (y, dx, dw)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("shape,k,d", CASES[:2] + CASES[4:5])
def test_conv2d_same_gradients_equal_between_backends(shape, k, d):
  _need_onednn()
  x, w, _ = _operands(shape, k, seed=1)
  loss = lambda be: lambda x, w: jnp.sum(jnp.sin(conv.conv2d_same(x, w, dilation=d, backend=be)))
  want = jax.jit(jax.value_and_grad(loss("xla"), argnums=(0, 1)))(x, w)
  got = jax.jit(jax.value_and_grad(loss("onednn"), argnums=(0, 1)))(x, w)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), got, want)
  # Second derivatives are not defined through the FFI calls; first ones under vmap are.
  xs = jnp.stack([x, 2 * x])
  per = jax.vmap(lambda x: conv.conv2d_same(x, w, dilation=d, backend="onednn"))(xs)
  np.testing.assert_allclose(per[1], 2 * per[0], rtol=1e-4, atol=1e-4)


def test_conv_same_module_matches_flax_conv_parameters_and_values():
  x = jax.random.normal(jax.random.key(3), (2, 7, 9, 3))
  ref = nn.Conv(4, (3, 3), padding="SAME", kernel_dilation=2)
  v = ref.init(jax.random.key(0), x)
  for backend in ("xla", "auto"):
    mod = layers.ConvSame(4, 3, dilation=2, backend=backend)
    v_fast = mod.init(jax.random.key(0), x)
    # Same tree and the same initial values: checkpoints load either way.
    jax.tree.map(np.testing.assert_array_equal, v_fast, v)
    v2 = jax.tree.map(lambda a: a + 0.1, v)
    np.testing.assert_allclose(mod.apply(v2, x), ref.apply(v2, x), rtol=1e-5, atol=1e-5)


def test_resolve_backend(monkeypatch):
  assert conv.resolve_backend("xla") == "xla"
  with pytest.raises(ValueError, match="unknown convolution backend 'cudnn'"):
    conv.resolve_backend("cudnn")
  # bfloat16: auto falls back to XLA; forcing oneDNN says why it cannot.
  assert conv.resolve_backend("auto", jnp.bfloat16) == "xla"
  with pytest.raises(ValueError, match="bfloat16"):
    conv.resolve_backend("onednn", jnp.bfloat16)
  monkeypatch.setattr(onednn, "available", lambda: (False, "no g++ here"))
  assert conv.resolve_backend("auto") == "xla"
  with pytest.raises(ValueError, match="no g\\+\\+ here"):
    conv.resolve_backend("onednn")
  assert conv.describe("xla") == "XLA (oneDNN not used: no g++ here)"
  x, w, _ = _operands((1, 5, 5, 2, 2), 3)
  np.testing.assert_array_equal(conv.conv2d_same(x, w), conv._xla_conv(x, w, 1))


def test_conv2d_same_rejects_bad_shapes():
  with pytest.raises(ValueError, match="x \\[B,H,W,C\\] and w \\[K,K,C,O\\]"):
    conv.conv2d_same(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 1)))
  with pytest.raises(ValueError, match="dilation"):
    conv.conv2d_same(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 1)), dilation=0)


def test_build_names_missing_headers(monkeypatch, tmp_path):
  monkeypatch.setattr(onednn, "_prefix_paths", lambda: (str(tmp_path / "inc"), str(tmp_path)))
  with pytest.raises(RuntimeError, match="onednn-devel-cpu-gomp"):
    onednn.build(str(tmp_path / "cache"))


def test_implementation_names_a_kernel():
  _need_onednn()
  for p in onednn.PASSES:
    assert onednn.implementation(p, (2, 6, 5, 3, 4)) and "error" not in onednn.implementation(
        p, (2, 6, 5, 3, 4))
