"""Writes the STU-Hospital look-alike ``dummy_data/`` (synthetic, not real data).

The real dataset's redistribution terms are unclear, so the builder tests run
on files that copy the publisher's LAYOUT only: ``Test_Image_N.png`` grey
ultrasound-like images and ``mask_N.png`` anti-aliased masks at a DIFFERENT
size from their image (as in the GitHub release), nested one folder down as
the GitHub zip unpacks (``STU-Hospital-master/``).

Run from anywhere: ``python tfds_builders/stu_hospital/make_dummy_data.py``.
The output is deterministic (fixed seed).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "dummy_data"
ROOT = OUT / "STU-Hospital-master"

# (number, image HxW, mask HxW, lesion centre (y, x) and radii (ry, rx) as fractions).
CASES = (
    (1, (60, 80), (90, 110), (0.45, 0.50), (0.20, 0.25)),
    (2, (64, 72), (48, 50), (0.55, 0.40), (0.25, 0.18)),
    (3, (56, 90), (112, 180), (0.40, 0.60), (0.18, 0.15)),
)


def ellipse(h: int, w: int, centre: tuple[float, float], radii: tuple[float, float],
            supersample: int = 1) -> np.ndarray:
  """Float coverage in [0, 1] of an ellipse given in fractions of the size.

  With ``supersample > 1`` every pixel is the mean of ``supersample**2``
  sub-pixel tests: anti-aliased edges, as in masks drawn by image editors.
  """
  s = supersample
  yy, xx = np.mgrid[:h * s, :w * s]
  yy = (yy + 0.5) / (h * s)
  xx = (xx + 0.5) / (w * s)
  inside = ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1.0
  return inside.reshape(h, s, w, s).mean(axis=(1, 3))


def ultrasound(h: int, w: int, rng: np.random.Generator, lesion: np.ndarray | None) -> np.ndarray:
  """Speckled grey background, darker with depth, with a dark lesion where ``lesion`` > 0.5."""
  depth = np.linspace(1.0, 0.6, h)[:, None]
  img = rng.gamma(4.0, 30.0, (h, w)) * depth
  if lesion is not None:
    img = np.where(lesion > 0.5, img * 0.25, img)
  return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
  """Writes dummy_data/STU-Hospital-master/{Test_Image_N,mask_N}.png."""
  if OUT.exists():
    shutil.rmtree(OUT)
  ROOT.mkdir(parents=True)
  rng = np.random.default_rng(20190822)
  for num, (ih, iw), (mh, mw), centre, radii in CASES:
    img = ultrasound(ih, iw, rng, ellipse(ih, iw, centre, radii))
    Image.fromarray(img).save(ROOT / f"Test_Image_{num}.png")
    mask = np.round(ellipse(mh, mw, centre, radii, supersample=4) * 255).astype(np.uint8)
    Image.fromarray(mask).save(ROOT / f"mask_{num}.png")


if __name__ == "__main__":
  main()
