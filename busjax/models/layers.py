"""Blocks shared by several models. Layout is NHWC throughout."""
from __future__ import annotations

from typing import Callable

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
  """2x2 max-pool, stride 2 (floor on odd sizes). ``[B,H,W,C] -> [B,H//2,W//2,C]``.

  Written as a reshape and a max over the two window axes rather than
  ``nn.max_pool`` (``lax.reduce_window``): the forward values are identical,
  but the gradient of a plain reduction fuses into neighbouring element-wise
  work, while ``reduce_window``'s gradient (select-and-scatter with iotas the
  size of the activation) cost about a tenth of the width-16 U-Net train step
  on XLA CPU (``benchmarks/vs_pytorch.py``, issue 7). Ties (e.g. four zeros
  after a ReLU) share the gradient equally instead of giving it all to the
  first maximum; the gradient reaching a ReLU's zero output is discarded by
  the ReLU either way.
  """
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class UpConv2x2(nn.Module):
  """Transposed convolution, kernel 2x2, stride 2: ``[B,H,W,C] -> [B,2H,2W,features]``.

  The same function and parameters (``kernel [2, 2, C, features]``, ``bias``)
  as ``nn.ConvTranspose(features, (2, 2), strides=(2, 2))``, so checkpoints
  and parameter counts are unchanged. With stride equal to the kernel the
  output windows do not overlap, so the layer is one matrix product per input
  pixel followed by depth-to-space; written that way instead of XLA's
  input-dilated convolution, whose weight gradient convolves a 3/4-zero
  input: 2.2x the width-64 U-Net train-step throughput on CPU (issue 7).
  """
  features: int
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", self.kernel_init, (2, 2, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    # nn.ConvTranspose (transpose_kernel=False) applies the spatially flipped kernel.
    y = jnp.einsum("bhwc,ijco->bhiwjo", x, kernel[::-1, ::-1])
    b, h, _, w, _, o = y.shape
    return y.reshape(b, 2 * h, 2 * w, o) + bias
