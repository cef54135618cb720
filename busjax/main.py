"""Command line: train and evaluate one model on one fold of one dataset.

  python -m busjax.main --model=unet                 # synthetic data, CPU profile
  python -m busjax.main --model=rca_iunet --dataset=busbra \\
      --manual_dir=/data/BUSBRA --schedule=paper --fold=2

Outputs go to ``<workdir>/<dataset>/<model>/fold_<k>/`` (config.json,
splits.json, checkpoints/, metrics.jsonl, eval.json, overlays/). Running the
same command again resumes from the latest checkpoint; ``--eval_only``
evaluates the best checkpoint. This is the only module that reads flags.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging

from busjax import registry
from busjax.configs.overrides import apply_overrides, parse_value  # noqa: F401  (re-exported)

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "unet", "Model name (see --helpfull for the list).")
flags.DEFINE_string("dataset", None, "TFDS dataset (builder[/config]); default synthetic_bus.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (default ~/tensorflow_datasets).")
flags.DEFINE_string("manual_dir", None, "Folder or archive of a manually downloaded dataset.")
flags.DEFINE_string("workdir", "runs", "Root folder of the run outputs.")
flags.DEFINE_enum("schedule", "default", ["default", "paper", "tiny"],
                  "Config profile: 'default' is sized for a CPU, 'paper' is the paper's own.")
flags.DEFINE_integer("fold", None, "Test fold (validation is fold+1 mod num_folds).")
flags.DEFINE_integer("num_folds", None, "Number of cross-validation folds.")
flags.DEFINE_integer("image_size", None, "Square input size in pixels.")
flags.DEFINE_integer("epochs", None, "Training epochs.")
flags.DEFINE_integer("batch_size", None, "Batch size.")
flags.DEFINE_integer("seed", None, "Seed of parameters, folds, shuffling and augmentation.")
flags.DEFINE_bool("eval_only", False, "Only evaluate the best checkpoint.")
flags.DEFINE_multi_string("set", [], "Config override key=value, e.g. --set model.width=16.")


def build_config(argv_flags=None):
  """The run's config: the model's profile, then flags, then ``--set`` overrides."""
  f = argv_flags or FLAGS
  cfg = registry.get_config(f.model, f.schedule)
  for name in ("dataset", "data_dir", "manual_dir", "fold", "num_folds", "image_size",
               "epochs", "batch_size", "seed"):
    v = getattr(f, name)
    if v is not None:
      cfg[name] = v
  cfg.eval_only = bool(f.eval_only)
  return apply_overrides(cfg, list(f.set))


def known_datasets() -> list[str]:
  import tfds_builders
  return sorted(tfds_builders.DATASETS)


def main(argv):
  del argv
  # Orbax and JAX log every checkpoint step at INFO through absl: keep the
  # console for the progress bar, warnings and the result table.
  logging.set_verbosity(logging.WARNING)
  names = registry.model_names()
  if FLAGS.model not in names:
    print(f"error: unknown model {FLAGS.model!r}. Valid models: {', '.join(names)}",
          file=sys.stderr)
    sys.exit(2)
  datasets = known_datasets()
  if FLAGS.dataset is not None and FLAGS.dataset.split("/")[0] not in datasets:
    print(f"error: unknown dataset {FLAGS.dataset!r}. Valid datasets: {', '.join(datasets)}",
          file=sys.stderr)
    sys.exit(2)
  try:
    cfg = build_config()
  except (KeyError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if cfg.variant == "default":
    print(f"[busjax] {cfg.model_name}: CPU-sized 'default' profile ({cfg.image_size}x"
          f"{cfg.image_size}, {cfg.epochs} epochs, batch {cfg.batch_size}, model {cfg.model.to_dict()})."
          " Use --schedule=paper for the paper's own settings.")
  if "conv_backend" in cfg.model:
    from busjax.ops import conv
    try:
      backend = conv.resolve_backend(cfg.model.conv_backend)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    print(f"[busjax] convolution kernels: {conv.describe(backend)}")
  from busjax import checkpointing, trainers
  try:
    trainers.run(cfg, FLAGS.workdir)
  except (checkpointing.CheckpointMismatchError, FloatingPointError) as e:
    # Our own messages name the folder and the way out; a traceback adds nothing.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
