"""Helpers shared by the builder tests (``*_dataset_builder_test.py``).

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow, so the builder tests
are plain pytest builds into ``tmp_path`` with ``file_format="array_record"``
from a manual dir, read back with ``as_data_source`` (no TensorFlow). The
bad-input helpers copy a dataset's ``dummy_data`` to ``tmp_path``, break one
file and check that the build raises :class:`~tfds_builders.io.BuilderInputError`
naming it.

Not imported by the builders; needs pytest.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from tfds_builders import io as bio

PathLike = bio.PathLike


def build_examples(builder_cls: type[tfds.core.GeneratorBasedBuilder], tmp_path: PathLike,
                   manual_dir: PathLike, *, config: str | None = None,
                   key: Callable[[str], str] | None = None) -> dict[str, dict[str, Any]]:
  """Builds ``builder_cls`` (``config``) from ``manual_dir`` into ``tmp_path/data``.

  Checks that the only split is ``train``, that no two examples share a key
  and that every example of the split was read back.

  Returns:
    The train examples (numpy dicts from the data source) by file name, or by
    ``key(file_name)``.
  """
  kw = {} if config is None else {"config": config}
  builder = builder_cls(data_dir=os.fspath(epath.Path(tmp_path) / "data"),
                        file_format="array_record", **kw)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  assert list(builder.info.splits.keys()) == ["train"]
  examples = {}
  for ex in builder.as_data_source()["train"]:
    name = ex["file_name"].decode()
    name = key(name) if key is not None else name
    assert name not in examples
    examples[name] = ex
  assert len(examples) == builder.info.splits["train"].num_examples
  return examples


def copy_dummy(dummy: PathLike, tmp_path: PathLike) -> epath.Path:
  """A writable copy of ``dummy`` (a dataset's dummy_data) at ``tmp_path/manual``; returns it."""
  manual = epath.Path(tmp_path) / "manual"
  shutil.copytree(os.fspath(dummy), os.fspath(manual))
  return manual


def zip_folder(root: PathLike, archive: PathLike, prefix: str,
               patterns: Sequence[str] = ("*", "*/*")) -> None:
  """Writes the files of ``root`` matching ``patterns`` (by default: its files and
  those of its sub-folders) into the zip ``archive``, as ``prefix/<path relative
  to root>`` (the publisher's layout)."""
  root = epath.Path(root)
  with zipfile.ZipFile(os.fspath(archive), "w") as zf:
    for p in [p for pattern in patterns for p in sorted(root.glob(pattern))]:
      if p.is_file():
        zf.write(os.fspath(p), f"{prefix}/" + os.path.relpath(os.fspath(p), os.fspath(root)))


def assert_manual_dir_errors(builder_cls: type[tfds.core.GeneratorBasedBuilder], tmp_path: PathLike,
                             *, missing: str | None = None, empty: str | None = None,
                             **build_kw) -> None:
  """A manual dir that does not exist, then an empty one: each a BuilderInputError.

  ``missing`` / ``empty``: the regexes the messages must match; by default
  ``"nowhere: manual dir for <name> does not exist"`` / ``"empty: manual dir
  for <name> is empty"``.
  """
  tmp_path = epath.Path(tmp_path)
  name = builder_cls.name
  with pytest.raises(bio.BuilderInputError,
                     match=missing or rf"nowhere: manual dir for {name} does not exist"):
    build_examples(builder_cls, tmp_path, tmp_path / "nowhere", **build_kw)
  (tmp_path / "empty").mkdir()
  with pytest.raises(bio.BuilderInputError, match=empty or rf"empty: manual dir for {name} is empty"):
    build_examples(builder_cls, tmp_path, tmp_path / "empty", **build_kw)


def assert_broken_copy_error(builder_cls: type[tfds.core.GeneratorBasedBuilder], tmp_path: PathLike,
                             dummy: PathLike, break_it: Callable[[epath.Path], None], match: str,
                             **build_kw) -> None:
  """Copies ``dummy`` to ``tmp_path/manual``, calls ``break_it(manual)``; the build
  from the copy must raise a BuilderInputError matching ``match``."""
  manual = copy_dummy(dummy, tmp_path)
  break_it(manual)
  with pytest.raises(bio.BuilderInputError, match=match):
    build_examples(builder_cls, tmp_path, manual, **build_kw)


def assert_missing_file_error(builder_cls, tmp_path, dummy, relpath: str, match: str, **build_kw) -> None:
  """``relpath`` (relative to the manual dir) deleted from a copy of ``dummy``."""
  assert_broken_copy_error(builder_cls, tmp_path, dummy, lambda m: (m / relpath).unlink(), match, **build_kw)


def assert_unreadable_file_error(builder_cls, tmp_path, dummy, relpath: str, match: str, *,
                                 content: bytes | None = None, keep_bytes: int | None = None,
                                 **build_kw) -> None:
  """``relpath`` in a copy of ``dummy`` overwritten with ``content``, or truncated
  to its first ``keep_bytes`` bytes."""
  assert (content is None) != (keep_bytes is None), "give content or keep_bytes"

  def break_it(manual: epath.Path) -> None:
    path = manual / relpath
    path.write_bytes(content if content is not None else path.read_bytes()[:keep_bytes])

  assert_broken_copy_error(builder_cls, tmp_path, dummy, break_it, match, **build_kw)


def assert_resized_mask_error(builder_cls, tmp_path, dummy, relpath: str, size: tuple[int, int],
                              match: str, **build_kw) -> None:
  """The mask ``relpath`` in a copy of ``dummy`` resized to ``size`` (PIL's (width, height))."""

  def break_it(manual: epath.Path) -> None:
    path = manual / relpath
    with Image.open(os.fspath(path)) as im:
      im.resize(size).save(os.fspath(path))

  assert_broken_copy_error(builder_cls, tmp_path, dummy, break_it, match, **build_kw)
