"""Procedural breast-ultrasound (B-mode) images with exact tumour masks.

Pure numpy/scipy; no TensorFlow. ``generate_example(seed, index)`` draws every
random number from ``np.random.default_rng([seed, index, stage])`` so an
example depends only on ``(seed, index)``: not on generation order, process or
the other examples.

Image model (all maps float32, ``H x W``):

1. Echogenicity map ``E`` of layered breast tissue from the skin down: optional
   coupling gel (anechoic), bright epidermis line and dermis, hypo-echoic
   subcutaneous fat with echogenic Cooper's ligaments and fat lobules, bright
   heterogeneous fibroglandular layer (with hypo-echoic fat islands and ducts:
   look-alikes that are *not* in the mask), retromammary fat, pectoral muscle
   with oblique echogenic striations and fascia, chest wall (sometimes a rib
   with its acoustic shadow). Layer boundaries undulate smoothly.
2. Lesion (benign / malignant only): a star-shaped region ``rho < r(theta)``.
   Benign: oval, circumscribed, wider than tall, sometimes a thin echogenic
   capsule and lateral edge shadows. Malignant: irregular, taller-than-wide
   tendency, radial harmonics plus spicules, indistinct margin, sometimes an
   echogenic halo and micro-calcifications. A minority of each class takes the
   other class's shape. The interior echogenicity is a fraction of the
   surrounding tissue (anechoic cysts to low-contrast masses) and is
   speckled like everything else.
3. Posterior acoustic features below the lesion: shadowing (mostly malignant)
   or enhancement (mostly benign); sometimes unrelated contact shadows.
4. Depth attenuation with time-gain compensation and a focal zone.
5. Fully developed speckle: a complex circular Gaussian field, low-pass
   filtered (axial sigma < lateral sigma) so the speckle spots are elongated
   laterally as with a real linear probe, whose magnitude is Rayleigh
   distributed (Wagner et al. 1983; Burckhardt 1978). The envelope
   ``E * gain * |z|`` is log-compressed to 40-55 dB into uint8.
6. Field of view: full rectangle, rectangle with black side bars, or a
   curvilinear sector; pixels outside are 0. The lesion is always inside.

The mask is exactly the lesion region (uint8 0/1, empty for ``normal``).
``longest_axis_px`` is the maximum Feret diameter of the mask: the largest
distance between the centres of two mask pixels.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage as ndi
from scipy import spatial

LABELS = ("normal", "benign", "malignant")
LABEL_PROBS = (0.20, 0.45, 0.35)
SMALL_AXIS_PX = 120.0          # STAN small-tumour threshold (longest axis, px)
P_SMALL = 0.38                 # fraction of lesions drawn below that threshold
HEIGHT_RANGE = (240, 420)
WIDTH_RANGE = (300, 560)
_N_THETA = 1024                # resolution of the tabulated radial function

# Stages: each draws from its own stream so changing one leaves the others.
_S_META, _S_LAYOUT, _S_LESION, _S_LOOKALIKE, _S_TEXTURE, _S_SPECKLE, _S_DRAW = range(7)


@dataclasses.dataclass(frozen=True)
class SyntheticExample:
  """One generated image.

  Attributes:
    image: uint8 [H, W] B-mode image.
    mask: uint8 [H, W], 1 inside the lesion, 0 elsewhere (all 0 if normal).
    label: "normal", "benign" or "malignant".
    lesion_shape: "oval", "irregular" or "none".
    longest_axis_px: max Feret diameter of the mask in pixels (0 if normal).
    posterior: "shadowing", "enhancement" or "none".
  """
  image: np.ndarray
  mask: np.ndarray
  label: str
  lesion_shape: str
  longest_axis_px: float
  posterior: str

  @property
  def height(self) -> int:
    return int(self.image.shape[0])

  @property
  def width(self) -> int:
    return int(self.image.shape[1])


def max_feret_diameter(mask: np.ndarray) -> float:
  """Largest distance between the centres of two nonzero pixels of ``mask``.

  Only the first and last pixel of each row can be convex-hull vertices, so
  the search runs over those (then over the hull), not over every pixel.
  """
  m = np.asarray(mask).astype(bool)
  if m.ndim == 3:
    m = m[..., 0]
  rows = np.nonzero(m.any(axis=1))[0]
  if rows.size == 0:
    return 0.0
  sub = m[rows]
  left = np.argmax(sub, axis=1)
  right = m.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
  pts = np.concatenate([np.stack([rows, left], 1), np.stack([rows, right], 1)]).astype(np.float64)
  pts = np.unique(pts, axis=0)
  if pts.shape[0] > 8:
    try:
      pts = pts[spatial.ConvexHull(pts).vertices]
    except spatial.QhullError:  # collinear pixels
      pass
  d = pts[:, None, :] - pts[None, :, :]
  return float(np.sqrt((d * d).sum(-1).max()))


# ----------------------------------------------------------------------------
# Small helpers.


def _bspline_taps(n: int, g: int) -> tuple[np.ndarray, np.ndarray]:
  """Cubic B-spline taps resampling ``g`` control points onto ``n`` samples.

  Returns indices [n, 4] and weights [n, 4] (float32).
  """
  pos = np.linspace(1.0, g - 3.0, n)
  i = np.minimum(np.floor(pos).astype(np.int64), g - 3)
  u = pos - i
  w = np.stack([(1 - u) ** 3, 3 * u ** 3 - 6 * u ** 2 + 4,
                -3 * u ** 3 + 3 * u ** 2 + 3 * u + 1, u ** 3], axis=1) / 6.0
  return i[:, None] - 1 + np.arange(4)[None, :], w.astype(np.float32)


def _resample(g: np.ndarray, h: int, w: int) -> np.ndarray:
  """Separable cubic B-spline interpolation of a control grid onto [h, w].

  Written with gathers instead of a matrix product: a multi-threaded BLAS on
  a busy machine is orders of magnitude slower than this.
  """
  iy, wy = _bspline_taps(h, g.shape[0])
  ix, wx = _bspline_taps(w, g.shape[1])
  a = g[iy[:, 0]] * wy[:, :1]
  for k in range(1, 4):
    a += g[iy[:, k]] * wy[:, k:k + 1]
  out = np.take(a, ix[:, 0], axis=1)
  out *= wx[:, 0]
  for k in range(1, 4):
    t = np.take(a, ix[:, k], axis=1)
    t *= wx[:, k]
    out += t
  return out


def _smooth_noise(rng: np.random.Generator, h: int, w: int,
                  scales: tuple[tuple[float, float], ...]) -> np.ndarray:
  """Smooth random field: sum of ``weight * N(0, 1)`` fields of correlation
  length ~``cell`` pixels for each ``(cell, weight)`` in ``scales``.

  The coarser fields are resampled onto the finest control grid first, so the
  full-size interpolation happens once.
  """
  fine = min(c for c, _ in scales)
  gh = max(4, int(np.ceil(h / fine)) + 3)
  gw = max(4, int(np.ceil(w / fine)) + 3)
  grid = np.zeros((gh, gw), np.float32)
  norm = np.float32(1.0 / np.sqrt(0.48))                # B-spline variance ~0.48
  for cell, weight in scales:
    ch = max(4, int(np.ceil(h / cell)) + 3)
    cw = max(4, int(np.ceil(w / cell)) + 3)
    c = rng.standard_normal((ch, cw), dtype=np.float32) * np.float32(weight)
    grid += c if (ch, cw) == (gh, gw) else _resample(c, gh, gw) * norm
  return _resample(grid, h, w) * norm


def _undulation(rng: np.random.Generator, w: int, amp: float) -> np.ndarray:
  """Smooth 1D curve over ``w`` columns with peak amplitude about ``amp``."""
  x = np.arange(w, dtype=np.float32) / w
  y = np.zeros(w, np.float32)
  for _ in range(3):
    f = rng.uniform(0.2, 1.6)
    y += rng.uniform(-1, 1) * np.sin(2 * np.pi * f * x + rng.uniform(0, 2 * np.pi))
  return (amp / 1.5) * y


def _add_step(e: np.ndarray, y: np.ndarray, tau: float, delta: float) -> None:
  """In place: ``e += delta`` below the curve ``y`` (per column), soft edge."""
  h = e.shape[0]
  r0 = int(np.clip(np.floor(y.min() - tau), 0, h))
  r1 = int(np.clip(np.ceil(y.max() + tau) + 1, 0, h))
  if r1 < h:
    e[r1:] += delta
  if r1 > r0:
    rows = np.arange(r0, r1, dtype=np.float32)[:, None]
    e[r0:r1] += delta * np.clip((rows - y[None, :]) / (2 * tau) + 0.5, 0.0, 1.0)


def _ellipse_blob(e: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float,
                  factor: float, rim: float = 0.0, rim_w: float = 1.5) -> None:
  """In place: multiply ``e`` by ``factor`` inside an ellipse, brighten its rim."""
  h, w = e.shape
  rr = max(ry, rx) + 3 * rim_w + 2
  y0, y1 = int(max(0, cy - rr)), int(min(h, cy + rr + 1))
  x0, x1 = int(max(0, cx - rr)), int(min(w, cx + rr + 1))
  if y1 <= y0 or x1 <= x0:
    return
  yy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
  xx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
  c, s = np.cos(angle), np.sin(angle)
  u, v = c * xx + s * yy, -s * xx + c * yy
  d = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)            # 1 on the boundary
  edge = (d - 1.0) * min(rx, ry)                         # ~ px outside
  inside = np.clip(0.5 - edge / 1.5, 0.0, 1.0)
  f = 1.0 + (factor - 1.0) * inside
  if rim:
    f = f + rim * np.exp(-(edge / rim_w) ** 2)
  e[y0:y1, x0:x1] *= f


@dataclasses.dataclass
class _Layout:
  """Tissue geometry: layer boundary curves (row per column) and FOV."""
  h: int
  w: int
  y: list[np.ndarray]   # gel/skin, skin/fat, fat/gland, gland/rfat, rfat/muscle, muscle/chest
  fov: np.ndarray       # bool [H, W]
  fov_cols: tuple[int, int]


def _layout(rng: np.random.Generator, h: int, w: int) -> _Layout:
  """Random layer boundaries and field of view for an ``h x w`` image."""
  gel = rng.uniform(0.0, 0.03 * h) if rng.random() < 0.3 else 0.0
  y0 = np.full(w, gel, np.float32) + np.abs(_undulation(rng, w, 0.01 * h))
  # Layer thicknesses (scalars), then an independent gentle undulation per
  # boundary plus a shared one, so deep boundaries do not pile up waves.
  b1 = float(y0.mean()) + rng.uniform(0.02, 0.045) * h
  b2 = b1 + rng.uniform(0.08, 0.30) * h
  b3 = b2 + rng.uniform(0.20, 0.45) * h
  b4 = b3 + rng.uniform(0.02, 0.07) * h
  b5 = b4 + rng.uniform(0.08, 0.18) * h
  shared = _undulation(rng, w, 0.025 * h)
  y1 = b1 + 0.2 * shared + _undulation(rng, w, 0.005 * h)
  y2 = b2 + shared + _undulation(rng, w, 0.035 * h)
  y3 = b3 + shared + _undulation(rng, w, 0.04 * h)
  y4 = b4 + 0.8 * shared + _undulation(rng, w, 0.015 * h)
  y5 = y4 + (b5 - b4) + _undulation(rng, w, 0.012 * h)
  ys = [y0, y1, y2, y3, y4, y5]
  for k in range(1, len(ys)):
    ys[k] = np.maximum(ys[k], ys[k - 1] + 3.0).astype(np.float32)
  kind = rng.choice(3, p=[0.6, 0.2, 0.2])   # rectangle, side bars, sector
  fov = np.ones((h, w), bool)
  cols = (0, w)
  if kind == 1:
    margin = int(rng.uniform(0.04, 0.12) * w)
    off = int(rng.integers(-margin // 2, margin // 2 + 1))
    cols = (max(0, margin + off), min(w, w - margin + off))
    fov[:, :cols[0]] = False
    fov[:, cols[1]:] = False
  elif kind == 2:
    half = np.radians(rng.uniform(28, 40))
    cx = w / 2.0
    # Apex above the image so that the top arc is about 55-75% of the width.
    r0 = rng.uniform(0.28, 0.38) * w / np.sin(half)
    ap = -r0 * np.cos(half) * rng.uniform(0.7, 0.9)
    yy = np.arange(h, dtype=np.float32)[:, None] - ap
    xx = np.arange(w, dtype=np.float32)[None, :] - cx
    rad2 = yy * yy + xx * xx
    fov = (np.abs(xx) <= yy * np.tan(half)) & (rad2 >= (-ap + 2) ** 2)
    fov &= rad2 <= (h - ap - 1) ** 2
    cols = (int(cx - (h - ap) * np.tan(half) * 0.8), int(cx + (h - ap) * np.tan(half) * 0.8))
    cols = (max(0, cols[0]), min(w, cols[1]))
  return _Layout(h, w, ys, fov, cols)


# ----------------------------------------------------------------------------
# Lesion geometry.


@dataclasses.dataclass
class _Lesion:
  """A lesion's geometry (radial table, centre) and appearance parameters."""
  label: str
  shape: str
  posterior: str
  table: np.ndarray      # r(theta) on _N_THETA angles in [-pi, pi), px
  cy: float
  cx: float
  contrast: float        # interior echogenicity / surrounding
  edge: float            # intensity transition width, px
  halo: float            # echogenic halo strength (0 = none)
  capsule: float         # thin echogenic capsule strength (0 = none)
  edge_shadows: bool
  calcs: int
  post_strength: float
  post_length: float


def _radial_table(rng: np.random.Generator, shape: str, aspect: float, angle: float) -> np.ndarray:
  """Unit-scale r(theta) (ellipse with semi-axes 1 x aspect, perturbed)."""
  th = np.linspace(-np.pi, np.pi, _N_THETA, endpoint=False)
  phi = th - angle
  rx, ry = 1.0, aspect
  r = rx * ry / np.sqrt((ry * np.cos(phi)) ** 2 + (rx * np.sin(phi)) ** 2)
  pert = np.zeros_like(th)
  if shape == "oval":
    for k in range(2, 5):
      pert += rng.uniform(0, 0.035) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.3:                              # gently lobulated
      k = int(rng.integers(2, 4))
      pert += rng.uniform(0.04, 0.08) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
  else:
    amp = rng.uniform(0.10, 0.22)
    for k in range(2, 14):
      pert += amp / k ** 0.9 * rng.standard_normal() * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    for k in range(14, 28):                             # angular / micro-lobulated margin
      pert += rng.uniform(0, 0.012) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
  r = r * np.clip(1.0 + pert, 0.35, None)
  if shape == "irregular" and rng.random() < 0.75:        # spicules
    for _ in range(int(rng.integers(3, 15))):
      c = rng.uniform(-np.pi, np.pi)
      width = rng.uniform(0.03, 0.09)
      height = rng.uniform(0.12, 0.55)
      d = np.abs(np.angle(np.exp(1j * (th - c))))
      r = r + height * np.mean(r) * np.clip(1 - d / width, 0, None) ** 1.5
  return r


def _table_diameter(table: np.ndarray) -> float:
  """Max Feret diameter of the closed curve r(theta): its largest width over
  90 directions (relative error below 2e-4)."""
  th = np.linspace(-np.pi, np.pi, _N_THETA, endpoint=False)
  py, px = table * np.sin(th), table * np.cos(th)
  phi = np.linspace(0, np.pi, 90, endpoint=False)[:, None]
  proj = px[None, :] * np.cos(phi) + py[None, :] * np.sin(phi)
  return float((proj.max(axis=1) - proj.min(axis=1)).max())


def _rasterise(table: np.ndarray, cy: float, cx: float, h: int, w: int,
               pad: float) -> tuple[tuple[int, int, int, int], np.ndarray]:
  """Bounding box (y0, y1, x0, x1) and signed distance t = r(theta) - rho on it."""
  rmax = float(table.max()) + pad
  y0, y1 = int(np.floor(cy - rmax)), int(np.ceil(cy + rmax)) + 1
  x0, x1 = int(np.floor(cx - rmax)), int(np.ceil(cx + rmax)) + 1
  y0, x0, y1, x1 = max(0, y0), max(0, x0), min(h, y1), min(w, x1)
  yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
  xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
  rho = np.sqrt(yy * yy + xx * xx)
  idx = (np.arctan2(yy, xx) + np.pi) * (_N_THETA / (2 * np.pi))
  i0 = np.floor(idx).astype(np.int64)
  f = (idx - i0).astype(np.float32)
  i0 %= _N_THETA
  tab = table.astype(np.float32)
  r = tab[i0] * (1 - f) + tab[(i0 + 1) % _N_THETA] * f
  return (y0, y1, x0, x1), r - rho


def _lesion(rng: np.random.Generator, label: str, lay: _Layout) -> _Lesion:
  """Draws shape, size, position (inside the image and FOV) and appearance."""
  h, w = lay.h, lay.w
  if label == "benign":
    shape = "irregular" if rng.random() < 0.10 else "oval"
    posterior = str(rng.choice(["enhancement", "none", "shadowing"], p=[0.5, 0.4, 0.1]))
  else:
    shape = "oval" if rng.random() < 0.12 else "irregular"
    posterior = str(rng.choice(["shadowing", "none", "enhancement"], p=[0.6, 0.28, 0.12]))
  if shape == "oval":
    aspect = rng.uniform(0.45, 0.85)                     # height / width: wider than tall
    angle = rng.uniform(-0.25, 0.25)
  else:
    aspect = rng.uniform(0.75, 1.5) if label == "malignant" else rng.uniform(0.6, 1.0)
    angle = rng.uniform(-0.35, 0.35)
  table = _radial_table(rng, shape, aspect, angle)
  # Longest axis target: a fixed share below the small-tumour threshold.
  if rng.random() < P_SMALL:
    target = rng.uniform(15.0, SMALL_AXIS_PX - 3.0)
  else:
    target = rng.uniform(SMALL_AXIS_PX + 3.0, max(0.45 * w, SMALL_AXIS_PX + 15.0))
  table = table * (target / _table_diameter(table))
  th = np.linspace(-np.pi, np.pi, _N_THETA, endpoint=False)
  top_ext = float((table * -np.sin(th)).max())          # rows above the centre
  bot_ext = float((table * np.sin(th)).max())
  left_ext = float((table * -np.cos(th)).max())
  right_ext = float((table * np.cos(th)).max())
  skin = float(lay.y[1].max()) + 4.0
  room = (h - 4.0) - skin
  if top_ext + bot_ext > 0.92 * room:                   # too tall for this image
    s = 0.92 * room / (top_ext + bot_ext)
    table, top_ext, bot_ext, left_ext, right_ext = (
        table * s, top_ext * s, bot_ext * s, left_ext * s, right_ext * s)
  # Place: prefer the fibroglandular layer, then anywhere below the skin; the
  # lesion must lie wholly inside the image and the field of view.
  cy = cx = 0.0
  placed = False
  for _ in range(60):
    for attempt in range(30):
      lo_x, hi_x = lay.fov_cols[0] + left_ext + 2, lay.fov_cols[1] - right_ext - 3
      if hi_x <= lo_x:
        break
      cx = rng.uniform(lo_x, hi_x)
      xi = int(np.clip(cx, 0, w - 1))
      if attempt < 20:   # in the breast: centre in the gland, above the muscle
        lo = lay.y[2][xi] - 0.3 * (lay.y[2][xi] - lay.y[1][xi])
        hi, deepest = lay.y[3][xi], min(h - 4.0, lay.y[4][xi] + 5.0) - bot_ext
      else:
        lo, hi, deepest = skin, h, h - 4.0 - bot_ext
      cy = float(np.clip(rng.uniform(lo, hi), skin + top_ext, deepest))
      if not (cx - left_ext >= 1 and cx + right_ext <= w - 2 and cy - top_ext >= skin - 0.5
              and cy + bot_ext <= h - 3):
        continue
      box, t = _rasterise(table, cy, cx, h, w, 1.0)
      inside = t > 0
      if inside.any() and not (inside & ~lay.fov[box[0]:box[1], box[2]:box[3]]).any():
        placed = True
        break
    if placed:
      break
    table, top_ext, bot_ext, left_ext, right_ext = (     # does not fit: shrink
        table * 0.85, top_ext * 0.85, bot_ext * 0.85, left_ext * 0.85, right_ext * 0.85)
  if not placed:
    raise RuntimeError("could not place the lesion inside the field of view")
  if label == "malignant":
    contrast = rng.uniform(0.12, 0.5)
  else:
    contrast = rng.uniform(0.03, 0.12) if rng.random() < 0.3 else rng.uniform(0.12, 0.55)
  if rng.random() < 0.15:                                # low-contrast lesion
    contrast = rng.uniform(0.55, 0.75)
  mal = shape == "irregular"
  return _Lesion(
      label=label, shape=shape, posterior=posterior, table=table, cy=cy, cx=cx,
      contrast=contrast,
      edge=rng.uniform(2.0, 5.0) if mal else rng.uniform(0.8, 1.8),
      halo=rng.uniform(0.3, 0.8) if (mal and rng.random() < 0.4) else 0.0,
      capsule=rng.uniform(0.3, 0.8) if (not mal and rng.random() < 0.35) else 0.0,
      edge_shadows=(not mal) and rng.random() < 0.3,
      calcs=int(rng.integers(2, 9)) if (label == "malignant" and rng.random() < 0.3) else 0,
      post_strength=(rng.uniform(0.4, 0.85) if posterior == "shadowing"
                     else rng.uniform(0.5, 1.2) if posterior == "enhancement" else 0.0),
      post_length=rng.uniform(0.6, 2.0),
  )


# ----------------------------------------------------------------------------
# Tissue echogenicity.


def _tissue(rng: np.random.Generator, lay: _Layout) -> np.ndarray:
  """Echogenicity map [H, W] of the layered breast tissue (no lesion)."""
  h, w = lay.h, lay.w
  y0, y1, y2, y3, y4, y5 = lay.y
  v_gel = 0.01
  v_dermis = rng.uniform(0.7, 1.0)
  v_fat = rng.uniform(0.22, 0.34)
  v_gland = rng.uniform(0.65, 1.0)
  v_rfat = rng.uniform(0.2, 0.32)
  v_muscle = rng.uniform(0.35, 0.5)
  v_chest = rng.uniform(0.15, 0.3)
  e = np.full((h, w), v_gel, np.float32)
  amp = np.zeros((h, w), np.float32)
  for y, dv, da, tau in [(y0, v_dermis - v_gel, 0.15, 1.0), (y1, v_fat - v_dermis, 0.05, 2.0),
                         (y2, v_gland - v_fat, 0.25, 5.0), (y3, v_rfat - v_gland, -0.25, 4.0),
                         (y4, v_muscle - v_rfat, 0.0, 2.0), (y5, v_chest - v_muscle, 0.1, 3.0)]:
    _add_step(e, y, tau, dv)
    _add_step(amp, y, tau, da)
  # Heterogeneous tissue texture (two scales) modulating the layer values.
  tex = _smooth_noise(rng, h, w, ((rng.uniform(18, 40), 0.7), (7.0, 0.45)))
  e *= np.clip(1.0 + (amp + 0.08) * tex, 0.25, None)
  rows = np.arange(h, dtype=np.float32)[:, None]
  # Epidermis: bright line just under the gel.
  r1 = int(min(h, np.ceil(y0.max()) + 6))
  e[:r1] += rng.uniform(0.8, 1.5) * np.exp(-((rows[:r1] - y0[None, :] - 1.0) / 1.3) ** 2)
  # Cooper's ligaments: oblique echogenic bands from the skin to the gland.
  for _ in range(int(rng.integers(2, 7))):
    xa = rng.uniform(-0.1, 1.0) * w
    span = rng.uniform(0.1, 0.35) * w * rng.choice([-1, 1])
    xs = np.arange(int(max(0, min(xa, xa + span))), int(min(w, max(xa, xa + span))))
    if xs.size < 4:
      continue
    frac = np.clip((xs - xa) / span, 0, 1).astype(np.float32)
    frac = frac * frac * (3 - 2 * frac)
    yc = y1[xs] + (y2[xs] - y1[xs]) * frac
    ra, rb = int(max(0, np.floor(yc.min()) - 4)), int(min(h, np.ceil(yc.max()) + 5))
    if rb <= ra:
      continue
    band = np.exp(-((rows[ra:rb] - yc[None, :]) / rng.uniform(1.5, 3.0)) ** 2)
    broken = np.clip(0.5 + _undulation(rng, xs.size, 1.2), 0, 1)   # interrupted
    e[ra:rb, xs] += rng.uniform(0.2, 0.5) * band * broken[None, :]
  # Pectoral muscle: oblique echogenic striations, bright fascia lines.
  ra, rb = int(max(0, np.floor(y4.min()) - 2)), int(min(h, np.ceil(y5.max()) + 3))
  if rb > ra:
    r = rows[ra:rb]
    inside = np.clip(r - y4[None, :], 0, 1) * np.clip(y5[None, :] - r, 0, 1)
    period = rng.uniform(6, 12)
    slope = rng.uniform(-0.15, 0.15)
    ph = (r - y4[None, :] - slope * np.arange(w, dtype=np.float32)[None, :]) / period
    stri = (0.5 + 0.5 * np.cos(2 * np.pi * ph)) ** 6
    stri *= np.clip(0.6 + 0.5 * _undulation(rng, w, 1.0), 0, 1)[None, :]
    e[ra:rb] += inside * rng.uniform(0.15, 0.4) * stri
    for yb in (y4, y5):
      e[ra:rb] += rng.uniform(0.3, 0.6) * np.exp(-((r - yb[None, :]) / rng.uniform(1.8, 3.0)) ** 2)
  # Rib in the chest wall: bright curved anterior cortex, full shadow behind.
  if y5.mean() < h - 35 and rng.random() < 0.2:
    cx = rng.uniform(0.2, 0.8) * w
    rx = rng.uniform(0.06, 0.12) * w
    ry = rng.uniform(0.5, 0.9) * rx
    xs = np.arange(w, dtype=np.float32)
    u = np.clip(1 - ((xs - cx) / rx) ** 2, 0, 1)
    arc = float(y5[int(cx)]) + rng.uniform(8, 18) + ry * (1 - np.sqrt(u))
    col = u * u * (3 - 2 * u)                            # soft-sided shadow
    r0 = int(max(0, np.floor(arc.min()) - 4))
    if r0 < h:
      d = rows[r0:] - arc[None, :]
      e[r0:] *= 1 - rng.uniform(0.6, 0.85) * col[None, :] * np.clip(d / 4.0, 0, 1)
      e[r0:] += rng.uniform(0.6, 1.2) * np.sqrt(u)[None, :] * np.exp(-(d / 2.5) ** 2)
  return e


def _lookalikes(rng: np.random.Generator, e: np.ndarray, lay: _Layout,
                keep_out: tuple[float, float, float, float] | None) -> None:
  """Hypo-echoic structures that are not tumours (not in the mask)."""
  h, w = lay.h, lay.w

  def free(cy: float, cx: float, r: float) -> bool:
    if keep_out is None:
      return True
    y0, y1, x0, x1 = keep_out
    return cy + r < y0 - 6 or cy - r > y1 + 6 or cx + r < x0 - 6 or cx - r > x1 + 6

  # Fat lobules in the subcutaneous fat, bounded by echogenic septa.
  for _ in range(int(rng.integers(2, 8))):
    cx = rng.uniform(0, w)
    xi = int(cx)
    th = float(lay.y[2][xi] - lay.y[1][xi])
    if th < 12:
      continue
    ry = rng.uniform(0.25, 0.45) * th
    rx = ry * rng.uniform(1.3, 3.0)
    cy = float(lay.y[1][xi] + rng.uniform(0.3, 0.7) * th)
    if free(cy, cx, rx):
      _ellipse_blob(e, cy, cx, ry, rx, rng.uniform(-0.3, 0.3), rng.uniform(0.6, 0.9),
                    rim=rng.uniform(0.3, 0.9))
  # Fat islands in the fibroglandular layer: oval, fat-like, no posterior feature.
  n_islands = int(rng.choice([0, 1, 2, 3], p=[0.3, 0.35, 0.25, 0.1]))
  for _ in range(n_islands):
    cx = rng.uniform(0.1, 0.9) * w
    xi = int(cx)
    th = float(lay.y[3][xi] - lay.y[2][xi])
    if th < 20:
      continue
    rx = rng.uniform(0.05, 0.14) * w
    ry = min(rx * rng.uniform(0.35, 0.7), 0.4 * th)
    cy = float(lay.y[2][xi] + rng.uniform(0.3, 0.7) * th)
    if free(cy, cx, rx):
      _ellipse_blob(e, cy, cx, ry, rx, rng.uniform(-0.2, 0.2), rng.uniform(0.3, 0.55),
                    rim=rng.uniform(0.0, 0.5))
  # Ducts: long thin anechoic tubes roughly parallel to the skin.
  for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.45, 0.3, 0.15, 0.1]))):
    cx = rng.uniform(0.15, 0.85) * w
    xi = int(cx)
    cy = float(lay.y[2][xi] + rng.uniform(0.2, 0.8) * (lay.y[3][xi] - lay.y[2][xi]))
    rx = rng.uniform(0.08, 0.25) * w
    ry = rng.uniform(3.0, 7.0)
    if free(cy, cx, rx):
      _ellipse_blob(e, cy, cx, ry, rx, rng.uniform(-0.25, 0.25), rng.uniform(0.1, 0.4),
                    rim=rng.uniform(0.1, 0.4), rim_w=1.0)


def _draw_lesion(rng: np.random.Generator, e: np.ndarray, les: _Lesion, lay: _Layout
                 ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
  """In place on ``e``; returns the full-size uint8 mask and its bbox."""
  h, w = lay.h, lay.w
  pad = max(les.edge, 8.0) + 4.0
  (y0, y1, x0, x1), t = _rasterise(les.table, les.cy, les.cx, h, w, pad)
  inside = t > 0
  # The continuous region is star-shaped, hence connected; on the pixel grid
  # the tips of thin spicules can come loose. Keep the main region only.
  lab, n = ndi.label(inside)
  if n > 1:
    main = np.argmax(np.bincount(lab.ravel())[1:]) + 1
    loose = inside & (lab != main)
    inside = lab == main
    t = np.where(loose, np.float32(-0.5 * les.edge), t)
  mask = np.zeros((h, w), np.uint8)
  mask[y0:y1, x0:x1] = inside
  sub = e[y0:y1, x0:x1]
  ring = (t < 0) & (t > -pad)
  ref = float(sub[ring].mean()) if ring.any() else float(sub.mean())
  # Interior: speckled, mildly heterogeneous, darker than the surroundings.
  het = 1.0 + 0.25 * _smooth_noise(rng, y1 - y0, x1 - x0, ((rng.uniform(4, 12), 1.0),))
  val = np.float32(les.contrast * ref) * np.clip(het, 0.3, None)
  win = np.clip(t / les.edge + 0.5, 0.0, 1.0)
  out = sub * (1 - win) + val * win
  if les.halo:
    hw = rng.uniform(3.0, 7.0)
    out *= 1.0 + les.halo * np.clip(1 - np.abs(t + hw) / hw, 0, 1)
  if les.capsule:
    out += les.capsule * ref * np.exp(-((t + 0.8) / 1.0) ** 2)
  if les.calcs:                                         # micro-calcifications
    ys, xs = np.nonzero(t > 2.0)
    if ys.size:
      pick = rng.integers(0, ys.size, les.calcs)
      for yi, xi in zip(ys[pick], xs[pick]):
        out[max(0, yi - 1):yi + 2, xi] += rng.uniform(1.0, 2.5) * ref
        out[yi, max(0, xi - 1):xi + 2] += rng.uniform(0.5, 1.5) * ref
  e[y0:y1, x0:x1] = out
  # Posterior acoustic features, column by column below the lesion's bottom.
  cols = inside.any(axis=0)
  if les.posterior != "none" or les.edge_shadows:
    ys = np.arange(y1 - y0)[:, None]
    bottom = np.where(cols, (ys * inside).max(axis=0), -1)
    xs_in = np.nonzero(cols)[0]
    xl, xr = xs_in.min(), xs_in.max()
    height = float(np.ptp(np.nonzero(inside.any(axis=1))[0]) + 1)
    full_bottom = np.full(w, les.cy, np.float32)
    full_bottom[x0:x1][cols] = y0 + bottom[cols]
    # Column profile: occupancy, shrunk a little and softened at the sides.
    prof = np.zeros(w, np.float32)
    prof[x0:x1] = cols
    prof = ndi.gaussian_filter1d(prof, max(1.0, 0.08 * (xr - xl + 1)))
    prof = np.clip((prof - 0.2) / 0.6, 0, 1)
    rb = int(np.floor(full_bottom[x0 + xl:x0 + xr + 1].min()))
    rows = np.arange(rb, h, dtype=np.float32)[:, None]
    d = rows - full_bottom[None, :]
    onset = np.clip(d / 4.0, 0, 1)
    if les.posterior == "shadowing":
      fac = 1.0 - les.post_strength * prof[None, :] * onset * np.exp(-d / (4 * h))
      e[rb:] *= fac
    elif les.posterior == "enhancement":
      decay = np.exp(-d / (les.post_length * height + 10.0))
      e[rb:] *= 1.0 + les.post_strength * prof[None, :] * onset * decay
    if les.edge_shadows:
      xs = np.arange(w, dtype=np.float32)[None, :]
      ex = 0.0
      for xe in (x0 + xl, x0 + xr):
        ex = ex + np.exp(-((xs - xe) / 2.0) ** 2)
      e[rb:] *= 1.0 - 0.45 * np.clip(ex, 0, 1) * onset * np.exp(-d / (1.5 * height + 20.0))
  return mask, (y0, y1, x0, x1)


def _speckle_power(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """|z|^2 / mean for a low-pass complex circular Gaussian field z.

  The magnitude |z| of such a field is Rayleigh distributed (fully developed
  speckle). The field is drawn and filtered at half the lateral resolution
  (lateral resolution is the coarser one in B-mode) and interpolated back
  linearly, the in-between samples rescaled to unit variance.
  """
  sa, sl = rng.uniform(0.7, 1.1), rng.uniform(0.9, 1.5)   # axial, lateral/2 (px)
  wh = w // 2 + 2
  z = rng.standard_normal((2, h, wh), dtype=np.float32)
  z = ndi.gaussian_filter(z, (0.0, sa, sl), truncate=2.5)
  rho = np.exp(-1.0 / (4.0 * sl * sl))                   # lag-1 correlation
  full = np.empty((2, h, 2 * wh - 1), np.float32)
  full[..., 0::2] = z
  full[..., 1::2] = (z[..., :-1] + z[..., 1:]) * np.float32(np.sqrt(0.5 / (1.0 + rho)))
  re, im = full[0, :, :w], full[1, :, :w]
  pw = re * re
  pw += im * im
  pw *= np.float32(1.0 / pw.mean())
  return pw


# ----------------------------------------------------------------------------
# Public entry point.


def generate_example(seed: int, index: int) -> SyntheticExample:
  """The ``index``-th example of the dataset with seed ``seed`` (deterministic)."""

  def rng(stage: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stage])

  meta = rng(_S_META)
  label = LABELS[int(meta.choice(3, p=LABEL_PROBS))]
  h = int(meta.integers(HEIGHT_RANGE[0], HEIGHT_RANGE[1] + 1))
  w = int(meta.integers(max(WIDTH_RANGE[0], int(0.95 * h)), WIDTH_RANGE[1] + 1))
  lay = _layout(rng(_S_LAYOUT), h, w)
  les = _lesion(rng(_S_LESION), label, lay) if label != "normal" else None
  e = _tissue(rng(_S_TEXTURE), lay)
  keep_out = None
  if les is not None:
    r = float(les.table.max())
    keep_out = (les.cy - r, les.cy + r, les.cx - r, les.cx + r)
  look = rng(_S_LOOKALIKE)
  _lookalikes(look, e, lay, keep_out)
  # Contact shadows from the skin (unrelated to any lesion).
  if look.random() < 0.1:
    xs = np.arange(w, dtype=np.float32)
    c, sw = look.uniform(0, w), look.uniform(6, 25)
    e *= (1 - look.uniform(0.3, 0.6) * np.exp(-((xs - c) / sw) ** 2))[None, :]
  if les is not None:
    mask, _ = _draw_lesion(rng(_S_DRAW), e, les, lay)
  else:
    mask = np.zeros((h, w), np.uint8)
  # Depth attenuation with TGC and a focal zone, mild lateral fall-off.
  sp = rng(_S_SPECKLE)
  depth = np.arange(h, dtype=np.float32) / h
  gain = np.exp(-sp.uniform(0.3, 1.3) * depth)
  gain *= 1 + sp.uniform(0.0, 0.25) * np.exp(-((depth - sp.uniform(0.3, 0.7)) / 0.15) ** 2)
  xs = np.arange(w, dtype=np.float32) / w
  lat = 1 - sp.uniform(0.0, 0.3) * np.abs(2 * xs - 1) ** 3
  # Fully developed speckle: |low-pass complex Gaussian| is Rayleigh.
  env2 = _speckle_power(sp, h, w)
  env2 *= e * e
  env2 *= (gain * gain)[:, None]
  env2 *= (lat * lat)[None, :]
  # Log compression: 10 log10(power) over a 40-55 dB dynamic range.
  dr = sp.uniform(40.0, 55.0)
  top = sp.uniform(15.0, 20.0)
  img = (10.0 * np.log10(env2 + 1e-10) - (top - dr)) * np.float32(255.0 / dr)
  img = np.clip(img, 0, 255).astype(np.uint8)
  img[~lay.fov] = 0
  longest = max_feret_diameter(mask) if les is not None else 0.0
  return SyntheticExample(
      image=img, mask=mask, label=label,
      lesion_shape=les.shape if les is not None else "none",
      longest_axis_px=float(longest),
      posterior=les.posterior if les is not None else "none")
