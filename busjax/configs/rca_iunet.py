"""RCA-IUnet (Punn & Agarwal 2022) and its Table 3 ablations: ``busjax/models/rca_iunet.py``.

One config for seven registered names; ``name`` sets the component flags:

=====================  =========  ==========  =========  ===================
name                   RIC        HP          CSA        authors' builder
=====================  =========  ==========  =========  ===================
rca_iunet              yes        yes         yes        Unetcsarichp
rca_iunet_base         no         no          no         Unet
rca_iunet_ric          yes        no          no         Unetric
rca_iunet_csa          no         no          yes        Unetcsa
rca_iunet_ric_hp       yes        yes         no         Unetrichp
rca_iunet_csa_hp       no         yes         yes        Unetcsahp
rca_iunet_csa_ric      yes        no          yes        Unetcsaric
=====================  =========  ==========  =========  ===================

Paper (Sec. 4.2): 256x256, loss 0.5 BCE + 0.5 Dice (Eq. 4), Adam 1e-3 halved
when learning stagnates, early stopping on the validation error; metrics with
and without post-processing (Table 2). Not in the paper, our choices:
plateau patience 5 epochs, early-stopping patience 10 epochs, batch 8,
at most 100 epochs (early stopping normally ends the run first), no
augmentation (the paper names none for its training).

``default`` keeps the paper's model (base 16, 2.9M parameters at 256; it is
already small) at 128x128 with the base's augmentation, for 8 epochs (its CPU
step is ~7x slower than the default U-Net's).
"""
from __future__ import annotations

import ml_collections

from busjax.configs.base import get_base_config

# name -> (use_inception, use_hybrid_pool, use_attention)
ABLATIONS: dict[str, tuple[bool, bool, bool]] = {
    "rca_iunet": (True, True, True),
    "rca_iunet_base": (False, False, False),
    "rca_iunet_ric": (True, False, False),
    "rca_iunet_csa": (False, False, True),
    "rca_iunet_ric_hp": (True, True, False),
    "rca_iunet_csa_hp": (False, True, True),
    "rca_iunet_csa_ric": (True, False, True),
}


def get_config(variant: str = "default", name: str = "rca_iunet") -> ml_collections.ConfigDict:
  if name not in ABLATIONS:
    raise ValueError(f"unknown RCA-IUnet variant {name!r}; expected one of {sorted(ABLATIONS)}")
  c = get_base_config(variant)
  ric, hp, csa = ABLATIONS[name]
  c.model.base_width = 4 if variant == "tiny" else 16
  c.model.use_inception = ric
  c.model.use_hybrid_pool = hp
  c.model.use_attention = csa
  c.model.spectral_mode = "spatial"   # "code": the authors' FFT over (W, C)
  c.model.dropout_rate = 0.0
  c.loss = ml_collections.ConfigDict(dict(name="bce_dice", bce_weight=0.5, dice_weight=0.5))
  c.optimizer.learning_rate = 1e-3
  c.optimizer.plateau_factor = 0.5
  c.optimizer.plateau_patience = 5
  c.early_stopping_patience = 10
  c.postprocess = True
  if variant == "default":
    # ~2.5 train images/s on a 2-core CPU (separable convolutions and
    # spectral pooling; docs/speed_cpu_default.jsonl): 8 epochs take ~20 min.
    c.epochs = 8
  if variant == "paper":
    c.image_size = 256
    c.batch_size = 8
    c.epochs = 100
    c.augment.hflip = False
    c.augment.vflip = False
    c.augment.shift = 0.0
  return c
