"""Writes the BUS-UCLM look-alike ``dummy_data/`` (synthetic, not real data).

The real dataset (Mendeley Data, 10.17632/7fvgj4jsp7) is not on this
machine, so the builder tests run on files that copy the publisher's LAYOUT:
``BUS-UCLM/images/PPPP_NNN.png`` (RGB), colour-coded RGB masks with the same
names in ``BUS-UCLM/masks/`` (green = benign lesion, red = malignant, black
= background) and ``BUS-UCLM/INFO.csv`` (semicolon-separated, UTF-8 with a
byte-order mark; columns ``Image;Label;Doppler;Marks``).

Cases (patient = the letters before ``_``): ALWI_000 benign, ALWI_001 normal,
BEMA_000 malignant, BEMA_001 benign, COPE_000 normal. Run:
``python tfds_builders/bus_uclm/make_dummy_data.py`` (deterministic).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "dummy_data"
ROOT = OUT / "BUS-UCLM"
GREEN = (0, 255, 0)
RED = (255, 0, 0)

# name -> (HxW, label, lesion ellipse (centre, radii) or None, Doppler, Marks).
CASES = {
    "ALWI_000.png": ((60, 80), "Benign", ((0.45, 0.50), (0.20, 0.22)), "No", "No"),
    "ALWI_001.png": ((60, 80), "Normal", None, "No", "No"),
    "BEMA_000.png": ((64, 72), "Malignant", ((0.50, 0.40), (0.22, 0.18)), "Yes", "No"),
    "BEMA_001.png": ((64, 72), "Benign", ((0.35, 0.60), (0.15, 0.20)), "No", "Yes"),
    "COPE_000.png": ((56, 90), "Normal", None, "No", "No"),
}


def ellipse(h: int, w: int, centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
  """Boolean ellipse given in fractions of the size."""
  yy, xx = np.mgrid[:h, :w]
  yy = (yy + 0.5) / h
  xx = (xx + 0.5) / w
  return ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1.0


def colour_mask(shape: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
  """uint8 RGB: ``colour`` where ``shape``, black elsewhere."""
  out = np.zeros(shape.shape + (3,), np.uint8)
  out[shape] = colour
  return out


def main() -> None:
  """Writes dummy_data/BUS-UCLM/{images,masks}/ and INFO.csv."""
  if OUT.exists():
    shutil.rmtree(OUT)
  (ROOT / "images").mkdir(parents=True)
  (ROOT / "masks").mkdir()
  rng = np.random.default_rng(2025)
  lines = ["Image;Label;Doppler;Marks"]
  for name, ((h, w), label, lesion, doppler, marks) in CASES.items():
    img = rng.gamma(4.0, 30.0, (h, w)) * np.linspace(1.0, 0.6, h)[:, None]
    shape = ellipse(h, w, *lesion) if lesion else np.zeros((h, w), bool)
    img = np.where(shape, img * 0.25, img)
    grey = np.clip(img, 0, 255).astype(np.uint8)
    Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)).save(ROOT / "images" / name)
    Image.fromarray(colour_mask(shape, GREEN if label == "Benign" else RED)).save(ROOT / "masks" / name)
    lines.append(f"{name};{label};{doppler};{marks}")
  (ROOT / "INFO.csv").write_text("\n".join(lines) + "\n", encoding="utf-8-sig")


if __name__ == "__main__":
  main()
