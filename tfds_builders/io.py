"""Shared file I/O for the busjax TFDS builders.

Every real-data builder reads the publisher's files through these helpers so
that the same quirks are handled the same way everywhere:

* :func:`read_image` -- any PNG/JPEG/BMP/TIFF mode (RGB, RGBA, L, LA, P, 1-bit,
  16-bit, float) -> ``uint8 [H, W, 1]`` grey levels.
* :func:`read_mask` -- any mode (grey, colour, RGBA with the shape in the
  colour or in the alpha channel, palette, 1-bit, 16-bit) -> ``uint8 {0, 1}
  [H, W, 1]``.
* :func:`union_masks` / :func:`read_mask_union` -- a lesion mask made of
  several files (one file per lesion), merged by logical OR.
* :func:`resize_mask` -- nearest-neighbour (or area + threshold) resizing of a
  mask to its image's size; :func:`check_mask_matches` -- the size check with
  an error that names both files and both sizes.
* :func:`resolve_manual_dir` -- finds the dataset root inside the TFDS manual
  dir: an unpacked folder (possibly nested one level) or the publisher's zip
  archive (extracted with :mod:`zipfile`/:mod:`tarfile`; TFDS's
  ``dl_manager.extract`` needs TensorFlow).
* :func:`find_pixel_duplicates` -- groups of files whose decoded pixels are
  identical.

Every problem with the input raises :class:`BuilderInputError` (a
``ValueError``) whose message names the offending file and what is wrong.
Recoverable oddities (e.g. a CSV disagreeing with the file) are reported with
:class:`BuilderWarning` (and absl logging) by the builders.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Union

import numpy as np
from absl import logging
from etils import epath
from PIL import Image

PathLike = Union[str, os.PathLike, epath.Path]

#: Default mask threshold: a pixel is foreground when its value is > 127
#: (8-bit scale). Masks whose values are all in {0, 1} are taken as they are.
MASK_THRESHOLD = 127

#: File suffixes treated as images when scanning folders.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")

#: Archive suffixes :func:`resolve_manual_dir` extracts.
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz")


class BuilderInputError(ValueError):
  """The publisher's input is missing, unreadable or inconsistent.

  The message always names the file (or folder) concerned and what is wrong
  with it.
  """


class BuilderWarning(UserWarning):
  """A recoverable oddity in the publisher's input (the builder goes on)."""


# --------------------------------------------------------------------------
# Images and masks.


def _open(path: PathLike) -> Image.Image:
  """Opens and fully decodes an image, wrapping every failure.

  Raises:
    BuilderInputError: the file does not exist, is not an image PIL knows, or
      is truncated/corrupt (the message names the file).
  """
  path = epath.Path(path)
  if not path.exists():
    raise BuilderInputError(f"{path}: file does not exist")
  try:
    with path.open("rb") as f:
      im = Image.open(f)
      im.load()
    return im
  except Image.UnidentifiedImageError as e:
    raise BuilderInputError(f"{path}: not a readable image (corrupt or unknown format): {e}") from e
  except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as e:
    raise BuilderInputError(f"{path}: corrupt or truncated image: {e}") from e


def _as_array(im: Image.Image) -> np.ndarray:
  """The decoded pixels as a numpy array, 1-bit images as 0/255 uint8."""
  if im.mode == "1":
    return np.asarray(im.convert("L"))
  if im.mode == "P":
    return np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
  if im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
    return np.asarray(im.convert("RGB"))
  return np.asarray(im)


def _to_uint8(a: np.ndarray, path: PathLike) -> np.ndarray:
  """Maps any integer/float grey array to uint8.

  * uint8 is kept; bool becomes 0/255;
  * wider integers (16-bit ``I;16``, 32-bit ``I``) whose maximum is <= 255 are
    8-bit data in a wider container and are kept as they are; otherwise 16-bit
    data is scaled by 255/65535 (the full 16-bit range maps to the full 8-bit
    range, so relative intensities are kept: no per-image min/max stretch) and
    data beyond 16 bits by 255/max;
  * floats in [0, 1] are scaled by 255, other floats are clipped to [0, 255].
  """
  if a.dtype == np.uint8:
    return a
  if a.dtype == bool:
    return a.astype(np.uint8) * 255
  if np.issubdtype(a.dtype, np.integer):
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
      raise BuilderInputError(f"{path}: negative pixel values in an integer image")
    top = int(a.max()) if a.size else 0
    if top <= 255:
      return a.astype(np.uint8)
    scale = 255.0 / 65535.0 if top <= 65535 else 255.0 / float(top)
    return np.round(a * scale).astype(np.uint8)
  if np.issubdtype(a.dtype, np.floating):
    if not np.all(np.isfinite(a)):
      raise BuilderInputError(f"{path}: non-finite pixel values")
    if a.size and a.min() >= 0.0 and a.max() <= 1.0:
      a = a * 255.0
    return np.clip(np.round(a), 0, 255).astype(np.uint8)
  raise BuilderInputError(f"{path}: unsupported pixel type {a.dtype}")


def _luma(rgb: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma of uint8 RGB (same weights as PIL's ``convert('L')``)."""
  r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
  return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def image_to_grey(a: np.ndarray, path: PathLike = "<array>") -> np.ndarray:
  """Any decoded image array ([H, W] or [H, W, C]) -> ``uint8 [H, W, 1]``.

  Colour is converted with the ITU-R 601 luma weights (grey RGB images, where
  R == G == B, keep their values exactly); an alpha channel is dropped.
  """
  if a.ndim == 2:
    grey = _to_uint8(a, path)
  elif a.ndim == 3 and a.shape[-1] in (1, 2):  # L or LA
    grey = _to_uint8(a[..., 0], path)
  elif a.ndim == 3 and a.shape[-1] in (3, 4):  # RGB or RGBA
    rgb = a[..., :3]
    if rgb.dtype != np.uint8:
      rgb = _to_uint8(rgb, path)
    grey = _luma(rgb)
  else:
    raise BuilderInputError(f"{path}: unsupported image shape {a.shape}")
  return grey[..., None]


def read_image(path: PathLike) -> np.ndarray:
  """Reads an ultrasound image as grey levels.

  Args:
    path: the image file (any format and mode PIL reads: RGB, RGBA, L, LA, P,
      1-bit, 16-bit ``I;16``/``I``, float ``F``).

  Returns:
    ``uint8 [H, W, 1]`` at the original resolution. See :func:`image_to_grey`
    and :func:`_to_uint8` for the conversions.

  Raises:
    BuilderInputError: missing, corrupt or truncated file (names the file).
  """
  return image_to_grey(_as_array(_open(path)), path)


def _binarize(v: np.ndarray, threshold: int) -> np.ndarray:
  """``v > threshold`` on the 8-bit scale; {0, 1}-valued arrays are kept."""
  if v.size and v.max() <= 1 and (v.dtype == bool or v.min() >= 0):
    return v.astype(bool)
  return _to_uint8(v, "<mask>") > threshold


def mask_to_binary(a: np.ndarray, threshold: int = MASK_THRESHOLD) -> np.ndarray:
  """Any decoded mask array -> ``uint8 {0, 1} [H, W, 1]``.

  Rules (values on the 8-bit scale; 16-bit masks are scaled first):

  * grey / 1-bit: foreground = value > ``threshold`` (default 127), except
    that a mask whose values are all in {0, 1} is taken as it is;
  * colour: foreground = any colour channel > ``threshold`` (a colour-coded
    mask therefore becomes one foreground class; builders that need the
    colours read the array themselves);
  * with an alpha channel: a constant alpha is ignored (e.g. BUSI's RGBA masks,
    opaque everywhere); a varying alpha marks the drawn region: foreground =
    alpha > ``threshold``, and also colour > ``threshold`` when the colour
    varies inside the opaque region (white-and-black drawn on transparency).
  """
  if a.ndim == 2:
    return _binarize(a, threshold).astype(np.uint8)[..., None]
  if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
    raise BuilderInputError(f"<mask>: unsupported mask shape {a.shape}")
  has_alpha = a.shape[-1] in (2, 4)
  colour = a[..., : a.shape[-1] - 1] if has_alpha else a
  fg = np.any(np.stack([_binarize(colour[..., i], threshold) for i in range(colour.shape[-1])]), axis=0)
  if has_alpha:
    alpha = a[..., -1]
    if alpha.size and alpha.min() != alpha.max():
      opaque = _binarize(alpha, threshold)
      inside = colour[opaque]
      colour_varies = inside.size > 0 and bool(np.any(inside != inside.reshape(-1, colour.shape[-1])[:1]))
      fg = opaque & fg if colour_varies else opaque
  return fg.astype(np.uint8)[..., None]


def read_mask(path: PathLike, threshold: int = MASK_THRESHOLD) -> np.ndarray:
  """Reads a segmentation mask as ``uint8 {0, 1} [H, W, 1]``.

  Args:
    path: the mask file, any mode (see :func:`mask_to_binary` for the rules).
    threshold: foreground is value > threshold on the 8-bit scale (default
      127, robust to anti-aliased or JPEG-compressed edges; use 0 for masks
      drawn with small non-zero values).

  Raises:
    BuilderInputError: missing, corrupt or truncated file (names the file).
  """
  try:
    return mask_to_binary(_as_array(_open(path)), threshold)
  except BuilderInputError as e:
    if str(e).startswith("<mask>"):
      raise BuilderInputError(f"{path}{str(e)[len('<mask>'):]}") from e
    raise


def union_masks(masks: Sequence[np.ndarray], names: Sequence[PathLike] | None = None) -> np.ndarray:
  """Logical OR of same-sized {0, 1} masks, as ``uint8 {0, 1}``.

  Args:
    masks: at least one mask, all of one shape.
    names: the files they came from, for the error message.

  Raises:
    BuilderInputError: no mask given, or two masks differ in size (names both
      files and both sizes).
  """
  if not masks:
    raise BuilderInputError(f"{names!r}: no mask to merge")
  names = list(names) if names is not None else [f"mask #{i}" for i in range(len(masks))]
  out = np.zeros(masks[0].shape, dtype=bool)
  for m, n in zip(masks, names):
    if m.shape != masks[0].shape:
      raise BuilderInputError(
          f"{n}: mask size {_hw(m)} differs from {names[0]} ({_hw(masks[0])}); cannot merge them")
    out |= m.astype(bool)
  return out.astype(np.uint8)


def read_mask_union(paths: Sequence[PathLike], threshold: int = MASK_THRESHOLD) -> np.ndarray:
  """Reads several mask files of one image (one per lesion) and ORs them."""
  return union_masks([read_mask(p, threshold) for p in paths], list(paths))


def _hw(a: np.ndarray) -> str:
  """``HxW`` of an array, for messages."""
  return f"{a.shape[0]}x{a.shape[1]} (HxW)"


def resize_mask(mask: np.ndarray, height: int, width: int, method: str = "nearest") -> np.ndarray:
  """Resizes a {0, 1} mask to ``height x width``.

  Args:
    mask: ``[H, W]`` or ``[H, W, 1]`` {0, 1} (or 0/255) mask.
    height, width: the target size (usually the image's).
    method: ``"nearest"`` (nearest neighbour, keeps hard labels) or
      ``"threshold"`` (bilinear on 0/255, then > 127: smoother edges when
      scaling by large factors).

  Returns:
    ``uint8 {0, 1} [height, width, 1]``.
  """
  m = mask[..., 0] if mask.ndim == 3 else mask
  im = Image.fromarray((m > 0).astype(np.uint8) * 255)
  if method == "nearest":
    out = np.asarray(im.resize((width, height), Image.Resampling.NEAREST)) > 127
  elif method == "threshold":
    out = np.asarray(im.resize((width, height), Image.Resampling.BILINEAR)) > 127
  else:
    raise ValueError(f"resize_mask: unknown method {method!r} (nearest|threshold)")
  return out.astype(np.uint8)[..., None]


def check_mask_matches(image: np.ndarray, mask: np.ndarray, image_path: PathLike,
                       mask_path: PathLike) -> None:
  """Raises unless ``mask`` has ``image``'s height and width.

  Raises:
    BuilderInputError: naming both files and both sizes.
  """
  if image.shape[:2] != mask.shape[:2]:
    raise BuilderInputError(
        f"{mask_path}: mask size {_hw(mask)} does not match its image {image_path} "
        f"({_hw(image)})")


# --------------------------------------------------------------------------
# Manual dir.

RootTest = Union[Sequence[str], Callable[[epath.Path], bool]]


def _matches(folder: epath.Path, markers: RootTest) -> bool:
  """Whether ``folder`` is the dataset root according to ``markers``."""
  if callable(markers):
    return bool(markers(folder))
  return all((folder / m).exists() for m in markers)


def _find_root(folder: epath.Path, markers: RootTest, depth: int) -> epath.Path | None:
  """``folder`` or a sub-folder up to ``depth`` levels down that matches."""
  if _matches(folder, markers):
    return folder
  if depth <= 0:
    return None
  subdirs = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))),
                   key=lambda p: p.name)
  for sub in subdirs:
    found = _find_root(sub, markers, depth - 1)
    if found is not None:
      return found
  return None


def _is_archive(p: epath.Path) -> bool:
  """Whether ``p`` looks like an archive :func:`resolve_manual_dir` extracts."""
  return p.is_file() and p.name.lower().endswith(ARCHIVE_SUFFIXES)


def _extract(archive: epath.Path, dl_manager, extract_dir: PathLike | None) -> epath.Path:
  """Extracts ``archive`` (zip or tar) once and returns the extracted folder.

  TFDS's own ``dl_manager.extract`` needs TensorFlow (``tf.io.gfile``), so
  archives are extracted here with :mod:`zipfile`/:mod:`tarfile` into
  ``<download_dir>/extracted/<archive name>`` when a download manager is given
  (kept between builds, like TFDS does), else into ``extract_dir`` (default: a
  new temporary folder). Extraction goes to a temporary sibling first and is
  renamed when complete, so an interrupted extraction is never reused.
  """
  if dl_manager is not None and getattr(dl_manager, "download_dir", None):
    base = epath.Path(dl_manager.download_dir) / "extracted"
  elif extract_dir:
    base = epath.Path(extract_dir)
  else:
    base = epath.Path(tempfile.mkdtemp(prefix="busjax_extract_"))
  target = base / f"busjax.{archive.name}"
  if target.is_dir():
    return target
  base.mkdir(parents=True, exist_ok=True)
  partial = epath.Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=os.fspath(base)))
  try:
    if archive.name.lower().endswith(".zip"):
      with zipfile.ZipFile(os.fspath(archive)) as zf:
        zf.extractall(os.fspath(partial))
    else:
      import tarfile  # pylint: disable=g-import-not-at-top
      with tarfile.open(os.fspath(archive)) as tf:
        tf.extractall(os.fspath(partial), filter="data")
  except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(os.fspath(partial), ignore_errors=True)
    raise BuilderInputError(
        f"{archive}: cannot extract the archive (corrupt or incomplete download?): {e}") from e
  os.replace(os.fspath(partial), os.fspath(target))
  return target


def resolve_manual_dir(
    manual_dir: PathLike | None,
    *,
    dataset: str,
    markers: RootTest,
    expected: str,
    dl_manager=None,
    extract_dir: PathLike | None = None,
    depth: int = 2,
) -> epath.Path:
  """Finds the dataset root inside the TFDS manual dir.

  Looks, in order, at: the manual dir itself; its sub-folders up to ``depth``
  levels down (an unpacked archive usually adds one level, e.g.
  ``manual/BUSBRA/Images``); then every archive in the manual dir (``.zip``,
  ``.tar[.gz|.bz2|.xz]``, ``.tgz``; those whose name contains ``dataset``
  first), extracted and searched the same way, until one matches.

  Args:
    manual_dir: ``dl_manager.manual_dir``.
    dataset: the dataset name, for messages.
    markers: relative paths that must all exist in the root (e.g.
      ``("Images", "Masks", "bus_data.csv")``), or a predicate on a folder
      (for publishers whose folder names vary).
    expected: a human description of what should be there, for messages.
    dl_manager: the TFDS download manager; archives are extracted once into
      its download dir (``extracted/busjax.<archive>``) and reused.
    extract_dir: where to extract without a download manager (default: a new
      temporary folder).
    depth: how many folder levels below the manual dir (and below an
      extracted archive) to search.

  Returns:
    The root folder.

  Raises:
    BuilderInputError: the manual dir is missing, empty, or holds neither the
      unpacked dataset nor a usable archive; the message says what was
      expected and where.
  """
  hint = f"Place {expected} in {manual_dir} (see the {dataset} README / MANUAL_DOWNLOAD_INSTRUCTIONS)."
  if manual_dir is None:
    raise BuilderInputError(f"{dataset}: no manual dir given. {hint}")
  root = epath.Path(manual_dir)
  if not root.exists():
    raise BuilderInputError(f"{root}: manual dir for {dataset} does not exist. {hint}")
  if root.is_file():
    if _is_archive(root):
      found = _find_root(_extract(root, dl_manager, extract_dir), markers, depth)
      if found is not None:
        return found
    raise BuilderInputError(f"{root}: manual dir for {dataset} is a file, not a folder. {hint}")
  entries = [p for p in root.iterdir() if not p.name.startswith(".")]
  if not entries:
    raise BuilderInputError(f"{root}: manual dir for {dataset} is empty. {hint}")
  found = _find_root(root, markers, depth)
  if found is not None:
    return found
  # Archives named after the dataset first (a shared manual dir may hold several).
  token = dataset.replace("_", "").replace("-", "").lower()
  archives = sorted((p for p in entries if _is_archive(p)),
                    key=lambda p: (token not in p.name.replace("_", "").replace("-", "").lower(), p.name))
  for archive in archives:
    logging.info("%s: extracting %s", dataset, archive)
    found = _find_root(_extract(archive, dl_manager, extract_dir), markers, depth)
    if found is not None:
      return found
  names = ", ".join(sorted(p.name for p in entries)[:10])
  tried = f"; archives tried: {', '.join(a.name for a in archives)}" if archives else ""
  raise BuilderInputError(
      f"{root}: found no {dataset} dataset in the manual dir (it holds: {names}{tried}). {hint}")


def manual_dir_of(dl_manager) -> epath.Path | None:
  """``dl_manager.manual_dir`` without TFDS's own assertion on a missing or
  empty folder (so that :func:`resolve_manual_dir` can raise its clearer
  :class:`BuilderInputError` instead)."""
  try:
    return epath.Path(dl_manager.manual_dir)
  except AssertionError:
    path = getattr(dl_manager, "_manual_dir", None)
    return epath.Path(path) if path else None


def resolve_builder_manual_dir(dl_manager, *, dataset: str, markers: RootTest, expected: str,
                               depth: int = 2) -> epath.Path:
  """:func:`resolve_manual_dir` for a builder's ``_split_generators``:
  archives are extracted into the download dir (see :func:`_extract`)."""
  return resolve_manual_dir(manual_dir_of(dl_manager), dataset=dataset, markers=markers,
                            expected=expected, dl_manager=dl_manager, depth=depth)


def warn(message: str) -> None:
  """Reports a recoverable input oddity: a :class:`BuilderWarning` and an absl
  log line (builds usually run with absl logging visible)."""
  import warnings  # pylint: disable=g-import-not-at-top
  logging.warning("%s", message)
  warnings.warn(message, BuilderWarning, stacklevel=2)


def list_images(folder: PathLike) -> list[epath.Path]:
  """Image files directly in ``folder``, sorted by name (hidden files skipped)."""
  folder = epath.Path(folder)
  return sorted((p for p in folder.iterdir()
                 if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES)),
                key=lambda p: p.name)


def find_child(folder: PathLike, *names: str, directory: bool = True) -> epath.Path | None:
  """The child of ``folder`` whose name matches one of ``names``, ignoring case,
  spaces, '-' and '_' (``"GT"`` matches ``gt``; ``"ground truth"`` matches
  ``Ground_Truth``). ``None`` if there is none."""
  folder = epath.Path(folder)

  def norm(s: str) -> str:
    return "".join(c for c in s.lower() if c not in " -_")

  wanted = [norm(n) for n in names]
  children = sorted(folder.iterdir(), key=lambda p: p.name) if folder.is_dir() else []
  for w in wanted:
    for c in children:
      if norm(c.name) == w and (c.is_dir() if directory else c.is_file()):
        return c
  return None


# --------------------------------------------------------------------------
# Duplicates.


def pixel_hash(a: np.ndarray) -> str:
  """SHA-256 of a decoded pixel array (shape and dtype included)."""
  h = hashlib.sha256()
  h.update(repr((a.shape, a.dtype.str)).encode())
  h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def file_pixel_hash(path: PathLike) -> str:
  """:func:`pixel_hash` of the file's decoded pixels (in the file's own mode,
  so two encodings of the same picture match, a colour and a grey version of
  it do not)."""
  return pixel_hash(_as_array(_open(path)))


def find_pixel_duplicates(paths: Iterable[PathLike]) -> list[list[epath.Path]]:
  """Groups of files whose decoded pixels are identical.

  Args:
    paths: image files.

  Returns:
    One list per group of two or more identical images, each in the order of
    ``paths``; groups ordered by their first member's position. Files with
    unique pixels are not returned.

  Raises:
    BuilderInputError: a file is missing or unreadable (names the file).
  """
  groups: dict[str, list[epath.Path]] = {}
  for p in paths:
    p = epath.Path(p)
    groups.setdefault(file_pixel_hash(p), []).append(p)
  return [g for g in groups.values() if len(g) > 1]
