"""Classic U-Net (Ronneberger et al., MICCAI 2015), the baseline of every paper."""
import ml_collections

from busjax.configs.base import get_base_config


def get_config(variant: str = "default", name: str = "unet"):
  c = get_base_config(variant)
  c.model.width = 64 if variant == "paper" else (4 if variant == "tiny" else 16)
  c.model.depth = 4
  if variant == "default":
    # 20 cosine epochs fit the 10-minute CPU budget since the up-convolution
    # and pooling rewrite (issue 7): ~1.9 steps/s at 128x128, batch 8, width 16.
    c.epochs = 20
  if variant == "paper":
    c.image_size = 256
    c.batch_size = 4
    c.epochs = 100
    c.optimizer.learning_rate = 1e-4
    c.loss = ml_collections.ConfigDict(dict(name="dice"))
  return c
