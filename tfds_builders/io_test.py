"""Tests for tfds_builders.io: image/mask decoding, manual-dir resolution,
duplicates and the errors, on small files written into tmp_path."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from tfds_builders import io as bio


def _disk(h: int = 20, w: int = 30) -> np.ndarray:
  """A bool ellipse, off-centre so transposes would show."""
  yy, xx = np.mgrid[:h, :w]
  return ((yy - 8) / 6.0) ** 2 + ((xx - 12) / 9.0) ** 2 <= 1.0


def _save(tmp_path, name: str, im: Image.Image) -> str:
  path = os.fspath(tmp_path / name)
  im.save(path)
  return path


def test_read_image_modes(tmp_path):
  grey = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
  rgb = np.repeat(grey[..., None], 3, axis=-1)
  rgba = np.concatenate([rgb, np.full_like(grey, 7)[..., None]], axis=-1)
  for name, im in [("l.png", Image.fromarray(grey, "L")), ("rgb.png", Image.fromarray(rgb, "RGB")),
                   ("rgba.png", Image.fromarray(rgba, "RGBA"))]:
    out = bio.read_image(_save(tmp_path, name, im))
    assert out.dtype == np.uint8 and out.shape == (20, 30, 1), name
    np.testing.assert_array_equal(out[..., 0], grey, err_msg=name)
  # Colour: ITU-R 601 luma, as PIL's convert("L").
  colour = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  out = bio.read_image(_save(tmp_path, "c.png", Image.fromarray(colour, "RGB")))
  np.testing.assert_array_equal(out[..., 0], np.asarray(Image.fromarray(colour).convert("L")))
  # 16-bit: full range scaled by 255/65535.
  deep = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
  out = bio.read_image(_save(tmp_path, "d.png", Image.fromarray(deep)))
  np.testing.assert_array_equal(out[..., 0], [[0, 1, 255, 128]])
  # 1-bit: 0/255.
  out = bio.read_image(_save(tmp_path, "b.png", Image.fromarray(_disk()).convert("1")))
  np.testing.assert_array_equal(out[..., 0], _disk().astype(np.uint8) * 255)


def test_read_mask_modes(tmp_path):
  disk = _disk()
  ref = disk.astype(np.uint8)[..., None]
  white = disk.astype(np.uint8) * 255
  # 1-bit
  one = Image.fromarray(disk).convert("1")
  assert one.mode == "1"
  np.testing.assert_array_equal(bio.read_mask(_save(tmp_path, "1.png", one)), ref)
  # RGBA opaque everywhere, shape in the colour (BUSI's RGBA masks)
  rgba = np.zeros((20, 30, 4), np.uint8)
  rgba[..., :3] = white[..., None]
  rgba[..., 3] = 255
  np.testing.assert_array_equal(bio.read_mask(_save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA"))), ref)
  # RGBA white everywhere, shape in the alpha channel
  rgba = np.full((20, 30, 4), 255, np.uint8)
  rgba[..., 3] = white
  np.testing.assert_array_equal(bio.read_mask(_save(tmp_path, "b.png", Image.fromarray(rgba, "RGBA"))), ref)
  # Colour-coded (red lesion on black), palette, and {0,1}-valued grey
  red = np.zeros((20, 30, 3), np.uint8)
  red[..., 0] = white
  np.testing.assert_array_equal(bio.read_mask(_save(tmp_path, "r.png", Image.fromarray(red, "RGB"))), ref)
  pal = Image.fromarray(red, "RGB").convert("P")
  np.testing.assert_array_equal(bio.read_mask(_save(tmp_path, "p.png", pal)), ref)
  np.testing.assert_array_equal(
      bio.read_mask(_save(tmp_path, "01.png", Image.fromarray(disk.astype(np.uint8), "L"))), ref)
  # Threshold: anti-aliased 100 is background at the default (> 127), foreground at 0.
  soft = white.copy()
  soft[0, 0] = 100
  path = _save(tmp_path, "s.png", Image.fromarray(soft, "L"))
  assert bio.read_mask(path)[0, 0, 0] == 0 and bio.read_mask(path, threshold=0)[0, 0, 0] == 1


def test_union_resize_and_size_check():
  a = np.zeros((4, 5, 1), np.uint8)
  b = np.zeros((4, 5, 1), np.uint8)
  a[0, 0] = 1
  b[3, 4] = 1
  u = bio.union_masks([a, b])
  assert u.sum() == 2 and u[0, 0, 0] == 1 and u[3, 4, 0] == 1
  with pytest.raises(bio.BuilderInputError, match=r"m2\.png: mask size 3x5 .* m1\.png \(4x5"):
    bio.union_masks([a, np.zeros((3, 5, 1), np.uint8)], ["m1.png", "m2.png"])
  small = np.array([[1, 0], [0, 0]], np.uint8)
  big = bio.resize_mask(small, 4, 6)
  assert big.shape == (4, 6, 1) and set(np.unique(big)) == {0, 1}
  np.testing.assert_array_equal(big[..., 0], np.kron(small, np.ones((2, 3), np.uint8)))
  with pytest.raises(bio.BuilderInputError, match=r"mask\.png: mask size 4x6 .* img\.png \(5x6"):
    bio.check_mask_matches(np.zeros((5, 6, 1)), big, "img.png", "mask.png")
  bio.check_mask_matches(np.zeros((4, 6, 1)), big, "img.png", "mask.png")


def test_unreadable_files_name_the_file(tmp_path):
  garbage = tmp_path / "garbage.png"
  garbage.write_bytes(b"this is not an image")
  with pytest.raises(bio.BuilderInputError, match=r"garbage\.png: not a readable image") as e:
    bio.read_image(garbage)
  assert isinstance(e.value.__cause__, Image.UnidentifiedImageError)
  good = _save(tmp_path, "good.png", Image.fromarray(
      np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)))
  trunc = tmp_path / "trunc.png"
  trunc.write_bytes(open(good, "rb").read()[:1000])
  with pytest.raises(bio.BuilderInputError, match=r"trunc\.png: corrupt or truncated"):
    bio.read_mask(trunc)
  with pytest.raises(bio.BuilderInputError, match=r"absent\.png: file does not exist"):
    bio.read_image(tmp_path / "absent.png")


def test_find_pixel_duplicates(tmp_path):
  rng = np.random.default_rng(2)
  a = rng.integers(0, 256, (16, 16), dtype=np.uint8)
  b = rng.integers(0, 256, (16, 16), dtype=np.uint8)
  pa = _save(tmp_path, "a.png", Image.fromarray(a))
  pb = _save(tmp_path, "b.png", Image.fromarray(b))
  pa2 = os.fspath(tmp_path / "a_again.png")
  Image.fromarray(a).save(pa2, compress_level=0)  # other bytes, same pixels
  assert open(pa, "rb").read() != open(pa2, "rb").read()
  pa3 = _save(tmp_path, "a.bmp", Image.fromarray(a))
  groups = bio.find_pixel_duplicates([pb, pa, pa2, pa3])
  assert [[p.name for p in g] for g in groups] == [["a.png", "a_again.png", "a.bmp"]]
  assert bio.find_pixel_duplicates([pa, pb]) == []


def _layout(root) -> None:
  (root / "Images").mkdir(parents=True)
  (root / "Masks").mkdir()
  (root / "data.csv").write_text("x\n")


def test_resolve_manual_dir(tmp_path):
  kw = dict(dataset="toy", markers=("Images", "Masks", "data.csv"), expected="the TOY folder")
  with pytest.raises(bio.BuilderInputError, match=r"nowhere: manual dir for toy does not exist\. Place the TOY folder"):
    bio.resolve_manual_dir(tmp_path / "nowhere", **kw)
  with pytest.raises(bio.BuilderInputError, match="no manual dir given"):
    bio.resolve_manual_dir(None, **kw)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(bio.BuilderInputError, match=r"empty: manual dir for toy is empty"):
    bio.resolve_manual_dir(empty, **kw)
  # Unpacked at the top, and nested one level.
  _layout(tmp_path / "flat")
  assert bio.resolve_manual_dir(tmp_path / "flat", **kw) == tmp_path / "flat"
  _layout(tmp_path / "nest" / "TOY")
  assert bio.resolve_manual_dir(tmp_path / "nest", **kw) == tmp_path / "nest" / "TOY"
  # A zip archive of the publisher (with its top folder), extracted once.
  zdir = tmp_path / "zipped"
  zdir.mkdir()
  with zipfile.ZipFile(zdir / "TOY.zip", "w") as zf:
    zf.writestr("TOY/Images/x.png", b"")
    zf.writestr("TOY/Masks/x.png", b"")
    zf.writestr("TOY/data.csv", "x\n")
  found = bio.resolve_manual_dir(zdir, extract_dir=tmp_path / "ex", **kw)
  assert found.name == "TOY" and (found / "data.csv").exists()
  assert bio.resolve_manual_dir(zdir, extract_dir=tmp_path / "ex", **kw) == found
  # A shared manual dir: the archive named after the dataset is tried first.
  shared = tmp_path / "shared"
  shared.mkdir()
  with zipfile.ZipFile(shared / "aaa_other.zip", "w") as zf:
    zf.writestr("junk/readme.txt", "x")
  os.replace(zdir / "TOY.zip", shared / "toy_v2.zip")
  found = bio.resolve_manual_dir(shared, extract_dir=tmp_path / "ex3", **kw)
  assert (found / "data.csv").exists()
  assert sorted(p.name for p in (tmp_path / "ex3").iterdir()) == ["busjax.toy_v2.zip"]
  # Wrong content, and a corrupt archive: say what is there.
  (zdir / "TOY.zip").write_bytes(b"PK broken")
  (zdir / "readme.txt").write_text("x")
  with pytest.raises(bio.BuilderInputError, match=r"TOY\.zip: cannot extract"):
    bio.resolve_manual_dir(zdir, extract_dir=tmp_path / "ex2", **kw)
  other = tmp_path / "other"
  (other / "Images").mkdir(parents=True)
  with pytest.raises(bio.BuilderInputError, match=r"found no toy dataset .*holds: Images.*the TOY folder"):
    bio.resolve_manual_dir(other, **kw)


def test_find_child_tolerates_spelling(tmp_path):
  (tmp_path / "Ground_Truth").mkdir()
  (tmp_path / "original").mkdir()
  assert bio.find_child(tmp_path, "GT", "ground truth").name == "Ground_Truth"
  assert bio.find_child(tmp_path, "Original", "images").name == "original"
  assert bio.find_child(tmp_path, "masks") is None
