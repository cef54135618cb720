"""The 3x3 convolution's three passes, and ways to write its weight gradient.

  python -m benchmarks.conv_grad                          # the U-Net's layer shapes at 128x128
  python -m benchmarks.conv_grad --shapes=4x128x128x64x64 --results=bench/conv_grad.jsonl

Issue 7's CPU gap sits in the weight gradient of the 3x3 convolutions: for
each shape ``BxHxWxCxO`` (NHWC input with C channels, O output channels,
"SAME" padding) this times, in milliseconds (median of 5 repeats of
``--steps`` calls, after compile and a warm-up):

* ``fwd``, ``dx``, ``dw``: XLA's forward convolution and the input and weight
  gradients of ``jax.vjp`` (what every busjax model runs);
* ``dw_shift9``: nine matrix products, one per tap, of the shifted padded
  input ``[B*H*W, C]`` (transposed) and the output gradient ``[B*H*W, O]``;
* ``dw_flat``: the same nine products on contiguous row windows: with the
  input padded and flattened to ``[B*(H+2)*(W+2), C]`` and the output
  gradient zero-padded onto the same grid, tap ``(i, j)`` is the window
  starting at row ``i*(W+2) + j`` (no shifted copy of the input);
* ``dw_host_blas``: ``dw_flat``'s products in NumPy's BLAS through
  ``jax.pure_callback`` (views, no copies on the host);
* ``fwd_onednn``, ``dx_onednn``, ``dw_onednn``: oneDNN's forward,
  backward-data and backward-weights primitives behind XLA FFI calls
  (:mod:`busjax.ops.onednn`, what the models run on one CPU device), when its
  wheels are installed (the row's ``onednn`` field names the kernel oneDNN
  chose for each pass, or why they were skipped);
* ``torch_fwd_dw``: PyTorch's forward plus weight gradient of the same
  convolution, when PyTorch is installed (the peer's oneDNN kernels).

Every formulation is checked against ``dw`` (relative error printed). One
JSON row per shape goes to ``--results`` when given (``kind: conv_grad``).
"""
from __future__ import annotations

import json
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from busjax.ops import onednn

# (B, H, W, C, O) of the width-16 U-Net's 3x3 convolutions at 128x128, batch 8
# (first conv of each encoder stage), and the width-64 first stage at batch 4.
DEFAULT_SHAPES = ("8x128x128x16x16", "8x64x64x32x32", "8x32x32x64x64", "8x16x16x128x128",
                  "8x8x8x256x256", "4x128x128x64x64")
_DN = ("NHWC", "HWIO", "NHWC")


def parse_shape(s: str) -> tuple[int, int, int, int, int]:
  """``"BxHxWxCxO"`` -> (B, H, W, C, O)."""
  parts = s.lower().split("x")
  if len(parts) != 5 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"shape {s!r}: expected BxHxWxCxO, five positive integers")
  return tuple(int(p) for p in parts)  # type: ignore[return-value]


def conv3x3(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
  """XLA's 3x3 "SAME" correlation, x ``[B,H,W,C]``, w ``[3,3,C,O]`` -> ``[B,H,W,O]``."""
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


def dw_xla(x: jnp.ndarray, g: jnp.ndarray) -> jnp.ndarray:
  """Weight gradient by autodiff (XLA's backward-filter convolution): ``[3,3,C,O]``."""
  w0 = jnp.zeros((3, 3, x.shape[-1], g.shape[-1]), x.dtype)
  return jax.vjp(lambda w: conv3x3(x, w), w0)[1](g)[0]


def dw_shift9(x: jnp.ndarray, g: jnp.ndarray) -> jnp.ndarray:
  """Nine per-tap products of the shifted input and the output gradient."""
  b, h, wd, c = x.shape
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  gg = g.reshape(-1, g.shape[-1])
  return jnp.stack([jnp.stack([p[:, i:i + h, j:j + wd].reshape(-1, c).T @ gg for j in range(3)])
                    for i in range(3)])


def _flat_operands(x: jnp.ndarray, g: jnp.ndarray):
  """Padded input flattened to rows (plus a tail for the largest tap offset),
  the output gradient on the same padded grid, the row count, the grid width."""
  wp = x.shape[2] + 2
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(-1, x.shape[-1])
  n = xp.shape[0]
  xp = jnp.pad(xp, ((0, 2 * wp + 2), (0, 0)))
  gp = jnp.pad(g, ((0, 0), (0, 2), (0, 2), (0, 0))).reshape(-1, g.shape[-1])
  return xp, gp, n, wp


def dw_flat(x: jnp.ndarray, g: jnp.ndarray) -> jnp.ndarray:
  """Nine products on contiguous row windows of the flattened padded input."""
  xp, gp, n, wp = _flat_operands(x, g)
  dims = (((0,), (0,)), ((), ()))
  return jnp.stack([jax.lax.dot_general(xp[i * wp + j:i * wp + j + n], gp, dims)
                    for i in range(3) for j in range(3)]).reshape(3, 3, x.shape[-1], g.shape[-1])


def dw_onednn(x: jnp.ndarray, g: jnp.ndarray) -> jnp.ndarray:
  """oneDNN's backward-weights primitive (:func:`busjax.ops.onednn.conv_bwd_weights`)."""
  return onednn.conv_bwd_weights(x, g, 3)


def _host_taps(xp: np.ndarray, gp: np.ndarray, n: int, wp: int) -> np.ndarray:
  xp, gp = np.asarray(xp), np.asarray(gp)
  out = np.empty((9, xp.shape[1], gp.shape[1]), np.float32)
  for k in range(9):
    o = (k // 3) * wp + k % 3
    np.matmul(xp[o:o + n].T, gp, out=out[k])
  return out


def dw_host_blas(x: jnp.ndarray, g: jnp.ndarray) -> jnp.ndarray:
  """:func:`dw_flat`'s products in NumPy's BLAS (``jax.pure_callback``)."""
  xp, gp, n, wp = _flat_operands(x, g)
  shape = jax.ShapeDtypeStruct((9, x.shape[-1], g.shape[-1]), jnp.float32)
  out = jax.pure_callback(lambda a, b: _host_taps(a, b, n, wp), shape, xp, gp)
  return out.reshape(3, 3, x.shape[-1], g.shape[-1])


FORMULATIONS: dict[str, Callable] = {"dw_shift9": dw_shift9, "dw_flat": dw_flat,
                                     "dw_host_blas": dw_host_blas}


def _time_ms(fn: Callable, *args, steps: int) -> float:
  """Milliseconds per call of the jitted ``fn`` (median of 5 repeats, after a warm-up)."""
  jax.block_until_ready(fn(*args))

  def run():
    r = None
    for _ in range(steps):
      r = fn(*args)
    jax.block_until_ready(r)

  return common.median_seconds(run, 5) / steps * 1e3


def _torch_ms(shape, steps: int) -> float | None:
  try:
    import torch
  except ImportError:
    return None
  b, h, w, c, o = shape
  x, g = torch.randn(b, c, h, w), torch.randn(b, o, h, w)
  wt = torch.randn(o, c, 3, 3, requires_grad=True)

  def run():
    for _ in range(steps):
      torch.nn.functional.conv2d(x, wt, padding=1).backward(g)

  run()
  return common.median_seconds(run, 5) / steps * 1e3


def measure(shape: tuple[int, int, int, int, int], steps: int = 10,
            with_torch: bool = True) -> dict:
  """One ``conv_grad`` row: milliseconds per call of each pass and formulation,
  and each formulation's maximum error relative to ``dw``'s largest entry."""
  b, h, w, c, o = shape
  kx, kg, kw = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (b, h, w, c))
  g = jax.random.normal(kg, (b, h, w, o))
  wt = jax.random.normal(kw, (3, 3, c, o))
  dw_jit = jax.jit(dw_xla)
  ref = dw_jit(x, g)
  scale = float(jnp.max(jnp.abs(ref)))
  dx = jax.jit(lambda w_, g_: jax.vjp(lambda x_: conv3x3(x_, w_), x)[1](g_)[0])
  row = {"kind": "conv_grad", "shape": "x".join(map(str, shape)),
         "gflop_per_pass": 2 * b * h * w * c * o * 9 / 1e9,
         "fwd_ms": _time_ms(jax.jit(conv3x3), x, wt, steps=steps),
         "dx_ms": _time_ms(dx, wt, g, steps=steps),
         "dw_ms": _time_ms(dw_jit, x, g, steps=steps)}
  formulations = dict(FORMULATIONS)
  ok, why = onednn.available()
  if ok:
    formulations["dw_onednn"] = dw_onednn
    row["onednn"] = ", ".join(f"{p}: {onednn.implementation(p, shape[:4], o)}"
                              for p in onednn.PASSES[:3])
    y_ref = jax.jit(conv3x3)(x, wt)
    dx_ref = dx(wt, g)
    for name, fn, args, want in (("fwd_onednn", onednn.conv_fwd, (x, wt), y_ref),
                                 ("dx_onednn", onednn.conv_bwd_data, (g, wt), dx_ref)):
      fn = jax.jit(fn)
      row[f"{name}_rel_err"] = float(jnp.max(jnp.abs(fn(*args) - want) / jnp.max(jnp.abs(want))))
      row[f"{name}_ms"] = _time_ms(fn, *args, steps=steps)
  else:
    row["onednn"] = f"skipped: {why}"
    for name in ("fwd_onednn", "dx_onednn", "dw_onednn"):
      row[f"{name}_ms"] = row[f"{name}_rel_err"] = None
  for name, fn in formulations.items():
    fn = jax.jit(fn)  # one compile serves the error check and the timing
    row[f"{name}_rel_err"] = float(jnp.max(jnp.abs(fn(x, g) - ref))) / scale
    row[f"{name}_ms"] = _time_ms(fn, x, g, steps=steps)
  row["torch_fwd_dw_ms"] = _torch_ms(shape, steps) if with_torch else None
  return {**row, **common.environment(), "time": common.utc_now()}


def table(rows: Sequence[dict]) -> str:
  """Markdown table of ``conv_grad`` rows (milliseconds per call)."""
  cols = ["fwd", "dx", "dw", *FORMULATIONS, "fwd_onednn", "dx_onednn", "dw_onednn",
          "torch_fwd_dw"]
  lines = ["| BxHxWxCxO | GFLOP/pass | " + " | ".join(f"{c} ms" for c in cols) + " |",
           "|---|---|" + "---|" * len(cols)]
  for r in rows:
    cells = ["-" if r.get(f"{c}_ms") is None else f"{r[f'{c}_ms']:.1f}" for c in cols]
    lines.append(f"| {r['shape']} | {r['gflop_per_pass']:.2f} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags
  f = flags.FLAGS
  rows = []
  for s in f.shapes:
    row = measure(parse_shape(s), steps=f.steps)
    print(json.dumps(row), flush=True)
    rows.append(row if not f.results else common.append_row(f.results, row))
  print()
  print(table(rows))


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_list("shapes", list(DEFAULT_SHAPES), "Shapes BxHxWxCxO to measure.")
  flags.DEFINE_integer("steps", 10, "Calls per timed repeat.")
  flags.DEFINE_string("results", None, "JSONL to append rows to.")
  app.run(main)
