"""Segmentation losses: pure ``(logits, labels, ...) -> scalar`` functions.

All take logits ``[B, H, W, 1]`` (any float dtype; computed in float32) and
binary labels of the same shape. Dice is the soft Dice of the papers
(Milletari et al. 2016), computed per image and averaged over the batch, with
smoothing 1 so that an empty mask predicted empty scores 0 loss.

``batch_dice`` (a share in [0, 1]; True = 1) pools that share of the Dice term
over the whole batch instead (nnU-Net's "batch Dice", Isensee et al., Nature
Methods 2021). Per-image Dice saturates on
a lesion-free image: with an empty mask the loss is ``1 - 1/(sum(p) + 1)``,
whose gradient ``1/(sum(p) + 1)^2`` all but vanishes once a false-positive blob
of a few hundred pixels exists, so the Dice term stops fighting it; pooled
over the batch the blob's pixels stay in one denominator with the lesions'.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax


def _soft_dice(p: jnp.ndarray, y: jnp.ndarray, axes: tuple[int, ...], smooth: float) -> jnp.ndarray:
  inter = jnp.sum(p * y, axes)
  denom = jnp.sum(p, axes) + jnp.sum(y, axes)
  return jnp.mean(1.0 - (2.0 * inter + smooth) / (denom + smooth))


def soft_dice_loss(logits: jnp.ndarray, labels: jnp.ndarray, *, smooth: float = 1.0,
                   batch_dice: float = 0.0) -> jnp.ndarray:
  """1 - soft Dice of sigmoid(logits) per image, batch mean. ``[B,H,W,C] -> []``.

  ``batch_dice`` in [0, 1]: the share of the batch-pooled Dice (sums over
  every axis): 0 or False per image, 1 or True nnU-Net's batch Dice, in
  between ``(1 - f) * per-image + f * pooled``.
  """
  f = float(batch_dice)
  if not 0.0 <= f <= 1.0:
    raise ValueError(f"batch_dice must be in [0, 1] (or a bool), got {batch_dice!r}")
  p = jax.nn.sigmoid(logits.astype(jnp.float32))
  y = labels.astype(jnp.float32)
  loss = 0.0
  if f < 1.0:
    loss = (1.0 - f) * _soft_dice(p, y, tuple(range(1, p.ndim)), smooth)
  if f > 0.0:
    loss = loss + f * _soft_dice(p, y, tuple(range(p.ndim)), smooth)
  return loss


def bce_loss(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Mean binary cross-entropy on logits (optax's numerically stable form)."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                                     labels.astype(jnp.float32)))


def bce_dice_loss(logits, labels, *, bce_weight: float = 0.5, dice_weight: float = 0.5,
                  batch_dice: float = 0.0):
  """``bce_weight * BCE + dice_weight * Dice`` (RCA-IUnet: 0.5/0.5); ``batch_dice``
  as in :func:`soft_dice_loss`."""
  return (bce_weight * bce_loss(logits, labels)
          + dice_weight * soft_dice_loss(logits, labels, batch_dice=batch_dice))


def resize_labels(labels: jnp.ndarray, shape: Sequence[int]) -> jnp.ndarray:
  """Area-downsamples binary labels ``[B,H,W,C]`` to ``[B,h,w,C]`` (soft targets in [0,1])."""
  b, h, w, c = labels.shape
  th, tw = shape
  if (h, w) == (th, tw):
    return labels.astype(jnp.float32)
  if h % th == 0 and w % tw == 0:
    return labels.astype(jnp.float32).reshape(b, th, h // th, tw, w // tw, c).mean((2, 4))
  return jax.image.resize(labels.astype(jnp.float32), (b, th, tw, c), "linear")


def deep_supervision_dice_loss(logits, labels, *, side_logits: Sequence[jnp.ndarray],
                               alphas: Sequence[float] = (1.0, 0.1, 0.1, 0.1)) -> jnp.ndarray:
  """Sum over decoder stages of ``alpha_n * Dice_n`` (Li et al., MICCAI 2023, Eq. 1).

  ``side_logits[n]`` is stage n's 1x1 side output at its own resolution
  (n = 0 is the final, full-resolution stage: ``side_logits[0] is logits``);
  the ground truth is area-downsampled to each stage (soft targets), which
  keeps small tumours visible at coarse stages instead of thresholding them away.
  """
  if len(side_logits) != len(alphas):
    raise ValueError(f"{len(side_logits)} side outputs but {len(alphas)} alphas")
  total = 0.0
  for a, s in zip(alphas, side_logits):
    total = total + a * soft_dice_loss(s, resize_labels(labels, s.shape[1:3]))
  return total


LOSSES: dict[str, Callable[..., jnp.ndarray]] = {
    "dice": soft_dice_loss,
    "bce": bce_loss,
    "bce_dice": bce_dice_loss,
    "deep_supervision_dice": deep_supervision_dice_loss,
}


def segmentation_loss(loss_cfg: Any, logits: jnp.ndarray, aux: dict, labels: jnp.ndarray) -> jnp.ndarray:
  """Dispatches on ``loss_cfg.name``; the other fields are its keyword arguments
  (a config sets the whole ``loss`` dict, e.g. ``ConfigDict(dict(name="dice"))``).

  Losses that need auxiliary model outputs name them: ``deep_supervision_dice``
  reads ``aux["side_logits"]``.
  """
  cfg = dict(loss_cfg)
  name = cfg.pop("name")
  if name not in LOSSES:
    raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
  fn = LOSSES[name]
  unknown = set(cfg) - set(inspect.signature(fn).parameters)
  if unknown:
    raise ValueError(f"loss {name!r} takes no argument(s) {sorted(unknown)} (config loss = "
                     f"{dict(loss_cfg)}); set the whole loss, e.g. loss=\"{{'name': '{name}'}}\"")
  if name == "deep_supervision_dice":
    cfg["side_logits"] = aux["side_logits"]
  return fn(logits, labels, **cfg)
