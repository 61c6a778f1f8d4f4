"""The Meta-SR meta-upscale module: arbitrary-scale feature-map up-sampling by weight prediction.

Thesis §2 (Fig. 2.15) and §4.2.2 (Eqs. 4.7-4.11); reference `networks/meta_upscale.py`
(`MetaUpSampler` + `Pos2Weight`), spec §5.10 and §11 item 6. For an LR feature map F (B, h, w, C)
and a scale s >= 1 the output has int(s * h) x int(s * w) pixels, and HR pixel (i, j) is

  out[b, i, j, o] = sum_k  U[b, floor(i / s), floor(j / s), k] * W(i, j)[k, o]

  U = the zero-padded K x K neighbourhoods of F (PyTorch `unfold` order k = c*K*K + ky*K + kx),
  W(i, j) = Linear(hidden -> K*K*C*O)(ReLU(Linear(3 -> hidden)([1/s, frac(i/s), frac(j/s)]))),
  reshaped (K*K*C, O) (o fastest), no bias and no activation after the weighted sum.

All coordinates use the reference's float32 arithmetic: i / s is `float32(i) * float32(1 / s)`,
its floor is the LR source cell and the remainder the offset; the 1/s input is float32(1 / s).
The MLP input order is the reference's [1/s, dh, dw]; thesis Eq. 4.9 writes W(dh, dw, 1/s) (the
order only matters for imported weights). Thesis Eq. 4.8 describes each HR pixel as a weighted
sum over the whole LR map; in the reference (and here) only the K x K neighbourhood of its
source cell has non-zero weights.

How it is computed here (static shapes; `scale` is a Python float, one compilation per scale):
  * the row and column coordinates are separable, so their source cells and offsets are numpy
    constants of the trace (`source_grid`); the weight-prediction MLP runs once per distinct
    (row offset, column offset) pair (exact float32 equality; s^2 pairs at integer scales,
    at most the whole HR grid otherwise) and the weights are gathered to the HR grid;
  * the LR K x K neighbourhoods are built once on the LR grid and gathered to the HR grid with
    static index arrays; one einsum does the per-pixel matrix products.
  No per-pixel Python loop, no host round trip.

Differences from the reference implementation (not from its formula):
  * The reference replicates the LR features ceil(s)^2 times, predicts weights for one detected
    period of the offset pattern (`pos_mat_small`), tiles them (`repeat_weight`, which assumes a
    square period) and `masked_select`s the valid pixels. For non-square inputs at some scales
    (2.3, 2.7, 3.7 with 45 x 36 or 40 x 32) float32 round-off defeats its period detection and
    the tiling scrambles the weights (outputs off by O(1), spec §5.10 "verified quirk"). That
    bug is NOT reproduced: this module follows the formula above everywhere. Where the
    reference is correct (square inputs at every training scale, non-square ones at the test
    scales 1.5, 2, ..., 4) it matches the formula (spec: verified to 1e-4; our parity cases:
    < 3e-6).
  * The weight-prediction MLP's kernel size is a field (`kernel_size`, default 3); the
    reference hard-wires 3 (its `MetaUpSampler` does not pass the size on, unfold padding 1).
  * HR rows whose float32 source cell would be h (never for the 30 training scales and
    h, w <= 400, checked in tests) are clamped to the last LR row/column.
  * Both init schemes use PyTorch's default Linear init here: the reference re-initialises
    Linears with trunc_normal only inside its Swin models, not in `Pos2Weight` (spec §3.4).

Params: 'fc1' (3 -> hidden) and 'fc2' (hidden -> K*K*C*O), PyTorch `P2W.meta_block.0` / `.2`.

Run `python -m pytest tests/test_meta_upscale.py`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax.errors import InputError
from medsr_jax.layers import common


def static_scale(scale: Any, minimum: float = 1.0) -> float:
  """`scale` as a Python float (it sets output shapes, so it must not be traced), or InputError."""
  if isinstance(scale, (bool, str, bytes)) or np.ndim(scale) != 0:
    raise InputError(f'scale must be a number, got {scale!r}')
  try:
    s = float(scale)
  except jax.errors.ConcretizationTypeError as e:
    raise InputError('the meta-upscale scale sets the output shape and must be a static Python '
                     'float, not a traced value (close over it or mark it static under jit)'
                     ) from e
  except (TypeError, ValueError) as e:
    raise InputError(f'scale must be a number, got {scale!r}') from e
  if not math.isfinite(s) or s < minimum:
    raise InputError(f'meta-upscale scale must be a finite number >= {minimum:g}, got {scale}')
  return s


def check_options(out_channels: int, kernel_size: int, hidden: int) -> None:
  """ValueError for meta-upscale options that cannot be built."""
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(f'meta-upscale kernel_size must be odd and >= 1, got {kernel_size}')
  if out_channels < 1 or hidden < 1:
    raise ValueError('meta-upscale out_channels and hidden must be >= 1')


def output_size(size: int, scale: float) -> int:
  """int(scale * size): the reference's output height / width for an LR size."""
  return int(scale * size)


def source_grid(size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
  """(source cell int32, offset float32) of each of the int(scale * size) output positions.

  coord = float32(i) * float32(1 / scale); cell = floor(coord) (clamped to size - 1);
  offset = coord - floor(coord), all in float32 like the reference.
  """
  n = output_size(size, scale)
  coord = np.arange(n, dtype=np.float32) * np.float32(1.0 / scale)
  cell = np.floor(coord)
  offset = (coord - cell).astype(np.float32)
  return np.minimum(cell.astype(np.int32), size - 1), offset


def neighbourhoods(x: jax.Array, kernel_size: int) -> jax.Array:
  """(B, h, w, C) -> (B, h, w, C * K * K): zero-padded K x K patches in (c, ky, kx) order."""
  k = kernel_size
  p = k // 2
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  taps = [xp[:, ky:ky + h, kx:kx + w, :] for ky in range(k) for kx in range(k)]
  patches = jnp.stack(taps, axis=-1)  # (B, h, w, C, K*K)
  return patches.reshape(x.shape[:3] + (x.shape[3] * k * k,))


def _take(a: jax.Array, index: np.ndarray, axis: int) -> jax.Array:
  """a indexed by a static index array along `axis`; skipped when it is the identity."""
  if index.shape[0] == a.shape[axis] and np.array_equal(index, np.arange(index.shape[0])):
    return a
  return jnp.take(a, jnp.asarray(index), axis=axis)


class MetaUpscale(nn.Module):
  """Meta-upscale: (B, h, w, C) features -> (B, int(s h), int(s w), out_channels) for any s >= 1.

  Attributes:
    out_channels: output channels (the reference's `n_colors`, 1 for grayscale MR).
    kernel_size: the predicted filters' size (odd; the reference's fixed 3).
    hidden: width of the weight-prediction MLP (256 in the reference).
    precision: matmul precision of the MLP and of the per-pixel products.
  """
  out_channels: int = 1
  kernel_size: int = 3
  hidden: int = 256
  precision: Any = None

  def check_config(self) -> None:
    check_options(self.out_channels, self.kernel_size, self.hidden)

  @nn.compact
  def __call__(self, x: jax.Array, scale: float) -> jax.Array:
    self.check_config()
    s = static_scale(scale)
    if x.ndim != 4:
      raise InputError(f'meta-upscale expects (B, h, w, C) features, got shape {x.shape}')
    _, h, w, c = x.shape
    k2c = self.kernel_size ** 2 * c
    rows, row_off = source_grid(h, s)
    cols, col_off = source_grid(w, s)
    if rows.size == 0 or cols.size == 0:
      raise InputError(f'scale {s} of a {h}x{w} input gives an empty output')
    # The MLP runs once per distinct (row offset, column offset) pair.
    u_row, row_class = np.unique(row_off, return_inverse=True)
    u_col, col_class = np.unique(col_off, return_inverse=True)
    pos = np.empty((u_row.size, u_col.size, 3), np.float32)
    pos[..., 0] = np.float32(1.0 / s)
    pos[..., 1] = u_row[:, None]
    pos[..., 2] = u_col[None, :]
    hid = common.Linear(self.hidden, precision=self.precision, name='fc1')(jnp.asarray(pos))
    weights = common.Linear(k2c * self.out_channels, precision=self.precision,
                            name='fc2')(jax.nn.relu(hid))
    weights = weights.reshape(u_row.size, u_col.size, k2c, self.out_channels)
    weights = _take(_take(weights, row_class.reshape(-1), 0), col_class.reshape(-1), 1)

    patches = neighbourhoods(x, self.kernel_size)
    patches = _take(_take(patches, rows, 1), cols, 2)  # (B, oh, ow, K*K*C)
    return jnp.einsum('bijk,ijko->bijo', patches, weights.astype(x.dtype),
                      precision=self.precision)
