"""Losses against hand-computed values."""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from busjax import losses

BIG = 30.0  # sigmoid(30) == 1 in float32


def test_soft_dice_extremes():
  y = jnp.zeros((2, 4, 4, 1)).at[:, :2].set(1.0)
  assert float(losses.soft_dice_loss(jnp.where(y > 0, BIG, -BIG), y)) == pytest.approx(0.0, abs=1e-6)
  # All wrong: inter 0, denominators 8 + 8 -> 1 - 1/17.
  assert float(losses.soft_dice_loss(jnp.where(y > 0, -BIG, BIG), y)) == pytest.approx(16 / 17, 1e-5)
  # Empty mask predicted empty: (0 + 1) / (0 + 1) -> loss 0.
  assert float(losses.soft_dice_loss(jnp.full((1, 4, 4, 1), -BIG), jnp.zeros((1, 4, 4, 1)))) < 1e-6


def test_batch_dice_pools_the_batch():
  # Image 0: 4 GT pixels predicted right; image 1 (normal): 4 false-positive pixels.
  y = jnp.zeros((2, 4, 4, 1)).at[0, :1].set(1.0)
  logits = jnp.full((2, 4, 4, 1), -BIG).at[:, :1].set(BIG)
  per_image = (0.0 + (1 - 1 / 5)) / 2
  assert float(losses.soft_dice_loss(logits, y)) == pytest.approx(per_image, 1e-5)
  # Pooled: inter 4, denominator 8 + 4 -> 1 - 9/13.
  assert float(losses.soft_dice_loss(logits, y, batch_dice=True)) == pytest.approx(4 / 13, 1e-5)
  cfg = ml_collections.ConfigDict(dict(name="bce_dice", bce_weight=0.0, dice_weight=1.0,
                                       batch_dice=True))
  assert float(losses.segmentation_loss(cfg, logits, {}, y)) == pytest.approx(4 / 13, 1e-5)
  mix = losses.bce_dice_loss(logits, y, bce_weight=0.0, dice_weight=1.0, batch_dice=0.25)
  assert float(mix) == pytest.approx(0.75 * per_image + 0.25 * 4 / 13, 1e-5)
  assert float(losses.soft_dice_loss(logits, y, batch_dice=0.25)) == pytest.approx(float(mix), 1e-6)
  with pytest.raises(ValueError, match="batch_dice must be in"):
    losses.bce_dice_loss(logits, y, batch_dice=1.5)


def test_bce_matches_formula():
  logits = jnp.array([[0.0, 2.0]]).reshape(1, 1, 2, 1)
  y = jnp.array([[1.0, 0.0]]).reshape(1, 1, 2, 1)
  expected = (np.log(2) + np.log1p(np.exp(2.0))) / 2
  assert float(losses.bce_loss(logits, y)) == pytest.approx(expected, 1e-5)


def test_bce_dice_is_weighted_sum():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 8, 8, 1)), jnp.float32)
  y = jnp.asarray(rng.random((2, 8, 8, 1)) > 0.5, jnp.float32)
  combo = losses.bce_dice_loss(logits, y, bce_weight=0.3, dice_weight=0.7)
  ref = 0.3 * losses.bce_loss(logits, y) + 0.7 * losses.soft_dice_loss(logits, y)
  assert float(combo) == pytest.approx(float(ref), 1e-6)


def test_deep_supervision_weights_and_downsampling():
  y = jnp.zeros((1, 8, 8, 1)).at[:, :4, :4].set(1.0)
  full = jnp.where(y > 0, BIG, -BIG)
  half = jnp.full((1, 4, 4, 1), -BIG)  # predicts nothing at the coarse stage
  cfg = ml_collections.ConfigDict(dict(name="deep_supervision_dice", alphas=(1.0, 0.1)))
  loss = losses.segmentation_loss(cfg, full, {"side_logits": [full, half]}, y)
  # Stage 0 perfect; stage 1 GT area-downsampled to 4 ones: 1 - 1/(4+1) = 0.8, weight 0.1.
  assert float(loss) == pytest.approx(0.08, 1e-5)


def test_unknown_loss():
  with pytest.raises(ValueError, match="unknown loss"):
    losses.segmentation_loss(ml_collections.ConfigDict(dict(name="nope")), None, {}, None)


def test_loss_with_foreign_arguments_names_them():
  # `--set loss.name=dice` on a bce_dice config leaves bce_weight behind.
  cfg = ml_collections.ConfigDict(dict(name="dice", bce_weight=0.5))
  z = jnp.zeros((1, 4, 4, 1))
  with pytest.raises(ValueError, match=r"'dice' takes no argument.*bce_weight"):
    losses.segmentation_loss(cfg, z, {}, z)
