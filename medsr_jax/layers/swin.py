"""Swin transformer pieces: window partition, (shifted) window attention and the STL, NHWC.

Follows the SwinIR code the author used (reference spec §5.12; thesis §5.2.1, Eq. 5.5):

  * `window_partition` / `window_reverse`: (B, H, W, C) <-> (B * nW, w, w, C), windows in
    batch-major, then row-major order (the PyTorch `view/permute` order).
  * `relative_position_index(w)`: the (w^2, w^2) index into the (2w - 1)^2 bias table.
  * `shifted_window_mask(H, W, w, s)`: the SW-MSA mask, 0 inside a region and -100 across
    regions, shape (nW, w^2, w^2).
  * `WindowAttention`: qkv Linear(d, 3d) with bias, q scaled by head_dim^-0.5, relative position
    bias, optional mask, softmax, proj Linear(d, d).
  * `SwinTransformerLayer` (STL): x + Attn(LN(x)); x + MLP(LN(x)), MLP = Linear(d, r d) -> GELU(erf)
    -> Linear(r d, d); cyclic shift by `shift_size` with `jnp.roll`.
  * `drop_path`: stochastic depth (timm `DropPath`) on the two residual branches of the STL, used
    by SwinIR in training (`SwinTransformerLayer(...)(x, drop_path_rate, train=True)` with an rng
    stream named 'dropout'); identity in eval mode, so RDST (which has none) is unaffected.

Indices and masks depend only on static shapes, so they are numpy constants, never params.
Parameter names copy the PyTorch ones (norm1, attn/qkv, attn/proj, attn/relative_position_bias_table,
norm2, mlp/fc1, mlp/fc2) to keep the state-dict mapping obvious.

Run `python -m pytest tests/test_layers_swin.py`.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax.layers import common
from medsr_jax.layers import projection

MASK_VALUE = -100.0
DROP_PATH_RNG = 'dropout'


def drop_path(x: jax.Array, rate: Any, rng: jax.Array) -> jax.Array:
  """Stochastic depth in training: per sample, drop the branch with probability `rate`, else
  scale it by 1 / (1 - rate) (timm `DropPath`). `rate` may be a traced scalar. Under bfloat16
  compute the draw and the scale are float32 (the same samples dropped as in float32)."""
  dtype = jnp.float32 if common.is_low_precision(x.dtype) else x.dtype
  keep = 1.0 - jnp.asarray(rate, dtype)
  shape = (x.shape[0],) + (1,) * (x.ndim - 1)
  kept = jax.random.uniform(rng, shape, dtype) < keep
  factor = jnp.where(kept, 1.0 / jnp.maximum(keep, jnp.finfo(dtype).tiny), 0.0)
  return x * factor.astype(x.dtype)


def window_partition(x: jax.Array, window_size: int) -> jax.Array:
  """(B, H, W, C) -> (B * nW, w, w, C); H and W must be multiples of w."""
  b, h, w, c = x.shape
  ws = window_size
  if h % ws or w % ws:
    raise ValueError(f'feature size {h}x{w} is not a multiple of the window {ws}')
  x = x.reshape(b, h // ws, ws, w // ws, ws, c)
  x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
  return x.reshape(-1, ws, ws, c)


def window_reverse(windows: jax.Array, window_size: int, height: int, width: int) -> jax.Array:
  """(B * nW, w, w, C) -> (B, H, W, C); inverse of `window_partition`."""
  ws = window_size
  nh, nw = height // ws, width // ws
  c = windows.shape[-1]
  x = windows.reshape(-1, nh, nw, ws, ws, c)
  x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
  return x.reshape(-1, height, width, c)


@functools.lru_cache(maxsize=None)
def relative_position_index(window_size: int) -> np.ndarray:
  """(w^2, w^2) int64 index: ((dy + w - 1) * (2w - 1) + (dx + w - 1)) for token pairs."""
  ws = window_size
  coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing='ij')).reshape(2, -1)
  rel = coords[:, :, None] - coords[:, None, :]  # 2, N, N
  rel = rel.transpose(1, 2, 0) + (ws - 1)
  index = (rel[..., 0] * (2 * ws - 1) + rel[..., 1]).astype(np.int64)
  index.setflags(write=False)
  return index


@functools.lru_cache(maxsize=None)
def shifted_window_mask(height: int, width: int, window_size: int,
                        shift_size: int) -> Optional[np.ndarray]:
  """SW-MSA mask (nW, w^2, w^2) float32: 0 for same-region pairs, -100 otherwise; None if no shift.

  Regions are the 3 x 3 bands [0, H - w), [H - w, H - s), [H - s, H) (same for W) of the
  cyclically shifted map, labelled 0..8 row-major like the reference's `calculate_mask`.
  """
  if shift_size == 0:
    return None
  ws, s = window_size, shift_size
  if not 0 < s < ws:
    raise ValueError(f'shift_size must be in (0, {ws}), got {s}')

  def band(n):
    lab = np.zeros((n,), np.int64)
    lab[max(n - ws, 0):] = 1
    lab[max(n - s, 0):] = 2
    return lab

  labels = band(height)[:, None] * 3 + band(width)[None, :]  # H, W
  win = labels.reshape(height // ws, ws, width // ws, ws).transpose(0, 2, 1, 3)
  win = win.reshape(-1, ws * ws)  # nW, N
  mask = np.where(win[:, None, :] != win[:, :, None], MASK_VALUE, 0.0).astype(np.float32)
  mask.setflags(write=False)
  return mask


class WindowAttention(nn.Module):
  """Window multi-head self-attention with relative position bias (W-MSA / SW-MSA)."""
  dim: int
  num_heads: int
  window_size: int
  qk_scale: Optional[float] = None
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[np.ndarray] = None) -> jax.Array:
    """x: (B * nW, N, C) windows of N = w^2 tokens; mask: (nW, N, N) or None."""
    bw, n, c = x.shape
    h = self.num_heads
    if c != self.dim or c % h:
      raise ValueError(f'WindowAttention got {c} channels, expected {self.dim} divisible by {h}')
    hd = c // h
    scale = self.qk_scale or hd ** -0.5
    ws = self.window_size
    table = self.param('relative_position_bias_table', common.torch_trunc_normal(0.02),
                       ((2 * ws - 1) ** 2, h))

    q, k, v = HeadsLinear(3, h, init_scheme=self.init_scheme, name='qkv')(x)  # B_, h, N, hd
    q = q * scale
    attn = jnp.einsum('bhnd,bhmd->bhnm', q, k)
    if common.is_low_precision(attn.dtype):  # the gather's gradient summed in float32 too
      table = table.astype(jnp.float32)
    bias = table[relative_position_index(ws).reshape(-1)].reshape(n, n, h).transpose(2, 0, 1)
    attn = attn + common.broadcast_like(bias[None], attn)
    if mask is not None:
      nw = mask.shape[0]
      attn = attn.reshape(bw // nw, nw, h, n, n) + jnp.asarray(mask, attn.dtype)[None, :, None]
      attn = attn.reshape(bw, h, n, n)
    attn = common.softmax(attn)
    y = jnp.einsum('bhnm,bhmd->bhnd', attn, v)
    return MergeHeadsLinear(c, init_scheme=self.init_scheme, name='proj')(y)


class HeadsLinear(nn.Module):
  """`Linear(C, splits * C)` (params 'kernel' (C, splits * C), 'bias', as `common.Linear`) whose
  output comes out split into heads: (B_, N, C) -> a tuple of `splits` arrays (B_, heads, N,
  C / heads), the PyTorch qkv order (q, k, v, then heads, then the head's channels).

  The values of the Linear followed by reshape and transpose, through `projection.split_heads`:
  the product in its natural (rows, splits * C) layout, one transposed copy per split, and a
  backward pass that writes the splits' cotangents into one (rows, splits * C) matrix used by
  both gradients (docs/BENCHMARKS.md, "Projections without transposed copies"; before, one einsum
  straight into the heads layout, "Swin attention formulation").
  """
  splits: int
  num_heads: int
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    c = x.shape[-1]
    hd = c // self.num_heads
    k_init, b_init = common.linear_initializers(self.init_scheme, c)
    kernel = self.param('kernel', k_init, (c, self.splits * c))
    bias = self.param('bias', b_init, (self.splits * c,))
    ys = projection.split_heads(x, kernel.astype(x.dtype), self.splits, self.num_heads)
    bias = bias.reshape(self.splits, self.num_heads, 1, hd)
    return tuple(y + common.broadcast_like(bias[t], y) for t, y in enumerate(ys))


class MergeHeadsLinear(nn.Module):
  """`Linear(heads * hd, features)` on heads-split input: (B_, heads, N, hd) -> (B_, N, features),
  the values of merging the heads (transpose to (B_, N, heads, hd), reshape) and then the Linear
  (`projection.merge_heads`: the merged copy is the kernel gradient's operand too). Params as
  `common.Linear`."""
  features: int
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _, h, _, hd = x.shape
    k_init, b_init = common.linear_initializers(self.init_scheme, h * hd)
    kernel = self.param('kernel', k_init, (h * hd, self.features))
    bias = self.param('bias', b_init, (self.features,))
    y = projection.merge_heads(x, kernel.astype(x.dtype))
    return y + common.broadcast_like(bias, y)


class Mlp(nn.Module):
  """Linear(d, hidden) -> GELU (erf) -> Linear(hidden, d); names fc1 / fc2 as in SwinIR."""
  hidden: int
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    x = common.Linear(self.hidden, init_scheme=self.init_scheme, name='fc1')(x)
    x = common.gelu(x)
    return common.Linear(d, init_scheme=self.init_scheme, name='fc2')(x)


class SwinTransformerLayer(nn.Module):
  """STL on NHWC features (spec §5.12; thesis Eq. 5.5). H and W must be multiples of the window.

  `shift_size` is taken as given (0 = W-MSA, else SW-MSA); the reference's rule that disables
  the shift when its construction-time resolution is <= window is the caller's business.
  """
  dim: int
  num_heads: int
  window_size: int = 8
  shift_size: int = 0
  mlp_ratio: float = 2.0
  qk_scale: Optional[float] = None
  init_scheme: str = 'thesis'

  def _drop_path(self, y: jax.Array, rate: Any, train: bool) -> jax.Array:
    if not train or (isinstance(rate, (int, float)) and rate == 0):
      return y
    return drop_path(y, rate, self.make_rng(DROP_PATH_RNG))

  @nn.compact
  def __call__(self, x: jax.Array, drop_path_rate: Any = 0.0, train: bool = False) -> jax.Array:
    """x: (B, H, W, C). `drop_path_rate` (float or traced scalar) acts only when `train`."""
    b, hh, ww, c = x.shape
    ws, s = self.window_size, self.shift_size
    shortcut = x
    y = common.layer_norm('norm1')(x)
    if s:
      y = jnp.roll(y, shift=(-s, -s), axis=(1, 2))
    windows = window_partition(y, ws).reshape(-1, ws * ws, c)
    mask = shifted_window_mask(hh, ww, ws, s)
    windows = WindowAttention(self.dim, self.num_heads, ws, self.qk_scale, self.init_scheme,
                              name='attn')(windows, mask)
    y = window_reverse(windows.reshape(-1, ws, ws, c), ws, hh, ww)
    if s:
      y = jnp.roll(y, shift=(s, s), axis=(1, 2))
    x = shortcut + self._drop_path(y, drop_path_rate, train)
    hidden = int(self.dim * self.mlp_ratio)
    y = Mlp(hidden, self.init_scheme, name='mlp')(common.layer_norm('norm2')(x))
    return x + self._drop_path(y, drop_path_rate, train)
