"""oneDNN's convolution primitives as XLA FFI calls (CPU).

XLA CPU's convolution kernels are the one place the busjax U-Net's train step
lost to PyTorch on CPU (issue 7, ``benchmarks.conv_grad``): above all its
weight gradient, 3-17x slower than oneDNN's backward-weights primitive, which
is what PyTorch runs. This module builds ``onednn_conv.cc`` (oneDNN's
forward, backward-data and backward-weights convolution behind three XLA FFI
handlers) on first use and registers them with JAX;
:func:`busjax.ops.conv.conv2d_same` is the differentiable convolution that
uses them.

The build needs g++, jaxlib's FFI headers (``jax.ffi.include_dir()``) and
the PyPI wheels ``onednn-cpu-gomp`` and ``onednn-devel-cpu-gomp`` (busjax
dependencies on x86-64 Linux), which install ``libdnnl.so.3`` and its
headers under ``sys.prefix``. The library is cached in
``~/.cache/busjax/onednn/<key>/`` (key: the source, the jaxlib version and
the prefix; ``BUSJAX_CACHE_DIR`` moves the cache). Without the wheels or a
compiler, :func:`available` says why and callers use XLA's convolutions.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onednn_conv.cc")
# FFI target names and the C symbols of their handlers.
TARGETS = {"busjax_conv_fwd": "BusjaxConvFwd", "busjax_conv_bwd_data": "BusjaxConvBwdData",
           "busjax_conv_bwd_weights": "BusjaxConvBwdWeights",
           "busjax_conv_fwd_affine_relu": "BusjaxConvFwdAffineRelu"}
PASSES = ("fwd", "bwd_data", "bwd_weights", "fwd_affine_relu")


def _prefix_paths() -> tuple[str, str]:
  return os.path.join(sys.prefix, "include"), os.path.join(sys.prefix, "lib")


def cache_dir() -> str:
  """Where built libraries are kept: ``$BUSJAX_CACHE_DIR/onednn`` or ``~/.cache/busjax/onednn``."""
  root = os.environ.get("BUSJAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "busjax")
  return os.path.join(root, "onednn")


def build(out_dir: str | None = None, *, log=None) -> str:
  """Compiles ``onednn_conv.cc`` once per source, jaxlib and prefix; returns the .so path.

  Args:
    out_dir: cache folder (default :func:`cache_dir`).
    log: called with one line before a compile starts (it takes ~20 s).

  Raises:
    RuntimeError: naming what is missing (headers, libdnnl, g++) or with the
      compiler's error output.
  """
  import jaxlib
  inc, lib = _prefix_paths()
  if not os.path.exists(os.path.join(inc, "oneapi", "dnnl", "dnnl.hpp")):
    raise RuntimeError(f"oneDNN headers not found under {inc}: "
                       "pip install onednn-devel-cpu-gomp==2023.2.0")
  if not os.path.exists(os.path.join(lib, "libdnnl.so.3")):
    raise RuntimeError(f"libdnnl.so.3 not found under {lib}: pip install onednn-cpu-gomp==2023.2.0")
  with open(_SOURCE, "rb") as f:
    key = hashlib.sha256(f.read() + jaxlib.__version__.encode() + sys.prefix.encode()).hexdigest()
  out = os.path.join(out_dir or cache_dir(), key[:16], "libbusjax_onednn_conv.so")
  if os.path.exists(out):
    return out
  os.makedirs(os.path.dirname(out), exist_ok=True)
  if log is not None:
    log(f"[busjax] building the oneDNN convolution library once (~20 s): {out}")
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(out))
  os.close(fd)
  cmd = ["g++", "-O2", "-std=c++17", "-shared", "-fPIC", "-w", _SOURCE,
         f"-I{jax.ffi.include_dir()}", f"-I{inc}", f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}",
         "-o", tmp]
  try:
    res = subprocess.run(cmd, capture_output=True, text=True)
  except FileNotFoundError as e:
    os.remove(tmp)
    raise RuntimeError("g++ not found: the oneDNN convolutions need a C++ compiler "
                       "(apt-get install g++); XLA's are used instead") from e
  if res.returncode != 0:
    os.remove(tmp)
    raise RuntimeError(f"building {_SOURCE} failed:\n{res.stderr[-3000:]}")
  os.replace(tmp, out)  # atomic: a killed or concurrent build leaves no half-written library
  return out


@functools.lru_cache(maxsize=None)
def _load() -> ctypes.CDLL:
  lib = ctypes.cdll.LoadLibrary(build(log=lambda s: print(s, file=sys.stderr, flush=True)))
  for target, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  lib.BusjaxConvImpl.restype = ctypes.c_char_p
  lib.BusjaxConvImpl.argtypes = [ctypes.c_int] + [ctypes.c_long] * 14
  return lib


@functools.lru_cache(maxsize=None)
def available() -> tuple[bool, str]:
  """(True, "") when the library builds and loads on this machine, else (False, why)."""
  if not sys.platform.startswith("linux"):
    return False, f"the oneDNN convolutions are built for Linux only (this is {sys.platform})"
  try:
    _load()
    return True, ""
  except (RuntimeError, OSError) as e:
    return False, str(e)


Padding = tuple[tuple[int, int], tuple[int, int]]


def out_size(size: int, kernel: int, stride: int, dilation: int, pad: tuple[int, int]) -> int:
  """Output length of one spatial axis (lax's and oneDNN's formula)."""
  return (size + pad[0] + pad[1] - (kernel - 1) * dilation - 1) // stride + 1


def implementation(pass_: str, x_shape: tuple[int, int, int, int], features: int,
                   kernel: int = 3, *, stride: int = 1, dilation: int = 1,
                   padding: Padding | None = None) -> str:
  """oneDNN's kernel for one pass (``fwd``, ``bwd_data``, ``bwd_weights``,
  ``fwd_affine_relu``) of
  the convolution of an ``x_shape`` (``[B,H,W,C]``) input to ``features``
  channels, e.g. ``"brg:avx512_core"``. ``padding`` defaults to stride-1 "SAME"."""
  b, h, w, c = x_shape
  padding, (ho, wo) = _geometry((h, w), kernel, stride, dilation, padding)
  (pt, pb), (pl, pr) = padding
  return _load().BusjaxConvImpl(PASSES.index(pass_), b, h, w, c, ho, wo, features, kernel, stride,
                                dilation, pt, pb, pl, pr).decode()


def same_padding(kernel: int, dilation: int = 1) -> tuple[int, int]:
  """(before, after) padding of a stride-1 "SAME" convolution, split as lax splits it."""
  total = (kernel - 1) * dilation
  return total // 2, total - total // 2


def _geometry(in_hw: tuple[int, int], kernel: int, stride: int, dilation: int,
              padding: Padding | None) -> tuple[Padding, tuple[int, int]]:
  """``(padding, (Ho, Wo))`` of a forward convolution; ``None`` padding is
  stride-1 "SAME"."""
  padding = padding or (same_padding(kernel, dilation),) * 2
  return padding, tuple(out_size(n, kernel, stride, dilation, p)  # type: ignore[return-value]
                        for n, p in zip(in_hw, padding))


def _call(target: str, shape, *args, stride: int, dilation: int, padding: Padding):
  _load()
  (pt, pb), (pl, pr) = padding
  out = jax.ShapeDtypeStruct(shape, jnp.float32)
  i64 = np.int64
  return jax.ffi.ffi_call(target, out, vmap_method="sequential")(
      *(a.astype(jnp.float32) for a in args), stride=i64(stride), dilation=i64(dilation),
      pad_top=i64(pt), pad_bottom=i64(pb), pad_left=i64(pl), pad_right=i64(pr))


def conv_fwd(x: jnp.ndarray, w: jnp.ndarray, *, stride: int = 1, dilation: int = 1,
             padding: Padding | None = None) -> jnp.ndarray:
  """``y [B,Ho,Wo,O]``: the correlation of x ``[B,H,W,C]`` with w ``[K,K,C,O]``.

  ``padding`` is ``((top, bottom), (left, right))``, default stride-1 "SAME";
  ``Ho = (H + top + bottom - (K-1)*dilation - 1) // stride + 1``, likewise Wo.
  """
  padding, (ho, wo) = _geometry(x.shape[1:3], w.shape[0], stride, dilation, padding)
  return _call("busjax_conv_fwd", (x.shape[0], ho, wo, w.shape[3]), x, w, stride=stride,
               dilation=dilation, padding=padding)


def conv_fwd_affine_relu(x: jnp.ndarray, w: jnp.ndarray, scale: jnp.ndarray, shift: jnp.ndarray,
                         *, stride: int = 1, dilation: int = 1,
                         padding: Padding | None = None) -> jnp.ndarray:
  """``relu(conv_fwd(x, w) * scale + shift)`` in one oneDNN kernel (per-channel
  post-ops; scale, shift ``[O]``). No gradient of its own: see
  :func:`busjax.ops.conv.conv2d_affine_relu`."""
  padding, (ho, wo) = _geometry(x.shape[1:3], w.shape[0], stride, dilation, padding)
  return _call("busjax_conv_fwd_affine_relu", (x.shape[0], ho, wo, w.shape[3]), x, w, scale,
               shift, stride=stride, dilation=dilation, padding=padding)


def conv_bwd_data(g: jnp.ndarray, w: jnp.ndarray, input_hw: tuple[int, int] | None = None, *,
                  stride: int = 1, dilation: int = 1,
                  padding: Padding | None = None) -> jnp.ndarray:
  """Input gradient ``[B,H,W,C]`` of :func:`conv_fwd` from the output gradient
  g ``[B,Ho,Wo,O]`` and w ``[K,K,C,O]``; ``input_hw`` = (H, W), default (Ho, Wo)
  (stride 1). Also the transposed convolution of stride ``stride``."""
  k = w.shape[0]
  padding = padding or (same_padding(k, dilation),) * 2
  h, wd = input_hw or g.shape[1:3]
  return _call("busjax_conv_bwd_data", (g.shape[0], h, wd, w.shape[2]), g, w, stride=stride,
               dilation=dilation, padding=padding)


def conv_bwd_weights(x: jnp.ndarray, g: jnp.ndarray, kernel: int = 3, *, stride: int = 1,
                     dilation: int = 1, padding: Padding | None = None) -> jnp.ndarray:
  """Weight gradient ``[K,K,C,O]`` of :func:`conv_fwd` from its input x
  ``[B,H,W,C]`` and output gradient g ``[B,Ho,Wo,O]``."""
  padding = padding or (same_padding(kernel, dilation),) * 2
  return _call("busjax_conv_bwd_weights", (kernel, kernel, x.shape[3], g.shape[3]), x, g,
               stride=stride, dilation=dilation, padding=padding)
