"""2-D convolutions with a choice of kernels: XLA's or oneDNN's.

:func:`conv2d` computes ``lax.conv_general_dilated(x, w, (s, s), padding,
rhs_dilation=(d, d), dimension_numbers=("NHWC", "HWIO", "NHWC"))``
(:func:`conv2d_same`: stride 1, "SAME"), and :func:`conv2d_transpose` the
transposed convolution (the input gradient of a strided one). With
``backend="onednn"`` their forward passes, input gradients and weight
gradients are oneDNN's primitives called through XLA FFI
(:mod:`busjax.ops.onednn`), tied together by ``jax.custom_vjp``; with
``"xla"`` they are lax calls.
``"auto"`` (the models' default) picks oneDNN where it helps and is safe:

* the computation runs on CPU (``jax.default_backend() == "cpu"``),
* one device (an FFI call has no SPMD partitioning rule, so on a mesh of
  several devices XLA would gather the whole batch onto each of them),
* float32 operands, and the library builds and loads (:func:`onednn.available`).

Why: XLA CPU's convolution weight gradient runs 3-17x slower than oneDNN's
(``python -m benchmarks.conv_grad``), which made the U-Net train step 0.5-0.75x
PyTorch's on CPU (issue 7). The choice is made while tracing, so it is a
static property of the traced function; the parameters and the function
computed are the same either way (tests compare values and gradients).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

BACKENDS = ("auto", "xla", "onednn")


def resolve_backend(backend: str, dtype=jnp.float32) -> str:
  """The backend ``"auto"`` stands for here (``"xla"`` or ``"onednn"``); others pass through.

  Raises:
    ValueError: for a name not in :data:`BACKENDS`, or ``"onednn"`` asked
      for where it cannot run (the message says why).
  """
  if backend not in BACKENDS:
    raise ValueError(f"unknown convolution backend {backend!r}; expected one of {BACKENDS}")
  if backend == "xla":
    return backend
  from busjax.ops import onednn
  reasons = []
  if jax.default_backend() != "cpu":
    reasons.append(f"the default backend is {jax.default_backend()}, not cpu")
  if jax.device_count() != 1:
    reasons.append(f"{jax.device_count()} devices (the FFI call has no sharding rule)")
  if jnp.dtype(dtype) != jnp.float32:
    reasons.append(f"dtype {jnp.dtype(dtype).name} (oneDNN path is float32)")
  if not reasons:
    ok, why = onednn.available()
    if not ok:
      reasons.append(why)
  if not reasons:
    return "onednn"
  if backend == "onednn":
    raise ValueError("conv backend 'onednn' cannot run here: " + "; ".join(reasons))
  return "xla"


def describe(backend: str) -> str:
  """One line for logs: the kernels a resolved backend runs, and why XLA's on a CPU."""
  if backend == "onednn":
    return "oneDNN (CPU, busjax.ops.onednn)"
  if jax.default_backend() != "cpu":
    return f"XLA ({jax.default_backend()})"
  try:
    resolve_backend("onednn")
  except ValueError as e:
    return f"XLA (oneDNN not used: {str(e).split(': ', 1)[-1]})"
  return "XLA (CPU, as configured)"


Padding = tuple[tuple[int, int], tuple[int, int]]


def explicit_padding(padding, in_hw: tuple[int, int], kernel: int, stride: int,
                     dilation: int) -> Padding:
  """``((top, bottom), (left, right))`` of ``"SAME"``/``"VALID"`` (lax's rule) or pairs."""
  if isinstance(padding, str):
    if padding == "VALID":
      return (0, 0), (0, 0)
    if padding != "SAME":
      raise ValueError(f"padding must be 'SAME', 'VALID' or two (lo, hi) pairs, got {padding!r}")
    out = []
    for n in in_hw:
      total = max((-(-n // stride) - 1) * stride + (kernel - 1) * dilation + 1 - n, 0)
      out.append((total // 2, total - total // 2))
    return tuple(out)  # type: ignore[return-value]
  (pt, pb), (pl, pr) = padding
  return (int(pt), int(pb)), (int(pl), int(pr))


def _xla_conv(x, w, stride: int, dilation: int, padding: Padding) -> jnp.ndarray:
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                      rhs_dilation=(dilation, dilation),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _onednn_conv(x, w, stride: int, dilation: int, padding: Padding) -> jnp.ndarray:
  from busjax.ops import onednn
  return onednn.conv_fwd(x, w, stride=stride, dilation=dilation, padding=padding)


def _onednn_conv_fwd(x, w, stride, dilation, padding):
  return _onednn_conv(x, w, stride, dilation, padding), (x, w)


def _onednn_conv_bwd(stride, dilation, padding, res, g):
  from busjax.ops import onednn
  x, w = res
  kw = dict(stride=stride, dilation=dilation, padding=padding)
  dx = onednn.conv_bwd_data(g, w, x.shape[1:3], **kw)
  dw = onednn.conv_bwd_weights(x, g, w.shape[0], **kw)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _onednn_conv_transpose(x, w, out_hw: tuple[int, int], stride: int,
                           padding: Padding) -> jnp.ndarray:
  from busjax.ops import onednn
  return onednn.conv_bwd_data(x, w, out_hw, stride=stride, padding=padding)


def _onednn_conv_transpose_fwd(x, w, out_hw, stride, padding):
  return _onednn_conv_transpose(x, w, out_hw, stride, padding), (x, w)


def _onednn_conv_transpose_bwd(out_hw, stride, padding, res, g):
  from busjax.ops import onednn
  x, w = res
  # y = conv^T(x): dx = conv(g), and dw is the strided convolution's weight
  # gradient with g as its input and x as its output gradient.
  dx = onednn.conv_fwd(g, w, stride=stride, padding=padding)
  dw = onednn.conv_bwd_weights(g, x, w.shape[0], stride=stride, padding=padding)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_onednn_conv_transpose.defvjp(_onednn_conv_transpose_fwd, _onednn_conv_transpose_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _onednn_conv_affine_relu(x, w, scale, shift, stride: int, dilation: int,
                             padding: Padding) -> jnp.ndarray:
  from busjax.ops import onednn
  return onednn.conv_fwd_affine_relu(x, w, scale, shift, stride=stride, dilation=dilation,
                                     padding=padding)


def _onednn_conv_affine_relu_fwd(x, w, scale, shift, stride, dilation, padding):
  from busjax.ops import onednn
  # The pre-activation is needed for the scale's gradient: one unfused forward.
  z = onednn.conv_fwd(x, w, stride=stride, dilation=dilation, padding=padding)
  return jax.nn.relu(z * scale + shift), (x, w, z, scale, shift)


def _onednn_conv_affine_relu_bwd(stride, dilation, padding, res, g):
  from busjax.ops import onednn
  x, w, z, scale, shift = res
  g = jnp.where(z * scale + shift > 0, g, 0.0)
  gz = g * scale
  kw = dict(stride=stride, dilation=dilation, padding=padding)
  dx = onednn.conv_bwd_data(gz, w, x.shape[1:3], **kw)
  dw = onednn.conv_bwd_weights(x, gz, w.shape[0], **kw)
  return (dx.astype(x.dtype), dw.astype(w.dtype), jnp.sum(g * z, axis=(0, 1, 2)),
          jnp.sum(g, axis=(0, 1, 2)))


_onednn_conv_affine_relu.defvjp(_onednn_conv_affine_relu_fwd, _onednn_conv_affine_relu_bwd)


def _check(x, w, dilation):
  if x.ndim != 4 or w.ndim != 4 or w.shape[0] != w.shape[1]:
    raise ValueError(f"expected x [B,H,W,C] and w [K,K,Cin,Cout]; got {x.shape}, {w.shape}")
  if dilation < 1:
    raise ValueError(f"dilation must be >= 1, got {dilation}")


def conv2d(x: jnp.ndarray, w: jnp.ndarray, *, stride: int = 1, padding="SAME",
           dilation: int = 1, backend: str = "auto") -> jnp.ndarray:
  """Correlation, NHWC x HWIO -> NHWC, the same stride and dilation on both axes.

  Args:
    x: ``[B, H, W, C]``.
    w: ``[K, K, C, O]`` (square kernel).
    stride: >= 1.
    padding: ``"SAME"``, ``"VALID"`` or ``((top, bottom), (left, right))``.
    dilation: kernel dilation (atrous rate), >= 1.
    backend: ``"auto"``, ``"xla"`` or ``"onednn"`` (module docstring).

  Returns:
    ``[B, Ho, Wo, O]`` (lax's output size) in the promoted dtype of x and w.
  """
  _check(x, w, dilation)
  if w.shape[2] != x.shape[3]:
    raise ValueError(f"w {w.shape} does not take the {x.shape[3]} channels of x {x.shape}")
  if stride < 1:
    raise ValueError(f"stride must be >= 1, got {stride}")
  pad = explicit_padding(padding, x.shape[1:3], w.shape[0], stride, dilation)
  dtype = jnp.promote_types(x.dtype, w.dtype)
  x, w = x.astype(dtype), w.astype(dtype)
  if resolve_backend(backend, dtype) == "onednn":
    return _onednn_conv(x, w, stride, dilation, pad)
  return _xla_conv(x, w, stride, dilation, pad)


def conv2d_affine_relu(x: jnp.ndarray, w: jnp.ndarray, scale: jnp.ndarray, shift: jnp.ndarray,
                       *, stride: int = 1, padding="SAME", dilation: int = 1,
                       backend: str = "auto") -> jnp.ndarray:
  """``relu(conv2d(x, w, ...) * scale + shift)``, scale and shift ``[O]``.

  On oneDNN its forward pass is one kernel (per-channel multiply and add and
  a ReLU as post-ops: no pass of its own over the output), which is what an
  inference-mode conv-BatchNorm-ReLU block runs; under differentiation it
  runs the plain convolution and an element-wise epilogue (its VJP needs the
  pre-activation). Differentiable either way.
  """
  if resolve_backend(backend, jnp.promote_types(x.dtype, w.dtype)) != "onednn":
    y = conv2d(x, w, stride=stride, padding=padding, dilation=dilation, backend=backend)
    return jax.nn.relu(y * scale + shift)
  _check(x, w, dilation)
  o = w.shape[3]
  if w.shape[2] != x.shape[3] or scale.shape != (o,) or shift.shape != (o,):
    raise ValueError(f"x {x.shape}, w {w.shape}, scale {scale.shape} and shift {shift.shape} "
                     "do not fit together")
  pad = explicit_padding(padding, x.shape[1:3], w.shape[0], stride, dilation)
  dtype = jnp.promote_types(x.dtype, w.dtype)
  return _onednn_conv_affine_relu(*(a.astype(dtype) for a in (x, w, scale, shift)), stride,
                                  dilation, pad)


def conv2d_same(x: jnp.ndarray, w: jnp.ndarray, *, dilation: int = 1,
                backend: str = "auto") -> jnp.ndarray:
  """:func:`conv2d` with stride 1 and "SAME" padding: ``[B,H,W,C] -> [B,H,W,O]``."""
  return conv2d(x, w, dilation=dilation, backend=backend)


def conv2d_transpose(x: jnp.ndarray, w: jnp.ndarray, out_hw: tuple[int, int], *, stride: int,
                     padding=((0, 0), (0, 0)), backend: str = "auto") -> jnp.ndarray:
  """Transposed convolution: the input gradient of a strided :func:`conv2d`.

  ``y [B, out_h, out_w, C]`` from ``x [B, H, W, O]`` and the *forward*
  convolution's weights ``w [K, K, C, O]``: the map ``y -> conv2d(y, w,
  stride, padding)`` (to ``[B, H, W, O]``) transposed, i.e.
  ``y = jax.vjp(lambda y: conv2d(y, w, ...), zeros)[1](x)``. Flax's
  ``ConvTranspose`` kernel ``k [K, K, O, C]`` (``transpose_kernel=False``) is
  ``w = k[::-1, ::-1].transpose(0, 1, 3, 2)`` with lax's transposed padding.
  """
  _check(x, w, 1)
  if w.shape[3] != x.shape[3]:
    raise ValueError(f"w {w.shape} does not give the {x.shape[3]} channels of x {x.shape}")
  pad = explicit_padding(padding, tuple(out_hw), w.shape[0], stride, 1)
  dtype = jnp.promote_types(x.dtype, w.dtype)
  x, w = x.astype(dtype), w.astype(dtype)
  if resolve_backend(backend, dtype) == "onednn":
    return _onednn_conv_transpose(x, w, tuple(out_hw), stride, pad)
  y0 = jnp.zeros((x.shape[0], *out_hw, w.shape[2]), dtype)
  return jax.vjp(lambda y: _xla_conv(y, w, stride, 1, pad), y0)[1](x)[0]
