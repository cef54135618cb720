"""STAN (Shareef et al., ISBI 2020): busjax/models/stan.py."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from busjax import registry
from busjax.losses import bce_dice_loss
from busjax.models.stan import STAN, WIRINGS
from model_test_utils import FAST, count_params, inputs, random_variables
from model_test_utils import S as SIZE


def _conv(i: int, o: int, k: int) -> int:
  """k x k conv (or transposed conv) with bias."""
  return i * o * k * k + o


def hand_count(wiring: str, w: int = 32, cin: int = 1) -> int:
  """STAN parameters from the layer lists of ``busjax/models/stan.py`` (no BN)."""
  f = [w * 2**level for level in range(5)]
  keras = wiring == "keras"
  n, i1, i2 = 0, cin, cin  # i1, i2: channels of C_{k,1}, C_{k,2}
  for level in range(4):  # Eqs. (1)-(2)
    o = f[level]
    n += _conv(i1, o, 3) + _conv(o, o, 3)                           # branch 1: conv3, conv3
    n += _conv(i2, o, 1) + _conv(o, o, 1 if keras else 3)           # branch 2a: conv1, conv3 (keras conv1)
    n += _conv(i2, o, 5) + _conv(o, o, 5 if keras else 3)           # branch 2b: conv5, conv3 (keras conv5)
    i1, i2 = o, 2 * o
  o = f[4]
  if wiring == "paper":  # Eq. (3): conv5 conv5 | conv1 conv1 | conv3 conv3
    n += _conv(i1, o, 5) + _conv(o, o, 5) + _conv(i2, o, 1) + _conv(o, o, 1) + _conv(i2, o, 3) + _conv(o, o, 3)
  else:                  # conv3 conv3 | conv1 conv3 | conv5 conv3
    n += _conv(i1, o, 3) + _conv(o, o, 3) + _conv(i2, o, 1) + _conv(o, o, 3) + _conv(i2, o, 5) + _conv(o, o, 3)
  u = 3 * o  # C_5 channels
  for level in reversed(range(4)):  # Eq. (4)
    o = f[level]
    if wiring == "paper":
      deeper = 3 * f[4] if level == 3 else f[level + 1]
      n += _conv(u + o, o, 3)          # DeConv(U_i (+) C_{i-1,1})
      n += _conv(o, o, 3)              # first conv
      n += _conv(deeper, o, 5)         # conv5(C_{i,1})
      n += _conv(o + o + 2 * o, o, 3)  # second conv on [conv, conv5, C_{i-1,2}]
    elif keras:
      n += _conv(u, o, 3) + _conv(o + o, o, 3) + _conv(o + o + 2 * o, o, 3)
    else:  # pytorch: deconv to (2f_3 | f_l), conv1 to (3f_3 | 2f_2 | f_l), conv2 to f_l
      up_w = 2 * f[3] if level == 3 else o
      c1_w = {3: 3 * f[3], 2: 2 * f[2]}.get(level, o)
      n += _conv(u, up_w, 3) + _conv(up_w + o, c1_w, 3) + _conv(c1_w + o + 2 * o, o, 3)
    u = o
  return n + _conv(f[0], 1, 3 if keras else 1)  # head


def _count(model) -> int:
  return count_params(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 256, 256, 1)))["params"])


@pytest.mark.parametrize("wiring,expected", [("paper", 39_587_649), ("keras", 29_378_145),
                                             ("pytorch", 37_972_193)])
def test_parameter_count_full_size(wiring, expected):
  """The paper gives no count. 37,972,193 is also what JaouadT's PyTorch STAN has at 1 input channel."""
  assert _count(STAN(width=32, wiring=wiring)) == hand_count(wiring) == expected


def _check_model(model):
  """One jitted program: eval-mode forward and train-mode gradients (+ batch-stat update)."""
  x, y = inputs()
  v = random_variables(model, x)
  params, rest = v["params"], {k: a for k, a in v.items() if k != "params"}
  mutable = list(rest)

  def loss(params):
    if mutable:
      (logits, _), upd = model.apply({"params": params, **rest}, x, train=True, mutable=mutable)
    else:
      (logits, _), upd = model.apply({"params": params}, x, train=True), {}
    return bce_dice_loss(logits, y), upd

  def run(params):
    grads, upd = jax.grad(loss, has_aux=True)(params)
    return grads, upd, model.apply({"params": params, **rest}, x)

  grads, upd, (logits, aux) = jax.jit(run, compiler_options=FAST)(params)
  assert logits.shape == (2, SIZE, SIZE, 1) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.all(np.isfinite(g)) and np.max(np.abs(g)) > 0, f"dead parameter {jax.tree_util.keystr(path)}"
  return aux, rest, upd


@pytest.mark.parametrize("wiring", WIRINGS)
def test_jit_train_and_eval(wiring):
  w = 4  # at width 2 a 1x1 conv on the image can be dead for a given random init
  aux, rest, _ = _check_model(STAN(width=w, wiring=wiring))
  assert not rest  # no batch norm in any published wiring
  assert aux["bottleneck"].shape == (2, SIZE // 16, SIZE // 16, 3 * 16 * w)
  assert [a.shape[1:] for a in aux["decoder_features"]] == [
      (SIZE // 8, SIZE // 8, 8 * w), (SIZE // 4, SIZE // 4, 4 * w), (SIZE // 2, SIZE // 2, 2 * w), (SIZE, SIZE, w)]


def test_batch_norm_option_updates_batch_stats():
  aux, rest, upd = _check_model(STAN(width=4, batch_norm=True))
  changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                   upd["batch_stats"], rest["batch_stats"])
  assert jax.tree_util.tree_leaves(changed) and all(jax.tree_util.tree_leaves(changed))
  # conv -> BN -> ReLU: the convs lose their bias.
  v = jax.eval_shape(STAN(width=2, batch_norm=True).init, jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  assert set(v["params"]["enc0"]["b1_conv1"]["conv"]) == {"kernel"}


def test_paper_decoder_has_conv5_skip():
  """Eq. (4)'s conv5(C_{i,1}) exists only in the paper wiring, reading C_5 at the deepest stage."""
  x = jnp.zeros((1, SIZE, SIZE, 1))
  shapes = {w: jax.eval_shape(STAN(width=2, wiring=w).init, jax.random.key(0), x)["params"] for w in WIRINGS}
  k = shapes["paper"]["dec3_skip5"]["conv"]["kernel"].shape
  assert k == (5, 5, 3 * 32, 16)  # 5x5 on C_5 (3 * f_5 = 96 channels) -> f_4 = 16
  assert shapes["paper"]["dec0_skip5"]["conv"]["kernel"].shape == (5, 5, 4, 2)  # on A_2 (f_2 = 4)
  assert not any("skip5" in n for n in shapes["keras"]) and not any("skip5" in n for n in shapes["pytorch"])
  # Branch-2 second kernels: 3x3 (paper, pytorch) vs 1x1 / 5x5 (keras).
  assert shapes["paper"]["enc1"]["b2a_conv2"]["conv"]["kernel"].shape[:2] == (3, 3)
  assert shapes["keras"]["enc1"]["b2a_conv2"]["conv"]["kernel"].shape[:2] == (1, 1)
  assert shapes["keras"]["enc1"]["b2b_conv2"]["conv"]["kernel"].shape[:2] == (5, 5)


def test_registered_name_builds():
  cfg = registry.get_config("stan", "tiny")
  model = registry.build_model(cfg)
  assert isinstance(model, STAN) and model.wiring == "paper"
  x = jnp.zeros((1, cfg.image_size, cfg.image_size, 1))
  (logits, _), _ = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
  assert logits.shape == x.shape
  paper = registry.get_config("stan", "paper")
  assert (paper.image_size, paper.batch_size, paper.epochs) == (256, 4, 50)
  assert paper.optimizer.learning_rate == 1e-4 and paper.loss.name == "dice"
  assert paper.augment.shift > 0 and not paper.augment.hflip and paper.model.width == 32


def test_rejects_bad_arguments():
  with pytest.raises(ValueError, match="wiring"):
    jax.eval_shape(STAN(width=2, wiring="caffe").init, jax.random.key(0), jnp.zeros((1, 64, 64, 1)))
  with pytest.raises(ValueError, match="16"):
    jax.eval_shape(STAN(width=2).init, jax.random.key(0), jnp.zeros((1, 40, 40, 1)))
