"""RCA-IUnet: residual cross-spatial attention guided inception U-Net.

Punn, Agarwal, "RCA-IUnet: a residual cross-spatial attention-guided inception
U-Net model for tumor segmentation in breast ultrasound imaging", Machine
Vision and Applications 33, 27 (2022); ``shared/papers/rca_iunet.txt``.

The paper describes the blocks only in words and figures; the wiring here is
that of the authors' code (nspunn1993/RCA-IUnet @a2013ba0, ``models.py``,
``RCAIUnet_Unetcsarichp``; facts in ``shared/MODEL_NOTES.md``):

* U-Net topology, 4 down-samplings, widths ``base_width * 2**l`` =
  16-32-64-128-256 (the text's "channel depth increases by 50%" contradicts
  its own 2.9M parameters; the code doubles).
* Feature convs are depthwise-separable (depthwise k x k without bias, then
  pointwise 1x1 with bias, like Keras' ``SeparableConv2D``). The 1x1 convs of
  hybrid pooling, attention, the base block's shortcut and the head are plain
  convs with bias, as in the code.
* RIC, residual inception block (paper Fig. 4): stage 1 {sep3x3, sep1x1,
  sep5x5, hybrid-pool-same} each -> BN -> ReLU -> concat -> sep1x1; stage 2
  the same on that output with three sep3x3; optional dropout; shortcut
  sep1x1 -> BN; added, no activation after the add.
* HP, hybrid pooling (Sec. 3.2): concat(max-pool 2x2, ReLU(spectral pool to
  H/2 x W/2)) -> 1x1 conv back to C channels. The "same" variant inside RIC
  uses a 2x2 max-pool with stride 1 and a full-size spectral pool. The ReLU
  on the spectral branch is the code's (its spectral layer has a ReLU
  activation); the paper does not say.
* CSA, cross-spatial attention on each long skip (Sec. 3.4, Fig. 5), from three
  encoder levels: x = the input of the encoder block at that level (pooled
  output of the level above; the image at the top), y = that block's output,
  z = the next deeper encoder block's output; each gated by 1x1 conv -> BN ->
  ReLU to the level width; theta_x, theta_y: 2x2 stride-2 convs; phi_z: 1x1
  conv then 3x3 stride-1 transposed conv; sum -> ReLU -> psi (1x1 to one
  channel) -> sigmoid -> nearest up-sampling x2 -> multiply with gated x ->
  1x1 conv -> BN -> ReLU.
* Decoder: nearest up-sampling x2 -> concat [up, skip or attention] -> block.
  Head: 1x1 conv -> BN; the sigmoid is left to the loss (logits returned).

Spectral pooling (Rippel et al., NeurIPS 2015) -- ``spectral_mode``:

* ``"spatial"`` (default; what the paper describes): 2-D DFT over H and W,
  keep the centred low frequencies ``h x w`` (the Nyquist row/column of an
  even crop combines the source's +-h/2 bins with weight 1/sqrt(2), Rippel's
  rule, which the authors' crop helper also uses), inverse DFT, real part,
  scaled by ``h*w / (H*W)`` so the mean is preserved: a constant image stays
  the same constant and a band-limited image becomes ``x[:, ::2, ::2]``.
  The full-size ("same") crop is the identity.
* ``"code"``: the authors' TensorFlow behaviour. ``tf.signal.fft2d`` acts on
  the innermost two axes of an NHWC tensor (W and C), the crop is then applied
  to axes H (spatial rows) and W (frequencies) with the same rule, and
  ``ifft2d`` again over (W, C): rows are cut, not low-passed (the middle
  output row is ``(row h/2 + row H-h/2) / sqrt 2``), and values are scaled by
  ``W/w`` (x2 when halving). Even the "same" crop is not the identity there
  (the middle row and frequency column get a factor sqrt 2). Needs H = W and
  crop sizes >= 3, as the code asserts.

Ablations of the paper's Table 3 are the flags ``use_inception`` (RIC instead
of the code's ``double_conv_layer``: two sep3x3 -> BN -> ReLU, dropout, plain
1x1 shortcut -> BN, add), ``use_hybrid_pool`` (HP instead of 2x2 max-pool for
down-sampling; RIC always uses the "same" hybrid pooling inside, as the
code's Unetric does) and ``use_attention`` (CSA instead of the plain skip);
they are registered as ``rca_iunet_base`` (Unet), ``rca_iunet_ric``,
``rca_iunet_csa``, ``rca_iunet_ric_hp``, ``rca_iunet_csa_hp`` and
``rca_iunet_csa_ric``; ``rca_iunet`` has all three.

Convs that feed a BatchNorm keep their bias, as in the code (they count in
the 2.9M); in train mode BN removes it, so those biases get zero gradient.
BatchNorm is ``layers.batch_norm`` (momentum 0.9, eps 1e-5) instead of Keras'
defaults (0.99, 1e-3), for one convention across busjax models.

Parameters at 256x256x1, base 16: 2,907,905 trainable (BN scale/offset
included; + 15,620 BN running statistics, 2,923,525 as Keras counts them); the
paper reports 2.9M. Ablations: base 348,604; ric 2,370,573; csa 842,176;
ric_hp 2,414,333; csa_hp 885,936; csa_ric 2,864,145.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from busjax.models.layers import Conv, DepthwiseConv, batch_norm, max_pool2, max_pool2_same
from busjax.registry import register

SPECTRAL_MODES = ("spatial", "code")


# ----------------------------------------------------------------------------
# Spectral pooling.

def _lowpass_crop(z: jnp.ndarray, size: int, axis: int) -> jnp.ndarray:
  """Keeps the ``size`` lowest frequencies of an unshifted spectrum along ``axis``.

  Odd ``size = 2n+1``: bins ``0..n`` and ``-n..-1``. Even ``size = 2n``: bins
  ``0..n-1``, then ``(z[n] + z[-n]) / sqrt(2)`` as the new Nyquist bin, then
  ``-(n-1)..-1`` (Rippel et al. 2015; the authors' ``_common_spectral_pool``).
  """
  n_in = z.shape[axis]
  if not 1 <= size <= n_in:
    raise ValueError(f"cannot crop {n_in} frequencies to {size}")

  def take(start, stop):
    # Static slices, not a gather: a gather's gradient is a scatter, which cost
    # ~40% more in the backward pass of the level-0 spectral pool on XLA CPU.
    return lax.slice_in_dim(z, start, stop, axis=axis)

  if size % 2:
    n = (size - 1) // 2
    parts = [take(0, n + 1)] + ([take(n_in - n, n_in)] if n else [])
  else:
    n = size // 2
    nyquist = (take(n, n + 1) + take(n_in - n, n_in - n + 1)) * math.sqrt(0.5)
    parts = [take(0, n), nyquist] + ([take(n_in - n + 1, n_in)] if n > 1 else [])
  return jnp.concatenate(parts, axis=axis)


def spectral_pool(x: jnp.ndarray, out_hw: tuple[int, int], mode: str = "spatial") -> jnp.ndarray:
  """Spectral pooling of ``x`` ``[B,H,W,C]`` (real) to ``[B,h,w,C]``, ``(h, w) = out_hw``.

  ``mode="spatial"``: low-pass crop of the 2-D DFT over (H, W), real part of
  the inverse, scaled by ``h*w/(H*W)`` (mean preserving; a full-size crop
  returns ``x``). ``mode="code"``: the authors' code (FFT over (W, C), crop of
  (H, W), inverse FFT over (W, C), real part; no rescaling). See the module
  docstring. Output dtype float32.
  """
  if mode not in SPECTRAL_MODES:
    raise ValueError(f"unknown spectral_mode {mode!r}; expected one of {SPECTRAL_MODES}")
  x = x.astype(jnp.float32)
  _, hh, ww, _ = x.shape
  h, w = out_hw
  if mode == "spatial":
    if (h, w) == (hh, ww):
      return x
    z = jnp.fft.fft2(x, axes=(1, 2))
    z = _lowpass_crop(_lowpass_crop(z, h, 1), w, 2)
    return jnp.real(jnp.fft.ifft2(z, axes=(1, 2))) * (h * w / (hh * ww))
  if hh != ww or h != w or h < 3:
    raise ValueError(f"spectral_mode='code' needs square maps and crops >= 3 (the authors' "
                     f"asserts), got {(hh, ww)} -> {(h, w)}")
  z = jnp.fft.fft2(x.astype(jnp.complex64), axes=(2, 3))
  z = _lowpass_crop(_lowpass_crop(z, h, 1), w, 2)
  return jnp.real(jnp.fft.ifft2(z, axes=(2, 3)))


# ----------------------------------------------------------------------------
# Blocks.

class SeparableConv(nn.Module):
  """Depthwise k x k (no bias) then pointwise 1x1 (bias): Keras ``SeparableConv2D``.

  ``[B,H,W,C] -> [B,H,W,features]``; ``C*k*k + C*features + features`` parameters.
  """
  features: int
  kernel: int
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = DepthwiseConv(self.kernel, name="depthwise")(x)
    return Conv(self.features, 1, backend=self.conv_backend, name="pointwise")(x)


class HybridPool(nn.Module):
  """Hybrid pooling: concat(max-pool, ReLU(spectral pool)) -> 1x1 conv to C channels.

  ``same=False``: 2x2/2 max-pool and spectral pool to half size,
  ``[B,H,W,C] -> [B,H/2,W/2,C]``. ``same=True``: 2x2/1 "SAME" max-pool and
  full-size spectral pool, ``[B,H,W,C] -> [B,H,W,C]``.
  """
  same: bool = False
  spectral_mode: str = "spatial"
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    _, h, w, c = x.shape
    if self.same:
      m = max_pool2_same(x)
      s = spectral_pool(x, (h, w), self.spectral_mode)
    else:
      m = max_pool2(x)
      s = spectral_pool(x, (h // 2, w // 2), self.spectral_mode)
    s = nn.relu(s).astype(x.dtype)
    return Conv(c, 1, backend=self.conv_backend, name="merge")(jnp.concatenate([m, s], -1))


class ResidualInception(nn.Module):
  """Residual inception block (RIC, paper Fig. 4b; code ``double_inception_conv_layer``).

  ``[B,H,W,C] -> [B,H,W,features]``.
  """
  features: int
  dropout_rate: float = 0.0
  spectral_mode: str = "spatial"
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    f, be = self.features, self.conv_backend
    h = x
    for stage, kernels in (("s1", (3, 1, 5)), ("s2", (3, 3, 3))):
      branches = []
      for j, k in enumerate(kernels):
        b = SeparableConv(f, k, be, name=f"{stage}_conv{j}")(h)
        branches.append(nn.relu(batch_norm(train, f"{stage}_bn{j}")(b)))
      p = HybridPool(same=True, spectral_mode=self.spectral_mode, conv_backend=be,
                     name=f"{stage}_pool")(h)
      branches.append(nn.relu(batch_norm(train, f"{stage}_pool_bn")(p)))
      h = SeparableConv(f, 1, be, name=f"{stage}_merge")(jnp.concatenate(branches, -1))
    if self.dropout_rate > 0:
      h = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(h)
    shortcut = batch_norm(train, "shortcut_bn")(SeparableConv(f, 1, be, name="shortcut")(x))
    return shortcut + h


class ResidualDoubleConv(nn.Module):
  """The ablations' plain block (code ``double_conv_layer``): two sep3x3 -> BN -> ReLU,
  dropout, plain 1x1 conv shortcut -> BN, add. ``[B,H,W,C] -> [B,H,W,features]``."""
  features: int
  dropout_rate: float = 0.0
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    h = x
    for j in range(2):
      h = SeparableConv(self.features, 3, self.conv_backend, name=f"conv{j}")(h)
      h = nn.relu(batch_norm(train, f"bn{j}")(h))
    if self.dropout_rate > 0:
      h = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(h)
    shortcut = batch_norm(train, "shortcut_bn")(
        Conv(self.features, 1, backend=self.conv_backend, name="shortcut")(x))
    return shortcut + h


class CrossSpatialAttention(nn.Module):
  """Cross-spatial attention (CSA, paper Fig. 5; code ``gating_signal`` + ``cs_attention_block``).

  Inputs: ``x`` ``[B,H,W,Cx]`` (input of the encoder block at this level),
  ``y`` ``[B,H,W,Cy]`` (its output), ``z`` ``[B,H/2,W/2,Cz]`` (the deeper
  block's output). Returns ``(out [B,H,W,features], attention [B,H,W,1] in (0,1))``.
  """
  features: int
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, y: jnp.ndarray, z: jnp.ndarray, *, train: bool):
    f = self.features
    conv = functools.partial(Conv, backend=self.conv_backend)

    def gate(v, name):
      return nn.relu(batch_norm(train, f"{name}_bn")(conv(f, 1, name=name)(v)))

    gx, gy, gz = gate(x, "gate_x"), gate(y, "gate_y"), gate(z, "gate_z")
    theta_x = conv(f, 2, 2, name="theta_x")(gx)
    theta_y = conv(f, 2, 2, name="theta_y")(gy)
    phi_z = conv(f, 1, name="phi_z")(gz)
    phi_z = nn.ConvTranspose(f, (3, 3), strides=(1, 1), padding="SAME", name="phi_z_up")(phi_z)
    psi = conv(1, 1, name="psi")(nn.relu(theta_x + theta_y + phi_z))
    attention = jnp.repeat(jnp.repeat(nn.sigmoid(psi), 2, axis=1), 2, axis=2)
    out = conv(gx.shape[-1], 1, name="out")(attention * gx)
    return nn.relu(batch_norm(train, "out_bn")(out)), attention


# ----------------------------------------------------------------------------
# Model.

@register("rca_iunet", trainer="supervised", config="rca_iunet")
class RCAIUNet(nn.Module):
  """RCA-IUnet (Punn & Agarwal 2022), with the Table 3 ablation flags.

  Attributes:
    base_width: channels of the first stage; stage l has ``base_width * 2**l`` (16).
    use_inception: RIC blocks (else the code's separable residual double conv).
    use_hybrid_pool: hybrid pooling for down-sampling (else 2x2 max-pool).
    use_attention: cross-spatial attention on the long skips (else plain skips).
    spectral_mode: ``"spatial"`` (default, the paper) or ``"code"`` (the
      authors' FFT over (W, C)); see the module docstring.
    dropout_rate: dropout at the end of every block, before the residual add
      (the code's ``dropout_rate``, 0 by default); uses the "dropout" rng.
    num_classes: output channels (1: tumour logit).
    conv_backend: convolution kernels (``busjax.ops.conv``: ``"auto"``,
      ``"xla"``, ``"onednn"``); same function and parameters either way.

  Call: ``x`` float32 ``[B, H, W, C]`` in [0, 1] (C = 1), H and W divisible by
  16 (and H = W with crops >= 3, i.e. H >= 48, for ``spectral_mode="code"``);
  returns ``(logits [B, H, W, num_classes], aux)``: ``bottleneck``
  ``[B, H/16, W/16, 16*base_width]``, ``decoder_features`` (deepest first) and,
  with attention, ``attention_maps`` (``[B, H/2**l, W/2**l, 1]`` in (0, 1),
  deepest first).
  """
  base_width: int = 16
  use_inception: bool = True
  use_hybrid_pool: bool = True
  use_attention: bool = True
  spectral_mode: str = "spatial"
  dropout_rate: float = 0.0
  num_classes: int = 1
  conv_backend: str = "auto"

  def _block(self, features: int, name: str) -> nn.Module:
    if self.use_inception:
      return ResidualInception(features, self.dropout_rate, self.spectral_mode, self.conv_backend,
                               name=name)
    return ResidualDoubleConv(features, self.dropout_rate, self.conv_backend, name=name)

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> tuple[jnp.ndarray, dict[str, Any]]:
    if self.spectral_mode not in SPECTRAL_MODES:
      raise ValueError(f"unknown spectral_mode {self.spectral_mode!r}; expected one of {SPECTRAL_MODES}")
    if x.shape[1] % 16 or x.shape[2] % 16:
      raise ValueError(f"RCA-IUnet needs H and W divisible by 16, got {x.shape[1:3]}")
    widths = [self.base_width * 2**level for level in range(5)]
    block_inputs, block_outputs = [], []
    h = x
    for level in range(4):
      block_inputs.append(h)
      h = self._block(widths[level], f"enc{level}")(h, train=train)
      block_outputs.append(h)
      if self.use_hybrid_pool:
        h = HybridPool(same=False, spectral_mode=self.spectral_mode,
                       conv_backend=self.conv_backend, name=f"down{level}")(h)
      else:
        h = max_pool2(h)
    h = self._block(widths[4], "bottleneck")(h, train=train)
    bottleneck = h
    block_outputs.append(h)

    decoder_features, attention_maps = [], []
    for level in reversed(range(4)):
      if self.use_attention:
        skip, amap = CrossSpatialAttention(widths[level], self.conv_backend, name=f"att{level}")(
            block_inputs[level], block_outputs[level], block_outputs[level + 1], train=train)
        attention_maps.append(amap)
      else:
        skip = block_outputs[level]
      up = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
      h = self._block(widths[level], f"dec{level}")(jnp.concatenate([up, skip], -1), train=train)
      decoder_features.append(h)
    logits = Conv(self.num_classes, 1, backend=self.conv_backend, name="head")(h)
    logits = batch_norm(train, "head_bn")(logits)
    aux: dict[str, Any] = {"bottleneck": bottleneck, "decoder_features": decoder_features}
    if self.use_attention:
      aux["attention_maps"] = attention_maps
    return logits, aux


# Table 3 ablations (code builders in brackets). Same module, other defaults;
# they share busjax/configs/rca_iunet.py, which sets the same flags by name.

@register("rca_iunet_base", trainer="supervised", config="rca_iunet")
class RCAIUNetBase(RCAIUNet):
  """U-Net skeleton of Table 3: separable residual blocks, max-pool, plain skips [Unet]."""
  use_inception: bool = False
  use_hybrid_pool: bool = False
  use_attention: bool = False


@register("rca_iunet_ric", trainer="supervised", config="rca_iunet")
class RCAIUNetRIC(RCAIUNet):
  """U-Net + RIC [Unetric]."""
  use_inception: bool = True
  use_hybrid_pool: bool = False
  use_attention: bool = False


@register("rca_iunet_csa", trainer="supervised", config="rca_iunet")
class RCAIUNetCSA(RCAIUNet):
  """U-Net + CSA [Unetcsa]."""
  use_inception: bool = False
  use_hybrid_pool: bool = False
  use_attention: bool = True


@register("rca_iunet_ric_hp", trainer="supervised", config="rca_iunet")
class RCAIUNetRICHP(RCAIUNet):
  """U-Net + RIC + HP [Unetrichp]."""
  use_inception: bool = True
  use_hybrid_pool: bool = True
  use_attention: bool = False


@register("rca_iunet_csa_hp", trainer="supervised", config="rca_iunet")
class RCAIUNetCSAHP(RCAIUNet):
  """U-Net + CSA + HP [Unetcsahp]."""
  use_inception: bool = False
  use_hybrid_pool: bool = True
  use_attention: bool = True


@register("rca_iunet_csa_ric", trainer="supervised", config="rca_iunet")
class RCAIUNetCSARIC(RCAIUNet):
  """U-Net + CSA + RIC [Unetcsaric]."""
  use_inception: bool = True
  use_hybrid_pool: bool = False
  use_attention: bool = True
