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


def _close(a, b, rtol=1e-4):
  np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(b))))


# (B, H, W, C, O), kernel, stride, dilation, padding: odd sizes, 1x1 and even
# kernels (lax's asymmetric SAME split), atrous rates, strided convolutions
# with windows that leave the last input row unused.
CASES = [((2, 9, 7, 3, 4), 3, 1, 1, "SAME"), ((1, 8, 10, 5, 2), 1, 1, 1, "SAME"),
         ((2, 6, 6, 2, 3), 4, 1, 1, "SAME"), ((1, 11, 9, 4, 4), 5, 1, 1, "SAME"),
         ((2, 13, 12, 3, 5), 3, 1, 2, "SAME"), ((1, 10, 10, 2, 2), 3, 1, 3, "SAME"),
         ((2, 9, 7, 3, 4), 2, 2, 1, "VALID"), ((2, 16, 15, 3, 5), 4, 2, 1, "SAME"),
         ((1, 15, 16, 2, 3), 7, 2, 1, ((2, 3), (3, 3)))]


def _operands(shape, k, seed=0):
  b, h, w, c, o = shape
  kx, kw = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (b, h, w, c)), jax.random.normal(kw, (k, k, c, o))


@pytest.mark.parametrize("shape,k,s,d,padding", CASES)
def test_onednn_passes_equal_xla(shape, k, s, d, padding):
  _need_onednn()
  x, w = _operands(shape, k)
  pad = conv.explicit_padding(padding, shape[1:3], k, s, d)
  y, vjp = jax.vjp(lambda x, w: conv._xla_conv(x, w, s, d, pad), x, w)
  g = jax.random.normal(jax.random.key(9), y.shape)
  dx, dw = vjp(g)
  kw = dict(stride=s, dilation=d, padding=pad)
  got = jax.jit(lambda x, w, g: (onednn.conv_fwd(x, w, **kw),
                                 onednn.conv_bwd_data(g, w, x.shape[1:3], **kw),
                                 onednn.conv_bwd_weights(x, g, k, **kw)))(x, w, g)
  for a, b in zip(got, (y, dx, dw)):
    assert a.shape == b.shape
    _close(a, b)


@pytest.mark.parametrize("shape,k,s,d,padding", [CASES[0], CASES[4], CASES[7]])
def test_conv2d_gradients_equal_between_backends(shape, k, s, d, padding):
  _need_onednn()
  x, w = _operands(shape, k, seed=1)
  loss = lambda be: lambda x, w: jnp.sum(jnp.sin(
      conv.conv2d(x, w, stride=s, padding=padding, dilation=d, backend=be)))
  want = jax.jit(jax.value_and_grad(loss("xla"), argnums=(0, 1)))(x, w)
  got = jax.jit(jax.value_and_grad(loss("onednn"), argnums=(0, 1)))(x, w)
  jax.tree.map(_close, got, want)
  # Under vmap the FFI calls run once per element.
  per = jax.vmap(lambda x: conv.conv2d(x, w, stride=s, padding=padding, dilation=d,
                                       backend="onednn"))(jnp.stack([x, 2 * x]))
  _close(per[1], 2 * per[0])


@pytest.mark.parametrize("shape,k,s,padding,out_hw", [
    ((2, 5, 4, 6, 3), 2, 2, "VALID", (10, 8)),     # the U-Net's 2x2 up-convolution
    ((2, 5, 4, 6, 3), 2, 2, "VALID", (11, 9)),     # a last row no window reaches: zero
    ((1, 6, 6, 4, 2), 4, 2, "SAME", (12, 12))])
def test_conv2d_transpose_equals_xla_and_is_conv_input_gradient(shape, k, s, padding, out_hw):
  _need_onednn()
  b, h, w_, o, c = shape
  x = jax.random.normal(jax.random.key(2), (b, h, w_, o))
  w = jax.random.normal(jax.random.key(3), (k, k, c, o))
  y0 = jnp.zeros((b, *out_hw, c))
  want = jax.vjp(lambda y: conv.conv2d(y, w, stride=s, padding=padding, backend="xla"), y0)[1](x)[0]
  for be in ("xla", "onednn"):
    _close(conv.conv2d_transpose(x, w, out_hw, stride=s, padding=padding, backend=be), want)
  loss = lambda be: lambda x, w: jnp.sum(jnp.sin(
      conv.conv2d_transpose(x, w, out_hw, stride=s, padding=padding, backend=be)))
  want_g = jax.jit(jax.grad(loss("xla"), argnums=(0, 1)))(x, w)
  jax.tree.map(_close, jax.jit(jax.grad(loss("onednn"), argnums=(0, 1)))(x, w), want_g)


def test_conv_module_matches_flax_conv_parameters_and_values():
  x = jax.random.normal(jax.random.key(3), (2, 7, 9, 3))
  ref = nn.Conv(4, (3, 3), padding="SAME", kernel_dilation=2)
  v = ref.init(jax.random.key(0), x)
  for backend in ("xla", "auto"):
    mod = layers.Conv(4, 3, dilation=2, backend=backend)
    # Same tree and the same initial values: checkpoints load either way.
    jax.tree.map(np.testing.assert_array_equal, mod.init(jax.random.key(0), x), v)
    v2 = jax.tree.map(lambda a: a + 0.1, v)
    np.testing.assert_allclose(mod.apply(v2, x), ref.apply(v2, x), rtol=1e-5, atol=1e-5)
  # Strided, explicit padding (the cGAN's 4x4/2 convolutions).
  ref = nn.Conv(4, (4, 4), strides=2, padding=((1, 1), (1, 1)))
  v = ref.init(jax.random.key(0), x)
  mod = layers.Conv(4, 4, 2, padding=((1, 1), (1, 1)))
  jax.tree.map(np.testing.assert_array_equal, mod.init(jax.random.key(0), x), v)
  np.testing.assert_allclose(mod.apply(v, x), ref.apply(v, x), rtol=1e-5, atol=1e-5)


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
  x, w = _operands((1, 5, 5, 2, 2), 3)
  np.testing.assert_array_equal(conv.conv2d_same(x, w),
                                conv._xla_conv(x, w, 1, 1, ((1, 1), (1, 1))))


def test_explicit_padding_follows_lax():
  assert conv.explicit_padding("SAME", (8, 7), 3, 1, 1) == ((1, 1), (1, 1))
  assert conv.explicit_padding("SAME", (8, 7), 4, 2, 1) == ((1, 1), (1, 2))
  assert conv.explicit_padding("VALID", (8, 7), 4, 2, 1) == ((0, 0), (0, 0))
  with pytest.raises(ValueError, match="padding must be"):
    conv.explicit_padding("FULL", (8, 7), 3, 1, 1)


def test_conv2d_rejects_bad_shapes():
  with pytest.raises(ValueError, match="does not take the 3 channels"):
    conv.conv2d_same(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 1)))
  with pytest.raises(ValueError, match="x \\[B,H,W,C\\] and w"):
    conv.conv2d(jnp.zeros((4, 4, 3)), jnp.zeros((3, 3, 3, 1)))
  with pytest.raises(ValueError, match="dilation"):
    conv.conv2d_same(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 1)), dilation=0)


def test_build_names_missing_headers(monkeypatch, tmp_path):
  monkeypatch.setattr(onednn, "_prefix_paths", lambda: (str(tmp_path / "inc"), str(tmp_path)))
  with pytest.raises(RuntimeError, match="onednn-devel-cpu-gomp"):
    onednn.build(str(tmp_path / "cache"))


def test_implementation_names_a_kernel():
  _need_onednn()
  for p in onednn.PASSES:
    for kw in ({}, dict(stride=2, padding=((0, 0), (0, 0)))):
      impl = onednn.implementation(p, (2, 6, 5, 3), 4, 3, **kw)
      assert impl and not impl.startswith("error"), impl


def test_upconv2x2_onednn_equals_xla_form():
  _need_onednn()
  x = jax.random.normal(jax.random.key(4), (2, 5, 6, 3))
  v = layers.UpConv2x2(4, backend="xla").init(jax.random.key(0), x)
  v = jax.tree.map(lambda a: a + 0.1, v)
  f = lambda be: lambda v, x: jnp.sum(jnp.sin(layers.UpConv2x2(4, backend=be).apply(v, x)))
  _close(layers.UpConv2x2(4, backend="onednn").apply(v, x),
         layers.UpConv2x2(4, backend="xla").apply(v, x))
  jax.tree.map(_close, jax.grad(f("onednn"), argnums=(0, 1))(v, x),
               jax.grad(f("xla"), argnums=(0, 1))(v, x))


@pytest.mark.parametrize("k", [2, 3, 4])
def test_conv_transpose2x_onednn_equals_flax(k):
  _need_onednn()
  x = jax.random.normal(jax.random.key(5), (2, 5, 4, 3))
  ref = nn.ConvTranspose(6, (k, k), strides=(2, 2), padding="SAME")
  v = jax.tree.map(lambda a: a + 0.1, ref.init(jax.random.key(0), x))
  mod = layers.ConvTranspose2x(6, k, backend="onednn")
  _close(mod.apply(v, x), ref.apply(v, x))
  f = lambda m: lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)))
  jax.tree.map(_close, jax.grad(f(mod), argnums=(0, 1))(v, x),
               jax.grad(f(ref), argnums=(0, 1))(v, x))


def test_conv2d_affine_relu_fused_equals_unfused():
  _need_onednn()
  x, w = _operands((2, 9, 8, 3, 5), 3, seed=6)
  a = jax.random.normal(jax.random.key(8), (5,))
  c = jax.random.normal(jax.random.key(9), (5,))
  f = lambda be: lambda *args: conv.conv2d_affine_relu(*args, backend=be)
  _close(jax.jit(f("onednn"))(x, w, a, c), f("xla")(x, w, a, c))
  impl = onednn.implementation("fwd_affine_relu", (2, 9, 8, 3), 5)
  assert impl and not impl.startswith("error"), impl
  loss = lambda be: lambda *args: jnp.sum(jnp.sin(f(be)(*args)))
  jax.tree.map(_close, jax.grad(loss("onednn"), argnums=(0, 1, 2, 3))(x, w, a, c),
               jax.grad(loss("xla"), argnums=(0, 1, 2, 3))(x, w, a, c))
  # The Conv layer's epilogue (with its own bias) on both backends.
  v = layers.Conv(5, 3).init(jax.random.key(0), x)
  v = jax.tree.map(lambda p: p + 0.1, v)
  out = {be: layers.Conv(5, 3, backend=be).apply(v, x, affine_relu=(a, c))
         for be in ("xla", "onednn")}
  _close(out["onednn"], out["xla"])
  ref = jax.nn.relu((layers.Conv(5, 3, backend="xla").apply(v, x)) * a + c)
  _close(out["xla"], ref)
