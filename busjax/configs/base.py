"""The config fields every model shares; a model's config file overrides them.

Profiles (``variant``):
  * ``default`` -- sized for a 2-core CPU: 128x128 images, narrow models and a
    short schedule, so ``python -m busjax.main`` finishes in minutes. It says
    so when it starts.
  * ``paper`` -- the paper's own image size, widths, optimiser and epochs.
  * ``tiny`` -- for tests: 64x64, smallest widths, a couple of steps.
"""
from __future__ import annotations

import ml_collections

VARIANTS = ("default", "paper", "tiny")


def get_base_config(variant: str = "default") -> ml_collections.ConfigDict:
  """Shared defaults. Fields:

  model: kwargs of the registered Flax module (``cls(**model)``).
  loss: ``name`` (see ``busjax.losses.LOSSES``) plus its keyword arguments.
  optimizer: ``name`` (adam), ``learning_rate``, ``b1``, ``b2``,
    ``plateau_factor``/``plateau_patience`` (0 patience = constant LR).
  augment: random flips and shifts (fraction of the image size), and
    contrast/brightness/gamma jitter of the image.
  """
  if variant not in VARIANTS:
    raise ValueError(f"unknown config variant {variant!r}; expected one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.model_name = ""
  c.variant = variant
  c.model = ml_collections.ConfigDict()
  # Convolution kernels of every model (busjax.ops.conv): "auto" runs oneDNN's
  # on a single CPU device when installed, XLA's elsewhere; "xla" or "onednn"
  # forces one. Same function and parameters either way.
  c.model.conv_backend = "auto"
  # Data.
  c.dataset = "synthetic_bus"
  c.data_dir = ""          # TFDS data_dir; "" = ~/tensorflow_datasets
  c.manual_dir = ""        # publisher's archive or folder for real datasets
  c.image_size = 128
  c.num_folds = 5
  c.fold = 0
  c.seed = 0
  # XLA's RngBitGenerator compiles parameter initialisation ~1.5-4x faster than
  # threefry on CPU; its streams are deterministic per backend (CPU runs repeat
  # exactly) but differ between CPU and GPU. "threefry2x32" is portable.
  c.prng_impl = "rbg"
  c.include_normal = True  # keep lesion-free images (empty masks) in training
  # Intensity jitter (busjax.data.pipeline.augment): 0 = off.
  c.augment = ml_collections.ConfigDict(dict(hflip=True, vflip=False, shift=0.1, contrast=0.0,
                                             brightness=0.0, gamma=0.0))
  # Optimisation.
  c.batch_size = 8
  # default: 15 epochs with a cosine-decayed LR, a few minutes per model on 2
  # CPU cores (the U-Net's config raises it to 20); paper: the papers'
  # constant Adam rates (each config sets its epochs).
  c.epochs = 15
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, b1=0.9, b2=0.999, weight_decay=0.0,
      plateau_factor=0.5, plateau_patience=0,
      schedule="constant" if variant == "paper" else "cosine", min_lr_fraction=0.02))
  # batch_dice: share of the batch-pooled Dice in the Dice term (busjax.losses.soft_dice_loss).
  c.loss = ml_collections.ConfigDict(dict(name="bce_dice", bce_weight=0.5, dice_weight=0.5,
                                          batch_dice=0.0))
  c.early_stopping_patience = 0   # epochs without validation-Dice gain; 0 = off
  # Logging / evaluation.
  c.log_every = 10                # steps between metrics.jsonl rows
  c.eval_every_epochs = 1         # validation Dice for best-checkpoint choice
  c.keep_checkpoints = 2
  c.threshold = 0.5
  c.postprocess = False           # also report post-processed metrics (RCA-IUnet Table 2)
  # With postprocess: choose the small-region criterion on the validation split
  # (busjax.postprocess.select_min_region_fraction) instead of its fixed default.
  c.postprocess_select = False
  c.num_overlays = 6
  c.max_steps = 0                 # >0 caps the total number of steps (tests)
  if variant == "tiny":
    c.image_size = 64
    c.batch_size = 2
    c.epochs = 1
    c.max_steps = 2
    c.num_overlays = 1
  return c
