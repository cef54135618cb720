"""Model registry: one snake_case name per model, everywhere.

A model file registers its Flax module with::

    @register("rca_iunet", trainer="supervised")
    class RCAIUNet(nn.Module):
        ...

The module is built from the model's config as ``cls(**config.model)``; the
config comes from ``busjax/configs/<name>.py`` (``get_config(variant)``).
Registering two models under one name raises ``ValueError``. ``main.py``
builds its allowed ``--model`` values from :func:`model_names`.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable

TRAINERS = ("supervised", "adversarial", "detection")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What the registry knows about one model."""
  name: str
  module: Callable[..., Any]  # a flax.linen.Module subclass (or factory)
  trainer: str
  config_module: str  # busjax.configs.<name>, or the base config of a family


_MODELS: dict[str, ModelSpec] = {}


def register(name: str, *, trainer: str = "supervised",
             config: str | None = None) -> Callable[[Any], Any]:
  """Class decorator that registers a model under ``name``.

  Args:
    name: the snake_case model key (``--model=name``).
    trainer: which trainer trains it: one of ``TRAINERS``.
    config: the config module name under ``busjax.configs`` (default: ``name``).
      Ablation variants of one paper may share a config module; it receives
      the model name in ``get_config(variant, name=...)``.
  """
  if trainer not in TRAINERS:
    raise ValueError(f"unknown trainer {trainer!r} for model {name!r}; expected one of {TRAINERS}")

  def deco(cls):
    if name in _MODELS:
      raise ValueError(f"model {name!r} is already registered by {_MODELS[name].module!r}")
    _MODELS[name] = ModelSpec(name=name, module=cls, trainer=trainer,
                              config_module=f"busjax.configs.{config or name}")
    return cls

  return deco


def _import_all_models() -> None:
  import busjax.models as pkg
  for info in pkgutil.iter_modules(pkg.__path__):
    importlib.import_module(f"busjax.models.{info.name}")


def model_names() -> list[str]:
  """All registered model names, sorted."""
  _import_all_models()
  return sorted(_MODELS)


def get_model(name: str) -> ModelSpec:
  """The spec of model ``name``; ``KeyError`` listing valid names if unknown."""
  _import_all_models()
  if name not in _MODELS:
    raise KeyError(f"unknown model {name!r}; valid models: {', '.join(sorted(_MODELS))}")
  return _MODELS[name]


def get_config(name: str, variant: str = "default"):
  """The ``ml_collections.ConfigDict`` of model ``name`` in ``variant``.

  Variants: ``default`` (CPU-sized profile), ``paper`` (the paper's own
  hyper-parameters) and ``tiny`` (for tests).
  """
  spec = get_model(name)
  mod = importlib.import_module(spec.config_module)
  cfg = mod.get_config(variant, name=name)
  cfg.model_name = name
  return cfg


def build_model(config) -> Any:
  """Instantiates the Flax module of ``config.model_name`` with ``config.model``."""
  spec = get_model(config.model_name)
  return spec.module(**config.model.to_dict())
