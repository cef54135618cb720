"""Blocks shared by several models. Layout is NHWC throughout."""
from __future__ import annotations

from typing import Any, Callable

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from busjax.ops.conv import conv2d, conv2d_affine_relu, conv2d_transpose, resolve_backend


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.9 of running stats, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def _bn_stats(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Per-channel batch mean and (biased) variance of ``[..., C]``, as Flax's
  BatchNorm computes them (``E[x^2] - E[x]^2`` in float32, clipped at 0)."""
  axes = tuple(range(x.ndim - 1))
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = jnp.mean(x, axes)
  return mean, jnp.maximum(0.0, jnp.mean(jnp.square(x), axes) - jnp.square(mean))


def _bn_coefficients(mean, var, scale, bias, eps):
  """Per-channel ``a, c`` with ``BN(x) = x * a + c``. The optimisation barrier
  makes XLA compute them once per channel instead of fusing the rsqrt into
  (and re-evaluating it for every element of) the full-size loop."""
  a = jax.lax.rsqrt(var + eps) * scale
  return jax.lax.optimization_barrier((a, bias - mean * a))


def _bn_relu_apply(x, mean, var, scale, bias, eps):
  a, c = _bn_coefficients(mean, var, scale, bias, eps)
  return jax.nn.relu(x * a + c).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_relu_train(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray,
                          eps: float) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Training-mode BatchNorm (batch statistics) then ReLU, with a hand-written VJP.

  x ``[..., C]``, scale and bias ``[C]`` -> ``(y [..., C], mean [C], var [C])``:
  ``y = relu((x - mean) * rsqrt(var + eps) * scale + bias)``, the values of
  ``nn.relu(nn.BatchNorm(...)(x))`` up to float rounding (computed as
  ``x * a + c`` with per-channel ``a``, ``c``). ``mean`` and ``var`` (biased)
  feed the running averages and carry no gradient: their cotangents are
  ignored, so use them under ``stop_gradient``.

  The VJP makes two passes over x and the output gradient: one for the two
  per-channel sums, one for ``dx = a * g' + k2 * x + k3`` (``g'`` the gradient
  masked by the ReLU, recomputed from x; ``k2``, ``k3`` per channel).
  Autodiff of the composition keeps ``x - mean`` and the normalised
  activations as extra full-size buffers and makes more passes.
  """
  mean, var = _bn_stats(x)
  return _bn_relu_apply(x, mean, var, scale, bias, eps), mean, var


def _bn_relu_fwd(x, scale, bias, eps):
  mean, var = _bn_stats(x)
  return (_bn_relu_apply(x, mean, var, scale, bias, eps), mean, var), (x, mean, var, scale, bias)


def _bn_relu_bwd(eps, res, cts):
  x, mean, var, scale, bias = res
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  a, c = _bn_coefficients(mean, var, scale, bias, eps)
  gz = jnp.where(xf * a + c > 0, cts[0].astype(xf.dtype), 0.0)
  dbias = jnp.sum(gz, axes)
  rstd = jax.lax.rsqrt(var + eps)
  dscale = (jnp.sum(gz * xf, axes) - mean * dbias) * rstd        # sum(g' * xhat)
  # dx = a * (g' - dbias / n - xhat * dscale / n), xhat = (x - mean) * rstd
  k2 = -a * dscale * rstd / n
  k3 = -a * dbias / n - k2 * mean
  a, k2, k3 = jax.lax.optimization_barrier((a, k2, k3))
  dx = a * gz + k2 * xf + k3
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


batch_norm_relu_train.defvjp(_bn_relu_fwd, _bn_relu_bwd)


class BatchNormReLU(nn.Module):
  """``nn.relu(batch_norm(train)(x))`` with the same variables and values
  (up to float rounding), trained through :func:`batch_norm_relu_train`.

  Variables as ``nn.BatchNorm``'s: params ``scale``, ``bias``; batch_stats
  ``mean``, ``var`` (PyTorch's defaults as :func:`batch_norm`: momentum 0.9
  of the running statistics, eps 1e-5; the running variance is the biased
  one, as Flax keeps it). ``[..., C] -> [..., C]``.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5

  def folded(self) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Inference: per-channel ``(a, c)`` with ``BN(x) = x * a + c`` from the
    running statistics (the module must hold its variables)."""
    get = self.get_variable
    return _bn_coefficients(get("batch_stats", "mean"), get("batch_stats", "var"),
                            get("params", "scale"), get("params", "bias"), self.epsilon)

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    c = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), c)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), c)
    scale = self.param("scale", nn.initializers.ones_init(), c)
    bias = self.param("bias", nn.initializers.zeros_init(), c)
    if not train:
      return _bn_relu_apply(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon)
    y, mean, var = batch_norm_relu_train(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


def compute_cast(w: jnp.ndarray, dtype: Any) -> jnp.ndarray:
  """``w`` in the activations' ``dtype`` when that is a narrower float
  (bfloat16, float16: the mixed-precision compute dtype), else unchanged."""
  dtype = jnp.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < jnp.dtype(w.dtype).itemsize:
    return w.astype(dtype)
  return w


class Conv(nn.Module):
  """k x k convolution: ``[B,H,W,C] -> [B,Ho,Wo,features]``, NHWC.

  The function and parameters (``kernel [k, k, C, features]``, ``bias``) of
  ``nn.Conv(features, (k, k), strides=strides, padding=padding,
  kernel_dilation=dilation, use_bias=use_bias)``, computed by
  :func:`busjax.ops.conv.conv2d`, which on CPU runs oneDNN's convolution
  kernels (forward, input and weight gradients) instead of XLA's: XLA CPU's
  weight gradient is 3-17x slower (issue 7). ``backend`` is ``"auto"``
  (oneDNN on a single CPU device when it is installed, XLA elsewhere),
  ``"xla"`` or ``"onednn"``. ``padding``: ``"SAME"``, ``"VALID"`` or
  ``((top, bottom), (left, right))``.

  Mixed precision: the activations' dtype is the compute dtype. With
  bfloat16 (or float16) ``x`` the float32 kernel and bias are cast to it for
  the call (parameters, and so their gradients and the optimiser state, stay
  float32); with float32 ``x`` nothing changes.
  """
  features: int
  kernel: int = 3
  strides: int = 1
  padding: Any = "SAME"
  dilation: int = 1
  use_bias: bool = True
  backend: str = "auto"
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jnp.ndarray, *,
               affine_relu: tuple[jnp.ndarray, jnp.ndarray] | None = None) -> jnp.ndarray:
    """``conv(x)``, or with ``affine_relu=(scale, shift)`` (each ``[features]``)
    ``relu(conv(x) * scale + shift)``, which oneDNN runs as one kernel at
    inference (a folded BatchNorm+ReLU)."""
    k = self.kernel
    w = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
    bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
    w = compute_cast(w, x.dtype)
    padding = self.padding if isinstance(self.padding, str) else tuple(map(tuple, self.padding))
    kw = dict(stride=self.strides, padding=padding, dilation=self.dilation, backend=self.backend)
    if affine_relu is not None:
      scale, shift = affine_relu
      if bias is not None:  # (conv + bias) * scale + shift
        shift = shift + bias * scale
      return conv2d_affine_relu(x, w, scale, shift, **kw)
    y = conv2d(x, w, **kw)
    return y if bias is None else y + bias.astype(y.dtype)


class ConvBNReLU(nn.Module):
  """Conv (no bias) -> BatchNorm -> ReLU. ``[B,H,W,C] -> [B,H',W',features]``.

  The convolution is :class:`Conv` (``nn.Conv``'s parameters;
  ``conv_backend`` picks its kernels), BatchNorm and ReLU are
  :class:`BatchNormReLU` (``nn.BatchNorm``'s variables). At inference on
  oneDNN the three run as one kernel (BatchNorm and ReLU as post-ops).
  """
  features: int
  kernel: int = 3
  strides: int = 1
  dilation: int = 1
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    conv = Conv(self.features, self.kernel, self.strides, dilation=self.dilation, use_bias=False,
                backend=self.conv_backend, name="conv")
    bn = BatchNormReLU(name="bn")
    if (train or self.is_initializing()
        or resolve_backend(self.conv_backend, x.dtype) != "onednn"):
      return bn(conv(x), train=train)
    # Inference on oneDNN: BatchNorm's per-channel affine map and the ReLU as
    # the convolution's post-ops: one kernel writes the block's output.
    return conv(x, affine_relu=bn.folded())


class DoubleConv(nn.Module):
  """Two (3x3 conv, BN, ReLU): the U-Net stage. ``[B,H,W,C] -> [B,H,W,features]``."""
  features: int
  conv_backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    x = ConvBNReLU(self.features, conv_backend=self.conv_backend, name="c1")(x, train=train)
    return ConvBNReLU(self.features, conv_backend=self.conv_backend, name="c2")(x, train=train)


def max_pool2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 max-pool, stride 2 (floor on odd sizes). ``[B,H,W,C] -> [B,H//2,W//2,C]``.

  Written as a reshape and a max over the two window axes rather than
  ``nn.max_pool`` (``lax.reduce_window``): the forward values are identical,
  but the gradient of a plain reduction fuses into neighbouring element-wise
  work, while ``reduce_window``'s gradient (select-and-scatter with iotas the
  size of the activation) cost about a tenth of the width-16 U-Net train step
  on XLA CPU (``benchmarks/vs_pytorch.py``, issue 7). Ties (e.g. four zeros
  after a ReLU) share the gradient equally instead of giving it all to the
  first maximum; the gradient reaching a ReLU's zero output is discarded by
  the ReLU either way.
  """
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class UpConv2x2(nn.Module):
  """Transposed convolution, kernel 2x2, stride 2: ``[B,H,W,C] -> [B,2H,2W,features]``.

  The same function and parameters (``kernel [2, 2, C, features]``, ``bias``)
  as ``nn.ConvTranspose(features, (2, 2), strides=(2, 2))``, so checkpoints
  and parameter counts are unchanged. With stride equal to the kernel the
  output windows do not overlap, so the layer is one matrix product per input
  pixel followed by depth-to-space; written that way instead of XLA's
  input-dilated convolution, whose weight gradient convolves a 3/4-zero
  input: 2.2x the width-64 U-Net train-step throughput on CPU (issue 7).
  Where ``backend`` resolves to oneDNN (:mod:`busjax.ops.conv`) it is
  oneDNN's transposed convolution instead, which writes the NHWC output
  directly (no depth-to-space copy) and has a fast weight gradient.
  """
  features: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", self.kernel_init, (2, 2, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    kernel, bias = compute_cast(kernel, x.dtype), compute_cast(bias, x.dtype)
    if resolve_backend(self.backend, jnp.promote_types(x.dtype, kernel.dtype)) == "onednn":
      b, h, w, _ = x.shape
      # The forward convolution whose input gradient this is: [2, 2, features, C].
      w_conv = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
      return conv2d_transpose(x, w_conv, (2 * h, 2 * w), stride=2, padding="VALID",
                              backend="onednn") + bias
    # nn.ConvTranspose (transpose_kernel=False) applies the spatially flipped kernel.
    y = jnp.einsum("bhwc,ijco->bhiwjo", x, kernel[::-1, ::-1])
    b, h, _, w, _, o = y.shape
    return y.reshape(b, 2 * h, 2 * w, o) + bias


def max_pool2_same(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 max-pool, stride 1, "SAME" padding: ``[B,H,W,C] -> [B,H,W,C]``.

  The values of ``nn.max_pool(x, (2, 2), strides=(1, 1), padding="SAME")``
  (windows ``x[i:i+2, j:j+2]``, beyond the bottom/right edge ignored) as the
  maximum of four shifted copies, whose gradient fuses (see :func:`max_pool2`).
  """
  p = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)), constant_values=-jnp.inf)
  h, w = x.shape[1:3]
  return jnp.maximum(jnp.maximum(p[:, :h, :w], p[:, 1:, :w]),
                     jnp.maximum(p[:, :h, 1:], p[:, 1:, 1:]))


def _shifted_sum(x: jnp.ndarray, w: jnp.ndarray, lo: int, hi: int) -> jnp.ndarray:
  """``sum_ij pad(x)[:, i:i+H, j:j+W] * w[i, j]``: x ``[B,H,W,C]``, w ``[k,k,C]``,
  ``pad`` adds ``lo`` before and ``hi`` after each spatial axis (one fused loop)."""
  k = w.shape[0]
  h, wd = x.shape[1:3]
  p = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  out = None
  for i in range(k):
    for j in range(k):
      term = p[:, i:i + h, j:j + wd] * w[i, j]
      out = term if out is None else out + term
  return out


@jax.custom_vjp
def depthwise_conv_same(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
  """Depthwise correlation, stride 1, "SAME" (lax's split: ``(k-1)//2`` before).

  x ``[B,H,W,C]``, w ``[k,k,C]`` -> ``[B,H,W,C]``. Custom VJP: the input
  gradient is the same shifted sum of the output gradient with the flipped
  kernel (one fused loop, where autodiff of the slices would materialise one
  padded copy per tap), and the kernel gradient is one reduction per tap.
  """
  k = w.shape[0]
  return _shifted_sum(x, w, (k - 1) // 2, k - 1 - (k - 1) // 2)


def _dw_fwd(x, w):
  return depthwise_conv_same(x, w), (x, w)


def _dw_bwd(res, g):
  x, w = res
  k = w.shape[0]
  lo, hi = (k - 1) // 2, k - 1 - (k - 1) // 2
  dx = _shifted_sum(g, w[::-1, ::-1], hi, lo)
  h, wd = x.shape[1:3]
  # The barrier keeps XLA from sharing these slices with the forward pass's
  # identical ones (shared slices are materialised, one full copy per tap).
  p = jax.lax.optimization_barrier(jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0))))
  dw = jnp.stack([jnp.stack([jnp.sum(p[:, i:i + h, j:j + wd] * g, axis=(0, 1, 2))
                             for j in range(k)]) for i in range(k)])
  return dx, dw.astype(w.dtype)


depthwise_conv_same.defvjp(_dw_fwd, _dw_bwd)


class DepthwiseConv(nn.Module):
  """Depthwise k x k convolution, stride 1, "SAME", no bias: ``[B,H,W,C] -> [B,H,W,C]``.

  The function and parameter (``kernel [k, k, 1, C]``) of ``nn.Conv(C, (k, k),
  feature_group_count=C, use_bias=False)``, computed by
  :func:`depthwise_conv_same` (shifted copies of the input times one weight
  per channel, with a hand-written VJP). XLA CPU runs a grouped convolution's
  weight gradient as a batch-grouped convolution at a small fraction of its
  dense rate; the shifted sums fuse (issue 7: RCA-IUnet's separable
  convolutions, 2.5x its train step).
  """
  kernel: int
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, c = self.kernel, x.shape[-1]
    w = self.param("kernel", self.kernel_init, (k, k, 1, c))
    if k == 1:
      return x * w[0, 0, 0]
    return depthwise_conv_same(x, w[:, :, 0].astype(x.dtype))


def _conv_transpose_same_lo(k: int, stride: int = 2) -> int:
  """Low-side padding of ``lax.conv_transpose(..., padding="SAME")`` (its
  ``_conv_transpose_padding``): the dilated input is padded by this before
  the stride-1 correlation with the kernel."""
  if stride > k - 1:
    return k - 1
  return -(-(k + stride - 2) // 2)


class ConvTranspose2x(nn.Module):
  """Transposed convolution, k x k kernel, stride 2, "SAME": ``[B,H,W,C] -> [B,2H,2W,features]``.

  The function and parameters (``kernel [k, k, C, features]``, ``bias``) of
  ``nn.ConvTranspose(features, (k, k), strides=(2, 2), padding="SAME")``,
  computed by sub-pixel decomposition: each of the four output phases
  ``y[2q+a, 2r+b]`` is a stride-1 convolution of the undilated input with the
  kernel taps of that phase (``kernel[ta::2, tb::2]``), then the phases are
  interleaved. XLA's input-dilated convolution multiplies 3/4 zeros and its
  weight gradient is slow on CPU (see :class:`UpConv2x2`, the k = 2 case).
  Where ``backend`` resolves to oneDNN (:mod:`busjax.ops.conv`) it is one
  oneDNN transposed convolution instead.
  """
  features: int
  kernel_size: int
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  backend: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k = self.kernel_size
    if k < 2:
      raise ValueError(f"ConvTranspose2x needs kernel_size >= 2, got {k}")
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
    lo = _conv_transpose_same_lo(k)
    b, h, w, _ = x.shape
    if resolve_backend(self.backend, jnp.promote_types(x.dtype, kernel.dtype)) == "onednn":
      # The stride-2 convolution whose input gradient this is: its window q
      # starts at 2q - (k - 1 - lo) of the output.
      p = (k - 1 - lo, lo - 1)
      y = conv2d_transpose(x, kernel[::-1, ::-1].transpose(0, 1, 3, 2), (2 * h, 2 * w),
                           stride=2, padding=(p, p), backend="onednn")
      if self.use_bias:
        y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
      return y

    def phase_taps(a: int) -> tuple[int, int, int]:
      """(first tap, number of taps, input offset d) of output phase a:
      ``y_a[q] = sum_j x[q + d + j] * kernel[t0 + 2j]``."""
      t0 = (lo - a) % 2
      return t0, len(range(t0, k, 2)), (a + t0 - lo) // 2

    rows = []
    for a in range(2):
      ta, na, da = phase_taps(a)
      cols = []
      for c in range(2):
        tb, nb, db = phase_taps(c)
        # Input window [q + d, q + d + n - 1] for q in [0, size): pad (negative = crop).
        xp = jax.lax.pad(x, jnp.zeros((), x.dtype),
                         ((0, 0, 0), (-da, da + na - 1, 0), (-db, db + nb - 1, 0), (0, 0, 0)))
        cols.append(jax.lax.conv_general_dilated(
            xp, kernel[ta::2, tb::2].astype(x.dtype), (1, 1), "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC")))
      rows.append(jnp.stack(cols, axis=3))          # [B, H, W, 2(b), F]
    y = jnp.stack(rows, axis=2)                      # [B, H, 2(a), W, 2(b), F]
    y = y.reshape(b, 2 * h, 2 * w, self.features)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return y
