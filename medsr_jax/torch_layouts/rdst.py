"""PyTorch layout of the author's `RDSTSR` (RDST / RDST-E) state dict <-> `models.rdst.RDST`.

Key map (spec §5.13; `tests/data/state_dicts/rdst*.json` lists every key):

  add_mean / sub_mean .weight/.bias          -> 'constants' mean_shift {mean, std} (checked)
  head                                       -> head                       (conv)
  patch_embed.norm                           -> patch_norm                 (LayerNorm)
  body.{i}.body.{j}.tail.0 / .tail.1         -> body[_i]/dense/body_{j}/tail_norm, tail_linear
  body.{i}.body.{j}.body.blocks.{k}.<stl>    -> .../body_{j}/blocks_{k}/<stl>   (see `stl_entries`)
  body.{i}.conv                              -> .../conv                   (LFF conv 3x3)
  norm, conv_after_body                      -> norm, conv_after_body
  tail.0.{0,2}  (x3: tail.0.0)               -> upsample/conv_{0,1}
  tail.1                                     -> conv_last
  *.attn.relative_position_index, *.attn_mask buffers: checked if present, regenerated on export.

GFF variants (`gff='conv'` / `'mlp'`: 'rdst_gff' / 'rdst_mlp_gff', the reference's `RDSTSR_N`):
the same keys plus, between `norm` and `conv_after_body` (module registration order of
`RDSTSR_N`, which still builds both although its forward skips them):

  bottleneck.0 / bottleneck.1                -> bottleneck_0 / bottleneck_1
      'conv': Conv2d(60 n -> f, 1x1) / Conv2d(f -> f, 3x3)
      'mlp':  Linear(60 n -> f) / Linear(f -> f)

These GFF keys are inferred from the `RDSTSR_N` source as described in spec §5.13; no reference
state-dict file exists for them, so they are not checked against one.

With `scan_blocks=True` the Flax path is body/... with block i on the leading axis.
`attn_mask` buffers are the reference's precomputed masks for its construction size
`torch_img_size` (24 = the RDST ini's patch size); a mask for any other square size is accepted
if it equals ours for that size.

Run `python -m pytest tests/test_torch_layout_rdst.py tests/test_rdst_gff.py`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medsr_jax import torch_layouts as tl
from medsr_jax.torch_layouts import blocks as tb
from medsr_jax.errors import InputError
from medsr_jax.layers import swin

TORCH_IMG_SIZE = 24


def _mask_check(key: str, window: int, shift: int):
  def check(arr: np.ndarray) -> None:
    n = window * window
    nw = arr.shape[0] if arr.ndim == 3 else 0
    side = math.isqrt(nw)
    if arr.ndim != 3 or arr.shape[1:] != (n, n) or side * side != nw:
      raise InputError(f'buffer {key!r} has shape {arr.shape}, expected (k*k, {n}, {n})')
    ours = swin.shifted_window_mask(side * window, side * window, window, shift)
    if not np.array_equal(np.asarray(arr, np.float32), ours):
      raise InputError(f'buffer {key!r} differs from the shifted-window mask this model computes')
  return check


def stl_entries(key: str, path: tuple[str, ...], dim: int, heads: int, window: int, shift: int,
                mlp_ratio: float, index=None, img_size: int = TORCH_IMG_SIZE) -> list[tl.Entry]:
  """Entries of one SwinIR `SwinTransformerBlock` (reusable by the SwinIR layout)."""
  n = window * window
  out = []
  if shift:
    mask = lambda: swin.shifted_window_mask(img_size, img_size, window, shift).copy()
    nw = (img_size // window) ** 2
    out.append(tl.Entry(f'{key}.attn_mask', (nw, n, n), 'buffer', value=mask,
                        check=_mask_check(f'{key}.attn_mask', window, shift)))
  out += tb.layer_norm(f'{key}.norm1', path + ('norm1',), dim, index)
  out.append(tl.Entry(f'{key}.attn.relative_position_bias_table', ((2 * window - 1) ** 2, heads),
                      path=path + ('attn', 'relative_position_bias_table'), index=index))
  out.append(tl.Entry(f'{key}.attn.relative_position_index', (n, n), 'buffer',
                      value=lambda: swin.relative_position_index(window).copy()))
  out += tb.linear(f'{key}.attn.qkv', path + ('attn', 'qkv'), dim, 3 * dim, index)
  out += tb.linear(f'{key}.attn.proj', path + ('attn', 'proj'), dim, dim, index)
  out += tb.layer_norm(f'{key}.norm2', path + ('norm2',), dim, index)
  hidden = int(dim * mlp_ratio)
  out += tb.linear(f'{key}.mlp.fc1', path + ('mlp', 'fc1'), dim, hidden, index)
  out += tb.linear(f'{key}.mlp.fc2', path + ('mlp', 'fc2'), hidden, dim, index)
  return out


def entries(model: Any, img_size: int = TORCH_IMG_SIZE) -> list[tl.Entry]:
  """The ordered state-dict layout of the reference RDSTSR matching `model` (an `RDST`)."""
  c, d, g, w = model.in_channels, model.embed_dim, model.growth_rate, model.window_size
  shift = w // 2 if img_size > w else 0  # the reference disables shifts when img_size <= window
  out = tb.mean_shift(c)
  out += tb.conv('head', ('head',), c, d)
  out += tb.layer_norm('patch_embed.norm', ('patch_norm',), d, None)
  for i in range(model.num_blocks):
    base, index = (('body',), i) if model.scan_blocks else ((f'body_{i}',), None)
    dim = d
    for j in range(model.dense_layers):
      key, path = f'body.{i}.body.{j}', base + ('dense', f'body_{j}')
      if dim != g and model.pre_norm:  # tail = Sequential(LayerNorm(dim), Linear(dim, g))
        out += tb.layer_norm(f'{key}.tail.0', path + ('tail_norm',), dim, index)
        out += tb.linear(f'{key}.tail.1', path + ('tail_linear',), dim, g, index)
      elif dim != g:  # post-norm: Sequential(Linear(dim, g), LayerNorm(g))
        out += tb.linear(f'{key}.tail.0', path + ('tail_linear',), dim, g, index)
        out += tb.layer_norm(f'{key}.tail.1', path + ('tail_norm',), g, index)
      for k in range(model.stl_per_dense):
        out += stl_entries(f'{key}.body.blocks.{k}', path + (f'blocks_{k}',), dim,
                           model.num_heads, w, shift if k % 2 else 0, model.mlp_ratio, index,
                           img_size)
      dim += g
    out += tb.conv(f'body.{i}.conv', base + ('conv',), dim, d, index=index)
  out += tb.layer_norm('norm', ('norm',), d, None)
  gff = getattr(model, 'gff', 'none')
  if gff == 'mlp':
    f = model.gff_features()
    out += tb.linear('bottleneck.0', ('bottleneck_0',), d * model.num_blocks, f)
    out += tb.linear('bottleneck.1', ('bottleneck_1',), f, f)
  elif gff == 'conv':
    f = model.gff_features()
    out += tb.conv('bottleneck.0', ('bottleneck_0',), d * model.num_blocks, f, k=1)
    out += tb.conv('bottleneck.1', ('bottleneck_1',), f, f)
  out += tb.conv('conv_after_body', ('conv_after_body',), d, d)
  out += tb.tail('tail', model.scale, d, c)
  return out


from_torch, to_torch = tb.converters(entries)
