"""Adversarial trainer, cgan_ac_caw (Singh et al., ESWA 2020): step isolation,
stop-and-resume with two discriminator updates per generator update, outputs,
and the generator/discriminator loss terms."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from busjax import losses, registry
from busjax.models import cgan_ac_caw
from busjax.trainers import adversarial
from gan_test_utils import check_step_isolation, check_stop_and_resume, load_fake_data, tiny_cfg


@pytest.fixture(scope="module")
def data():
  return load_fake_data()


def test_d_step_and_g_step_touch_only_their_networks(data):
  check_step_isolation("cgan_ac_caw", data)


def test_stop_and_resume_reproduces_uninterrupted_run(tmp_path, data, monkeypatch):
  check_stop_and_resume("cgan_ac_caw", tmp_path, data, monkeypatch)


def test_adversarial_terms_follow_the_papers():
  """Generator terms: log(1 - D) (Li et al. Eq. 1) or -log D; cGAN's L1 + SSIM
  terms combine to cgan_ac_caw.l1_ssim_loss."""
  l = jnp.array([[-2.0, 0.0], [1.0, 3.0]]).reshape(1, 2, 2, 1)
  d = jax.nn.sigmoid(l)
  np.testing.assert_allclose(adversarial._generator_adv(l, False), jnp.mean(jnp.log(1 - d)),
                             rtol=1e-6)
  np.testing.assert_allclose(adversarial._generator_adv(l, True), -jnp.mean(jnp.log(d)),
                             rtol=1e-6)
  cfg = tiny_cfg("cgan_ac_caw")
  assert (cfg.adversarial.l1_weight, cfg.adversarial.ssim_weight) == (0.0, 0.0)
  cfg.adversarial.l1_weight, cfg.adversarial.ssim_weight = 100.0, 50.0  # the paper profile's
  adv = adversarial.make_adversary(cfg)
  k1, k2 = jax.random.split(jax.random.key(0, impl="rbg"))
  logits = 3 * jax.random.normal(k1, (2, 16, 16, 1))
  y = (jax.random.uniform(k2, (2, 16, 16, 1)) > 0.6).astype(jnp.float32)
  total, terms = adv.generator_terms(logits, {}, y)
  a = cfg.adversarial
  l1_ssim = cgan_ac_caw.l1_ssim_loss(logits, y, l1_weight=a.l1_weight, ssim_weight=a.ssim_weight)
  # Non-paper profiles add the authors' breast-code Dice term (configs/cgan_ac_caw.py).
  assert a.dice_weight == 150.0
  np.testing.assert_allclose(total, l1_ssim + 150.0 * losses.soft_dice_loss(logits, y), rtol=1e-5)
  assert set(terms) == {"g_l1", "g_ssim", "g_dice"} and float(terms["g_ssim"]) > 0
  cfg.adversarial.dice_weight = 0.0  # the paper profile: the review's terms only
  total, terms = adversarial.make_adversary(cfg).generator_terms(logits, {}, y)
  np.testing.assert_allclose(total, l1_ssim, rtol=1e-5)
  assert set(terms) == {"g_l1", "g_ssim"}
  paper = registry.get_config("cgan_ac_caw", "paper").adversarial
  assert (paper.l1_weight, paper.ssim_weight, paper.dice_weight) == (100.0, 50.0, 0.0)
