"""RCA-IUnet (Punn & Agarwal 2022) and its Table 3 ablations: busjax/models/rca_iunet.py."""
from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from busjax import registry
from busjax.configs.rca_iunet import ABLATIONS, get_config
from busjax.losses import bce_dice_loss
from busjax.models.rca_iunet import RCAIUNet, RCAIUNetBase, spectral_pool
from model_test_utils import FAST, count_params, inputs, random_variables
from model_test_utils import S as SIZE


def _feeds_train_batch_norm(path) -> bool:
  """Whether a leaf is the bias of a conv whose output goes straight into a BatchNorm.

  In train mode BN subtracts the batch mean, so such a bias has exactly zero
  gradient (the authors' Keras model has these biases; they count in 2.9M).
  Layer list: RIC branch convs ``s*_conv*`` and their "same" hybrid pools
  ``s*_pool``, block shortcuts, base-block convs ``conv*``, attention gates and
  output ``gate_*``/``out``, and the head.
  """
  names = [p.key for p in path]
  if names[-1] != "bias":
    return False
  # Separable convs and hybrid pools hold their bias one level down.
  owner = names[-3] if names[-2] in ("pointwise", "merge") else names[-2]
  return re.fullmatch(r"s[12]_conv\d|s[12]_pool|conv\d|shortcut|gate_[xyz]|out|head", owner) is not None


def _check_model(model):
  """One jitted program: eval-mode forward, train-mode gradients and batch-stat update.

  Checks the output (shape, dtype, finite), that every parameter gets a nonzero
  gradient (no dead branch) except biases feeding a train-mode BN (exactly 0),
  and that batch_stats move. Returns the eval-mode aux dict.
  """
  x, y = inputs()
  v = random_variables(model, x)

  def loss(params, batch_stats):
    (logits, _), upd = model.apply({"params": params, "batch_stats": batch_stats}, x,
                                   train=True, mutable=["batch_stats"])
    return bce_dice_loss(logits, y), upd

  def run(v):
    grads, upd = jax.grad(loss, has_aux=True)(v["params"], v["batch_stats"])
    return grads, upd, model.apply(v, x)

  grads, upd, (logits, aux) = jax.jit(run, compiler_options=FAST)(v)
  assert logits.shape == (2, SIZE, SIZE, 1) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  n_redundant = 0
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    key = jax.tree_util.keystr(path)
    assert np.all(np.isfinite(g)), key
    if _feeds_train_batch_norm(path):
      n_redundant += 1
      assert np.max(np.abs(g)) < 1e-5, f"{key}: expected ~0 (bias before train-mode BN)"
    else:
      assert np.max(np.abs(g)) > 0, f"dead parameter {key}"
  assert n_redundant > 0
  changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                   upd["batch_stats"], v["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))
  return aux


# ----------------------------------------------------------------------------
# Spectral pooling.

@pytest.mark.parametrize("shape,out_hw", [((2, 16, 16, 3), (8, 8)), ((1, 12, 20, 2), (6, 10)),
                                          ((1, 14, 14, 1), (7, 7))])
def test_spectral_pool_of_constant_is_constant(shape, out_hw):
  x = jnp.full(shape, 0.37, jnp.float32)
  out = spectral_pool(x, out_hw)
  assert out.shape == (shape[0], *out_hw, shape[3]) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, 0.37, atol=1e-6)


def test_spectral_pool_keeps_low_frequencies():
  """A band-limited image (frequencies < h/2) is sampled exactly on the coarse grid."""
  hh, ww = 32, 24
  yy, xx = np.mgrid[:hh, :ww].astype(np.float32)
  img = (0.5 + 0.2 * np.cos(2 * np.pi * 3 * yy / hh) * np.sin(2 * np.pi * 2 * xx / ww)
         + 0.1 * np.cos(2 * np.pi * (5 * yy / hh + 4 * xx / ww)))
  x = jnp.asarray(np.stack([img, img[::-1]], -1)[None])
  out = spectral_pool(x, (hh // 2, ww // 2))
  np.testing.assert_allclose(out, x[:, ::2, ::2], atol=1e-5)
  # A high frequency (above the new Nyquist) is removed, not aliased.
  hi = jnp.asarray(np.cos(2 * np.pi * 11 * yy / hh)[None, ..., None])
  np.testing.assert_allclose(spectral_pool(hi, (hh // 2, ww // 2)), 0.0, atol=1e-5)
  # The full-size ("same") crop is the identity.
  np.testing.assert_array_equal(spectral_pool(x, (hh, ww)), x)


def _authors_spectral_pool(x: np.ndarray, f: int) -> np.ndarray:
  """Independent NumPy transcription of the authors' TF spectral pool (without its ReLU):
  fft2d over the innermost axes (W, C), 2-D quadrant crop of axes (H, W), ifft2d over (W, C)."""
  im = np.fft.fft2(x.astype(np.complex64), axes=(2, 3))
  r = math.sqrt(0.5)
  if f % 2:
    n = (f - 1) // 2
    top = np.concatenate([im[:, :n + 1, :n + 1], im[:, :n + 1, -n:]], 2)
    bottom = np.concatenate([im[:, -n:, :n + 1], im[:, -n:, -n:]], 2)
    out = np.concatenate([top, bottom], 1)
  else:
    n = f // 2
    top = np.concatenate([im[:, :n, :n], r * (im[:, :n, n] + im[:, :n, -n])[:, :, None],
                          im[:, :n, -(n - 1):]], 2)
    middle = np.concatenate([
        (r * (im[:, n, :n] + im[:, -n, :n]))[:, None],
        (0.5 * (im[:, n, n] + im[:, n, -n] + im[:, -n, n] + im[:, -n, -n]))[:, None, None],
        (r * (im[:, n, -(n - 1):] + im[:, -n, -(n - 1):]))[:, None]], 2)
    bottom = np.concatenate([im[:, -(n - 1):, :n], r * (im[:, -(n - 1):, n] + im[:, -(n - 1):, -n])[:, :, None],
                             im[:, -(n - 1):, -(n - 1):]], 2)
    out = np.concatenate([top, middle, bottom], 1)
  return np.real(np.fft.ifft2(out, axes=(2, 3)))


@pytest.mark.parametrize("size,f", [(8, 4), (6, 3), (16, 8), (8, 8)])
def test_spectral_pool_code_mode_matches_authors(size, f):
  x = np.random.default_rng(0).normal(size=(2, size, size, 5)).astype(np.float32)
  out = spectral_pool(jnp.asarray(x), (f, f), mode="code")
  np.testing.assert_allclose(out, _authors_spectral_pool(x, f), atol=2e-5)
  if f < size and f % 2 == 0:
    # A constant is doubled (the inverse FFT over the cropped W axis is normalised
    # by 1/w) and the middle row, made of two spatial rows, gets another sqrt(2).
    const = np.asarray(spectral_pool(jnp.full((1, size, size, 2), 0.5), (f, f), mode="code"))
    expected = np.full_like(const, 0.5 * size / f)
    expected[:, f // 2] *= math.sqrt(2)
    np.testing.assert_allclose(const, expected, atol=1e-5)


def test_spectral_pool_rejects_bad_input():
  with pytest.raises(ValueError):
    spectral_pool(jnp.zeros((1, 8, 12, 1)), (4, 6), mode="code")
  with pytest.raises(ValueError):
    spectral_pool(jnp.zeros((1, 8, 8, 1)), (4, 4), mode="fft")


# ----------------------------------------------------------------------------
# Model.

def _hand_count(base: int = 16, cin: int = 1) -> int:
  """Parameters of RCA-IUnet from the layer list (Keras SeparableConv2D/Conv2D; BN = scale+offset)."""
  def sep(i, o, k):
    return i * k * k + i * o + o

  def conv(i, o, k):
    return i * o * k * k + o

  def hp(c):  # hybrid pool: 1x1 conv on [max, spectral]
    return conv(2 * c, c, 1)

  def ric(i, f):
    n = sep(i, f, 3) + sep(i, f, 1) + sep(i, f, 5) + hp(i) + 2 * (3 * f + i) + sep(3 * f + i, f, 1)
    n += 3 * sep(f, f, 3) + hp(f) + 2 * 4 * f + sep(4 * f, f, 1)
    return n + sep(i, f, 1) + 2 * f  # shortcut + BN

  w = [base * 2**level for level in range(5)]
  n = ric(cin, w[0]) + sum(hp(w[level]) + ric(w[level], w[level + 1]) for level in range(4))
  for level in range(4):
    f, cx = w[level], (cin if level == 0 else w[level - 1])
    n += conv(cx, f, 1) + conv(w[level], f, 1) + conv(w[level + 1], f, 1) + 3 * 2 * f  # gates
    n += 2 * conv(f, f, 2) + conv(f, f, 1) + conv(f, f, 3) + conv(f, 1, 1) + conv(f, f, 1) + 2 * f
    n += ric(w[level + 1] + f, f)
  return n + conv(w[0], 1, 1) + 2


def test_parameter_count_full_size():
  """Paper: 2.9M trainable parameters at 256x256x1 (Table 2)."""
  shapes = jax.eval_shape(RCAIUNet().init, jax.random.key(0), jnp.zeros((1, 256, 256, 1)))
  n = count_params(shapes["params"])
  assert n == _hand_count() == 2_907_905
  assert abs(n - 2.9e6) / 2.9e6 < 0.03


def test_full_model_jit_train_and_eval():
  aux = _check_model(RCAIUNet(base_width=4))
  assert aux["bottleneck"].shape == (2, SIZE // 16, SIZE // 16, 64)
  assert [a.shape[1] for a in aux["decoder_features"]] == [8, 16, 32, 64]
  assert [a.shape[1:] for a in aux["attention_maps"]] == [(8, 8, 1), (16, 16, 1), (32, 32, 1), (64, 64, 1)]
  for a in aux["attention_maps"]:
    assert np.all((np.asarray(a) >= 0) & (np.asarray(a) <= 1))


def test_base_model_jit_train_and_eval():
  """The Table 3 skeleton (separable residual double conv, max-pool, plain skips)."""
  aux = _check_model(RCAIUNetBase(base_width=4))
  assert "attention_maps" not in aux


def test_code_spectral_mode_and_dropout_trace():
  model = RCAIUNet(base_width=4, spectral_mode="code", dropout_rate=0.3)
  x, _ = inputs(1)
  keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  (logits, _), v = jax.eval_shape(lambda: model.init_with_output(keys, x, train=True))
  assert logits.shape == (1, SIZE, SIZE, 1) and "batch_stats" in v
  with pytest.raises(Exception, match="dropout"):  # dropout draws from the "dropout" rng in train mode
    jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), v)
  with pytest.raises(ValueError, match="square"):  # the authors' FFT layout needs square maps
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 128, 1)))


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_registered_names_build(name):
  cfg = registry.get_config(name, "tiny")
  paper = get_config("paper", name=name)
  assert paper.image_size == 256 and paper.optimizer.learning_rate == 1e-3
  assert paper.optimizer.plateau_factor == 0.5 and paper.early_stopping_patience > 0
  assert cfg.loss.name == "bce_dice" and cfg.postprocess
  model = registry.build_model(cfg)
  ric, hp, csa = ABLATIONS[name]
  assert (model.use_inception, model.use_hybrid_pool, model.use_attention) == (ric, hp, csa)
  # The registered class carries the same defaults as the config.
  bare = registry.get_model(name).module()
  assert (bare.use_inception, bare.use_hybrid_pool, bare.use_attention) == (ric, hp, csa)
  x = jnp.zeros((1, cfg.image_size, cfg.image_size, 1))
  (logits, aux), v = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
  assert logits.shape == x.shape
  assert ("attention_maps" in aux) == csa
  names = set(v["params"])
  assert any(n.startswith("down") for n in names) == hp
  assert any(n.startswith("att") for n in names) == csa
  assert ("s1_conv0" in v["params"]["enc0"]) == ric


def test_rejects_bad_arguments():
  with pytest.raises(ValueError):
    jax.eval_shape(RCAIUNet(base_width=2, spectral_mode="dct").init, jax.random.key(0), jnp.zeros((1, 64, 64, 1)))
  with pytest.raises(ValueError):
    jax.eval_shape(RCAIUNet(base_width=2).init, jax.random.key(0), jnp.zeros((1, 40, 40, 1)))
  with pytest.raises(ValueError):
    get_config("tiny", name="rca_iunet_hp")
