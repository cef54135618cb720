"""Input-pipeline throughput against the train step it feeds.

  python -m benchmarks.pipeline [--dataset=synthetic_bus] [--model=unet] [--image_size=128]
      [--batch_size=8] [--max_examples=400] [--manual_dir=DIR] [--set key=value]

busjax's pipeline (``busjax.data.pipeline``) has three stages, timed apart:

* ``read``: reading examples from the TFDS array_record source (zlib-decoded
  arrays), checking them and resizing image and mask to the training size
  (``load_data``; done once per run, then held in memory as uint8);
* ``batch``: one epoch of shuffled host batches (``batches``) copied to the
  device (``jax.device_put``), what the training loop does every step;
* ``augment``: the jitted on-device flips, shifts and normalisation that run
  at the start of the train step (``augment`` + ``normalize``), alone.

Prints one JSON row (appended to ``--results`` if given) with each stage's
images/s, the model's train-step images/s measured the same way as
``benchmarks.speed`` (median of repeats, compile excluded), and
``per_step_over_train``: the steady-state pipeline rate (``batch`` and
``augment`` stages) over the train step's rate (>= 5 means the pipeline is
never the bottleneck). ``read`` is a one-off start-up cost per run and is
reported, not counted in that ratio.
"""
from __future__ import annotations

import json
import sys
import time

from benchmarks import common


def measure(cfg, *, source=None, max_examples: int = 400, repeats: int = 5,
            train_steps: int = 5) -> dict:
  """The row described in the module docstring, for ``cfg``'s dataset and model.

  ``source``: a random-access data source (default: ``cfg.dataset`` opened
  through TFDS, built first if needed).
  """
  import jax
  import numpy as np

  from benchmarks import speed
  from busjax.data import pipeline

  if source is None:
    source = pipeline.open_source(cfg.dataset, cfg.data_dir, cfg.manual_dir)

  class Head:  # the first max_examples examples of the source
    def __init__(self, src, n):
      self.src, self.n = src, min(n, len(src))

    def __len__(self):
      return self.n

    def __getitem__(self, i):
      return self.src[i]

  head = Head(source, max_examples)
  t0 = time.perf_counter()
  data = pipeline.load_data(cfg, source=head)
  read_s = time.perf_counter() - t0
  n = len(data.images)

  def one_epoch():
    out = None
    for images, masks in pipeline.batches(data, cfg.batch_size, seed=0, epoch=0):
      out = jax.device_put((images, masks))
    jax.block_until_ready(out)

  batch_s = common.median_seconds(one_epoch, repeats)
  batched = n - n % cfg.batch_size

  @jax.jit
  def aug(rng, images, masks):
    images, masks = pipeline.augment(rng, images, masks, cfg.augment)
    return pipeline.normalize(images), masks

  x, y = jax.device_put((data.images[:cfg.batch_size], data.masks[:cfg.batch_size]))
  rng = jax.random.key(0)
  jax.block_until_ready(aug(rng, x, y))
  steps = 20

  def aug_repeat():
    out = None
    for i in range(steps):
      out = aug(jax.random.fold_in(rng, i), x, y)
    jax.block_until_ready(out)

  aug_s = common.median_seconds(aug_repeat, repeats)
  rates = {"read_images_per_s": n / read_s, "batch_images_per_s": batched / batch_s,
           "augment_images_per_s": steps * cfg.batch_size / aug_s}
  steady = 1.0 / (1.0 / rates["batch_images_per_s"] + 1.0 / rates["augment_images_per_s"])
  train = speed.measure(cfg, steps=train_steps, repeats=3)["train_images_per_s"]
  return {
      "kind": "pipeline", "dataset": cfg.dataset, "model": cfg.model_name,
      "image_size": cfg.image_size, "batch_size": cfg.batch_size, "examples": n, **rates,
      "pipeline_images_per_s": steady, "train_images_per_s": train,
      "per_step_over_train": steady / train, "read_over_train": rates["read_images_per_s"] / train,
      **common.environment(), "time": common.utc_now(),
  }


def _define_flags():
  from absl import flags

  flags.DEFINE_string("dataset", "synthetic_bus", "busjax TFDS dataset.")
  flags.DEFINE_string("model", "unet", "Model whose train step the pipeline feeds.")
  flags.DEFINE_enum("schedule", "default", ["default", "paper", "tiny"], "Config profile.")
  flags.DEFINE_integer("image_size", None, "Square training size (default: the profile's).")
  flags.DEFINE_integer("batch_size", None, "Batch size (default: the profile's).")
  flags.DEFINE_integer("max_examples", 400, "Examples read for the timing.")
  flags.DEFINE_integer("repeats", 5, "Timed repeats (median reported).")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
  flags.DEFINE_string("manual_dir", None, "Manual-download folder of a real dataset.")
  flags.DEFINE_multi_string("set", [], "Config override key=value.")
  flags.DEFINE_string("results", None, "JSONL to append the row to.")


def main(argv):
  from absl import flags, logging

  from busjax.trainers.common import json_safe

  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  try:
    common.check_models([f.model])
    cfg = common.build_config(f.model, schedule=f.schedule, overrides=f.set,
                              image_size=f.image_size, batch_size=f.batch_size,
                              dataset=f.dataset, data_dir=f.data_dir or "",
                              manual_dir=f.manual_dir or "")
  except (KeyError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  row = measure(cfg, max_examples=f.max_examples, repeats=f.repeats)
  if f.results:
    row = common.append_row(f.results, row)
  print(json.dumps(json_safe(row)))


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
