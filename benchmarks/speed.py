"""Speed of one model: parameters, GFLOPs, compile time, train and inference throughput.

  python -m benchmarks.speed --model=unet --image_size=256 --batch_size=8
  python -m benchmarks.speed --model=rca_iunet --schedule=paper --steps=20 --repeats=7
  python -m benchmarks.speed --all --schedule=paper --results=bench/speed.jsonl

Prints one JSON line per model:

* ``params``: trainable parameters of the registered module (the generator for GANs);
* ``gflops_per_image``: XLA's cost analysis of the compiled forward pass in
  inference mode (``jax.jit(f).lower(...).compile().cost_analysis()["flops"]``,
  a multiply-add counted as 2) divided by the batch size;
* ``compile_s``: tracing + lowering + compiling the train step;
* ``train_images_per_s`` / ``infer_images_per_s``: median over ``--repeats``
  of ``--steps`` back-to-back calls (``block_until_ready`` at the end of each
  repeat), after the compile and two warm-up calls; inputs are already on the
  device, so host-to-device copies are not counted;
* ``peak_memory_bytes``: the device's ``peak_bytes_in_use`` where the backend
  reports it (GPU, TPU; None on CPU), and ``train_step_temp_bytes``: XLA's
  temporary buffer size of the compiled train step (every backend);
* ``dtype`` (the model's compute dtype, ``model.dtype`` where it has one),
  ``train_tflops`` / ``infer_tflops`` (the forward FLOPs per image times
  images/s, x3 for training) and ``peak_tflops`` (the device's dense peak for
  that dtype from :data:`benchmarks.common.PEAK_TFLOPS`; None on CPUs);
* ``conv_backend``: the convolution kernels the model ran (``busjax.ops.conv``:
  ``onednn`` or ``xla``; None for models without the choice);
* ``train_step``: which step was timed. Adversarial models time the full
  adversarial step (discriminator and generator updates) of
  ``busjax.trainers.adversarial``.

``--all`` measures every registered model (each at its profile's image size
unless ``--image_size`` is given), appends the rows to ``--results`` and writes
a Markdown table beside it (``.md``). ``--set key=value`` or
``--set model:key=value`` overrides config fields as in ``benchmarks.cv``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Sequence

from benchmarks import common


def forward_flops(compiled) -> float | None:
  """The ``flops`` of a compiled computation's XLA cost analysis (None if absent)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  flops = float(cost["flops"])
  return flops if math.isfinite(flops) and flops >= 0 else None


def measure(cfg, *, steps: int = 10, repeats: int = 5, seed: int = 0) -> dict:
  """Measures ``cfg``'s model at ``cfg.image_size`` and ``cfg.batch_size``.

  Returns the row described in the module docstring (plus the environment).
  """
  import jax

  from busjax import registry
  from busjax.trainers import common as trainer_common
  from busjax.trainers import supervised

  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  b, s = cfg.batch_size, cfg.image_size
  images, masks = common.synthetic_batch(b, s, seed)
  x, y = jax.device_put(images), jax.device_put(masks)
  model = registry.build_model(cfg)
  state, train_step, step_name = common.state_and_train_step(cfg)

  # Train step: compile, warm up, time.
  t0 = time.perf_counter()
  step = train_step.lower(state, x, y).compile()
  compile_s = time.perf_counter() - t0
  mem = step.memory_analysis()
  temp_bytes = int(mem.temp_size_in_bytes) if mem is not None else None
  for _ in range(2):
    state, m = step(state, x, y)
  jax.block_until_ready((state, m))
  holder = {"state": state, "metrics": m}

  def train_repeat():
    st = holder["state"]
    for _ in range(steps):
      st, out = step(st, x, y)
    jax.block_until_ready((st, out))
    holder["state"], holder["metrics"] = st, out

  train_s = common.median_seconds(train_repeat, repeats)
  loss = float(jax.device_get(holder["metrics"]["loss"]))

  # Forward pass (inference mode) of the generator / segmentation network.
  gen = holder["state"].generator if hasattr(holder["state"], "generator") else holder["state"]
  predict = supervised.make_predict_fn(cfg, model)
  fwd = predict.lower(gen.params, gen.batch_stats, x).compile()
  flops = forward_flops(fwd)
  dtype = cfg.model.get("dtype", "float32")
  conv_backend = None
  if "conv_backend" in cfg.model:
    # XLA's cost analysis does not see inside FFI calls (oneDNN's
    # convolutions): count the FLOPs of the same network on XLA's kernels.
    from busjax.ops import conv
    conv_backend = conv.resolve_backend(cfg.model.conv_backend, dtype)
    if conv_backend != "xla":
      xla_cfg = cfg.copy_and_resolve_references()
      xla_cfg.model.conv_backend = "xla"
      xla_predict = supervised.make_predict_fn(xla_cfg, registry.build_model(xla_cfg))
      flops = forward_flops(xla_predict.lower(gen.params, gen.batch_stats, x).compile())
  for _ in range(2):
    jax.block_until_ready(fwd(gen.params, gen.batch_stats, x))

  def infer_repeat():
    out = None
    for _ in range(steps):
      out = fwd(gen.params, gen.batch_stats, x)
    jax.block_until_ready(out)

  infer_s = common.median_seconds(infer_repeat, repeats)
  gflops = None if flops is None else flops / b / 1e9
  env = common.environment()
  return {
      "kind": "speed", "model": cfg.model_name, "schedule": cfg.variant,
      "config_hash": trainer_common.config_hash(cfg), "image_size": s, "batch_size": b,
      "steps": steps, "repeats": repeats, "params": common.count_params(cfg),
      "gflops_per_image": gflops, "dtype": dtype,
      "compile_s": compile_s,
      "train_images_per_s": steps * b / train_s, "train_step_ms": 1000 * train_s / steps,
      "infer_images_per_s": steps * b / infer_s, "infer_ms_per_image": 1000 * infer_s / steps / b,
      "train_tflops": common.achieved_tflops(gflops, steps * b / train_s, train=True),
      "infer_tflops": common.achieved_tflops(gflops, steps * b / infer_s, train=False),
      "peak_tflops": common.peak_tflops(env["device_kind"], dtype),
      "peak_memory_bytes": common.peak_memory_bytes(), "train_step_temp_bytes": temp_bytes,
      "train_step": step_name, "final_loss": loss,  # finite: the timed step did real work
      "conv_backend": conv_backend,
      **env, "time": common.utc_now(),
  }


def measure_models(models: Sequence[str], *, schedule: str = "default",
                   image_size: int | None = None, batch_size: int | None = None,
                   overrides: Sequence[str] = (), steps: int = 10, repeats: int = 5,
                   results: str | None = None, log=print) -> list[dict]:
  """:func:`measure` for each model; rows appended to ``results`` if given.

  A model that fails (e.g. an image size its depth cannot divide) is reported
  through ``log`` and skipped.
  """
  from busjax.trainers.common import json_safe

  rows = []
  for name in models:
    try:
      cfg = common.build_config(name, schedule=schedule, overrides=overrides,
                                image_size=image_size, batch_size=batch_size)
      row = measure(cfg, steps=steps, repeats=repeats)
    except Exception as e:  # one model's failure must not lose the others' rows
      if len(models) == 1:
        raise
      log(f"[speed] {name}: failed: {type(e).__name__}: {e}")
      continue
    if results:
      row = common.append_row(results, row)
    rows.append(row)
    log(json.dumps(json_safe(row)))
  return rows


def _define_flags():
  from absl import flags

  flags.DEFINE_string("model", "unet", "Model to measure.")
  flags.DEFINE_bool("all", False, "Measure every registered model.")
  flags.DEFINE_enum("schedule", "default", ["default", "paper", "tiny"], "Config profile.")
  flags.DEFINE_integer("image_size", None, "Square input size (default: the profile's).")
  flags.DEFINE_integer("batch_size", None, "Batch size (default: the profile's).")
  flags.DEFINE_integer("steps", 10, "Calls per timed repeat.")
  flags.DEFINE_integer("repeats", 5, "Timed repeats (the median is reported).")
  flags.DEFINE_multi_string("set", [], "Config override key=value or model:key=value.")
  flags.DEFINE_string("results", None,
                      "JSONL to append rows to (default with --all: bench_results/speed.jsonl).")


def main(argv):
  from absl import flags, logging

  from busjax import registry
  from benchmarks import summarize

  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  models = registry.model_names() if f.all else [f.model]
  try:
    common.check_models(models)
    for m in models:
      common.build_config(m, schedule=f.schedule, overrides=f.set, image_size=f.image_size,
                          batch_size=f.batch_size)
  except (KeyError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  results = f.results or (os.path.join("bench_results", "speed.jsonl") if f.all else None)
  rows = measure_models(models, schedule=f.schedule, image_size=f.image_size,
                        batch_size=f.batch_size, overrides=f.set, steps=f.steps,
                        repeats=f.repeats, results=results,
                        log=lambda s: print(s, flush=True))
  if f.all and rows:
    md, _ = summarize.speed_table(rows)
    path = os.path.splitext(results)[0] + ".md"
    with open(path, "w") as fh:
      fh.write(md + "\n")
    print(f"\n{md}\n\n[speed] {len(rows)} rows appended to {results}; table in {path}",
          file=sys.stderr)


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
