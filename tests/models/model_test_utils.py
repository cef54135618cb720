"""Shared by the model tests: fast-compile options, keys, random inputs and
variables, parameter counts and the dead-gradient check.

Imported as ``from model_test_utils import ...`` (like tests/trainers/gan_test_utils.py):
pytest's default "prepend" import mode puts this folder on ``sys.path``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from busjax import registry

# Faster XLA compilation on CPU (the numerics are unchanged): for large graphs of
# small ops (RCA-IUnet, STAN) compile time dominates the tests.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

#: Batch and image size of the tiny-config tests.
B, S = 2, 64


def rbg_key(seed: int) -> jax.Array:
  # rbg keys: XLA compiles a model's init several times faster than with threefry on CPU.
  return jax.random.key(seed, impl="rbg")


def count_params(tree) -> int:
  """Number of scalars in a pytree of arrays (or of ShapeDtypeStructs)."""
  return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def dead_leaves(grads) -> list[str]:
  """Paths of the gradient leaves that are zero everywhere."""
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  return [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g) != 0)]


def inputs(batch: int = B, size: int = S):
  """Random images in [0, 1) and sparse binary targets, ``[batch, size, size, 1]``
  (keys 1 and 2)."""
  x = jax.random.uniform(jax.random.key(1), (batch, size, size, 1))
  y = (jax.random.uniform(jax.random.key(2), (batch, size, size, 1)) > 0.7).astype(jnp.float32)
  return x, y


def tiny_setup(name: str):
  """The ``tiny`` config of model ``name``, its model, variables initialised under jit
  (rbg key 1) and an input batch ``x`` with binary targets ``y`` (split of key 0).

  Returns:
    ``(cfg, model, variables, x, y)``.
  """
  cfg = registry.get_config(name, "tiny")
  model = registry.build_model(cfg)
  kx, ky = jax.random.split(jax.random.key(0))
  x = jax.random.uniform(kx, (B, S, S, 1))
  y = (jax.random.uniform(ky, (B, S, S, 1)) > 0.7).astype(jnp.float32)
  variables = jax.jit(model.init)(rbg_key(1), x)
  return cfg, model, variables, x, y


def random_variables(model, x, seed: int = 0):
  """He-normal kernels, conv biases N(0, 0.1), BN scale 1 / offset 0, running stats (0, 1).

  Built from ``eval_shape`` of ``init`` so the (slow to compile) initialisers
  are traced but not compiled.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      std = math.sqrt(2.0 / np.prod(s.shape[:-1]))
      return jnp.asarray(rng.normal(0.0, std, s.shape), jnp.float32)
    if name == "bias" and "bn" not in path[-2].key:  # conv bias (BN modules are named *bn*)
      return jnp.asarray(rng.normal(0.0, 0.1, s.shape), jnp.float32)
    return (jnp.ones if name in ("scale", "var") else jnp.zeros)(s.shape, jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)
