"""STAN: Small Tumor-Aware Network.

Shareef, Xian, Vakanski, "STAN: Small Tumor-Aware Network for Breast Ultrasound
Image Segmentation", ISBI 2020 (arXiv 2002.01034); ``shared/papers/stan_small_tumor_aware_network.txt``.

Default ``wiring="paper"`` implements Eqs. (1)-(4) as written. With ``C_{0,1} =
C_{0,2}`` the image, ``p`` a 2x2 max-pool and ``f_k = width * 2**(k-1)``:

* Eq. (1), branch 1:  ``A_k = conv3(conv3(C_{k-1,1}))``, ``C_{k,1} = p(A_k)``;
* Eq. (2), branch 2:  ``B_k = conv3(conv1(C_{k-1,2})) (+) conv3(conv5(C_{k-1,2}))``,
  ``C_{k,2} = p(B_k)``  (k = 1..4; ``(+)`` is concatenation);
* Eq. (3), centre:    ``C_5 = conv5(conv5(C_{4,1})) (+) conv1(conv1(C_{4,2})) (+) conv3(conv3(C_{4,2}))``,
  3 * f_5 channels at 1/16 resolution;
* Eq. (4), decoder:   ``U_{i-1} = conv(conv(DeConv(U_i (+) C_{i-1,1})) (+) conv5(C_{i,1}) (+) C_{i-1,2})``,
  i = 5..2, ``U_5 = C_5``; a 1x1 head on ``U_1`` gives the logit.

How the resolutions of Eq. (4) are made to agree (the paper's equation mixes
levels; this is the reading that keeps every term):

* ``U_i (+) C_{i-1,1}`` is taken literally: the *pooled* branch-1 output of
  block i-1 has the resolution of ``U_i``; ``DeConv`` (3x3, stride 2, linear,
  ``f_{i-1}`` channels) then doubles it. This is the "original skipping layer
  ... combined to the up-sampling layer before the first convolution".
* ``C_{i-1,2}`` enters *unpooled* (``B_{i-1}``): "we discarded the pooling
  layers from the skipping block". It then has the decoder's resolution.
* ``conv5(C_{i,1})`` is a new 5x5 conv (``f_{i-1}`` channels, ReLU) on the
  unpooled branch-1 features of block i (``A_i``; for i = 5 the centre ``C_5``,
  "layer five does not involve pooling"). Those live one level below the
  decoder stage, so the map is nearest-neighbour up-sampled x2 (parameter
  free) before the concatenation. This up-sampling is our addition: without
  it Eq. (4) cannot be evaluated.
* ``conv`` without subscript is 3x3 (both public re-implementations), every
  conv is followed by ReLU (the paper names ReLU for its 1x1 convs; nothing
  else); padding "SAME".

Details the paper does not give, with our choice: width 32 (widths 32-64-128-
256-512, as both public re-implementations); no batch norm (the paper never
mentions it and neither re-implementation uses it; ``batch_norm=True`` adds
conv -> BN -> ReLU everywhere, the conv then has no bias).

``wiring`` selects the two public re-implementations instead (facts in
``shared/MODEL_NOTES.md``; neither implements the ``conv5(C_{i,1})`` term):

* ``"keras"`` (sudohainguyen/STAN-small-tumor-aware-network @636fda1e): branch 2
  is ``conv1(conv1(.)) (+) conv5(conv5(.))``; centre
  ``conv3(conv3(C_{4,1})) (+) conv3(conv1(C_{4,2})) (+) conv3(conv5(C_{4,2}))``;
  decoder ``ReLU(ConvT3x3/2) -> (+) A -> conv3 -> (+) [first branch-1 conv,
  B] -> conv3`` at the level's width; 3x3 head.
* ``"pytorch"`` (JaouadT/STAN_implementation_pytorch @340803c4): branch 2 as
  the paper; centre as Keras; decoder ``ConvT3x3/2 (linear) -> (+) A -> conv3
  -> (+) [A, B] -> conv3`` with the reference's irregular widths (deconv
  ``2f_4, f_3, f_2, f_1`` and first conv ``3f_4, 2f_3, f_2, f_1`` from the
  deepest stage up, i.e. 512/768, 128/256, 64/64, 32/32 at width 32); 1x1 head.

Transposed convolutions use "SAME" padding in every wiring (PyTorch's
``padding=1, output_padding=1`` places the kernel one pixel differently; no
weights are published, so nothing depends on it).

Parameter count at 256x256x1, width 32, no BN: 39,587,649 (paper wiring; the
paper gives none), 29,378,145 (keras), 37,972,193 (pytorch, equal to the
reference at one input channel) -- derived by hand in ``tests/models/test_stan.py``.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from busjax.models.layers import Conv, ConvTranspose2x, batch_norm, max_pool2
from busjax.registry import register

WIRINGS = ("paper", "keras", "pytorch")


def upsample_nearest2(x: jnp.ndarray) -> jnp.ndarray:
  """Nearest-neighbour x2 up-sampling. ``[B,H,W,C] -> [B,2H,2W,C]``."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ConvAct(nn.Module):
  """k x k conv -> [BatchNorm] -> ReLU, "SAME" padding. ``[B,H,W,C] -> [B,H,W,features]``.

  Without batch norm the conv has a bias (the STAN re-implementations); with it,
  it has none (BN's offset replaces it).
  """
  features: int
  kernel: int
  batch_norm: bool = False
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    x = Conv(self.features, self.kernel, use_bias=not self.batch_norm, backend=self.conv_backend,
             name="conv")(x)
    if self.batch_norm:
      x = batch_norm(train, "bn")(x)
    return nn.relu(x)


class STANEncoderBlock(nn.Module):
  """One encoder block (Eqs. 1-2): the two branches before pooling.

  Returns ``(a, A, B)`` at the input resolution: ``a`` the first branch-1 conv,
  ``A = conv3(conv3(c1))`` (``features`` channels) and ``B`` the branch-2
  concatenation (``2 * features`` channels).
  """
  features: int
  wiring: str = "paper"
  batch_norm: bool = False
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, c1: jnp.ndarray, c2: jnp.ndarray, *, train: bool):
    f, bn = self.features, self.batch_norm
    conv = functools.partial(ConvAct, conv_backend=self.conv_backend)
    a = conv(f, 3, bn, name="b1_conv1")(c1, train=train)
    big_a = conv(f, 3, bn, name="b1_conv2")(a, train=train)
    # Branch 2: a 1x1 path and a 5x5 path; their second conv is 3x3 (paper,
    # pytorch) or repeats the first kernel (keras).
    k1, k5 = (1, 5) if self.wiring == "keras" else (3, 3)
    p1 = conv(f, 1, bn, name="b2a_conv1")(c2, train=train)
    p1 = conv(f, k1, bn, name="b2a_conv2")(p1, train=train)
    p5 = conv(f, 5, bn, name="b2b_conv1")(c2, train=train)
    p5 = conv(f, k5, bn, name="b2b_conv2")(p5, train=train)
    return a, big_a, jnp.concatenate([p1, p5], -1)


class STANCentre(nn.Module):
  """The central block (Eq. 3): three two-conv paths, concatenated (``3 * features``)."""
  features: int
  wiring: str = "paper"
  batch_norm: bool = False
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, c1: jnp.ndarray, c2: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    f, bn = self.features, self.batch_norm
    conv = functools.partial(ConvAct, conv_backend=self.conv_backend)
    if self.wiring == "paper":
      # conv5(conv5(C_{4,1})) (+) conv1(conv1(C_{4,2})) (+) conv3(conv3(C_{4,2}))
      spec = (("b1", c1, 5, 5), ("b2a", c2, 1, 1), ("b2b", c2, 3, 3))
    else:
      # conv3(conv3(C_{4,1})) (+) conv3(conv1(C_{4,2})) (+) conv3(conv5(C_{4,2}))
      spec = (("b1", c1, 3, 3), ("b2a", c2, 1, 3), ("b2b", c2, 5, 3))
    outs = []
    for name, inp, k_first, k_second in spec:
      h = conv(f, k_first, bn, name=f"{name}_conv1")(inp, train=train)
      outs.append(conv(f, k_second, bn, name=f"{name}_conv2")(h, train=train))
    return jnp.concatenate(outs, -1)


@register("stan", trainer="supervised")
class STAN(nn.Module):
  """Small Tumor-Aware Network (Shareef et al., ISBI 2020).

  Attributes:
    width: channels of the first block; block k has ``width * 2**(k-1)``
      (32 -> 32-64-128-256-512; the paper gives no widths).
    wiring: ``"paper"`` (Eqs. 1-4, default), ``"keras"`` or ``"pytorch"`` (the
      two public re-implementations; see the module docstring).
    batch_norm: conv -> BN -> ReLU instead of conv(+bias) -> ReLU (off in the
      paper and in both re-implementations).
    num_classes: output channels (1: tumour logit).
    conv_backend: convolution kernels (``busjax.ops.conv``: ``"auto"``,
      ``"xla"``, ``"onednn"``); same function and parameters either way.

  Call: ``x`` float32 ``[B, H, W, C]`` in [0, 1] (C = 1 for BUS), H and W
  divisible by 16; returns ``(logits [B, H, W, num_classes], aux)`` with aux
  ``bottleneck`` (``C_5``, ``[B, H/16, W/16, 48*width]``) and
  ``decoder_features`` (``U_4 .. U_1``, deepest first).
  """
  width: int = 32
  wiring: str = "paper"
  batch_norm: bool = False
  num_classes: int = 1
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> tuple[jnp.ndarray, dict[str, Any]]:
    if self.wiring not in WIRINGS:
      raise ValueError(f"unknown STAN wiring {self.wiring!r}; expected one of {WIRINGS}")
    if x.shape[1] % 16 or x.shape[2] % 16:
      raise ValueError(f"STAN needs H and W divisible by 16, got {x.shape[1:3]}")
    bn, be = self.batch_norm, self.conv_backend
    conv = functools.partial(ConvAct, conv_backend=be)
    up = functools.partial(ConvTranspose2x, backend=be)
    f = [self.width * 2**k for k in range(5)]  # f[l]: width at level l (resolution / 2**l)
    firsts, big_as, big_bs = [], [], []
    c1 = c2 = x  # C_{0,1} = C_{0,2} = the image
    for level in range(4):
      a, big_a, big_b = STANEncoderBlock(f[level], self.wiring, bn, be, name=f"enc{level}")(
          c1, c2, train=train)
      firsts.append(a)
      big_as.append(big_a)
      big_bs.append(big_b)
      c1, c2 = max_pool2(big_a), max_pool2(big_b)  # C_{k,1}, C_{k,2}
    centre = STANCentre(f[4], self.wiring, bn, be, name="centre")(c1, c2, train=train)

    u = centre  # U_5 = C_5
    decoder_features = []
    for level in reversed(range(4)):  # produces U_{level+1} at resolution / 2**level
      if self.wiring == "paper":
        # DeConv(U_i (+) C_{i-1,1}); C_{i-1,1} = p(A_{i-1}) is at U_i's resolution.
        h = jnp.concatenate([u, max_pool2(big_as[level])], -1)
        h = up(f[level], 3, name=f"up{level}")(h)
        h = conv(f[level], 3, bn, name=f"dec{level}_conv1")(h, train=train)
        # conv5(C_{i,1}) on the unpooled branch-1 output one level down, up-sampled x2.
        deeper = centre if level == 3 else big_as[level + 1]
        s = conv(f[level], 5, bn, name=f"dec{level}_skip5")(deeper, train=train)
        h = jnp.concatenate([h, upsample_nearest2(s), big_bs[level]], -1)
        u = conv(f[level], 3, bn, name=f"dec{level}_conv2")(h, train=train)
      elif self.wiring == "keras":
        h = up(f[level], 3, name=f"up{level}")(u)
        h = nn.relu(h)
        h = conv(f[level], 3, bn, name=f"dec{level}_conv1")(
            jnp.concatenate([h, big_as[level]], -1), train=train)
        u = conv(f[level], 3, bn, name=f"dec{level}_conv2")(
            jnp.concatenate([h, firsts[level], big_bs[level]], -1), train=train)
      else:  # pytorch
        up_w = 2 * f[3] if level == 3 else f[level]
        conv1_w = {3: 3 * f[3], 2: 2 * f[2]}.get(level, f[level])
        h = up(up_w, 3, name=f"up{level}")(u)
        h = conv(conv1_w, 3, bn, name=f"dec{level}_conv1")(
            jnp.concatenate([h, big_as[level]], -1), train=train)
        u = conv(f[level], 3, bn, name=f"dec{level}_conv2")(
            jnp.concatenate([h, big_as[level], big_bs[level]], -1), train=train)
      decoder_features.append(u)
    head_k = 3 if self.wiring == "keras" else 1
    logits = Conv(self.num_classes, head_k, backend=be, name="head")(u)
    return logits, {"bottleneck": centre, "decoder_features": decoder_features}
