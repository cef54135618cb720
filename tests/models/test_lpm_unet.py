"""Deep-supervised U-Net + stage discriminators (Li et al., MICCAI 2023) at 64x64, tiny widths."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from busjax import losses, registry
from busjax.models import lpm_unet as L
from model_test_utils import B, S, count_params, dead_leaves, rbg_key, tiny_setup


@pytest.fixture(scope="module")
def setup():
  return tiny_setup("lpm_unet")


def test_registered_and_builds_from_tiny_config():
  spec = registry.get_model("lpm_unet")
  assert spec.trainer == "adversarial"
  cfg = registry.get_config("lpm_unet", "tiny")
  model = registry.build_model(cfg)
  assert isinstance(model, L.LPMUNet) and model.width == 4 and model.depth == 4
  assert cfg.loss.name == "deep_supervision_dice" and tuple(cfg.loss.alphas) == (1.0, 0.1, 0.1, 0.1)
  assert cfg.adversarial.beta == 0.05
  paper = registry.get_config("lpm_unet", "paper")
  assert (paper.model.width, paper.batch_size, paper.epochs) == (64, 4, 100)
  assert paper.optimizer.name == "adam" and paper.optimizer.learning_rate == 1e-4
  assert paper.adversarial.d_learning_rate == 1e-4
  assert isinstance(L.build_discriminator(cfg), L.LPMDiscriminators)


def test_forward_eval_and_train_under_jit(setup):
  cfg, model, variables, x, y = setup
  logits, aux = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert logits.shape == (B, S, S, 1) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  side = aux["side_logits"]
  assert [s.shape for s in side] == [(B, S >> n, S >> n, 1) for n in range(4)]
  np.testing.assert_array_equal(side[0], logits)  # index 0 = the final stage = logits
  assert all(np.all(np.isfinite(s)) for s in side)

  @jax.jit
  def train_fwd(v, x):
    return model.apply(v, x, train=True, mutable=["batch_stats"])

  (tlogits, taux), new_vars = train_fwd(variables, x)
  assert tlogits.shape == (B, S, S, 1) and np.all(np.isfinite(tlogits))
  old = jax.tree_util.tree_leaves(variables["batch_stats"])
  new = jax.tree_util.tree_leaves(new_vars["batch_stats"])
  assert len(old) == len(new) > 0
  assert all(not np.allclose(o, n) for o, n in zip(old, new))  # every running stat moved


def test_config_loss_alone_reaches_every_parameter(setup):
  """The supervised (deep-supervision Dice) loss of the config trains every
  parameter, the three side heads included: no dead branch."""
  cfg, model, variables, x, y = setup

  @jax.jit
  def grad_fn(params):
    def loss_fn(p):
      (logits, aux), _ = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                                     train=True, mutable=["batch_stats"])
      return losses.segmentation_loss(cfg.loss, logits, aux, y)
    return jax.value_and_grad(loss_fn)(params)

  loss, grads = grad_fn(variables["params"])
  assert np.isfinite(loss) and loss > 0
  assert {"side1", "side2", "side3", "head"} <= set(grads)
  assert dead_leaves(grads) == []


def test_upsample_side_outputs_option():
  model = L.LPMUNet(width=2, upsample_side_outputs=True)
  x = jax.ShapeDtypeStruct((1, S, S, 1), jnp.float32)
  v = jax.eval_shape(model.init, jax.random.key(0), x)
  _, aux = jax.eval_shape(model.apply, v, x)
  assert [s.shape for s in aux["side_logits"]] == [(1, S, S, 1)] * 4


def test_depth_below_four_stages_is_refused():
  with pytest.raises(ValueError, match="depth"):
    L.LPMUNet(width=2, depth=3).init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))


def test_stage_discriminators(setup):
  cfg, model, variables, x, y = setup
  side = jax.jit(model.apply)(variables, x)[1]["side_logits"]
  fake, real = jax.jit(L.discriminator_inputs)(side, y)
  assert [f.shape for f in fake] == [r.shape for r in real] == [s.shape for s in side]
  assert all(float(f.min()) >= 0 and float(f.max()) <= 1 for f in fake + real)
  np.testing.assert_allclose(real[1], y.reshape(B, S // 2, 2, S // 2, 2, 1).mean((2, 4)))

  disc = L.build_discriminator(cfg)
  dvars = jax.jit(disc.init)(rbg_key(2), fake)
  names = sorted(dvars["params"])
  assert names == ["stage1", "stage2", "stage3", "stage4"]
  # one discriminator per stage, weights not shared: same shapes, different values
  k1 = [np.asarray(dvars["params"][n]["conv1"]["kernel"]) for n in names]
  assert all(k.shape == (7, 7, 1, cfg.discriminator.width) for k in k1)
  assert all(not np.allclose(k1[i], k1[j]) for i in range(4) for j in range(i + 1, 4))
  kernels = [dvars["params"]["stage1"][f"conv{i}"]["kernel"].shape[:2] for i in range(1, 6)]
  assert kernels == [(7, 7), (5, 5), (4, 4), (4, 4), (4, 4)]

  @jax.jit
  def d_step(p, bs):
    def loss_fn(p):
      outs, new = disc.apply({"params": p, "batch_stats": bs}, real, train=True, mutable=["batch_stats"])
      fouts = disc.apply({"params": p, "batch_stats": new["batch_stats"]}, fake, train=True,
                         mutable=["batch_stats"])[0]
      loss = sum(losses.bce_loss(o, jnp.ones_like(o)) + losses.bce_loss(f, jnp.zeros_like(f))
                 for o, f in zip(outs, fouts))
      return loss, (outs, new)
    return jax.value_and_grad(loss_fn, has_aux=True)(p)

  (loss, (outs, new)), grads = d_step(dvars["params"], dvars["batch_stats"])
  # patch logits at ceil(h / 8) of each stage's map: 64->8, 32->4, 16->2, 8->1
  assert [o.shape for o in outs] == [(B, 8, 8, 1), (B, 4, 4, 1), (B, 2, 2, 1), (B, 1, 1, 1)]
  assert all(o.dtype == jnp.float32 and np.all(np.isfinite(o)) for o in outs)
  assert np.isfinite(loss)
  assert dead_leaves(grads) == []
  assert all(not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(dvars["batch_stats"]),
                                                   jax.tree_util.tree_leaves(new["batch_stats"])))
  eval_out = jax.jit(lambda v, m: disc.apply(v, m))(dvars, fake)
  assert [o.shape for o in eval_out] == [o.shape for o in outs]


def _double_conv(cin: int, c: int) -> int:
  return 9 * cin * c + 9 * c * c + 4 * c  # two 3x3 convs without bias, two BN (scale, offset)


def _lpm_generator_count(w: int = 64, depth: int = 4) -> int:
  """Hand count of the U-Net of unet.py plus three 1x1 side heads, 1 input channel."""
  ch = [w * 2**i for i in range(depth + 1)]
  n = _double_conv(1, ch[0]) + sum(_double_conv(ch[i - 1], ch[i]) for i in range(1, depth + 1))
  n += sum(4 * ch[i + 1] * ch[i] + ch[i] for i in range(depth))  # ConvTranspose 2x2 with bias
  n += sum(_double_conv(2 * ch[i], ch[i]) for i in range(depth))  # decoder on [skip, up]
  n += ch[0] + 1                                                  # head 1x1
  n += sum(ch[i] + 1 for i in range(1, 4))                        # side1..side3 1x1
  return n


def test_full_size_parameter_counts():
  # 256x256x1, width 64:
  # encoder 37,696 + 221,696 + 885,760 + 3,540,992 + bottleneck 14,159,872
  # up 2,097,664 + 524,544 + 131,200 + 32,832; decoder 7,079,936 + 1,770,496
  # + 442,880 + 110,848; head 65 -> U-Net 31,036,481; side heads 129 + 257 + 513.
  x = jax.ShapeDtypeStruct((1, 256, 256, 1), jnp.float32)
  g = jax.eval_shape(L.LPMUNet().init, jax.random.key(0), x)
  assert count_params(g["params"]) == _lpm_generator_count() == 31_037_380
  # one stage discriminator: conv1 7*7*1*64+64 = 3,200; conv2 5*5*64*128 + BN 256 = 205,056;
  # conv3 4*4*128*256 + 512 = 524,800; conv4 4*4*256*512 + 1,024 = 2,098,176;
  # conv5 4*4*512 + 1 = 8,193 -> 2,839,425; four of them.
  maps = [jax.ShapeDtypeStruct((1, 256 >> n, 256 >> n, 1), jnp.float32) for n in range(4)]
  d = jax.eval_shape(L.LPMDiscriminators().init, jax.random.key(0), maps)
  assert count_params(d["params"]) == 4 * 2_839_425 == 11_357_700
