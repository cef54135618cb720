"""Deep-supervised U-Net with one discriminator per decoder stage.

Li, Sun, Gu, Zhang, Sun, Li, Shen, "Developing Large Pre-trained Model for
Breast Tumor Segmentation from Ultrasound Images", MICCAI 2023
(``shared/papers/large_pretrained_deep_supervised_unet.txt``; code:
limy-ulab/US-SEG, which publishes only the plain U-Net, see MODEL_NOTES).

Generator (the "segmentation network" SN, Sec. 2): the U-Net of
``busjax/models/unet.py`` (widths 64-128-256-512-1024, two (3x3 conv, BN,
ReLU) per stage, ConvTranspose 2x2 up-sampling, concat skips), plus a 1x1 side
output on each of the four decoder stages. Stage 1 is the last decoder stage
(the U-Net's own head), stages 2-4 the coarser ones ("counting from the last
deconvolutional layer", Sec. 3.3). Loss, Eq. (1): sum over stages of
``alpha_n * Dice(P^(n), G)`` with alpha = (1, 0.1, 0.1, 0.1) (``deep_supervision_dice``
in ``busjax.losses``) plus ``beta_n * log(1 - CN_n(P^(n)))`` with beta_n = 0.05
(adversarial trainer).

Discriminators (the "convolutional networks" CN_n, Sec. 2): five convolutions
with kernels 7, 5, 4, 4, 4; four of them, one per stage, weights not shared.
Eq. (2) feeds CN_n the probability map of stage n (``P^(n)``) or the ground
truth ``G``; the image is not an input, so the discriminators are
unconditional.

The authors' published code is that plain U-Net alone (registered as ``unet``);
everything below the backbone follows the paper, as no code exists for it.

Choices the paper leaves open (documented here, nothing taken from code):
  * Side outputs stay at their stage's own resolution (H, H/2, H/4, H/8) and
    the ground truth is area-downsampled to each of them by the loss
    (``busjax.losses.resize_labels``), rather than up-sampling side outputs to
    full size. Reasons: the paper motivates the stage discriminators as
    penalising "the distribution dissimilarity from multi-scales", which a
    discriminator only sees if stage n keeps its scale; area-downsampled soft
    targets keep small tumours visible at coarse stages instead of a bilinear
    up-sampling smearing them; and it is cheaper. ``upsample_side_outputs=True``
    gives the other reading (bilinear up-sampling of the side logits to H x W).
  * Discriminator strides 2, 2, 2, 1, 1 and widths 64, 128, 256, 512, 1 (the
    PatchGAN/DCGAN pattern the 4x4 kernels come from), SAME padding,
    LeakyReLU 0.2 after convs 1-4, BatchNorm after convs 2-4 (none on the first,
    as DCGAN), and the last conv returns patch logits (no sigmoid). Receptive
    field 75 px, so at stage 4 of a 256 input (32 x 32) it sees the whole map.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from busjax.losses import resize_labels
from busjax.models.layers import Conv, batch_norm
from busjax.models.unet import UNet
from busjax.registry import register

NUM_STAGES = 4


@register("lpm_unet", trainer="adversarial")
class LPMUNet(UNet):
  """The paper's generator: U-Net with a 1x1 side output per decoder stage.

  Subclasses :class:`busjax.models.unet.UNet`, so its parameters keep the
  U-Net's paths (``enc0``..``enc3``, ``bottleneck``, ``up*``, ``dec*``,
  ``head``) and a plain U-Net checkpoint loads into it; the side heads are
  ``side1``..``side3`` (1x1 conv with bias on decoder stages 2-4).

  Attributes:
    width: channels of the first stage (64 in the paper: 31.04M parameters).
    depth: number of 2x2 down-samplings (4 in the paper, which fixes the four
      supervised decoder stages; must be >= 4).
    num_classes: output channels (1: tumour logit).
    upsample_side_outputs: False (default): side logits at their own
      resolution, ground truth downsampled by the loss (see module docstring).
      True: side logits bilinearly up-sampled to the input size.

  Call: ``x`` float32 ``[B, H, W, 1]`` in [0, 1], H and W divisible by
  ``2**depth``. Returns ``(logits [B, H, W, num_classes], aux)`` with
  ``aux["side_logits"]``: a list of 4 logits maps, index 0 = stage 1 = the final
  stage (``aux["side_logits"][0] is logits``), index n at ``H / 2**n`` (or at
  H x W with ``upsample_side_outputs``); and ``aux["decoder_features"]`` as
  in the U-Net. Logits are unbounded; ``sigmoid`` gives the probability.
  """
  upsample_side_outputs: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False):
    if self.depth < NUM_STAGES:
      raise ValueError(f"LPMUNet needs depth >= {NUM_STAGES} decoder stages, got {self.depth}")
    logits, aux = super().__call__(x, train=train)
    feats = aux["decoder_features"]  # deepest first; feats[-1] feeds the head
    side_logits = [logits]
    for n in range(1, NUM_STAGES):
      s = Conv(self.num_classes, 1, backend=self.conv_backend, name=f"side{n}")(feats[-1 - n])
      s = s.astype(jnp.float32)  # float32 logits under a bfloat16 ``dtype``, as the head's
      if self.upsample_side_outputs:
        s = jax.image.resize(s, logits.shape[:3] + s.shape[3:], "bilinear")
      side_logits.append(s)
    return logits, {**aux, "side_logits": side_logits}


class StageDiscriminator(nn.Module):
  """One stage's discriminator CN_n (Li et al. 2023, Sec. 2, Eq. 2).

  Five convolutions, kernels 7, 5, 4, 4, 4 (paper), strides 2, 2, 2, 1, 1,
  widths ``width * (1, 2, 4, 8)`` then 1, SAME padding, BatchNorm after convs
  2-4, LeakyReLU 0.2 after convs 1-4 (our choices, see the module docstring).

  Attributes:
    width: channels of the first conv (64).
    negative_slope: LeakyReLU slope (0.2).
    conv_backend: convolution kernels (``busjax.ops.conv``), as the generator's.

  Call: ``mask`` float32 ``[B, h, w, 1]`` in [0, 1]: a stage's probability map
  ``sigmoid(side_logits[n])`` (fake) or the ground truth area-downsampled to
  that stage (real). Returns patch logits ``[B, ceil(h/8), ceil(w/8), 1]``
  (sigmoid = probability that the map is a ground truth); the adversarial BCE
  averages over patches.
  """
  width: int = 64
  negative_slope: float = 0.2
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, mask: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    kernels = (7, 5, 4, 4, 4)
    strides = (2, 2, 2, 1, 1)
    feats = (self.width, 2 * self.width, 4 * self.width, 8 * self.width, 1)
    h = mask
    for i, (k, s, f) in enumerate(zip(kernels, strides, feats)):
      with_bn = 1 <= i <= 3
      h = Conv(f, k, s, use_bias=not with_bn, backend=self.conv_backend, name=f"conv{i + 1}")(h)
      if i == 4:
        break
      if with_bn:
        h = batch_norm(train, f"bn{i + 1}")(h)
      h = nn.leaky_relu(h, self.negative_slope)
    return h


class LPMDiscriminators(nn.Module):
  """The four stage discriminators, one per decoder stage, weights not shared.

  Submodules ``stage1``..``stage4`` (paper numbering: ``stage1`` judges the
  final full-resolution map ``side_logits[0]``); each has its own parameter
  subtree, so an adversarial trainer may also give each its own optimiser.

  Attributes:
    width: first-conv width of each :class:`StageDiscriminator`.
    num_stages: number of supervised decoder stages (4).
    conv_backend: convolution kernels of every stage discriminator.

  Call: ``masks``: a list of ``num_stages`` maps ``[B, h_n, w_n, 1]`` in
  [0, 1], index n = stage n + 1 (the order of ``aux["side_logits"]``).
  Returns the list of patch logits, same order.
  """
  width: int = 64
  num_stages: int = NUM_STAGES
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, masks: Sequence[jnp.ndarray], *, train: bool = False) -> list[jnp.ndarray]:
    if len(masks) != self.num_stages:
      raise ValueError(f"{len(masks)} maps for {self.num_stages} stage discriminators")
    return [StageDiscriminator(self.width, conv_backend=self.conv_backend,
                               name=f"stage{n + 1}")(m, train=train)
            for n, m in enumerate(masks)]


def discriminator_inputs(side_logits: Sequence[jnp.ndarray],
                         labels: jnp.ndarray) -> tuple[list[jnp.ndarray], list[jnp.ndarray]]:
  """What Eq. (2) feeds the stage discriminators: ``(fake, real)``.

  fake[n] = ``sigmoid(side_logits[n])`` (``P^(n)``, float32 in [0, 1]); real[n] =
  ``labels`` ``[B, H, W, 1]`` area-downsampled to stage n's resolution (soft,
  in [0, 1]), the same targets the deep-supervision Dice uses.
  """
  fake = [jax.nn.sigmoid(s.astype(jnp.float32)) for s in side_logits]
  real = [resize_labels(labels, s.shape[1:3]) for s in side_logits]
  return fake, real


def build_discriminator(config: Any) -> LPMDiscriminators:
  """The discriminators of ``config`` (``LPMDiscriminators(**config.discriminator)``,
  with the generator's ``model.conv_backend``)."""
  return LPMDiscriminators(**config.discriminator.to_dict(),
                           conv_backend=config.model.get("conv_backend", "auto"))
