"""Input pipeline: TFDS data source -> resized in-memory arrays -> batches.

Every busjax dataset is a TFDS builder (``tfds_builders/``) written as
array_record files and read with ``tfds.data_source`` (no TensorFlow). BUS
datasets are small (hundreds to a few thousand images), so the pipeline reads
each example once, resizes it to ``image_size`` x ``image_size`` (image:
bilinear; mask: bilinear then > 0.5) and keeps uint8 arrays in memory.
Augmentation (flips, shifts) runs on the accelerator inside the jitted train
step (:func:`augment`), so the host only slices arrays and the input pipeline
is never the bottleneck. Evaluation re-reads the original-resolution masks of
the test split from the source, so metrics are computed at the publisher's
resolution.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from busjax.data import splits as splits_lib

LABELS = ("normal", "benign", "malignant")


def label_name(label: int) -> str:
  """Class name of a label id; -1 (TFDS 'no label', e.g. STU-Hospital) is 'unknown'."""
  return LABELS[label] if 0 <= label < len(LABELS) else "unknown"


@dataclasses.dataclass
class SegmentationData:
  """A dataset resized to one size, with its fold assignment.

  images, masks: uint8 [N, S, S, 1] (masks 0/1); labels int [N]; names, patient_ids
  lists of str; folds int [N]; indices int [N]: each example's index in
  ``source``, the TFDS data source at original resolution.
  """
  images: np.ndarray
  masks: np.ndarray
  labels: np.ndarray
  names: list[str]
  patient_ids: list[str]
  folds: np.ndarray
  fold_source: str
  source: Any
  indices: np.ndarray

  def subset(self, idx: np.ndarray) -> "SegmentationData":
    return dataclasses.replace(
        self, images=self.images[idx], masks=self.masks[idx], labels=self.labels[idx],
        names=[self.names[i] for i in idx], patient_ids=[self.patient_ids[i] for i in idx],
        folds=self.folds[idx], indices=self.indices[idx])


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Resizes ``[H,W,1]`` uint8 image (bilinear) and 0/1 mask (bilinear, > 0.5) to ``[size,size,1]``."""
  img = Image.fromarray(image[..., 0]).resize((size, size), Image.BILINEAR)
  m = Image.fromarray((mask[..., 0] > 0).astype(np.float32)).resize((size, size), Image.BILINEAR)
  return np.asarray(img, np.uint8)[..., None], (np.asarray(m) > 0.5).astype(np.uint8)[..., None]


def open_source(dataset: str, data_dir: str | None = None, manual_dir: str | None = None):
  """Builds (once; later calls reuse the files) and opens a busjax TFDS dataset.

  ``dataset`` may name a builder config (``busi/lesions_only``). Returns the
  ``train`` split's random-access data source (the whole dataset: busjax makes
  its own folds).
  """
  import tensorflow_datasets as tfds

  import tfds_builders  # noqa: F401  (registers every busjax builder)

  builder = tfds.builder(dataset, data_dir=data_dir or None, file_format="array_record")
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  builder.download_and_prepare(download_config=download_config, file_format="array_record")
  return builder.as_data_source(split="train")


def load_data(cfg, source=None) -> SegmentationData:
  """Reads ``cfg.dataset`` at ``cfg.image_size`` and assigns folds.

  Folds come from the publisher (a ``publisher_fold_<K>`` feature) when it
  gives ``cfg.num_folds`` folds, else from
  :func:`busjax.data.splits.stratified_group_folds` with ``cfg.seed``.
  """
  from tqdm.auto import tqdm

  if source is None:
    source = open_source(cfg.dataset, cfg.data_dir, cfg.manual_dir)
  n = len(source)
  if n == 0:
    raise ValueError(f"dataset {cfg.dataset!r} has no examples")
  s = cfg.image_size
  images = np.zeros((n, s, s, 1), np.uint8)
  masks = np.zeros((n, s, s, 1), np.uint8)
  labels = np.zeros((n,), np.int32)
  names, pids, pub = [], [], []
  pub_key = f"publisher_fold_{cfg.num_folds}"
  for i in tqdm(range(n), desc=f"reading {cfg.dataset} at {s}x{s}", leave=False,
                mininterval=1.0):
    ex = source[i]
    name = _text(ex["file_name"])
    if ex["image"].shape[:2] != ex["mask"].shape[:2]:
      raise ValueError(f"{cfg.dataset}: {name}: mask {ex['mask'].shape} does not match "
                       f"image {ex['image'].shape}")
    images[i], masks[i] = resize_pair(ex["image"], ex["mask"], s)
    labels[i] = int(ex["label"])
    names.append(name)
    pids.append(_text(ex.get("patient_id", "")))
    if pub_key in ex:
      pub.append(int(ex[pub_key]))
  pub = np.asarray(pub)
  if len(pub) == n and pub.min() >= 0 and len(np.unique(pub)) == cfg.num_folds:
    folds = np.unique(pub, return_inverse=True)[1].astype(np.int32)  # 1-based -> 0-based
    fold_source = f"publisher ({pub_key})"
  else:
    folds = splits_lib.stratified_group_folds(labels, pids, cfg.num_folds, cfg.seed)
    fold_source = f"stratified_group_kfold(seed={cfg.seed})"
  return SegmentationData(images, masks, labels, names, pids, folds, fold_source, source,
                          np.arange(n))


def _text(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


def fold_splits(data: SegmentationData, cfg) -> dict[str, SegmentationData]:
  """Train/validation/test subsets of ``cfg.fold`` (normal images dropped from
  training when ``cfg.include_normal`` is False; they stay in the test set)."""
  idx = splits_lib.split_indices(data.folds, cfg.fold, cfg.num_folds)
  if not cfg.include_normal:
    idx["train"] = idx["train"][data.labels[idx["train"]] != LABELS.index("normal")]
  return {k: data.subset(v) for k, v in idx.items()}


def batches(data: SegmentationData, batch_size: int, *, seed: int, epoch: int,
            start: int = 0, shuffle: bool = True, drop_remainder: bool = True
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Batches of (uint8 images, uint8 masks) ``[B,S,S,1]`` for one epoch.

  The order is a pure function of (seed, epoch), so a resumed run at batch
  ``start`` sees exactly the batches the uninterrupted run would have.
  """
  n = len(data.images)
  order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
  stop = n - n % batch_size if drop_remainder else n
  for b in range(start, (stop + batch_size - 1) // batch_size):
    idx = np.sort(order[b * batch_size:(b + 1) * batch_size])
    yield data.images[idx], data.masks[idx]


def steps_per_epoch(n: int, batch_size: int) -> int:
  if n < batch_size:
    raise ValueError(f"the training split has {n} examples, fewer than batch_size={batch_size}")
  return n // batch_size


def augment(rng: jax.Array, images: jnp.ndarray, masks: jnp.ndarray, cfg_augment
            ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Random flips and integer shifts (zero fill), identical for image and mask,
  then optional intensity jitter of the image alone.

  Runs on device inside the jitted step. ``shift`` is the largest shift as a
  fraction of the size (STAN: width/height shift augmentation). Optional
  fields (absent = 0 = off), per image, on the [0, 255] intensity scale:
  ``contrast`` s scales the deviation from the image mean by U(1-s, 1+s)
  (gain/TGC differences between scans), ``brightness`` s scales the image by
  U(1-s, 1+s), and ``gamma`` g raises x/255 to exp(U(-g, g)) (nnU-Net's
  gamma augmentation); the result is clipped to [0, 255].
  images, masks: ``[B,S,S,C]`` any dtype -> same shapes and dtypes.
  """
  b, h, w, _ = images.shape
  k_h, k_v, k_s, k_i = jax.random.split(rng, 4)
  both = jnp.concatenate([images.astype(jnp.float32), masks.astype(jnp.float32)], -1)
  if cfg_augment.hflip:
    flip = jax.random.bernoulli(k_h, 0.5, (b, 1, 1, 1))
    both = jnp.where(flip, both[:, :, ::-1], both)
  if cfg_augment.vflip:
    flip = jax.random.bernoulli(k_v, 0.5, (b, 1, 1, 1))
    both = jnp.where(flip, both[:, ::-1], both)
  if cfg_augment.shift > 0:
    mh, mw = int(round(h * cfg_augment.shift)), int(round(w * cfg_augment.shift))
    if mh or mw:
      shifts = jax.random.randint(k_s, (b, 2), -jnp.array([mh, mw]), jnp.array([mh, mw]) + 1)
      padded = jnp.pad(both, ((0, 0), (mh, mh), (mw, mw), (0, 0)))
      both = jax.vmap(lambda x, s: jax.lax.dynamic_slice(
          x, (mh - s[0], mw - s[1], 0), (h, w, x.shape[-1])))(padded, shifts)
  c = images.shape[-1]
  x = _intensity_jitter(k_i, both[..., :c], cfg_augment)
  if jnp.issubdtype(images.dtype, jnp.integer):
    x = jnp.round(x)
  return x.astype(images.dtype), both[..., c:].astype(masks.dtype)


def _intensity_jitter(rng: jax.Array, x: jnp.ndarray, cfg_augment) -> jnp.ndarray:
  """The optional contrast / brightness / gamma jitter of :func:`augment`
  (float32 ``[B,S,S,C]`` on the [0, 255] scale)."""
  contrast, brightness, gamma = (float(cfg_augment.get(k, 0.0))
                                 for k in ("contrast", "brightness", "gamma"))
  if not (contrast or brightness or gamma):
    return x
  k_c, k_b, k_g = jax.random.split(rng, 3)
  shape = (x.shape[0], 1, 1, 1)
  u = lambda k, s: jax.random.uniform(k, shape, minval=-s, maxval=s)
  if contrast:
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * (1.0 + u(k_c, contrast)) + mean
  if brightness:
    x = x * (1.0 + u(k_b, brightness))
  x = jnp.clip(x, 0.0, 255.0)
  if gamma:
    x = 255.0 * (x / 255.0) ** jnp.exp(u(k_g, gamma))
  return x


def normalize(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 ``[B,S,S,1]`` -> float32 in [0, 1]: the input every model takes."""
  return images.astype(jnp.float32) / 255.0
