"""STAN (Shareef et al., ISBI 2020): ``busjax/models/stan.py``.

Paper (Sec. 2.2): 256x256, width/height shift augmentation (no flips named),
batch 4, 50 epochs, Adam 1e-4, Dice loss, 5-fold cross-validation. The shift
fraction is not given; 0.1 of the image size (the base default) is ours.
Width 32 (32-64-128-256-512) follows both public re-implementations (the
paper gives none).

``default`` (2-core CPU): 128x128, width 8 (1/16 of the parameters), Adam
1e-3 and 0.5 BCE + 0.5 Dice, the base's 15 cosine epochs: in so short a schedule the
paper's 1e-4 barely moves a model trained from scratch, and the BCE term adds
dense per-pixel gradients (soft Dice alone starts slowly, and on lesion-free
images it only sees the predicted area).
The architecture is otherwise the paper's (no batch norm, paper wiring).
"""
from __future__ import annotations

import ml_collections

from busjax.configs.base import get_base_config


def get_config(variant: str = "default", name: str = "stan") -> ml_collections.ConfigDict:
  c = get_base_config(variant)
  c.model.width = {"paper": 32, "default": 8, "tiny": 2}[variant]
  c.model.wiring = "paper"        # "keras" / "pytorch": the public re-implementations
  c.model.batch_norm = False
  if variant == "paper":
    c.image_size = 256
    c.batch_size = 4
    c.epochs = 50
    c.optimizer.learning_rate = 1e-4
    c.loss = ml_collections.ConfigDict(dict(name="dice"))
    c.augment.hflip = False
    c.augment.vflip = False
    c.augment.shift = 0.1
  return c
