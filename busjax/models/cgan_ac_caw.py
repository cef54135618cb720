"""cGAN with atrous convolution (AC) and channel attention/weighting (CAW).

Singh, Abdel-Nasser, Akram, Rashwan, Sarker, Pandey, Romani, Puig, "Breast
tumor segmentation in ultrasound images using contextual-information-aware
deep adversarial learning framework", Expert Systems with Applications 162
(2020) 113870 (``shared/papers/cgan_atrous_channel_attention_review.txt`` is a
review of it); facts from the authors' code are in MODEL_NOTES.

Generator (pix2pix-style encoder-decoder): ``depth`` (7) encoder convs, 4x4
stride 2 (PyTorch padding 1), each followed by BN (except Conv1) and LeakyReLU
0.2; the AC block between Conv3 and Conv4; the CAW block between Conv7 (the
1 x 1 x 512 bottleneck) and DConv1; ``depth`` transposed convs 4x4 stride 2,
each (but the last) followed by BN, dropout 0.5 (DConv1-3 only) and ReLU, the
output concatenated with the mirrored encoder output (U-Net skips); tanh after
DConv7. Widths ``min(width * 2**i, 8 * width)``: 64-128-256-512-512-512-512 at
the paper's width 64 (the paper's CAW input is 512 channels; the authors'
earlier mammography code used 32 and 256, see MODEL_NOTES).

Output convention: the model returns LOGITS whose sigmoid is the mask
probability. The paper's output ``t = tanh(a)`` in [-1, 1] maps to the
probability ``(t + 1) / 2 = sigmoid(2a)``, so ``logits = 2 * a`` exactly (a is
the pre-tanh activation of DConv7); ``aux["tanh"]`` holds the paper's ``t``.

Discriminator (conditional PatchGAN): the image concatenated with a mask,
five 4x4 convs with strides 2, 2, 2, 1, 1, BN after Conv2-4, LeakyReLU 0.2
between convs, logits out (the paper's sigmoid is left to the BCE).

Choices the review leaves open, and why:
  * Skips concatenate (U-Net/pix2pix, as in the authors' code); the review's
    "skip connections, as from ResNet" names no addition.
  * ``width=32, depth=8`` at 256 x 256 gives the channel plan of the authors'
    mammography code (32-64-128-256-256-256-256-256).
  * Image size 128 x 128: seven stride-2 convs reach the paper's 1 x 1
    bottleneck only from 128 x 128 (the H and W must be divisible by
    ``2**depth``). The tests run ``depth=6`` at 64 x 64 (1 x 1 bottleneck too).
  * AC block (``ACBlock``): the three 3x3 branches (rates 1, 6, 9) are stride 1
    with SAME padding, so their "up-sampling" is the identity; the fourth
    branch is global average pooling then a 1x1 conv (identical to 1x1 conv
    then GAP, both being linear) broadcast back to H x W, as DeepLab's image
    pooling. Each branch: conv (no bias) -> BN -> LeakyReLU 0.2; each has as
    many channels as its input (``ac_features``), concatenated (4x) into Conv4.
    The skip to the decoder carries Conv3's output (before the AC block).
  * CAW block (``CAWBlock``): the two branches are applied in parallel to the
    bottleneck and summed (DANet's fusion of parallel attention branches).
    Channel attention = DANet's CAM with its residual (``gamma * A X + X``,
    gamma initialised to 0); ``cam_residual=False`` gives the authors'
    Skin-Project FCA.py variant, which comments the ``+ x`` out. Channel
    weighting = squeeze-and-excitation with reduction 16 (SENet's default).
  * Conv7 has BN as the paper says ("each layer ... except for Conv1");
    ``bottleneck_bn=False`` gives the authors' code (innermost conv without BN).
  * Discriminator padding: ``padding="paper"`` pads the stride-2 convs by 1 and
    the stride-1 convs by 0, which gives the paper's 10 x 10 output at the
    paper's 128 x 128 input (128-64-32-16-13-10); ``padding="code"`` pads all
    by 1 as in the authors' code (30 x 30 at 256, 14 x 14 at 128). Width 32
    (the authors' ``ndf``; the paper states none).
  * Init: every conv, transposed conv and dense kernel N(0, 0.02), biases 0,
    BN scale N(1, 0.02) and offset 0 (the authors' ``weights_init``).

SSIM (``ssim``, ``l1_ssim_loss``) is here too: the generator's L1 + SSIM terms.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from busjax.models.layers import Conv, ConvTranspose2x
from busjax.registry import register

_W_INIT = nn.initializers.normal(0.02)


def _bn_scale_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jnp.ndarray:
  """BN gamma ~ N(1, 0.02) (pix2pix ``weights_init``)."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _bn(train: bool, name: str) -> nn.BatchNorm:
  """``layers.batch_norm`` (PyTorch momentum/eps) with gamma ~ N(1, 0.02)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      scale_init=_bn_scale_init, name=name)


def _conv(features: int, kernel: int, strides: int, padding, *, use_bias: bool, name: str,
          backend: str, dilation: int = 1) -> Conv:
  """``nn.Conv(features, (kernel, kernel), ...)`` with N(0, 0.02) weights, as
  :class:`busjax.models.layers.Conv` (``backend`` picks the kernels)."""
  return Conv(features, kernel, strides, padding=padding, dilation=dilation, use_bias=use_bias,
              backend=backend, kernel_init=_W_INIT, name=name)


class ACBlock(nn.Module):
  """Atrous-convolution block (between Conv3 and Conv4).

  Branches: 3x3 convs at ``rates`` (1, 6, 9), stride 1, SAME padding; and GAP
  -> 1x1 conv broadcast back to H x W. Each: conv -> BN -> LeakyReLU.
  ``[B, H, W, C] -> [B, H, W, (len(rates) + 1) * features]``; ``features``
  defaults to C.
  """
  features: int | None = None
  rates: Sequence[int] = (1, 6, 9)
  negative_slope: float = 0.2
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    f = self.features or x.shape[-1]
    outs = []
    for r in self.rates:
      h = _conv(f, 3, 1, "SAME", use_bias=False, dilation=r, backend=self.conv_backend,
                name=f"atrous{r}")(x)
      outs.append(nn.leaky_relu(_bn(train, f"bn_atrous{r}")(h), self.negative_slope))
    g = jnp.mean(x, axis=(1, 2), keepdims=True)
    g = _conv(f, 1, 1, "VALID", use_bias=False, backend=self.conv_backend, name="pool_conv")(g)
    g = nn.leaky_relu(_bn(train, "bn_pool")(g), self.negative_slope)
    outs.append(jnp.broadcast_to(g, x.shape[:3] + (f,)))
    return jnp.concatenate(outs, axis=-1)


class ChannelAttention(nn.Module):
  """DANet channel attention module (Fu et al., CVPR 2019), CAM.

  ``X`` as ``[B, N, C]`` (N = H W): energy = X^T X ``[B, C, C]``;
  A = softmax(max_d(energy) - energy) over the last axis; out = gamma * (A X)
  (+ X with ``residual``), gamma a scalar initialised to 0.
  ``[B, H, W, C] -> [B, H, W, C]``.
  """
  residual: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    gamma = self.param("gamma", nn.initializers.zeros, (1,), jnp.float32)
    xf = x.reshape(b, h * w, c).astype(jnp.float32)
    energy = jnp.einsum("bnc,bnd->bcd", xf, xf)
    energy = jnp.max(energy, axis=-1, keepdims=True) - energy
    attention = jax.nn.softmax(energy, axis=-1)
    out = jnp.einsum("bcd,bnd->bnc", attention, xf).reshape(b, h, w, c)
    out = gamma * out
    return (out + x if self.residual else out).astype(x.dtype)


class ChannelWeighting(nn.Module):
  """Squeeze-and-excitation (Hu et al., CVPR 2018): GAP -> FC(C/r) -> ReLU ->
  FC(C) -> sigmoid -> rescale channels. ``[B, H, W, C] -> [B, H, W, C]``."""
  reduction: int = 16

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2))
    s = nn.relu(nn.Dense(max(c // self.reduction, 1), kernel_init=_W_INIT, name="fc1")(s))
    s = nn.sigmoid(nn.Dense(c, kernel_init=_W_INIT, name="fc2")(s))
    return x * s[:, None, None, :]


class CAWBlock(nn.Module):
  """Channel attention + channel weighting, in parallel, summed.
  ``[B, H, W, C] -> [B, H, W, C]``."""
  reduction: int = 16
  cam_residual: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return (ChannelAttention(self.cam_residual, name="cam")(x)
            + ChannelWeighting(self.reduction, name="cw")(x))


@register("cgan_ac_caw", trainer="adversarial")
class CGANACCAW(nn.Module):
  """The generator of cGAN+AC+CAW (Singh et al., ESWA 2020).

  Attributes:
    width: channels of Conv1 (64); widths ``min(width * 2**i, 8 * width)``.
    depth: encoder convs = decoder transposed convs (7 at 128 x 128).
    ac_after: the AC block follows this encoder conv (3).
    ac_rates: atrous rates of the AC block's 3x3 branches (1, 6, 9).
    ac_features: channels per AC branch (None: as many as Conv3's output).
    se_reduction: squeeze-and-excitation reduction ratio (16).
    cam_residual: DANet CAM with ``+ X`` (paper; False: authors' FCA.py).
    bottleneck_bn: BN after the last encoder conv (paper; False: authors' code).
    dropout_rate: dropout of the first ``num_dropout`` decoder layers (0.5, 3).
    negative_slope: LeakyReLU slope of the encoder (0.2).
    num_classes: output channels (1).
    conv_backend: convolution kernels (``busjax.ops.conv``: ``"auto"``,
      ``"xla"``, ``"onednn"``); same function and parameters either way.

  Call: ``x`` float32 ``[B, H, W, 1]`` in [0, 1], H and W divisible by
  ``2**depth``; ``train`` enables BN batch statistics and dropout (rng
  "dropout"). Returns ``(logits [B, H, W, num_classes], aux)``: logits =
  2 x the pre-tanh activation (``sigmoid(logits) = (tanh + 1) / 2``), unbounded;
  ``aux["tanh"]`` the paper's output in [-1, 1]; ``aux["bottleneck"]`` the CAW
  output ``[B, H / 2**depth, W / 2**depth, 8 * width]``.
  """
  width: int = 64
  depth: int = 7
  ac_after: int = 3
  ac_rates: Sequence[int] = (1, 6, 9)
  ac_features: int | None = None
  se_reduction: int = 16
  cam_residual: bool = True
  bottleneck_bn: bool = True
  dropout_rate: float = 0.5
  num_dropout: int = 3
  negative_slope: float = 0.2
  num_classes: int = 1
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False):
    if not 1 <= self.ac_after < self.depth:
      raise ValueError(f"ac_after={self.ac_after} must lie in [1, depth={self.depth})")
    widths = [min(self.width * 2**i, 8 * self.width) for i in range(self.depth)]
    pad = ((1, 1), (1, 1))
    skips = []
    h = x
    for i in range(self.depth):
      with_bn = i > 0 and (i < self.depth - 1 or self.bottleneck_bn)
      h = _conv(widths[i], 4, 2, pad, use_bias=not with_bn, backend=self.conv_backend,
                name=f"conv{i + 1}")(h)
      if with_bn:
        h = _bn(train, f"bn{i + 1}")(h)
      h = nn.leaky_relu(h, self.negative_slope)
      skips.append(h)
      if i + 1 == self.ac_after:
        h = ACBlock(self.ac_features, tuple(self.ac_rates), self.negative_slope,
                    self.conv_backend, name="ac")(h, train=train)
    h = CAWBlock(self.se_reduction, self.cam_residual, name="caw")(h)
    bottleneck = h
    for k in range(1, self.depth):
      skip = skips[self.depth - 1 - k]
      h = ConvTranspose2x(skip.shape[-1], 4, use_bias=False, kernel_init=_W_INIT,
                          backend=self.conv_backend, name=f"dconv{k}")(h)
      h = _bn(train, f"dbn{k}")(h)
      if k <= self.num_dropout:
        h = nn.Dropout(self.dropout_rate, deterministic=not train, name=f"drop{k}")(h)
      h = jnp.concatenate([nn.relu(h), skip], axis=-1)
    a = ConvTranspose2x(self.num_classes, 4, kernel_init=_W_INIT, backend=self.conv_backend,
                        name=f"dconv{self.depth}")(h)
    return 2.0 * a, {"tanh": jnp.tanh(a), "bottleneck": bottleneck}


class CGANDiscriminator(nn.Module):
  """Conditional PatchGAN discriminator of cGAN+AC+CAW.

  Attributes:
    width: channels of Conv1 (32, the authors' ``ndf``); then 2x, 4x, 8x, 1.
    padding: "paper" (stride-2 convs pad 1, stride-1 convs pad 0: 10 x 10 out
      at 128 x 128) or "code" (all pad 1: 14 x 14 at 128, 30 x 30 at 256).
    negative_slope: LeakyReLU slope (0.2).
    conv_backend: convolution kernels (``busjax.ops.conv``), as the generator's.

  Call: ``image`` ``[B, H, W, 1]`` in [0, 1] and ``mask`` ``[B, H, W, 1]`` in
  [0, 1] (ground truth, or the generator's ``sigmoid(logits)``), concatenated
  on channels. Returns patch logits ``[B, h, w, 1]`` (sigmoid = probability
  that the mask is real): h = H/8 - 6 ("paper") or H/8 - 2 ("code").
  """
  width: int = 32
  padding: str = "paper"
  negative_slope: float = 0.2
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, image: jnp.ndarray, mask: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    if self.padding not in ("paper", "code"):
      raise ValueError(f"padding must be 'paper' or 'code', got {self.padding!r}")
    p1 = ((1, 1), (1, 1))
    p_last = p1 if self.padding == "code" else ((0, 0), (0, 0))
    feats = (self.width, 2 * self.width, 4 * self.width, 8 * self.width, 1)
    strides = (2, 2, 2, 1, 1)
    h = jnp.concatenate([image, mask.astype(image.dtype)], axis=-1)
    for i, (f, s) in enumerate(zip(feats, strides)):
      with_bn = 1 <= i <= 3
      h = _conv(f, 4, s, p1 if s == 2 else p_last, use_bias=not with_bn,
                backend=self.conv_backend, name=f"conv{i + 1}")(h)
      if i == 4:
        break
      if with_bn:
        h = _bn(train, f"bn{i + 1}")(h)
      h = nn.leaky_relu(h, self.negative_slope)
    return h


def build_discriminator(config: Any) -> CGANDiscriminator:
  """The discriminator of ``config`` (``CGANDiscriminator(**config.discriminator)``,
  with the generator's ``model.conv_backend``)."""
  return CGANDiscriminator(**config.discriminator.to_dict(),
                           conv_backend=config.model.get("conv_backend", "auto"))


# ----------------------------------------------------------------------------- SSIM


def gaussian_window(size: int = 11, sigma: float = 1.5) -> jnp.ndarray:
  """Normalised 1-D Gaussian ``[size]`` (the 2-D window is its outer product)."""
  r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
  g = jnp.exp(-(r**2) / (2.0 * sigma**2))
  return g / jnp.sum(g)


def _filter(x: jnp.ndarray, g: jnp.ndarray) -> jnp.ndarray:
  """Separable VALID Gaussian filter of ``[N, H, W, 1]``."""
  k = g.shape[0]
  dn = ("NHWC", "HWIO", "NHWC")
  x = jax.lax.conv_general_dilated(x, g.reshape(k, 1, 1, 1), (1, 1), "VALID", dimension_numbers=dn)
  return jax.lax.conv_general_dilated(x, g.reshape(1, k, 1, 1), (1, 1), "VALID", dimension_numbers=dn)


def ssim(x: jnp.ndarray, y: jnp.ndarray, *, window_size: int = 11, sigma: float = 1.5,
         data_range: float = 1.0, k1: float = 0.01, k2: float = 0.03) -> jnp.ndarray:
  """Mean SSIM per image (Wang et al., IEEE TIP 2004). ``[B,H,W,C] x2 -> [B]``.

  Gaussian window ``window_size`` x ``window_size``, std ``sigma`` (11, 1.5 as
  in Wang et al.), VALID filtering (no padding; H, W >= ``window_size``),
  C1 = (k1 L)^2, C2 = (k2 L)^2 with L = ``data_range`` (1 for [0, 1] images);
  the SSIM map is averaged over pixels and channels. Values in [-1, 1], 1 iff
  x == y. For constant images a, b it is (2ab + C1) / (a^2 + b^2 + C1).
  """
  b, h, w, c = x.shape
  if h < window_size or w < window_size:
    raise ValueError(f"images {h}x{w} are smaller than the {window_size}x{window_size} SSIM window")
  to_n = lambda t: jnp.moveaxis(t.astype(jnp.float32), -1, 1).reshape(b * c, h, w, 1)
  x, y = to_n(x), to_n(y)
  g = gaussian_window(window_size, sigma)
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  mu_x, mu_y = _filter(x, g), _filter(y, g)
  var_x = _filter(x * x, g) - mu_x**2
  var_y = _filter(y * y, g) - mu_y**2
  cov = _filter(x * y, g) - mu_x * mu_y
  smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
  return jnp.mean(smap.reshape(b, -1), axis=-1)


def l1_ssim_loss(logits: jnp.ndarray, labels: jnp.ndarray, *, l1_weight: float = 1.0,
                 ssim_weight: float = 1.0, window_size: int = 11, sigma: float = 1.5) -> jnp.ndarray:
  """The generator's non-adversarial terms: ``l1_weight * L1 + ssim_weight * (1 - SSIM)``.

  Both on the probability ``sigmoid(logits) = (tanh + 1) / 2`` against binary
  ``labels`` in {0, 1} (L1 on the paper's [-1, 1] scale is twice this).
  ``[B,H,W,1] x2 -> []`` (batch mean). Not in ``busjax.losses.LOSSES`` (file
  ownership); the adversarial trainer calls it with ``config.adversarial``.
  """
  p = jax.nn.sigmoid(logits.astype(jnp.float32))
  y = labels.astype(jnp.float32)
  l1 = jnp.mean(jnp.abs(p - y))
  return l1_weight * l1 + ssim_weight * jnp.mean(1.0 - ssim(p, y, window_size=window_size, sigma=sigma))
