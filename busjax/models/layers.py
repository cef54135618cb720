"""Blocks shared by several models. Layout is NHWC throughout."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.9 of running stats, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class ConvBNReLU(nn.Module):
  """Conv (no bias) -> BatchNorm -> ReLU. ``[B,H,W,C] -> [B,H',W',features]``."""
  features: int
  kernel: int = 3
  strides: int = 1
  dilation: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    x = nn.Conv(self.features, (self.kernel, self.kernel), strides=self.strides,
                kernel_dilation=self.dilation, padding="SAME", use_bias=False, name="conv")(x)
    return nn.relu(batch_norm(train, "bn")(x))


class DoubleConv(nn.Module):
  """Two (3x3 conv, BN, ReLU): the U-Net stage. ``[B,H,W,C] -> [B,H,W,features]``."""
  features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    x = ConvBNReLU(self.features, name="c1")(x, train=train)
    return ConvBNReLU(self.features, name="c2")(x, train=train)


def max_pool2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 max-pool, stride 2. ``[B,H,W,C] -> [B,H/2,W/2,C]``."""
  return nn.max_pool(x, (2, 2), strides=(2, 2))
