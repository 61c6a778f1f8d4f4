"""NHWC 2-D convolution whose backward pass runs fast inside `nn.scan` on XLA:CPU.

Why this exists (issue 13, docs/BENCHMARKS.md "Scanned backward pass"): JAX differentiates
`lax.conv_general_dilated` into two convolutions with non-canonical dimension numbers,
`b01f_01oi->b01f` (input gradient: the kernel with in/out swapped) and `f01b_i01o->01bf` (kernel
gradient: batch and channels swapped). At the top level of a program XLA:CPU rewrites both into
the canonical `b01f_01io->b01f` form with explicit transposes and hands them to its fast
convolution library (YNNPACK / Eigen). Inside a while loop, which is what `nn.scan` over blocks
lowers to, that rewrite does not happen and the two gradients run on XLA's generic loop-nest
emitter: EDSR-lite's train step took 23x longer scanned than unrolled (8.6 s vs 0.49 s at batch 8).

`conv2d` therefore carries its own vjp for the common case (stride 1, no dilation, one group:
every 3x3 and 1x1 convolution of the scanned blocks) that states both gradients in the canonical
form itself, the same arithmetic XLA performs after its rewrite:

  dx = conv(dy, flip_hw(w) with in/out swapped)          padding (k - 1 - lo, h - h_out + lo)
  dw = conv(x^T, dy^T)^T   x^T = (C_in, H, W, B) as NHWC, dy^T = (H_out, W_out, B, C_out) as HWIO

For few output channels (k * k * C_out <= C_in: the 3x3 C -> 1 output convolution of the image
models, 1x1 projections to fewer channels) the kernel gradient is instead one product of x
(positions, C_in) with the k * k shifted copies of dy, contracting the positions of both
(`_kernel_grad_by_taps`): the shifted copies are smaller than x^T, which for EDSR-lite's and
RDST-E's 96x96 output convolution was a 70 MB transposed copy (its forward + backward alone:
~100 -> ~50 ms; docs/BENCHMARKS.md, "Projections without transposed copies").

The rule is chosen per platform when the program is lowered (`lax.platform_dependent`): on CPU
the forms above, elsewhere (GPU, TPU) JAX's own transpose rule, so accelerators compile exactly
what they did before. Results equal JAX's gradients on CPU (bit for bit in the canonical form,
to float32 rounding by taps; tested), second derivatives (WGAN-GP's gradient penalty) work,
forward-mode (`jax.jvp`) does not (a `custom_vjp`).

Depthwise convolutions (one group per input channel, one output per group: ConvNet's 7x7) are
slow on XLA:CPU in every direction: the grouped forward convolution runs at ~0.6 GFLOP/s and its
kernel gradient (a `batch_group_count` convolution) is 40x slower again inside a loop. On CPU
they are computed as a sum of k*k shifted, per-channel-scaled copies of the input (`_taps`), one
fused elementwise loop; the input gradient is the same sum over the output gradient with the
flipped kernel and the kernel gradient k*k per-channel reductions. Measured on 8 scanned 7x7
layers of 64 channels, batch 8, 24x24: forward 280 -> 7 ms, gradient 7.9 s -> 0.03 s.
Other platforms keep `lax.conv_general_dilated`. The summation order differs from a convolution
library's, so results agree to float32 rounding (~1e-7 relative), not bit for bit.

Strided, dilated and other grouped convolutions use `lax.conv_general_dilated` and its own
gradients.

Run `python -m pytest tests/test_convolution.py`.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from medsr_jax.layers import projection

DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
Padding = tuple[tuple[int, int], tuple[int, int]]


def _plain(x: jax.Array, kernel: jax.Array, padding: Padding, precision: Any,
           stride: int = 1, groups: int = 1) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride), padding=padding,
      dimension_numbers=DIMENSION_NUMBERS, feature_group_count=groups, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_canonical_grad(x: jax.Array, kernel: jax.Array, padding: Padding,
                         precision: Any) -> jax.Array:
  return _plain(x, kernel, padding, precision)


def _forward(x, kernel, padding, precision):
  return _plain(x, kernel, padding, precision), (x, kernel)


def _canonical_backward(padding: Padding, precision: Any, x: jax.Array, kernel: jax.Array,
                        dy: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Both gradients as `b01f_01io->b01f` convolutions (the layout XLA:CPU runs fast)."""
  kh, kw = kernel.shape[:2]
  (h, w), (ho, wo) = x.shape[1:3], dy.shape[1:3]
  (top, _), (left, _) = padding
  flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
  dx = _plain(dy, flipped, ((kh - 1 - top, h - ho + top), (kw - 1 - left, w - wo + left)),
              precision)
  if kh * kw * kernel.shape[3] <= kernel.shape[2]:
    dkernel = _kernel_grad_by_taps(padding, precision, x, dy, kh, kw)
  else:
    dkernel = _plain(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3),
                     ((top, kh - 1 + ho - h - top), (left, kw - 1 + wo - w - left)), precision)
    dkernel = dkernel.transpose(1, 2, 0, 3)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


def _kernel_grad_by_taps(padding: Padding, precision: Any, x: jax.Array, dy: jax.Array,
                         kh: int, kw: int) -> jax.Array:
  """The kernel gradient as one product over all B x H x W positions: x (positions, C_in)
  against the k*k shifted copies of dy (positions, k * k * C_out), contracting the positions of
  both operands (no transposed copy of x).

  dW[i, j, c, o] = sum_{b, y, x} x[b, y, x, c] dy[b, y + top - i, x + left - j, o] (zero outside
  dy); used when k * k * C_out <= C_in (module docstring).
  """
  (h, w), (ho, wo) = x.shape[1:3], dy.shape[1:3]
  (top, _), (left, _) = padding
  zero = jnp.zeros((), dy.dtype)
  dyp = jax.lax.pad(dy, zero, ((0, 0, 0), (kh - 1 - top, h + top - ho, 0),
                               (kw - 1 - left, w + left - wo, 0), (0, 0, 0)))
  taps = jnp.stack([dyp[:, kh - 1 - i:kh - 1 - i + h, kw - 1 - j:kw - 1 - j + w, :]
                    for i in range(kh) for j in range(kw)], axis=3)  # B, H, W, k*k, C_out
  dkernel = projection.over_rows(x, taps.reshape(x.shape[:3] + (-1,)), precision)
  return dkernel.reshape(x.shape[3], kh, kw, -1).transpose(1, 2, 0, 3)


def _xla_backward(padding: Padding, precision: Any, x: jax.Array, kernel: jax.Array,
                  dy: jax.Array) -> tuple[jax.Array, jax.Array]:
  """JAX's own transpose rule (what accelerators get)."""
  _, vjp = jax.vjp(lambda a, b: _plain(a, b, padding, precision), x, kernel)
  return vjp(dy)


def _backward(padding, precision, residuals, dy):
  x, kernel = residuals
  return jax.lax.platform_dependent(
      x, kernel, dy, cpu=functools.partial(_canonical_backward, padding, precision),
      default=functools.partial(_xla_backward, padding, precision))


_conv_canonical_grad.defvjp(_forward, _backward)


def _taps(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """Depthwise correlation as k*k shifted products: x (B, H, W, C), kernel (kh, kw, 1, C)."""
  kh, kw = kernel.shape[:2]
  (top, bottom), (left, right) = padding
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  y = None
  for i in range(kh):
    for j in range(kw):
      term = xp[:, i:i + ho, j:j + wo, :] * kernel[i, j, 0]
      y = term if y is None else y + term
  return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise_taps(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  return _taps(x, kernel, padding)


def _depthwise_forward(x, kernel, padding):
  return _taps(x, kernel, padding), (x, kernel)


def _depthwise_backward(padding, residuals, dy):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  (h, w), (ho, wo) = x.shape[1:3], dy.shape[1:3]
  (top, bottom), (left, right) = padding
  dx = _taps(dy, jnp.flip(kernel, (0, 1)),
             ((kh - 1 - top, h - ho + top), (kw - 1 - left, w - wo + left)))
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  dkernel = jnp.stack([
      jnp.stack([jnp.sum(xp[:, i:i + ho, j:j + wo, :] * dy, axis=(0, 1, 2)) for j in range(kw)])
      for i in range(kh)])[:, :, None, :]
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_depthwise_taps.defvjp(_depthwise_forward, _depthwise_backward)


def _depthwise(x: jax.Array, kernel: jax.Array, padding: Padding, precision: Any) -> jax.Array:
  channels = x.shape[-1]
  return jax.lax.platform_dependent(
      x, kernel, cpu=functools.partial(_depthwise_taps, padding=padding),
      default=lambda a, b: _plain(a, b, padding, precision, 1, channels))


def conv2d(x: jax.Array, kernel: jax.Array, *, padding: Sequence[Sequence[int]],
           stride: int = 1, groups: int = 1, precision: Optional[Any] = None) -> jax.Array:
  """NHWC x HWIO -> NHWC convolution (PyTorch `F.conv2d` semantics with explicit padding).

  `padding` is ((top, bottom), (left, right)). Stride 1 with one group takes the canonical
  gradient above; a stride-1 depthwise convolution (`groups` = input channels = output channels)
  runs as shifted products on CPU; anything else is `lax.conv_general_dilated` unchanged.
  """
  pad = tuple((int(lo), int(hi)) for lo, hi in padding)
  if stride == 1 and groups == 1:
    return _conv_canonical_grad(x, kernel, pad, precision)
  if stride == 1 and groups == x.shape[-1] == kernel.shape[-1] and kernel.shape[2] == 1:
    return _depthwise(x, kernel, pad, precision)
  return _plain(x, kernel, pad, precision, stride, groups)
