"""oneDNN's convolution weight gradient as an XLA FFI call (issue 7 probe).

XLA CPU's backward-filter convolution is the one place the busjax U-Net's
train step loses to PyTorch (``benchmarks.conv_grad``); PyTorch runs oneDNN's
backward-weights primitive there. This module builds ``onednn_ffi.cc`` (that
primitive behind an XLA FFI handler) on first use and exposes it:

  pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0   # x86-64 Linux
  python -m benchmarks.conv_grad        # adds the dw_onednn column

The build needs g++, jaxlib's FFI headers (``jax.ffi.include_dir()``) and the
two wheels above, which install ``libdnnl.so.3`` and its headers under
``sys.prefix``; the library is cached in ``~/.cache/busjax/onednn_ffi/``
(keyed by the source, jaxlib version and prefix). Without them,
:func:`available` says why and nothing else changes. It is a probe: the
models do not use it yet.
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

TARGET = "busjax_conv_bwd_weights"
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onednn_ffi.cc")


def _prefix_paths() -> tuple[str, str]:
  return os.path.join(sys.prefix, "include"), os.path.join(sys.prefix, "lib")


def build(cache_dir: str | None = None) -> str:
  """Compiles ``onednn_ffi.cc`` (once per source/jaxlib/prefix); returns the .so path.

  Raises:
    RuntimeError: naming what is missing (headers, libdnnl, g++) or the
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
  cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "busjax", "onednn_ffi")
  out = os.path.join(cache_dir, key[:16], "libbusjax_onednn_ffi.so")
  if os.path.exists(out):
    return out
  os.makedirs(os.path.dirname(out), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(out))
  os.close(fd)
  cmd = ["g++", "-O2", "-std=c++17", "-shared", "-fPIC", "-w", _SOURCE, f"-I{jax.ffi.include_dir()}",
         f"-I{inc}", f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}", "-o", tmp]
  try:
    res = subprocess.run(cmd, capture_output=True, text=True)
  except FileNotFoundError as e:
    os.remove(tmp)
    raise RuntimeError("g++ not found: building the oneDNN FFI probe needs a C++ compiler") from e
  if res.returncode != 0:
    os.remove(tmp)
    raise RuntimeError(f"building {_SOURCE} failed:\n{res.stderr[-3000:]}")
  os.replace(tmp, out)  # atomic: a killed build leaves no half-written library
  return out


@functools.lru_cache(maxsize=None)
def _load() -> ctypes.CDLL:
  lib = ctypes.cdll.LoadLibrary(build())
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.BusjaxConvBwdWeights), platform="cpu")
  lib.BusjaxConvBwdWeightsImpl.restype = ctypes.c_char_p
  return lib


def available() -> tuple[bool, str]:
  """(True, "") when the probe builds and loads on this machine, else (False, why)."""
  try:
    _load()
    return True, ""
  except (RuntimeError, OSError) as e:
    return False, str(e)


def implementation(shape: tuple[int, int, int, int, int], kernel: int = 3) -> str:
  """oneDNN's kernel for ``(B, H, W, C, O)``, e.g. ``"jit:avx512_core"``."""
  return _load().BusjaxConvBwdWeightsImpl(*shape, kernel).decode()


def dw_onednn(x: jnp.ndarray, g: jnp.ndarray, kernel: int = 3) -> jnp.ndarray:
  """Weight gradient ``[k,k,C,O]`` of the stride-1 "SAME" correlation, x
  ``[B,H,W,C]``, output gradient g ``[B,H,W,O]`` (float32, CPU)."""
  _load()
  out = jax.ShapeDtypeStruct((kernel, kernel, x.shape[-1], g.shape[-1]), jnp.float32)
  return jax.ffi.ffi_call(TARGET, out)(x.astype(jnp.float32), g.astype(jnp.float32))
