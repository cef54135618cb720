"""cGAN + AC + CAW (Singh et al., ESWA 2020) at 64x64, tiny widths; SSIM on hand-checkable cases."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from busjax import losses, registry
from busjax.models import cgan_ac_caw as C
from model_test_utils import B, S, count_params, dead_leaves, rbg_key, tiny_setup


@pytest.fixture(scope="module")
def setup():
  return tiny_setup("cgan_ac_caw")


def test_registered_and_builds_from_tiny_config():
  assert registry.get_model("cgan_ac_caw").trainer == "adversarial"
  cfg = registry.get_config("cgan_ac_caw", "tiny")
  model = registry.build_model(cfg)
  assert isinstance(model, C.CGANACCAW)
  assert cfg.loss.name in losses.LOSSES
  for variant in ("tiny", "default", "paper"):
    c = registry.get_config("cgan_ac_caw", variant)
    assert 2**c.model.depth == c.image_size  # the paper's 1 x 1 bottleneck
  paper = registry.get_config("cgan_ac_caw", "paper")
  assert (paper.image_size, paper.batch_size, paper.model.width) == (128, 8, 64)
  assert (paper.optimizer.learning_rate, paper.optimizer.b1) == (2e-4, 0.5)
  assert (paper.adversarial.d_learning_rate, paper.adversarial.d_b1) == (2e-4, 0.5)
  assert paper.adversarial.ssim_window == 11
  assert isinstance(C.build_discriminator(cfg), C.CGANDiscriminator)


def test_forward_eval_and_train_under_jit(setup):
  cfg, model, variables, x, y = setup
  logits, aux = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  assert logits.shape == (B, S, S, 1) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  t = aux["tanh"]
  assert t.shape == logits.shape and float(jnp.abs(t).max()) <= 1.0
  # sigmoid(logits) is the paper's tanh output mapped to [0, 1]
  np.testing.assert_allclose(jax.nn.sigmoid(logits), (t + 1) / 2, atol=1e-6)
  assert aux["bottleneck"].shape == (B, 1, 1, 8 * cfg.model.width)
  again = jax.jit(lambda v, x: model.apply(v, x))(variables, x)[0]
  np.testing.assert_array_equal(logits, again)  # eval: no dropout

  @jax.jit
  def train_fwd(v, x, rng):
    return model.apply(v, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])

  (l1, _), new_vars = train_fwd(variables, x, rbg_key(3))
  (l2, _), _ = train_fwd(variables, x, rbg_key(4))
  assert l1.shape == (B, S, S, 1) and np.all(np.isfinite(l1))
  assert not np.allclose(l1, l2)  # dropout 0.5 in DConv1-3 uses the "dropout" rng
  old = jax.tree_util.tree_leaves(variables["batch_stats"])
  new = jax.tree_util.tree_leaves(new_vars["batch_stats"])
  assert len(old) == len(new) > 0
  assert all(not np.allclose(o, n) for o, n in zip(old, new))


def test_config_loss_alone_reaches_every_parameter(setup):
  """bce_dice alone trains every parameter, the CAM's gamma (initialised to 0) included."""
  cfg, model, variables, x, y = setup
  assert float(variables["params"]["caw"]["cam"]["gamma"][0]) == 0.0

  @jax.jit
  def grad_fn(params):
    def loss_fn(p):
      (logits, aux), _ = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                                     train=True, rngs={"dropout": rbg_key(5)}, mutable=["batch_stats"])
      return losses.segmentation_loss(cfg.loss, logits, aux, y)
    return jax.value_and_grad(loss_fn)(params)

  loss, grads = grad_fn(variables["params"])
  assert np.isfinite(loss) and loss > 0
  assert float(jnp.abs(grads["caw"]["cam"]["gamma"][0])) > 0
  assert {"ac", "caw", "conv1", f"dconv{cfg.model.depth}"} <= set(grads)
  assert dead_leaves(grads) == []


def test_init_follows_pix2pix(setup):
  cfg, model, variables, x, y = setup
  p = variables["params"]
  k = np.concatenate([np.ravel(p[f"conv{i}"]["kernel"]) for i in range(2, 7)])
  assert abs(k.mean()) < 2e-3 and abs(k.std() - 0.02) < 2e-3
  g = np.concatenate([np.ravel(p[f"bn{i}"]["scale"]) for i in range(2, 7)]
                     + [np.ravel(p[f"dbn{i}"]["scale"]) for i in range(1, 6)])
  assert abs(g.mean() - 1) < 5e-3 and 0.01 < g.std() < 0.03
  assert "bias" not in p["conv2"] and "bias" in p["conv1"]  # Conv1 has no BN


def test_channel_attention_matches_danet_formula():
  x = jax.random.normal(jax.random.key(0), (2, 3, 2, 5))
  cam = C.ChannelAttention()
  v = cam.init(jax.random.key(1), x)
  np.testing.assert_array_equal(cam.apply(v, x), x)  # gamma = 0: identity (residual only)
  v = {"params": {"gamma": jnp.array([0.7])}}
  xn = np.asarray(x, np.float64).reshape(2, 6, 5)
  ref = np.empty_like(xn)
  for b in range(2):
    e = xn[b].T @ xn[b]                       # [C, C] = X X^T with X as [C, N]
    e = e.max(-1, keepdims=True) - e
    a = np.exp(e - e.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ref[b] = 0.7 * (a @ xn[b].T).T + xn[b]
  np.testing.assert_allclose(cam.apply(v, x), ref.reshape(x.shape), rtol=1e-4, atol=1e-5)
  no_res = C.ChannelAttention(residual=False).apply(v, x)
  np.testing.assert_allclose(no_res, ref.reshape(x.shape) - np.asarray(x), rtol=1e-4, atol=1e-5)


def test_ac_block_shapes():
  blk = C.ACBlock()
  x = jax.ShapeDtypeStruct((2, 16, 16, 8), jnp.float32)
  v = jax.eval_shape(lambda k, x: blk.init(k, x, train=False), jax.random.key(0), x)
  assert sorted(v["params"]) == ["atrous1", "atrous6", "atrous9", "bn_atrous1", "bn_atrous6",
                                 "bn_atrous9", "bn_pool", "pool_conv"]
  assert v["params"]["atrous9"]["kernel"].shape == (3, 3, 8, 8)
  out = jax.eval_shape(lambda v, x: blk.apply(v, x, train=False), v, x)
  assert out.shape == (2, 16, 16, 32)


def test_discriminator(setup):
  cfg, model, variables, x, y = setup
  disc = C.build_discriminator(cfg)
  dvars = jax.jit(disc.init)(rbg_key(2), x, y)
  fake = jax.nn.sigmoid(jax.jit(model.apply)(variables, x)[0])

  @jax.jit
  def d_step(p, bs):
    def loss_fn(p):
      r, new = disc.apply({"params": p, "batch_stats": bs}, x, y, train=True, mutable=["batch_stats"])
      f, _ = disc.apply({"params": p, "batch_stats": new["batch_stats"]}, x, fake, train=True,
                        mutable=["batch_stats"])
      return 0.5 * (losses.bce_loss(r, jnp.ones_like(r)) + losses.bce_loss(f, jnp.zeros_like(f))), (r, new)
    return jax.value_and_grad(loss_fn, has_aux=True)(p)

  (loss, (r, new)), grads = d_step(dvars["params"], dvars["batch_stats"])
  # "paper" padding at 64: 64 -> 32 -> 16 -> 8 -> 5 -> 2
  assert r.shape == (B, 2, 2, 1) and r.dtype == jnp.float32 and np.all(np.isfinite(r))
  assert np.isfinite(loss)
  assert dvars["params"]["conv1"]["kernel"].shape == (4, 4, 2, cfg.discriminator.width)  # image (+) mask
  assert dead_leaves(grads) == []
  assert all(not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(dvars["batch_stats"]),
                                                   jax.tree_util.tree_leaves(new["batch_stats"])))
  assert jax.jit(disc.apply)(dvars, x, fake).shape == (B, 2, 2, 1)


@pytest.mark.parametrize("padding,size,out", [("paper", 128, 10), ("code", 256, 30), ("code", 128, 14)])
def test_discriminator_output_sizes(padding, size, out):
  disc = C.CGANDiscriminator(width=2, padding=padding)
  a = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
  v = jax.eval_shape(disc.init, jax.random.key(0), a, a)
  assert jax.eval_shape(disc.apply, v, a, a).shape == (1, out, out, 1)


def test_full_size_parameter_counts():
  # 128x128x1, width 64, depth 7; encoder widths 64,128,256,512,512,512,512.
  # conv1 4*4*1*64 + 64 bias = 1,088; conv2 16*64*128 + BN 256 = 131,328;
  # conv3 16*128*256 + 512 = 524,800; AC on 256 ch: 3 x (9*256*256 + 512) + (256*256 + 512)
  # = 1,837,056; conv4 on the 1024-ch concat 16*1024*512 + 1,024 = 8,389,632;
  # conv5..7 3 x (16*512*512 + 1,024) = 12,585,984; CAW gamma 1 + SE (512*32+32) + (32*512+512)
  # = 33,313; dconv1 16*512*512 + 1,024 = 4,195,328; dconv2, dconv3 2 x (16*1024*512 + 1,024)
  # = 16,779,264; dconv4 16*1024*256 + 512 = 4,194,816; dconv5 16*512*128 + 256 = 1,048,832;
  # dconv6 16*256*64 + 128 = 262,272; dconv7 16*128*1 + 1 = 2,049.  Total 49,985,762.
  enc = [64, 128, 256, 512, 512, 512, 512]
  hand = (16 * 1 * 64 + 64
          + sum(16 * enc[i - 1] * enc[i] + 2 * enc[i] for i in range(1, 7) if i != 3)
          + 16 * (4 * 256) * 512 + 2 * 512                      # conv4 reads the AC concat
          + 3 * (9 * 256 * 256 + 512) + (256 * 256 + 512)       # AC block
          + 1 + (512 * 32 + 32) + (32 * 512 + 512)              # CAW
          + 16 * 512 * 512 + 2 * 512                            # dconv1
          + sum(16 * 2 * enc[6 - k + 1] * enc[6 - k] + 2 * enc[6 - k] for k in range(2, 7))
          + 16 * 128 * 1 + 1)                                   # dconv7
  x = jax.ShapeDtypeStruct((1, 128, 128, 1), jnp.float32)
  g = jax.eval_shape(C.CGANACCAW().init, jax.random.key(0), x)
  assert count_params(g["params"]) == hand == 49_985_762
  # discriminator, width 32, 2 input channels: 16*2*32+32 + 16*32*64+128 + 16*64*128+256
  # + 16*128*256+512 + 16*256+1 = 694,177
  d = jax.eval_shape(C.CGANDiscriminator().init, jax.random.key(0), x, x)
  assert count_params(d["params"]) == 694_177


# ------------------------------------------------------------------------ SSIM

def test_ssim_identity_and_constant_images():
  x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 1))
  np.testing.assert_allclose(C.ssim(x, x), 1.0, atol=1e-5)
  # constant images a, b: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
  a, b, c1 = 0.5, 0.25, 0.01**2
  got = C.ssim(jnp.full((1, 16, 16, 1), a), jnp.full((1, 16, 16, 1), b))
  # (rtol 1e-4: float32 E[x^2] - E[x]^2 leaves ~1e-8 of variance next to C2 = 9e-4)
  np.testing.assert_allclose(got, (2 * a * b + c1) / (a * a + b * b + c1), rtol=1e-4)


def test_ssim_decreases_with_noise_and_is_per_image():
  k0, k1 = jax.random.split(jax.random.key(1))
  x = jax.random.uniform(k0, (1, 48, 48, 1))
  n = jax.random.normal(k1, x.shape)
  vals = [float(C.ssim(x, jnp.clip(x + s * n, 0, 1))[0]) for s in (0.0, 0.05, 0.1, 0.3, 1.0)]
  assert vals[0] == pytest.approx(1.0, abs=1e-5)
  assert all(u > v for u, v in zip(vals, vals[1:])) and vals[-1] < 0.5
  pair = C.ssim(jnp.concatenate([x, x]), jnp.concatenate([x, jnp.clip(x + n, 0, 1)]))
  assert pair.shape == (2,) and pair[0] == pytest.approx(1.0, abs=1e-5) and pair[1] < 0.5
  w = C.gaussian_window()
  assert w.shape == (11,) and float(w.sum()) == pytest.approx(1.0) and int(jnp.argmax(w)) == 5
  with pytest.raises(ValueError, match="window"):
    C.ssim(jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 8, 8, 1)))


def test_l1_ssim_loss():
  y = jnp.zeros((1, 32, 32, 1)).at[:, 8:24, 8:24].set(1.0)
  perfect = 40.0 * (2 * y - 1)  # sigmoid(+-40) = 1 or 0 in float32
  assert float(C.l1_ssim_loss(perfect, y, l1_weight=100.0, ssim_weight=50.0)) == pytest.approx(0.0, abs=1e-4)
  l1_only = C.l1_ssim_loss(jnp.zeros_like(y), y, l1_weight=1.0, ssim_weight=0.0)
  assert float(l1_only) == pytest.approx(0.5)  # |0.5 - y| everywhere
  both = C.l1_ssim_loss(jnp.zeros_like(y), y, l1_weight=0.0, ssim_weight=1.0)
  assert 0.0 < float(both) <= 2.0
  g = jax.grad(lambda l: C.l1_ssim_loss(l, y, l1_weight=1.0, ssim_weight=1.0))(jnp.zeros_like(y))
  assert np.all(np.isfinite(g)) and np.any(g != 0)
