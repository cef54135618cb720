"""Shared fixtures: a tiny in-memory dataset that looks like a TFDS data source."""
from __future__ import annotations

import numpy as np
import pytest


def make_fake_source(n: int = 24, seed: int = 0) -> list[dict]:
  """``n`` examples of varying size: dark ellipses on speckle; every 4th is normal."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    h, w = int(rng.integers(40, 80)), int(rng.integers(48, 96))
    img = rng.gamma(2.0, 50.0, (h, w)).clip(0, 255)
    mask = np.zeros((h, w), np.uint8)
    label = 0 if i % 4 == 0 else 1 + i % 2
    if label:
      yy, xx = np.mgrid[:h, :w]
      cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
      ry, rx = rng.uniform(0.1, 0.25) * h, rng.uniform(0.1, 0.25) * w
      mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
      img = np.where(mask, img * 0.25, img)
    out.append({"image": img.astype(np.uint8)[..., None], "mask": mask[..., None],
                "label": label, "file_name": f"fake_{i:03d}.png", "patient_id": f"p{i // 2}",
                "height": h, "width": w})
  return out


@pytest.fixture(scope="session")
def fake_source():
  return make_fake_source()
