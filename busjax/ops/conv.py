"""Stride-1 "SAME" 2-D convolution with a choice of kernels: XLA's or oneDNN's.

:func:`conv2d_same` computes ``lax.conv_general_dilated(x, w, (1, 1), "SAME",
rhs_dilation=(d, d), dimension_numbers=("NHWC", "HWIO", "NHWC"))``. With
``backend="onednn"`` its forward pass, input gradient and weight gradient
are oneDNN's primitives called through XLA FFI (:mod:`busjax.ops.onednn`),
tied together by a ``jax.custom_vjp``; with ``"xla"`` it is the lax call.
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


def _xla_conv(x: jnp.ndarray, w: jnp.ndarray, dilation: int) -> jnp.ndarray:
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(dilation, dilation),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _onednn_conv(x: jnp.ndarray, w: jnp.ndarray, dilation: int) -> jnp.ndarray:
  from busjax.ops import onednn
  return onednn.conv_fwd(x, w, dilation)


def _onednn_conv_fwd(x, w, dilation):
  return _onednn_conv(x, w, dilation), (x, w)


def _onednn_conv_bwd(dilation, res, g):
  from busjax.ops import onednn
  x, w = res
  dx = onednn.conv_bwd_data(g, w, dilation)
  dw = onednn.conv_bwd_weights(x, g, w.shape[0], dilation)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd)


def conv2d_same(x: jnp.ndarray, w: jnp.ndarray, *, dilation: int = 1,
                backend: str = "auto") -> jnp.ndarray:
  """Stride-1 "SAME" correlation, NHWC x HWIO -> NHWC.

  Args:
    x: ``[B, H, W, C]``.
    w: ``[K, K, C, O]`` (square kernel).
    dilation: kernel dilation (atrous rate), >= 1.
    backend: ``"auto"``, ``"xla"`` or ``"onednn"`` (module docstring).

  Returns:
    ``[B, H, W, O]`` in the promoted dtype of ``x`` and ``w``.
  """
  if x.ndim != 4 or w.ndim != 4 or w.shape[0] != w.shape[1] or w.shape[2] != x.shape[3]:
    raise ValueError(f"conv2d_same expects x [B,H,W,C] and w [K,K,C,O]; got {x.shape}, {w.shape}")
  if dilation < 1:
    raise ValueError(f"dilation must be >= 1, got {dilation}")
  dtype = jnp.promote_types(x.dtype, w.dtype)
  x, w = x.astype(dtype), w.astype(dtype)
  if resolve_backend(backend, dtype) == "onednn":
    return _onednn_conv(x, w, dilation)
  return _xla_conv(x, w, dilation)
