"""BUS-UCLM: 683 breast-ultrasound images of 38 patients with colour-coded masks.

Vallez et al., "BUS-UCLM: Breast ultrasound lesion segmentation dataset",
Scientific Data 12, 2025; Mendeley Data doi:10.17632/7fvgj4jsp7 (CC BY 4.0).
Layout: ``images/PPPP_NNN.png``, a mask of the same name in ``masks/`` whose
colour codes the lesion (green = benign, red = malignant, black = no lesion)
and ``INFO.csv`` (semicolon-separated: ``Image;Label;Doppler;Marks``).

Choices (see README.md):

* ``mask`` = every coloured pixel (any channel > 127); ``class_mask`` keeps
  the colours as label indices (0 background, 1 benign/green,
  2 malignant/red).
* label: from the mask colour; INFO.csv is the cross-check. When they
  disagree the MASK wins (warning naming the file), so that ``normal`` always
  means an empty mask. When the mask holds both colours (or a lesion colour
  that is neither green nor red) the label comes from INFO.csv, with a
  warning.
* patient_id: the file name before the first ``_`` (``ALWI_000.png`` ->
  ``ALWI``), as in the publisher's own train/test split script.
* an image whose mask has another size is skipped with a warning (some
  images are reported to have been cropped after annotation; the alignment
  is unknown).
"""
from __future__ import annotations

import csv
import io as _stdio
import re
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from tfds_builders import common
from tfds_builders import io as bio

#: Colour channel level above which a mask pixel is "on" (8-bit scale).
COLOUR_THRESHOLD = 127
_AMBIGUOUS = {"both": "both green and red", "uncoloured": "lesion pixels neither green nor red"}
_CSV_LABELS = {"benign": "benign", "benigno": "benign", "malignant": "malignant", "maligno": "malignant",
               "normal": "normal"}


def norm(name: str) -> str:
  """A column name without case, spaces or punctuation."""
  return re.sub(r"[^a-z0-9]", "", name.lower())


def read_rgb(path: epath.Path) -> np.ndarray:
  """Any image file as ``uint8 [H, W, 3]`` RGB (grey files give R == G == B).

  Raises:
    BuilderInputError: missing, unreadable or corrupt file (names it).
  """
  if not path.exists():
    raise bio.BuilderInputError(f"{path}: file does not exist")
  try:
    with path.open("rb") as f:
      im = Image.open(f)
      im.load()
  except Image.UnidentifiedImageError as e:
    raise bio.BuilderInputError(f"{path}: not a readable image (corrupt or unknown format): {e}") from e
  except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as e:
    raise bio.BuilderInputError(f"{path}: corrupt or truncated image: {e}") from e
  return np.asarray(im.convert("RGB"))


def decode_colour_mask(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Splits a colour-coded mask into (lesion, green, red) boolean ``[H, W]`` maps.

  lesion = any channel > 127; green = G > 127 and R <= 127 (benign);
  red = R > 127 and G <= 127 (malignant). Lesion pixels that are neither
  (white, yellow, blue) are "uncoloured".
  """
  on = rgb > COLOUR_THRESHOLD
  lesion = on.any(axis=-1)
  green = on[..., 1] & ~on[..., 0]
  red = on[..., 0] & ~on[..., 1]
  return lesion, green, red


def colour_label(lesion: np.ndarray, green: np.ndarray, red: np.ndarray) -> str:
  """What the colours say: normal, benign, malignant, "both" or "uncoloured"."""
  if green.any() and red.any():
    return "both"
  if (lesion & ~green & ~red).any():
    return "uncoloured"
  if green.any():
    return "benign"
  if red.any():
    return "malignant"
  return "normal"


def read_info_csv(path: epath.Path) -> dict[str, dict[str, str]]:
  """INFO.csv rows by lower-case image file name, keyed by normalised column name.

  The delimiter is ``;`` unless the header has more ``,``; a byte-order mark
  is ignored.

  Raises:
    BuilderInputError: unreadable file, or no ``Image``/``Label`` column.
  """
  try:
    raw = path.read_bytes()
  except OSError as e:
    raise bio.BuilderInputError(f"{path}: cannot read: {e}") from e
  try:
    content = raw.decode("utf-8-sig")
  except UnicodeDecodeError:
    content = raw.decode("latin-1")
  header = content.splitlines()[0] if content.strip() else ""
  delimiter = "," if header.count(",") > header.count(";") else ";"
  reader = csv.reader(_stdio.StringIO(content), delimiter=delimiter)
  rows = [r for r in reader if any(c.strip() for c in r)]
  if not rows:
    raise bio.BuilderInputError(f"{path}: empty file")
  columns = [norm(c) for c in rows[0]]
  for needed in ("image", "label"):
    if needed not in columns:
      raise bio.BuilderInputError(f"{path}: no '{needed.capitalize()}' column (header: {rows[0]})")
  out: dict[str, dict[str, str]] = {}
  for r in rows[1:]:
    rec = {c: v.strip() for c, v in zip(columns, r)}
    name = rec.get("image", "")
    if name:
      out[name.lower()] = rec
  return out


def _is_uclm_root(folder: epath.Path) -> bool:
  """A folder holding ``images/``, ``masks/`` and ``INFO.csv`` (names ignoring case)."""
  return (bio.find_child(folder, "images") is not None and bio.find_child(folder, "masks") is not None
          and bio.find_child(folder, "INFO.csv", directory=False) is not None)


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for BUS-UCLM."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download BUS-UCLM from Mendeley Data (https://data.mendeley.com/datasets/7fvgj4jsp7,
  CC BY 4.0; "Download All" gives a zip). Put into the manual dir (default
  `~/tensorflow_datasets/downloads/manual/`, or `--manual_dir`) either that
  zip as downloaded (extracted at build time) or the unpacked folder holding
  `images/`, `masks/` and `INFO.csv` (folder names matched ignoring case; up
  to two folder levels below the manual dir, e.g. `manual/BUS-UCLM/images/`).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Common busjax features plus the colour classes and INFO.csv columns."""
    return self.dataset_info_from_configs(
        features=common.bus_features(
            class_mask=tfds.features.Tensor(
                shape=(None, None, 1), dtype=np.uint8, encoding="zlib",
                doc="uint8 per-pixel label index: 0 background, 1 benign (green), 2 malignant (red); "
                    "lesion pixels of neither colour get the example's label."),
            mask_colour_label=tfds.features.Text(
                doc="What the mask colours say: normal, benign, malignant, both or uncoloured."),
            info_label=tfds.features.Text(doc="INFO.csv Label, lower-cased ('' if the image is not listed)."),
            doppler=tfds.features.Text(doc="INFO.csv Doppler column as published ('' if absent)."),
            marks=tfds.features.Text(doc="INFO.csv Marks column as published ('' if absent)."),
        ),
        supervised_keys=("image", "mask"),
        homepage="https://data.mendeley.com/datasets/7fvgj4jsp7",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """A single ``train`` split holding every example (busjax makes the folds)."""
    root = bio.resolve_builder_manual_dir(
        dl_manager, dataset="bus_uclm", markers=_is_uclm_root,
        expected="the Mendeley zip or the folder holding images/, masks/ and INFO.csv")
    return {"train": self._generate_examples(root)}

  def _generate_examples(self, root: epath.Path) -> Iterator[tuple[str, dict]]:
    """Yields ``images/<name> -> example`` for every image with a same-sized mask."""
    images_dir = bio.find_child(root, "images")
    masks_dir = bio.find_child(root, "masks")
    info_path = bio.find_child(root, "INFO.csv", directory=False)
    info = read_info_csv(info_path)
    images = bio.list_images(images_dir)
    if not images:
      raise bio.BuilderInputError(f"{images_dir}: no images")
    masks = {p.name.lower(): p for p in bio.list_images(masks_dir)}
    masks_by_stem = {p.stem.lower(): p for p in masks.values()}
    for image_path in images:
      mask_path = masks.get(image_path.name.lower()) or masks_by_stem.get(image_path.stem.lower())
      if mask_path is None:
        raise bio.BuilderInputError(f"{image_path}: no mask file (expected {masks_dir / image_path.name})")
      image = bio.read_image(image_path)
      rgb = read_rgb(mask_path)
      if rgb.shape[:2] != image.shape[:2]:
        bio.warn(f"{image_path}: skipped, its mask {mask_path} is {rgb.shape[0]}x{rgb.shape[1]} (HxW) but the "
                 f"image is {image.shape[0]}x{image.shape[1]}; the alignment is unknown")
        continue
      lesion, green, red = decode_colour_mask(rgb)
      from_colour = colour_label(lesion, green, red)
      rec = info.get(image_path.name.lower(), {})
      info_raw = rec.get("label", "")
      from_info = _CSV_LABELS.get(info_raw.lower())
      if not rec:
        bio.warn(f"{image_path}: not listed in {info_path}")
      elif from_info is None:
        bio.warn(f"{info_path}: {image_path.name}: unknown Label {info_raw!r}")
      if from_colour in common.LABELS:
        label = from_colour
        if from_info is not None and from_info != from_colour:
          bio.warn(f"{mask_path}: mask colour says {from_colour} but {info_path.name} says {from_info}; "
                   "using the mask's")
      elif from_info in ("benign", "malignant"):
        label = from_info
        bio.warn(f"{mask_path}: mask has {_AMBIGUOUS[from_colour]}; label {from_info} from {info_path.name}")
      else:
        raise bio.BuilderInputError(
            f"{mask_path}: mask has {_AMBIGUOUS[from_colour]} and {info_path.name} gives no lesion label "
            f"({info_raw!r}); cannot decide benign or malignant")
      class_mask = np.where(green, 1, np.where(red, 2, np.where(lesion, common.LABELS.index(label), 0)))
      name = f"{images_dir.name}/{image_path.name}"
      stem = image_path.stem
      if "_" not in stem:
        bio.warn(f"{image_path}: no PATIENT_ prefix in the name; the image is its own group")
      yield name, {
          "image": image,
          "mask": lesion.astype(np.uint8)[..., None],
          "class_mask": class_mask.astype(np.uint8)[..., None],
          "label": label,
          "patient_id": stem.split("_")[0] if "_" in stem else "",
          "file_name": name,
          "height": image.shape[0],
          "width": image.shape[1],
          "mask_colour_label": from_colour,
          "info_label": info_raw.lower(),
          "doppler": rec.get("doppler", ""),
          "marks": rec.get("marks", ""),
      }
    listed = {p.name.lower() for p in images}
    for missing in sorted(set(info) - listed):
      bio.warn(f"{info_path}: lists {missing}, which is not in {images_dir}; ignored")
