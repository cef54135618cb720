"""Deep-supervised U-Net with stage discriminators (Li et al., MICCAI 2023).

Paper: Adam 1e-4, batch 4, 100 epochs; Dice on every decoder stage with
alpha = (1, 0.1, 0.1, 0.1); adversarial weight beta_n = 0.05 per stage; the
segmentation network and the four discriminators updated alternately in each
iteration. The paper gives no training image size (its scans are 512x480);
``paper`` uses 256x256 like the other U-Net baselines here.

``loss`` is the supervised part of Eq. (1) (deep-supervision Dice);
``adversarial`` holds what the adversarial trainer
(``busjax/trainers/adversarial.py``) adds: the stage discriminators' terms.
"""
from __future__ import annotations

import ml_collections

from busjax.configs.base import get_base_config


def get_config(variant: str = "default", name: str = "lpm_unet") -> ml_collections.ConfigDict:
  c = get_base_config(variant)
  width = {"paper": 64, "default": 16, "tiny": 4}[variant]
  c.model.width = width
  c.model.depth = 4
  c.model.upsample_side_outputs = False
  c.loss = ml_collections.ConfigDict(dict(name="deep_supervision_dice", alphas=(1.0, 0.1, 0.1, 0.1)))
  # Kwargs of busjax.models.lpm_unet.LPMDiscriminators (see build_discriminator).
  c.discriminator = ml_collections.ConfigDict(dict(width=width, num_stages=4))
  c.adversarial = ml_collections.ConfigDict(dict(
      beta=0.05,                 # beta_1..beta_4 of Eq. (1), one value for every stage
      d_learning_rate=c.optimizer.learning_rate,  # paper: one Adam rate (1e-4) for the framework
      d_b1=0.9, d_b2=0.999,      # Adam defaults (the paper names Adam only)
      d_steps=1,                 # discriminator updates per generator update ("alternately")
      separate_d_optimizers=True,  # one optimiser state per stage discriminator
      # Eq. (1) writes the generator's term as + beta * log(1 - CN(P)) (the
      # saturating minimax form); True would use -log CN(P) instead.
      non_saturating=False,
  ))
  if variant == "paper":
    c.image_size = 256
    c.batch_size = 4
    c.epochs = 100
    c.optimizer.learning_rate = 1e-4
    c.adversarial.d_learning_rate = 1e-4
  return c
