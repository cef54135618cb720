"""What every benchmark shares: configs, the results JSONL, environment, timing.

Results files are JSON Lines: one object per line, each written with a single
append + flush + fsync (:func:`append_row`), so a killed benchmark leaves every
finished row intact and at most one cut line, which :func:`read_rows` skips.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import time
from typing import Any, Callable, Iterable, Sequence

from busjax import registry
from busjax.configs.overrides import apply_overrides
from busjax.trainers import common as trainer_common


# ----------------------------------------------------------------------------- configs


def model_overrides(model: str, overrides: Iterable[str]) -> list[str]:
  """The ``--set`` items that apply to ``model``.

  ``key=value`` applies to every model; ``model:key=value`` only to ``model``
  (models name their fields differently, e.g. ``unet:model.width=8`` and
  ``rca_iunet:model.base_width=8``).
  """
  out = []
  for item in overrides:
    key = item.split("=", 1)[0]
    if ":" in key:
      prefix, rest = item.split(":", 1)
      if prefix.strip() == model:
        out.append(rest)
    else:
      out.append(item)
  return out


def build_config(model: str, *, schedule: str = "default", overrides: Sequence[str] = (),
                 **fields: Any):
  """``registry.get_config(model, schedule)``, then ``fields`` (None: keep the
  profile's value), then the ``--set`` overrides of :func:`model_overrides`.

  The same order as ``busjax.main.build_config``, so a benchmark cell trains
  exactly what ``python -m busjax.main`` with the same flags would.
  """
  cfg = registry.get_config(model, schedule)
  for k, v in fields.items():
    if v is not None:
      if k not in cfg:
        raise KeyError(f"no config field {k!r}")
      cfg[k] = v
  return apply_overrides(cfg, model_overrides(model, overrides))


def check_models(models: Sequence[str]) -> None:
  """Raises ``KeyError`` naming the valid models if any of ``models`` is unknown."""
  names = registry.model_names()
  bad = [m for m in models if m not in names]
  if bad:
    raise KeyError(f"unknown model(s) {', '.join(bad)}; valid models: {', '.join(names)}")


def count_params(cfg) -> int:
  """Number of trainable parameters of ``cfg``'s registered module (no compute:
  ``jax.eval_shape`` of ``init``). For adversarial models: the generator."""
  import jax
  import jax.numpy as jnp

  model = registry.build_model(cfg)
  x = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, 1), jnp.float32)
  rng = jax.random.key(0)
  shapes = jax.eval_shape(lambda r, x: model.init({"params": r, "dropout": r}, x, train=False),
                          rng, x)
  return int(sum(math.prod(a.shape) for a in jax.tree.leaves(shapes["params"])))


# ----------------------------------------------------------------------------- results files


def append_row(path: str, row: dict) -> dict:
  """Appends ``row`` as one JSON line (NaN/inf become null), then flushes and
  fsyncs. A line cut by an earlier kill is terminated first so it cannot
  swallow this row. Returns the row as written."""
  safe = trainer_common.json_safe(row)
  line = json.dumps(safe, allow_nan=False, sort_keys=False) + "\n"
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  with open(path, "ab+") as f:
    f.seek(0, os.SEEK_END)
    if f.tell() > 0:
      f.seek(-1, os.SEEK_END)
      if f.read(1) != b"\n":
        f.write(b"\n")
    f.write(line.encode())
    f.flush()
    os.fsync(f.fileno())
  return safe


def read_rows(*paths: str, kind: str | None = None) -> list[dict]:
  """All rows of the given JSONL files (missing files: none), in order.

  Lines that do not parse (a row cut by a kill) are skipped. With ``kind``,
  only rows whose ``"kind"`` equals it.
  """
  rows = []
  for path in paths:
    rows += [r for r in trainer_common.read_jsonl(path) if kind is None or r.get("kind") == kind]
  return rows


# ----------------------------------------------------------------------------- environment


def host_cpu() -> str:
  """The host CPU's model name (``/proc/cpuinfo``; ``platform.processor()``
  elsewhere): rows from different machines of one "cpu" device kind differ
  by up to 2x in this project's tables, so each row says which it was.

  Virtual machines often report a generic name ("Intel(R) Xeon(R)
  Processor"), so the widest vector extensions present are appended, e.g.
  ``"Intel(R) Xeon(R) Processor (avx512f, amx_tile)"``.
  """
  name, isa = "", []
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name") and not name:
          name = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not isa:
          present = set(line.split(":", 1)[1].split())
          isa = [k for k in ("avx2", "avx512f", "amx_tile") if k in present]
          isa = [k for k in isa if not (k == "avx2" and "avx512f" in present)]
  except OSError:
    pass
  name = name or platform.processor() or platform.machine()
  return f"{name} ({', '.join(isa)})" if isa else name


def malloc_library(ld_preload: str | None = None) -> str:
  """The allocator this process runs on: the basename of a tcmalloc,
  jemalloc or mimalloc library in ``LD_PRELOAD``, else ``"default"``.

  A preloaded tcmalloc raised both sides of ``benchmarks.vs_pytorch`` by
  1.1-1.3x on a 2-core Xeon (glibc's malloc returns XLA's and PyTorch's large
  per-step buffers to the kernel, and each step page-faults them back), so a
  row records it.
  """
  ld_preload = os.environ.get("LD_PRELOAD", "") if ld_preload is None else ld_preload
  for lib in ld_preload.replace(":", " ").split():
    name = os.path.basename(lib)
    if any(k in name for k in ("tcmalloc", "jemalloc", "mimalloc")):
      return name
  return "default"


def environment() -> dict:
  """Device and software of this process: device kind, platform, device and
  process counts, host CPU and cores, allocator, versions (fields of every
  results row)."""
  import flax
  import jax
  import jaxlib

  dev = jax.devices()[0]
  try:
    from importlib.metadata import version
    busjax_version = version("busjax")
  except Exception:  # not installed as a distribution
    busjax_version = None
  return {
      "device_kind": dev.device_kind,
      "platform": dev.platform,
      "num_devices": jax.device_count(),
      "num_processes": jax.process_count(),
      "host_cpu": host_cpu(),
      "host_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
      "malloc": malloc_library(),
      "jax_version": jax.__version__,
      "jaxlib_version": jaxlib.__version__,
      "flax_version": flax.__version__,
      "busjax_version": busjax_version,
  }


# Dense peak TFLOP/s of accelerators by compute dtype (vendor data sheets; no
# sparsity). "float32" is the TF32 tensor-core peak on NVIDIA GPUs, where JAX's
# default precision runs float32 convolutions and matrix products as TF32.
# Matched as a substring of ``device_kind``; the first match wins.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bfloat16": 756.0, "float32": 378.0}),
    ("H100", {"bfloat16": 989.4, "float32": 494.7}),   # SXM (80GB HBM3)
    ("H200", {"bfloat16": 989.4, "float32": 494.7}),
    ("A100", {"bfloat16": 312.0, "float32": 156.0}),
    ("L4", {"bfloat16": 121.0, "float32": 60.0}),
    ("TPU v4", {"bfloat16": 275.0}),
    ("TPU v5 lite", {"bfloat16": 197.0}),
    ("TPU v5e", {"bfloat16": 197.0}),
    ("TPU v5p", {"bfloat16": 459.0}),
    ("TPU v5", {"bfloat16": 459.0}),
    ("TPU v6 lite", {"bfloat16": 918.0}),
)


def peak_tflops(device_kind: str, dtype: str = "float32") -> float | None:
  """The device's dense peak TFLOP/s for ``dtype`` (:data:`PEAK_TFLOPS`), None
  when unknown (CPUs, unlisted devices)."""
  for key, peaks in PEAK_TFLOPS:
    if key.lower() in (device_kind or "").lower():
      return peaks.get(dtype)
  return None


def achieved_tflops(gflops_per_image: float | None, images_per_s: float, *,
                    train: bool) -> float | None:
  """TFLOP/s a throughput implies: the forward FLOPs per image times images/s,
  times 3 for a train step (backward ~ twice the forward: input and weight
  gradients), the usual model-FLOPs convention."""
  if gflops_per_image is None or not images_per_s:
    return None
  return gflops_per_image * images_per_s * (3.0 if train else 1.0) / 1e3


def utc_now() -> str:
  """The current UTC time, ISO 8601 to the second (each row's ``time``)."""
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def peak_memory_bytes() -> int | None:
  """``peak_bytes_in_use`` of the first device, where the backend reports it
  (GPU, TPU); None on CPU."""
  import jax

  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:
    return None
  if not stats:
    return None
  v = stats.get("peak_bytes_in_use")
  return int(v) if v is not None else None


# ----------------------------------------------------------------------------- timing


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """Median wall time of ``repeats`` calls of ``fn`` (which must block until its
  work is done, e.g. end in ``jax.block_until_ready``)."""
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def format_duration(seconds: float) -> str:
  """``3725`` -> ``'1:02:05'``; ``42.5`` -> ``'0:00:42'``."""
  if not math.isfinite(seconds):
    return "?"
  s = int(round(max(seconds, 0)))
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ----------------------------------------------------------------------------- training pieces


def synthetic_batch(batch_size: int, image_size: int, seed: int = 0):
  """uint8 images and 0/1 masks ``[B, S, S, 1]``: speckle with one dark ellipse
  per image (speed and scaling runs need shapes and plausible values, not data)."""
  import numpy as np

  rng = np.random.default_rng(seed)
  s = image_size
  yy, xx = np.mgrid[:s, :s]
  images = np.empty((batch_size, s, s, 1), np.uint8)
  masks = np.empty((batch_size, s, s, 1), np.uint8)
  for i in range(batch_size):
    cy, cx = rng.uniform(0.3, 0.7, 2) * s
    ry, rx = rng.uniform(0.08, 0.25, 2) * s
    m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img = rng.gamma(2.0, 50.0, (s, s))
    images[i, ..., 0] = np.where(m, img * 0.3, img).clip(0, 255).astype(np.uint8)
    masks[i, ..., 0] = m
  return images, masks


def state_and_train_step(cfg) -> tuple[Any, Callable, str]:
  """The initial train state and jitted ``(state, images, masks) -> (state,
  metrics)`` of ``cfg``'s trainer, and what that step is.

  Supervised models: ``busjax.trainers.supervised``. Adversarial models: the
  full step of ``busjax.trainers.adversarial`` (discriminator and generator
  updates); if that module or its ``create_gan_state``/``make_train_step`` is
  missing, the generator's supervised step, and the description says so.
  """
  import jax

  from busjax.trainers import supervised

  model = registry.build_model(cfg)
  rng = jax.random.key(cfg.seed, impl=cfg.prng_impl)
  if registry.get_model(cfg.model_name).trainer == "adversarial":
    try:
      from busjax.trainers import adversarial
      state = adversarial.create_gan_state(cfg, model, adversarial.make_adversary(cfg), rng)
      return state, adversarial.make_train_step(cfg, model), "adversarial (D + G updates)"
    except (ImportError, AttributeError):
      return (supervised.create_train_state(cfg, model, rng),
              supervised.make_train_step(cfg, model),
              "generator supervised step only (adversarial step unavailable)")
  state = supervised.create_train_state(cfg, model, rng)
  return state, supervised.make_train_step(cfg, model), "supervised"
