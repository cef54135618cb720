"""Data-parallel training throughput against the number of devices.

  python -m benchmarks.scaling --model=unet --devices=1,2,4,8 --per_device_batch=4
  python -m benchmarks.scaling --model=rca_iunet --schedule=paper --mode=both
  # multi-host (one command per host):
  python -m benchmarks.scaling --model=unet --devices=8,16 \\
      --coordinator_address=host0:1234 --num_processes=2 --process_id=$RANK

For each device count ``n`` the train step of the model's trainer runs on a
1-D ``jax.sharding.Mesh`` of the first ``n`` devices (``busjax.parallel``):
the batch is split over the ``"data"`` axis, the state replicated, never
pmap. Modes:

* ``strong``: a fixed global batch (``per_device_batch * max(devices)``)
  split over ``n`` devices; the same data and initial state for every ``n``,
  so the first step's loss must agree across device counts (``first_loss``:
  a correctness check of the sharded step);
* ``weak``: ``per_device_batch`` on each device (global batch grows with n).

Rows (JSONL, ``--results``): images/s (median of ``--repeats`` timings of
``--steps`` steps, compile and warm-up excluded), speed-up and efficiency
``(ips_n / ips_base) / (n / n_base)`` against the smallest device count of the
same mode. A PNG (``--plot``) shows throughput and efficiency.

On CPU the module sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
before JAX is imported (only when that flag is not already set, JAX is not yet
imported and no accelerator plugin is installed or ``JAX_PLATFORMS`` asks for
``cpu``), so the sharded path runs on 8 host "devices" that share the CPU's
cores: CPU numbers exercise the code, they do not measure scaling.
"""
from __future__ import annotations

import os
import sys

HOST_DEVICE_FLAG = "--xla_force_host_platform_device_count"
HOST_DEVICES = 8


def _cpu_only() -> bool:
  """Whether JAX will run on the CPU (decided without importing JAX)."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return platforms.split(",")[0] == "cpu"
  import importlib.metadata
  import importlib.util

  if importlib.util.find_spec("libtpu") is not None:
    return False
  try:
    plugins = importlib.metadata.entry_points(group="jax_plugins")
  except TypeError:  # Python < 3.10
    plugins = importlib.metadata.entry_points().get("jax_plugins", [])
  return not list(plugins)


def force_host_devices(n: int = HOST_DEVICES) -> bool:
  """Adds ``--xla_force_host_platform_device_count=n`` to ``XLA_FLAGS`` when it
  can still take effect and the run is CPU-only. Returns whether it did."""
  flags = os.environ.get("XLA_FLAGS", "")
  if HOST_DEVICE_FLAG in flags or "jax" in sys.modules or not _cpu_only():
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {HOST_DEVICE_FLAG}={n}".strip()
  return True


force_host_devices()

import time  # noqa: E402  (after XLA_FLAGS)
from typing import Sequence  # noqa: E402

from benchmarks import common  # noqa: E402

MODES = ("strong", "weak")


def global_batches(devices: Sequence[int], per_device_batch: int, mode: str) -> dict[int, int]:
  """``{n: global batch}``: strong keeps ``per_device_batch * max(devices)``;
  weak gives each device ``per_device_batch``."""
  if mode == "strong":
    g = per_device_batch * max(devices)
    bad = [n for n in devices if g % n]
    if bad:
      raise ValueError(f"strong scaling: global batch {g} is not divisible by {bad} devices")
    return {n: g for n in devices}
  if mode == "weak":
    return {n: per_device_batch * n for n in devices}
  raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def measure(cfg, devices: Sequence[int], *, per_device_batch: int, mode: str = "strong",
            steps: int = 10, repeats: int = 3, seed: int = 0, log=print) -> list[dict]:
  """Times the data-parallel train step of ``cfg``'s model on each device count.

  Every device count starts from the same initial state (``cfg.seed``) and, in
  strong mode, the same global batch. Returns one row per device count.
  """
  import jax

  from busjax import parallel
  from busjax.trainers import common as trainer_common

  devices = sorted({int(n) for n in devices})
  batches = global_batches(devices, per_device_batch, mode)
  env = common.environment()
  rows = []
  for n in devices:
    g = batches[n]
    mesh = parallel.make_mesh(n)
    images, masks = common.synthetic_batch(g, cfg.image_size, seed)
    if jax.process_count() > 1:  # each process feeds its slice of the global batch
      per = g // jax.process_count()
      lo = jax.process_index() * per
      images, masks = images[lo:lo + per], masks[lo:lo + per]
    x, y = parallel.shard_batch(mesh, images, masks)
    state, step_fn, step_name = common.state_and_train_step(cfg)
    state = parallel.replicate(state, mesh)
    t0 = time.perf_counter()
    step = parallel.make_sharded_train_step(step_fn, mesh).lower(state, x, y).compile()
    compile_s = time.perf_counter() - t0
    state, m = step(state, x, y)
    first_loss = float(jax.device_get(m["loss"]))
    state, m = step(state, x, y)  # warm-up
    jax.block_until_ready((state, m))
    holder = {"state": state}

    def repeat():
      st = holder["state"]
      for _ in range(steps):
        st, out = step(st, x, y)
      jax.block_until_ready((st, out))
      holder["state"] = st

    t = common.median_seconds(repeat, repeats)
    rows.append({
        "kind": "scaling", "model": cfg.model_name, "schedule": cfg.variant,
        "config_hash": trainer_common.config_hash(cfg), "image_size": cfg.image_size,
        "mode": mode, "devices": n, "per_device_batch": g // n, "global_batch": g,
        "steps": steps, "repeats": repeats, "compile_s": compile_s, "step_s": t / steps,
        "images_per_s": steps * g / t, "first_loss": first_loss, "train_step": step_name,
        "batch_devices": len(x.sharding.device_set),
        **env, "time": common.utc_now()})
    log(f"[scaling] {cfg.model_name} {mode} {n} device(s), global batch {g}: "
        f"{rows[-1]['images_per_s']:.1f} img/s, first loss {first_loss:.6f}")
  base = rows[0]
  for r in rows:
    r["speedup"] = r["images_per_s"] / base["images_per_s"]
    r["efficiency"] = r["speedup"] / (r["devices"] / base["devices"])
  return rows


def plot(rows: Sequence[dict], path: str) -> str:
  """Throughput (with the ideal linear line) and efficiency against devices."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
  for mode in MODES:
    rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["devices"])
    if not rs:
      continue
    n = [r["devices"] for r in rs]
    line, = ax1.plot(n, [r["images_per_s"] for r in rs], "o-", label=mode)
    ax1.plot(n, [rs[0]["images_per_s"] * k / n[0] for k in n], "--", color=line.get_color(),
             alpha=0.5, label=f"{mode} (ideal)")
    ax2.plot(n, [r["efficiency"] for r in rs], "o-", label=mode)
  counts = sorted({r["devices"] for r in rows})
  for ax in (ax1, ax2):
    ax.set_xlabel("devices")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts)
    ax.set_xticklabels([str(c) for c in counts])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  ax1.set_ylabel("training images / s")
  ax2.set_ylabel("scaling efficiency")
  ax2.set_ylim(0, max(1.1, max(r["efficiency"] for r in rows) * 1.05))
  r0 = rows[0]
  fig.suptitle(f"{r0['model']} {r0['image_size']}x{r0['image_size']} on {r0['device_kind']}"
               f" ({r0['platform']})")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _define_flags():
  from absl import flags

  flags.DEFINE_string("model", "unet", "Model to measure.")
  flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Device counts.")
  flags.DEFINE_integer("per_device_batch", 2, "Batch per device (strong: at the most devices).")
  flags.DEFINE_enum("mode", "strong", ["strong", "weak", "both"], "Scaling mode.")
  flags.DEFINE_enum("schedule", "default", ["default", "paper", "tiny"], "Config profile.")
  flags.DEFINE_integer("image_size", None, "Square input size (default: the profile's).")
  flags.DEFINE_integer("steps", 10, "Steps per timed repeat.")
  flags.DEFINE_integer("repeats", 3, "Timed repeats (the median is reported).")
  flags.DEFINE_multi_string("set", [], "Config override key=value.")
  flags.DEFINE_string("results", os.path.join("bench_results", "scaling.jsonl"),
                      "JSONL to append rows to.")
  flags.DEFINE_string("plot", None, "PNG path (default: scaling_<model>.png beside --results).")
  flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator host:port.")
  flags.DEFINE_integer("num_processes", None, "jax.distributed: number of processes.")
  flags.DEFINE_integer("process_id", None, "jax.distributed: this process's id.")


def main(argv):
  from absl import flags, logging

  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  from busjax import parallel
  parallel.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id)
  import jax

  try:
    devices = sorted({int(n) for n in f.devices})
    if devices[0] < 1 or devices[-1] > jax.device_count():
      raise ValueError(f"--devices={f.devices}: {jax.device_count()} device(s) available "
                       f"({jax.devices()[0].platform}); on CPU set XLA_FLAGS="
                       f"{HOST_DEVICE_FLAG}=N before the run for more")
    common.check_models([f.model])
    cfg = common.build_config(f.model, schedule=f.schedule, overrides=f.set,
                              image_size=f.image_size)
    modes = MODES if f.mode == "both" else (f.mode,)
    for mode in modes:
      global_batches(devices, f.per_device_batch, mode)
  except (KeyError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  rows = []
  for mode in modes:
    rows += measure(cfg, devices, per_device_batch=f.per_device_batch, mode=mode,
                    steps=f.steps, repeats=f.repeats, log=lambda s: print(s, flush=True))
  if jax.process_index() == 0:
    for r in rows:
      common.append_row(f.results, r)
    path = f.plot or os.path.join(os.path.dirname(os.path.abspath(f.results)),
                                  f"scaling_{f.model}.png")
    plot(rows, path)
    from benchmarks import summarize
    print("\n" + summarize.scaling_table(rows)[0])
    print(f"\n[scaling] {len(rows)} rows appended to {f.results}; plot {path}")


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
