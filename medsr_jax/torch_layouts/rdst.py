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

With `scan_blocks=True` the Flax path is body/... with block i on the leading axis.
`attn_mask` buffers are the reference's precomputed masks for its construction size
`torch_img_size` (24 = the RDST ini's patch size); a mask for any other square size is accepted
if it equals ours for that size.

Run `python -m pytest tests/test_torch_layout_rdst.py`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from medsr_jax import torch_layouts as tl
from medsr_jax.errors import InputError
from medsr_jax.layers import swin
from medsr_jax.layers import upsample

TORCH_IMG_SIZE = 24


def _ln(key: str, path: tuple[str, ...], dim: int, index) -> list[tl.Entry]:
  return [tl.Entry(f'{key}.weight', (dim,), path=path + ('scale',), index=index),
          tl.Entry(f'{key}.bias', (dim,), path=path + ('bias',), index=index)]


def _linear(key: str, path: tuple[str, ...], din: int, dout: int, index) -> list[tl.Entry]:
  return [tl.Entry(f'{key}.weight', (dout, din), path=path + ('kernel',), transform='linear',
                   index=index),
          tl.Entry(f'{key}.bias', (dout,), path=path + ('bias',), index=index)]


def _conv(key: str, path: tuple[str, ...], din: int, dout: int, k: int = 3,
          index=None) -> list[tl.Entry]:
  return [tl.Entry(f'{key}.weight', (dout, din, k, k), path=path + ('kernel',), transform='conv',
                   index=index),
          tl.Entry(f'{key}.bias', (dout,), path=path + ('bias',), index=index)]


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
  out += _ln(f'{key}.norm1', path + ('norm1',), dim, index)
  out.append(tl.Entry(f'{key}.attn.relative_position_bias_table', ((2 * window - 1) ** 2, heads),
                      path=path + ('attn', 'relative_position_bias_table'), index=index))
  out.append(tl.Entry(f'{key}.attn.relative_position_index', (n, n), 'buffer',
                      value=lambda: swin.relative_position_index(window).copy()))
  out += _linear(f'{key}.attn.qkv', path + ('attn', 'qkv'), dim, 3 * dim, index)
  out += _linear(f'{key}.attn.proj', path + ('attn', 'proj'), dim, dim, index)
  out += _ln(f'{key}.norm2', path + ('norm2',), dim, index)
  hidden = int(dim * mlp_ratio)
  out += _linear(f'{key}.mlp.fc1', path + ('mlp', 'fc1'), dim, hidden, index)
  out += _linear(f'{key}.mlp.fc2', path + ('mlp', 'fc2'), hidden, dim, index)
  return out


def entries(model: Any, img_size: int = TORCH_IMG_SIZE) -> list[tl.Entry]:
  """The ordered state-dict layout of the reference RDSTSR matching `model` (an `RDST`)."""
  c, d, g, w = model.in_channels, model.embed_dim, model.growth_rate, model.window_size
  shift = w // 2 if img_size > w else 0  # the reference disables shifts when img_size <= window
  out = [tl.Entry('add_mean.weight', (c, c, 1, 1), 'frozen'),
         tl.Entry('add_mean.bias', (c,), 'frozen'),
         tl.Entry('sub_mean.weight', (c, c, 1, 1), 'frozen'),
         tl.Entry('sub_mean.bias', (c,), 'frozen')]
  out += _conv('head', ('head',), c, d)
  out += _ln('patch_embed.norm', ('patch_norm',), d, None)
  for i in range(model.num_blocks):
    base, index = (('body',), i) if model.scan_blocks else ((f'body_{i}',), None)
    dim = d
    for j in range(model.dense_layers):
      key, path = f'body.{i}.body.{j}', base + ('dense', f'body_{j}')
      if dim != g and model.pre_norm:  # tail = Sequential(LayerNorm(dim), Linear(dim, g))
        out += _ln(f'{key}.tail.0', path + ('tail_norm',), dim, index)
        out += _linear(f'{key}.tail.1', path + ('tail_linear',), dim, g, index)
      elif dim != g:  # post-norm: Sequential(Linear(dim, g), LayerNorm(g))
        out += _linear(f'{key}.tail.0', path + ('tail_linear',), dim, g, index)
        out += _ln(f'{key}.tail.1', path + ('tail_norm',), g, index)
      for k in range(model.stl_per_dense):
        out += stl_entries(f'{key}.body.blocks.{k}', path + (f'blocks_{k}',), dim,
                           model.num_heads, w, shift if k % 2 else 0, model.mlp_ratio, index,
                           img_size)
      dim += g
    out += _conv(f'body.{i}.conv', base + ('conv',), dim, d, index=index)
  out += _ln('norm', ('norm',), d, None)
  out += _conv('conv_after_body', ('conv_after_body',), d, d)
  for n, (s, t) in enumerate(zip(upsample.upsample_steps(model.scale),
                                 upsample.torch_indices(model.scale))):
    out += _conv(f'tail.0.{t}', ('upsample', f'conv_{n}'), d, s * s * d)
  out += _conv('tail.1', ('conv_last',), d, c)
  return out


def _mean_std_from_torch(sd: Mapping[str, np.ndarray], c: int) -> tuple[np.ndarray, np.ndarray]:
  """Recovers (mean, std) from the frozen MeanShift convs, or raises InputError."""
  eye = np.eye(c, dtype=bool)
  aw = np.asarray(sd['add_mean.weight'], np.float32).reshape(c, c)
  sw = np.asarray(sd['sub_mean.weight'], np.float32).reshape(c, c)
  for key, wgt in (('add_mean.weight', aw), ('sub_mean.weight', sw)):
    if np.any(wgt[~eye] != 0):
      raise InputError(f'{key} is not diagonal: only per-channel mean/std shifts are supported')
  std = np.diagonal(aw).copy()
  mean = np.asarray(sd['add_mean.bias'], np.float32).reshape(c).copy()
  if np.any(std == 0):
    raise InputError('add_mean.weight has a zero std')
  want_w = np.float32(1) / std
  want_b = -mean / std
  got_b = np.asarray(sd['sub_mean.bias'], np.float32).reshape(c)
  for key, got, want in (('sub_mean.weight', np.diagonal(sw), want_w),
                         ('sub_mean.bias', got_b, want_b)):
    if not np.allclose(got, want, rtol=1e-6, atol=1e-7):
      raise InputError(f'{key} = {got.tolist()} is not the inverse of add_mean '
                       f'(expected {want.tolist()}): not representable as mean/std')
  return mean, std


def _mean_std_to_torch(mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
  c = mean.shape[0]
  eye = np.eye(c, dtype=np.float32)
  return {
      'add_mean.weight': (eye * std[:, None]).reshape(c, c, 1, 1),
      'add_mean.bias': mean.copy(),
      'sub_mean.weight': (eye / std[:, None]).reshape(c, c, 1, 1),
      'sub_mean.bias': (-mean / std).astype(np.float32),
  }


def from_torch(model: Any, state_dict: Mapping[str, Any], *,
               img_size: int = TORCH_IMG_SIZE) -> dict:
  """{'params': ..., 'constants': {'mean_shift': {'mean', 'std'}}} for `model` from a state dict."""
  sd = tl.as_numpy_state_dict(state_dict)
  layout = entries(model, img_size)
  tl.check_state_dict(layout, sd)
  mean, std = _mean_std_from_torch(sd, model.in_channels)
  return {'params': tl.params_from_torch(layout, sd),
          'constants': {'mean_shift': {'mean': mean, 'std': std}}}


def to_torch(model: Any, variables: Mapping[str, Any], *,
             img_size: int = TORCH_IMG_SIZE) -> dict[str, np.ndarray]:
  """The reference state dict (numpy arrays, reference key order) for `model`'s variables."""
  layout = entries(model, img_size)
  params = variables['params'] if 'params' in variables else variables
  parts = tl.params_to_torch(layout, params)
  consts = variables.get('constants', {}).get('mean_shift') if hasattr(variables, 'get') else None
  c = model.in_channels
  if consts is not None:
    mean = np.asarray(consts['mean'], np.float32).reshape(c)
    std = np.asarray(consts['std'], np.float32).reshape(c)
  else:
    mean = np.asarray(model.mean if model.mean is not None else [0.0] * c, np.float32)
    std = np.asarray(model.std if model.std is not None else [1.0] * c, np.float32)
  parts.update(_mean_std_to_torch(mean, std))
  return {e.key: parts[e.key] for e in layout if e.key in parts}
