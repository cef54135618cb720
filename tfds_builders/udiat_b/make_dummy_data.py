"""Writes UDIAT Dataset B look-alike dummy data (no real UDIAT file: its
release agreement forbids redistribution).

Same layout as the publisher's: ``dummy_data/BUS/original/NNNNNN.png``,
``dummy_data/BUS/GT/NNNNNN.png`` (0/255 grey masks), ``dummy_data/BUS/DatasetB.xlsx``
(``Image`` number, ``Type`` Benign/Malignant, ``Histology``), with the
publisher's quirks: non-contiguous six-digit numbering, numbers stored as
integers in the workbook. Images are synthetic speckle with a dark elliptic
lesion. Run from anywhere: ``python tfds_builders/udiat_b/make_dummy_data.py``
(needs openpyxl).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))

#: (number, type, histology, height, width, rgb): numbering has gaps like the real set.
CASES = [
    (2, "Benign", "CYST", 96, 128, False),
    (9, "Benign", "FIBROADENOMA", 80, 112, True),
    (40, "Malignant", "IDC", 104, 120, False),
    (163, "Malignant", "DCIS", 88, 136, False),
]


def synthetic_case(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """A speckled grey image and its 0/255 lesion mask (a dark ellipse)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:height, :width]
  cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
  ry, rx = rng.uniform(0.12, 0.22) * height, rng.uniform(0.12, 0.25) * width
  lesion = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
  tissue = 90.0 + 40.0 * np.sin(yy / 9.0) ** 2
  speckle = rng.rayleigh(1.0, (height, width))
  image = np.where(lesion, 25.0, tissue) * speckle
  return np.clip(image, 0, 255).astype(np.uint8), lesion.astype(np.uint8) * 255


def main() -> None:
  """Writes the files (overwriting)."""
  import openpyxl  # pylint: disable=g-import-not-at-top

  root = os.path.join(HERE, "dummy_data", "BUS")
  for sub in ("original", "GT"):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
  book = openpyxl.Workbook()
  sheet = book.active
  sheet.append(["Image", "Type", "Histology"])
  for num, kind, histology, height, width, rgb in CASES:
    image, mask = synthetic_case(num, height, width)
    pic = Image.fromarray(image)
    if rgb:  # some releases store grey pictures as RGB
      pic = pic.convert("RGB")
    pic.save(os.path.join(root, "original", f"{num:06d}.png"), optimize=True)
    Image.fromarray(mask).save(os.path.join(root, "GT", f"{num:06d}.png"), optimize=True)
    sheet.append([num, kind, histology])
  book.save(os.path.join(root, "DatasetB.xlsx"))


if __name__ == "__main__":
  main()
