"""Classic U-Net.

Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015; as used by limy-ulab/US-SEG (the plain U-Net of the
large pre-trained model paper) and as the baseline of every seed paper.

Per stage two (3x3 conv without bias, BN, ReLU); four 2x2 max-pools;
ConvTranspose 2x2 stride 2 to half the channels; concat ``[skip, up]``; a 1x1
head. Widths ``width * 2**i`` for i = 0..depth (64-128-256-512-1024 at the
paper's width 64: 31.04M parameters at 1 input channel).

Deviation: padding is "SAME" (the 2015 paper used valid convolutions and
cropping); every public BUS reimplementation pads, and it keeps input and
output sizes equal.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from busjax.models.layers import Conv, DoubleConv, UpConv2x2, max_pool2
from busjax.registry import register


@register("unet", trainer="supervised")
class UNet(nn.Module):
  """U-Net.

  Attributes:
    width: channels of the first stage (64 in the paper).
    depth: number of 2x2 down-samplings (4 in the paper).
    num_classes: output channels (1: tumour logit).
    conv_backend: convolution kernels (``busjax.ops.conv``):
      ``"auto"`` runs oneDNN's on a single CPU device when installed, XLA's
      elsewhere; ``"xla"``/``"onednn"`` force one. Same function and
      parameters either way.
    dtype: compute dtype (``"float32"``, or ``"bfloat16"`` for mixed
      precision on GPUs/TPUs): the input is cast to it, every convolution
      and activation runs in it, BatchNorm's statistics are computed in
      float32, parameters stay float32, and the logits are returned as
      float32 so the loss is computed in float32.

  Call: ``x`` float32 ``[B, H, W, 1]`` in [0, 1], H and W divisible by
  ``2**depth``; returns ``(logits [B, H, W, num_classes], aux)`` where aux
  holds ``decoder_features``: the output of each decoder stage, deepest first.
  """
  width: int = 64
  depth: int = 4
  num_classes: int = 1
  conv_backend: str = "auto"
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False):
    widths = [self.width * 2**i for i in range(self.depth + 1)]
    x = x.astype(self.dtype)
    skips = []
    for i in range(self.depth):
      x = DoubleConv(widths[i], self.conv_backend, name=f"enc{i}")(x, train=train)
      skips.append(x)
      x = max_pool2(x)
    x = DoubleConv(widths[-1], self.conv_backend, name="bottleneck")(x, train=train)
    decoder_features = []
    for i in reversed(range(self.depth)):
      up = UpConv2x2(widths[i], backend=self.conv_backend, name=f"up{i}")(x)
      x = DoubleConv(widths[i], self.conv_backend, name=f"dec{i}")(
          jnp.concatenate([skips[i], up], -1), train=train)
      decoder_features.append(x)
    logits = Conv(self.num_classes, 1, backend=self.conv_backend, name="head")(x)
    return logits.astype(jnp.float32), {"decoder_features": decoder_features}
