"""Writes BUSIS look-alike dummy data (no real BUSIS file: the benchmark is
distributed on request).

Layout as assumed in README.md: ``dummy_data/BUSIS/Original/case<N>.bmp``
(unpadded numbers; 24-bit RGB BMP holding a grey picture, and one 8-bit grey),
``dummy_data/BUSIS/GT/case<N>_GT.bmp`` (8-bit 0/255 and one 1-bit BMP mask) and
``dummy_data/BUSIS/BUSIS562.csv`` (``img name`` zero-padded to four digits,
``Ground Truth Name``, ``tumor type`` B/M). Case numbers 1, 2 and 10 check
that pairing is numeric, not by string. Run:
``python tfds_builders/busis/make_dummy_data.py``.
"""
from __future__ import annotations

import csv
import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))

#: (number, tumor type, height, width, image mode, mask mode)
CASES = [
    (1, "B", 90, 120, "RGB", "L"),
    (2, "M", 100, 110, "L", "1"),
    (10, "B", 84, 128, "RGB", "L"),
]


def synthetic_case(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """A speckled grey image and its 0/255 lesion mask (a dark ellipse)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:height, :width]
  cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
  ry, rx = rng.uniform(0.12, 0.22) * height, rng.uniform(0.12, 0.25) * width
  lesion = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
  image = np.where(lesion, 30.0, 110.0) * rng.rayleigh(1.0, (height, width))
  return np.clip(image, 0, 255).astype(np.uint8), lesion.astype(np.uint8) * 255


def main() -> None:
  """Writes the files (overwriting)."""
  root = os.path.join(HERE, "dummy_data", "BUSIS")
  for sub in ("Original", "GT"):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
  rows = []
  for num, kind, height, width, image_mode, mask_mode in CASES:
    image, mask = synthetic_case(100 + num, height, width)
    Image.fromarray(image).convert(image_mode).save(os.path.join(root, "Original", f"case{num}.bmp"))
    Image.fromarray(mask).convert(mask_mode).save(os.path.join(root, "GT", f"case{num}_GT.bmp"))
    rows.append([f"case{num:04d}", f"case{num:04d}_GT", kind])
  with open(os.path.join(root, "BUSIS562.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["img name", "Ground Truth Name", "tumor type"])
    writer.writerows(rows)


if __name__ == "__main__":
  main()
