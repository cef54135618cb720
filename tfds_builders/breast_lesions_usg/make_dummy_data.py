"""Writes the BrEaST-Lesions_USG look-alike ``dummy_data/`` (synthetic, not real data).

The real collection (TCIA, CC BY 4.0) is not on this machine, so the builder
tests run on files that copy the publisher's LAYOUT:

* ``BrEaST-Lesions_USG-images_and_masks/`` (the unpacked image zip) with
  ``caseNNN.png`` images, ``caseNNN_tumor.png`` tumour masks and
  ``caseNNN_otherK.png`` masks of other findings; masks are RGBA with the
  shape in the alpha channel (the publisher's MATLAB loader reads
  ``logical(alpha)``) and white colour everywhere, so a reader that ignores
  alpha sees a full-image mask;
* ``BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx`` beside it (a separate
  TCIA download), one row per case with the publisher's column names, and a
  second "data dictionary" sheet.

Cases: case001 benign (tumour mask), case002 malignant (tumour mask and two
other-finding masks), case003 normal (no mask), case004 benign with an
unknown age. Run: ``python tfds_builders/breast_lesions_usg/make_dummy_data.py``
(needs openpyxl; deterministic).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "dummy_data"
IMAGES = OUT / "BrEaST-Lesions_USG-images_and_masks"
XLSX = OUT / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx"
SHEET = "BrEaST-Lesions-USG clinical dat"  # Excel truncates sheet names to 31 characters.

COLUMNS = ("CaseID", "Image_filename", "Mask_tumor_filename", "Mask_other_filename", "Pixel_size",
           "Age", "Tissue_composition", "Signs", "Symptoms", "Shape", "Margin", "Echogenicity",
           "Posterior_features", "Halo", "Calcifications", "Skin_thickening", "Interpretation",
           "BIRADS", "Verification", "Diagnosis", "Classification")

# case -> (image HxW, tumour ellipse (centre, radii) or None, other-finding ellipses, xlsx fields).
CASES = {
    1: ((64, 80), ((0.45, 0.50), (0.20, 0.22)), [],
        dict(Pixel_size=0.0075, Age=43, Tissue_composition="homogeneous: fat", Signs="not applicable",
             Symptoms="breast lump", Shape="oval", Margin="circumscribed", Echogenicity="hypoechoic",
             Posterior_features="no", Halo="no", Calcifications="no", Skin_thickening="no",
             Interpretation="not applicable", BIRADS=3, Verification="confirmed by biopsy",
             Diagnosis="fibroadenoma", Classification="benign")),
    2: ((70, 90), ((0.50, 0.40), (0.22, 0.18)), [((0.20, 0.80), (0.08, 0.08)), ((0.80, 0.75), (0.07, 0.10))],
        dict(Pixel_size=0.0081, Age=67, Tissue_composition="heterogeneous: predominantly fibroglandular",
             Signs="breast scar&skin retraction", Symptoms="family history of breast/ovarian cancer",
             Shape="irregular", Margin="not circumscribed - angular&spiculated", Echogenicity="hypoechoic",
             Posterior_features="shadowing", Halo="yes", Calcifications="in a mass", Skin_thickening="yes",
             Interpretation="suspicion of malignancy", BIRADS="4c", Verification="confirmed by biopsy",
             Diagnosis="invasive ductal carcinoma", Classification="malignant")),
    3: ((60, 60), None, [],
        dict(Pixel_size=0.0069, Age=38, Tissue_composition="homogeneous: fibroglandular",
             Signs="not applicable", Symptoms="no", Shape="not applicable", Margin="not applicable",
             Echogenicity="not applicable", Posterior_features="not applicable", Halo="not applicable",
             Calcifications="not applicable", Skin_thickening="no", Interpretation="not applicable",
             BIRADS=1, Verification="confirmed by follow-up care", Diagnosis="not applicable",
             Classification="normal")),
    4: ((72, 64), ((0.40, 0.55), (0.15, 0.25)), [],
        dict(Pixel_size=0.0075, Age="not available", Tissue_composition="heterogeneous: predominantly fat",
             Signs="not applicable", Symptoms="no", Shape="oval", Margin="circumscribed",
             Echogenicity="isoechoic", Posterior_features="enhancement", Halo="no", Calcifications="no",
             Skin_thickening="no", Interpretation="not applicable", BIRADS="4a",
             Verification="confirmed by biopsy", Diagnosis="cyst&fibrocystic changes",
             Classification="benign")),
}


def ellipse(h: int, w: int, centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
  """Boolean ellipse given in fractions of the size."""
  yy, xx = np.mgrid[:h, :w]
  yy = (yy + 0.5) / h
  xx = (xx + 0.5) / w
  return ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1.0


def alpha_mask(shape: np.ndarray) -> Image.Image:
  """RGBA mask: white colour everywhere, the shape in the alpha channel."""
  rgba = np.full(shape.shape + (4,), 255, np.uint8)
  rgba[..., 3] = shape.astype(np.uint8) * 255
  return Image.fromarray(rgba)


def main() -> None:
  """Writes dummy_data/ (images, masks and the clinical xlsx)."""
  import openpyxl  # pylint: disable=g-import-not-at-top

  if OUT.exists():
    shutil.rmtree(OUT)
  IMAGES.mkdir(parents=True)
  rng = np.random.default_rng(2024)
  wb = openpyxl.Workbook()
  ws = wb.active
  ws.title = SHEET
  ws.append(list(COLUMNS))
  for case, ((h, w), tumour, others, fields) in CASES.items():
    stem = f"case{case:03d}"
    img = rng.gamma(4.0, 30.0, (h, w)) * np.linspace(1.0, 0.6, h)[:, None]
    row = {"CaseID": case, "Image_filename": f"{stem}.png", "Mask_tumor_filename": None,
           "Mask_other_filename": None, **fields}
    if tumour is not None:
      shape = ellipse(h, w, *tumour)
      img = np.where(shape, img * 0.25, img)
      alpha_mask(shape).save(IMAGES / f"{stem}_tumor.png")
      row["Mask_tumor_filename"] = f"{stem}_tumor.png"
    names = []
    for k, other in enumerate(others, start=1):
      shape = ellipse(h, w, *other)
      img = np.where(shape, img * 1.6, img)  # other findings: brighter spots
      alpha_mask(shape).save(IMAGES / f"{stem}_other{k}.png")
      names.append(f"{stem}_other{k}.png")
    row["Mask_other_filename"] = "&".join(names) or None
    grey = np.clip(img, 0, 255).astype(np.uint8)
    Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)).save(IMAGES / f"{stem}.png")
    ws.append([row[c] for c in COLUMNS])
  dictionary = wb.create_sheet("Data dictionary")
  dictionary.append(["Variable", "Description"])
  dictionary.append(["CaseID", "Case number"])
  dictionary.append(["Classification", "benign, malignant or normal"])
  wb.save(XLSX)


if __name__ == "__main__":
  main()
