"""Adversarial segmentation training: a generator and its discriminators, each
with its own optax transformation and optimiser state, in one jitted step.

Models (``@register(..., trainer="adversarial")``):

* ``lpm_unet`` -- Li et al., "Developing Large Pre-trained Model for Breast
  Tumor Segmentation from Ultrasound Images", MICCAI 2023
  (``shared/papers/large_pretrained_deep_supervised_unet.txt``). Four stage
  discriminators CN_1..CN_4, weights not shared, each its own TrainState and
  Adam state (``"stage1"``..``"stage4"``; ``adversarial.separate_d_optimizers=False``
  keeps them in one TrainState ``"d"``). Generator loss, Eq. (1)::

      sum_n alpha_n * Dice(P^(n), G) + beta_n * E log(1 - CN_n(P^(n)))

  with alpha = ``loss.alphas`` (1, 0.1, 0.1, 0.1) and beta_n =
  ``adversarial.beta`` (0.05); ``adversarial.non_saturating=True`` replaces
  ``log(1 - CN)`` by ``-log CN`` (Goodfellow et al.'s practical variant).
  Discriminator loss, Eq. (2): ``-log CN_n(G_n) - log(1 - CN_n(P^(n)))``, i.e.
  BCE(real ground truth, 1) + BCE(prediction, 0), per stage, where ``P^(n)`` is
  ``sigmoid`` of stage n's side logits ``[B, H/2^(n-1), W/2^(n-1), 1]`` and
  ``G_n`` the ground truth area-downsampled to it
  (``lpm_unet.discriminator_inputs``). The paper's sentence calling CN's output
  "the probability ... coming from the predicted maps" contradicts Eq. (2);
  we follow Eq. (2): CN's sigmoid is the probability that a map is a ground truth.
  Adam 1e-4 for both (``optimizer`` and ``adversarial.d_learning_rate``), batch 4.
* ``cgan_ac_caw`` -- Singh et al., ESWA 2020
  (``shared/papers/cgan_atrous_channel_attention_review.txt``). One
  conditional discriminator ``"d"`` on image ⊕ mask ``[B, H, W, 2]``.
  Generator loss: ``adv_weight * BCE(D(x, G(x)), 1) + l1_weight * L1 +
  ssim_weight * (1 - SSIM)`` (11 x 11 Gaussian window, on the probability
  ``sigmoid(logits)``; the review gives no weights: 1, 100, 50 in the
  ``paper`` profile), plus ``dice_weight * Dice`` (the ``default`` profile:
  1, 0, 0 and Dice 150 as the authors' breast-tumour code, because the L1 +
  SSIM weights collapsed to empty masks; see ``configs/cgan_ac_caw.py``); discriminator loss ``d_loss_scale * (BCE(D(x, y),
  1) + BCE(D(x, G(x)), 0))`` with scale 0.5 (authors' code). Adam 2e-4,
  beta1 0.5 for both.

One iteration (``make_steps(...).step``, jitted, state donated): the step rng
``fold_in(generator.rng, step)`` splits into the augmentation and dropout rngs
exactly as in the supervised trainer; the generator runs once in train mode to
produce the fake masks (``prepare``); then ``adversarial.d_steps`` discriminator
updates (``d_step``, generator untouched) and one generator update (``g_step``,
discriminators untouched, judged by the just-updated discriminators), "updated
alternately in each iteration" (Li et al., Sec. 2.2). ``g_step`` recomputes the
generator's forward pass with the same parameters, BatchNorm statistics and
dropout rng, so the discriminators were trained on exactly the masks the
generator's update differentiates (as pix2pix's ``fake.detach()``). BatchNorm
in the discriminators uses batch statistics whenever they run (they are never
run in inference mode); only ``d_step`` updates their running statistics.

The run around the step (data, splits, epoch loop with validation Dice of the
generator, plateau, latest + best checkpoints holding every state, stop
signals, evaluation of the generator, ``losses.png``) is
:func:`busjax.trainers.common.train_and_evaluate`, shared with the supervised
trainer. The plateau schedule, when enabled, changes the generator's learning
rate only.

Logged per step (``metrics.jsonl``): ``loss`` (the generator's total), its
terms (``g_dice``; or ``g_l1``, ``g_ssim``), ``g_adv`` and ``g_adv_<stage>``
(unweighted adversarial terms), ``dice`` (training batch Dice), ``d_loss`` and
``d_loss_<stage>``, ``d_acc_real``/``d_acc_fake`` (fraction of discriminator
patches right on ground truths / predictions, before the update) and per
stage, ``grad_norm_g`` and ``grad_norm_d[_<key>]``. With one discriminator the
``_<stage>`` suffixes are dropped.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from busjax import losses, metrics as metrics_lib, registry
from busjax.data import pipeline
from busjax.trainers import common, supervised
from busjax.trainers.supervised import TrainState


@struct.dataclass
class GANState:
  """The whole adversarial training state (one pytree: jitted, donated, checkpointed).

  Attributes:
    generator: the segmentation network's TrainState (params, BatchNorm
      statistics, its optax transformation and state, step, the run's rng).
    discriminators: discriminator TrainStates by key (``"stage1"``..``"stage4"``
      or ``"d"``), each with its own optax transformation and state and step.
  """
  generator: TrainState
  discriminators: dict[str, TrainState]

  @property
  def step(self) -> jax.Array:
    """The global step: the number of generator updates."""
    return self.generator.step


def _sfx(name: str) -> str:
  return "" if name == "d" else f"_{name}"


def d_optimizer_config(cfg) -> ml_collections.ConfigDict:
  """The discriminators' optimiser: Adam with ``adversarial.d_learning_rate``,
  ``d_b1``, ``d_b2``."""
  adv = cfg.adversarial
  return ml_collections.ConfigDict(dict(name="adam", learning_rate=adv.d_learning_rate,
                                        b1=adv.d_b1, b2=adv.d_b2, weight_decay=0.0))


# ----------------------------------------------------------------------------- per model


class Adversary:
  """What differs between adversarial models: the discriminators, their
  inputs and the generator's non-adversarial loss terms.

  Attributes:
    keys: discriminator TrainState keys.
    outputs: names of the discriminator outputs (one adversarial term each).
    weights: generator weight of each output's adversarial term.
    non_saturating: generator term ``-log D(fake)`` (True) or ``log(1 - D(fake))``.
    d_loss_scale: factor of every discriminator's BCE(real) + BCE(fake).
  """
  keys: tuple[str, ...]
  outputs: tuple[str, ...]
  weights: dict[str, float]
  non_saturating: bool
  d_loss_scale: float

  def init(self, rng: jax.Array) -> dict[str, tuple[Callable, dict]]:
    """``{key: (apply_fn, variables)}`` of freshly initialised discriminators."""
    raise NotImplementedError

  def inputs(self, x, y, logits, aux) -> tuple[Any, Any]:
    """``(real, fake)`` discriminator inputs from the batch and the generator's output."""
    raise NotImplementedError

  def logits(self, params: dict, stats: dict, x, masks) -> tuple[dict, dict]:
    """Discriminator patch logits ``{output: [B, h, w, 1]}`` in train mode
    (batch statistics) and the updated running statistics ``{key: ...}``."""
    raise NotImplementedError

  def generator_terms(self, logits, aux, y) -> tuple[jax.Array, dict]:
    """The generator's weighted non-adversarial loss and its logged terms."""
    raise NotImplementedError


class LPMAdversary(Adversary):
  """Li et al. 2023: stage discriminators on the deep-supervision maps (Eq. 1-2)."""

  def __init__(self, cfg):
    from busjax.models import lpm_unet
    self.cfg = cfg
    adv = cfg.adversarial
    self.module = lpm_unet.build_discriminator(cfg)
    self.stage = lpm_unet.StageDiscriminator(self.module.width)
    self.separate = bool(adv.get("separate_d_optimizers", True))
    self.outputs = tuple(f"stage{n + 1}" for n in range(self.module.num_stages))
    self.keys = self.outputs if self.separate else ("d",)
    self.weights = {o: float(adv.beta) for o in self.outputs}
    self.non_saturating = bool(adv.get("non_saturating", False))
    self.d_loss_scale = float(adv.get("d_loss_scale", 1.0))
    self._inputs = lpm_unet.discriminator_inputs

  def init(self, rng):
    s = self.cfg.image_size
    # Parameter shapes do not depend on the map size; these are stage n's sizes.
    masks = [jnp.zeros((1, max(s >> n, 1), max(s >> n, 1), 1), jnp.float32)
             for n in range(self.module.num_stages)]
    init = common.cached("d_init", self.cfg,
                         lambda: jax.jit(functools.partial(self.module.init, train=False)),
                         "discriminator")
    variables = init(rng, masks)
    if not self.separate:
      return {"d": (common.cached("d_apply", self.cfg, lambda: self.module.apply,
                                  "discriminator"), variables)}
    apply = common.cached("d_stage_apply", self.cfg, lambda: self.stage.apply, "discriminator")
    return {o: (apply, {col: tree[o] for col, tree in variables.items()}) for o in self.outputs}

  def inputs(self, x, y, logits, aux):
    fake, real = self._inputs(aux["side_logits"], y)
    return real, fake

  def logits(self, params, stats, x, masks):
    if not self.separate:
      outs, new = self.module.apply({"params": params["d"], "batch_stats": stats["d"]}, masks,
                                    train=True, mutable=["batch_stats"])
      return dict(zip(self.outputs, outs)), {"d": new["batch_stats"]}
    outs, new_stats = {}, {}
    for n, o in enumerate(self.outputs):
      outs[o], new = self.stage.apply({"params": params[o], "batch_stats": stats[o]}, masks[n],
                                      train=True, mutable=["batch_stats"])
      new_stats[o] = new["batch_stats"]
    return outs, new_stats

  def generator_terms(self, logits, aux, y):
    dice = losses.segmentation_loss(self.cfg.loss, logits, aux, y)
    return dice, {"g_dice": dice}


class CGANAdversary(Adversary):
  """Singh et al. 2020: one conditional PatchGAN on image ⊕ mask; L1 + SSIM terms."""

  def __init__(self, cfg):
    from busjax.models import cgan_ac_caw
    self.cfg = cfg
    adv = cfg.adversarial
    self.module = cgan_ac_caw.build_discriminator(cfg)
    self.keys = self.outputs = ("d",)
    self.weights = {"d": float(adv.adv_weight)}
    self.non_saturating = bool(adv.get("non_saturating", True))
    self.d_loss_scale = float(adv.get("d_loss_scale", 0.5))
    self._ssim = cgan_ac_caw.ssim

  def init(self, rng):
    s = self.cfg.image_size
    x = jnp.zeros((1, s, s, 1), jnp.float32)
    init = common.cached("d_init", self.cfg,
                         lambda: jax.jit(functools.partial(self.module.init, train=False)),
                         "discriminator")
    return {"d": (common.cached("d_apply", self.cfg, lambda: self.module.apply, "discriminator"),
                  init(rng, x, x))}

  def inputs(self, x, y, logits, aux):
    return y, jax.nn.sigmoid(logits.astype(jnp.float32))

  def logits(self, params, stats, x, masks):
    out, new = self.module.apply({"params": params["d"], "batch_stats": stats["d"]}, x, masks,
                                 train=True, mutable=["batch_stats"])
    return {"d": out}, {"d": new["batch_stats"]}

  def generator_terms(self, logits, aux, y):
    """``l1_weight * mean|p - y| + ssim_weight * mean(1 - SSIM(p, y))``, p =
    sigmoid(logits) (``cgan_ac_caw.l1_ssim_loss``), plus ``dice_weight *``
    soft Dice when ``adversarial.dice_weight`` > 0 (the authors' breast-tumour
    code, see ``configs/cgan_ac_caw.py``); every term logged."""
    adv = self.cfg.adversarial
    p = jax.nn.sigmoid(logits.astype(jnp.float32))
    l1 = jnp.mean(jnp.abs(p - y))
    dssim = jnp.mean(1.0 - self._ssim(p, y, window_size=adv.ssim_window, sigma=adv.ssim_sigma))
    total, terms = adv.l1_weight * l1 + adv.ssim_weight * dssim, {"g_l1": l1, "g_ssim": dssim}
    dice_weight = float(adv.get("dice_weight", 0.0))
    if dice_weight:
      terms["g_dice"] = losses.soft_dice_loss(logits, y)
      total = total + dice_weight * terms["g_dice"]
    return total, terms


ADVERSARIES: dict[str, Callable[[Any], Adversary]] = {
    "lpm_unet": LPMAdversary,
    "cgan_ac_caw": CGANAdversary,
}


def make_adversary(cfg) -> Adversary:
  """The :class:`Adversary` of ``cfg.model_name``."""
  if cfg.model_name not in ADVERSARIES:
    raise NotImplementedError(
        f"model {cfg.model_name!r} is registered as adversarial but busjax/trainers/"
        f"adversarial.py has no discriminator setup for it (known: {sorted(ADVERSARIES)})")
  return ADVERSARIES[cfg.model_name](cfg)


def create_gan_state(cfg, model: nn.Module, adversary: Adversary, rng: jax.Array) -> GANState:
  """The generator exactly as :func:`supervised.create_train_state` makes it from
  ``rng`` (same seed, same initial generator) and the discriminators from
  ``fold_in(rng, 1)``, each with its own Adam state (``d_optimizer_config``)."""
  generator = supervised.create_train_state(cfg, model, rng)
  d_rng = jax.random.fold_in(rng, 1)
  init_rng, state_rng = jax.random.split(d_rng)
  tx = common.make_optimizer(d_optimizer_config(cfg))
  discs = {}
  for i, (key, (apply_fn, variables)) in enumerate(sorted(adversary.init(init_rng).items())):
    discs[key] = supervised.strong_step(TrainState.create(
        apply_fn=apply_fn, params=variables["params"],
        batch_stats=variables.get("batch_stats", {}), tx=tx,
        rng=jax.random.fold_in(state_rng, i)))
  return GANState(generator=generator, discriminators=discs)


def set_learning_rate(state: GANState, lr: float) -> GANState:
  """``state`` with the generator's learning rate set to ``lr`` (plateau schedule)."""
  return state.replace(generator=supervised.set_learning_rate(state.generator, lr))


# ----------------------------------------------------------------------------- steps


def _bce(logits: jax.Array, target: float) -> jax.Array:
  return losses.bce_loss(logits, jnp.full(logits.shape, target, jnp.float32))


def _generator_adv(logits: jax.Array, non_saturating: bool) -> jax.Array:
  """``-log D`` (non-saturating) or ``log(1 - D)`` (Eq. 1 as written), D = sigmoid(logits),
  averaged over patches and batch."""
  logits = logits.astype(jnp.float32)
  if non_saturating:
    return -jnp.mean(jax.nn.log_sigmoid(logits))
  return jnp.mean(jax.nn.log_sigmoid(-logits))


class AdversarialSteps(NamedTuple):
  """The pieces of one adversarial iteration (pure functions; ``step`` is jitted).

  prepare: ``(state, uint8 images, uint8 masks) -> (x, y, real, fake, drop_rng)``:
    augmentation, and the generator's train-mode output as discriminator
    inputs (``fake`` carries no gradient).
  d_step: ``(state, x, real, fake) -> (state, metrics)``: one update of every
    discriminator; the generator is passed through untouched.
  g_step: ``(state, x, y, drop_rng) -> (state, metrics)``: one generator update
    against the current discriminators, which are passed through untouched.
  step: ``jit(prepare, d_step x d_steps, g_step)`` with the state donated.
  """
  prepare: Callable
  d_step: Callable
  g_step: Callable
  step: Callable


def make_steps(cfg, model: nn.Module, adversary: Adversary | None = None) -> AdversarialSteps:
  """The adversarial step functions of ``model`` under ``cfg`` (cached per config)."""
  return common.cached("gan_steps", cfg,
                       lambda: _make_steps(cfg, model, adversary or make_adversary(cfg)),
                       "discriminator", "adversarial")


def make_train_step(cfg, model: nn.Module):
  """The jitted, donating ``(state, images, masks) -> (state, metrics)`` of ``model``."""
  return make_steps(cfg, model).step


def _make_steps(cfg, model: nn.Module, adv: Adversary) -> AdversarialSteps:
  d_steps = int(cfg.adversarial.get("d_steps", 1))
  if d_steps < 1:
    raise ValueError(f"adversarial.d_steps must be >= 1, got {d_steps}")

  def forward(g: TrainState, params, x, drop_rng):
    return model.apply({"params": params, "batch_stats": g.batch_stats}, x, train=True,
                       rngs={"dropout": drop_rng}, mutable=["batch_stats"])

  def prepare(state: GANState, images, masks):
    rng = jax.random.fold_in(state.generator.rng, state.generator.step)
    aug_rng, drop_rng = jax.random.split(rng)  # as supervised._make_train_step
    images, masks = pipeline.augment(aug_rng, images, masks, cfg.augment)
    x = pipeline.normalize(images)
    y = masks.astype(jnp.float32)
    (logits, aux), _ = forward(state.generator, state.generator.params, x, drop_rng)
    real, fake = adv.inputs(x, y, logits, aux)
    return x, y, real, jax.lax.stop_gradient(fake), drop_rng

  def d_step(state: GANState, x, real, fake):
    ds = state.discriminators
    stats0 = {k: s.batch_stats for k, s in ds.items()}

    def loss_fn(params):
      f_out, stats = adv.logits(params, stats0, x, fake)
      r_out, stats = adv.logits(params, stats, x, real)
      per = {o: adv.d_loss_scale * (_bce(r_out[o], 1.0) + _bce(f_out[o], 0.0))
             for o in adv.outputs}
      return sum(per.values()), (per, r_out, f_out, stats)

    (loss, (per, r_out, f_out, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        {k: s.params for k, s in ds.items()})
    new = {k: ds[k].apply_gradients(grads=grads[k], batch_stats=stats[k]) for k in ds}
    m = {"d_loss": loss}
    acc_r, acc_f = [], []
    for o in adv.outputs:
      acc_r.append(jnp.mean((r_out[o] > 0).astype(jnp.float32)))
      acc_f.append(jnp.mean((f_out[o] < 0).astype(jnp.float32)))
      if len(adv.outputs) > 1:
        m[f"d_loss{_sfx(o)}"] = per[o]
        m[f"d_acc_real{_sfx(o)}"], m[f"d_acc_fake{_sfx(o)}"] = acc_r[-1], acc_f[-1]
    m["d_acc_real"] = sum(acc_r) / len(acc_r)
    m["d_acc_fake"] = sum(acc_f) / len(acc_f)
    for k in ds:
      m[f"grad_norm_d{_sfx(k)}"] = common.global_norm(grads[k])
    return state.replace(discriminators=new), m

  def g_step(state: GANState, x, y, drop_rng):
    g, ds = state.generator, state.discriminators
    d_params = {k: s.params for k, s in ds.items()}
    d_stats = {k: s.batch_stats for k, s in ds.items()}

    def loss_fn(params):
      (logits, aux), new_vars = forward(g, params, x, drop_rng)
      sup, terms = adv.generator_terms(logits, aux, y)
      _, fake = adv.inputs(x, y, logits, aux)
      outs, _ = adv.logits(d_params, d_stats, x, fake)  # running statistics discarded
      adv_terms = {o: _generator_adv(outs[o], adv.non_saturating) for o in adv.outputs}
      total = sup
      for o in adv.outputs:
        total = total + adv.weights[o] * adv_terms[o]
      return total, (logits, new_vars, terms, adv_terms)

    (loss, (logits, new_vars, terms, adv_terms)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(g.params)
    g = g.apply_gradients(grads=grads, batch_stats=new_vars.get("batch_stats", {}))
    m = {"loss": loss, **terms, "g_adv": sum(adv_terms.values()),
         "dice": jnp.mean(metrics_lib.batch_dice(logits, y)),
         "grad_norm_g": common.global_norm(grads)}
    if len(adv.outputs) > 1:
      m.update({f"g_adv{_sfx(o)}": v for o, v in adv_terms.items()})
    return state.replace(generator=g), m

  def step(state: GANState, images, masks):
    x, y, real, fake, drop_rng = prepare(state, images, masks)
    dm = {}
    for _ in range(d_steps):
      state, dm = d_step(state, x, real, fake)
    state, gm = g_step(state, x, y, drop_rng)
    return state, {**dm, **gm}

  return AdversarialSteps(prepare, d_step, g_step, jax.jit(step, donate_argnums=0))


# ----------------------------------------------------------------------------- the run


def train(cfg, workdir: str, *, data=None, quiet: bool = False) -> dict:
  """Trains the GAN ``cfg.model_name`` on fold ``cfg.fold`` (resuming), then
  evaluates its generator. Same contract and outputs as :func:`supervised.train`.

  Args:
    cfg: the full config (with ``discriminator`` and ``adversarial`` sections).
    workdir: the root folder; the run lives in ``common.run_dir(workdir, cfg)``.
    data: an already loaded :class:`pipeline.SegmentationData`.
    quiet: no progress bar or table.
  Returns:
    the ``eval.json`` dictionary.
  """
  model = registry.build_model(cfg)
  adversary = make_adversary(cfg)
  return common.train_and_evaluate(
      cfg, workdir, data=data, quiet=quiet,
      init_state=lambda: create_gan_state(cfg, model, adversary,
                                          jax.random.key(cfg.seed, impl=cfg.prng_impl)),
      make_step=lambda: make_train_step(cfg, model),
      predict=supervised.make_predict_fn(cfg, model), set_lr=set_learning_rate,
      eval_state=lambda s: s.generator)
