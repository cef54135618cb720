"""``--set key=value`` config overrides, shared by ``busjax.main`` and the benchmarks.

Kept free of absl flag definitions so any command-line module can import it.
"""
from __future__ import annotations

import ast


def parse_value(text: str):
  """``'1e-3'`` -> 0.001, ``'true'`` -> True, ``'(1, 2)'`` -> (1, 2); else the string."""
  low = text.strip().lower()
  if low in ("true", "false"):
    return low == "true"
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(cfg, overrides: list[str]):
  """Applies ``key=value`` overrides to a ConfigDict; unknown keys are errors."""
  for item in overrides:
    if "=" not in item:
      raise ValueError(f"--set expects key=value, got {item!r}")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    node = cfg
    for p in parts[:-1]:
      if p not in node:
        raise KeyError(f"--set {key}: no config field {p!r} (fields: {sorted(node.keys())})")
      node = node[p]
    if parts[-1] not in node:
      raise KeyError(f"--set {key}: no config field {parts[-1]!r} (fields: {sorted(node.keys())})")
    value = parse_value(text)
    old = node[parts[-1]]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      with cfg.unlocked():
        node[parts[-1]] = value
    except TypeError as e:
      raise ValueError(f"--set {item}: {e}") from e
  return cfg
