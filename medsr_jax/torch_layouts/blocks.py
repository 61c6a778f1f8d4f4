"""Entry builders for the PyTorch modules every layout uses, and the generic converters.

  from medsr_jax.torch_layouts import blocks as tb
  out = tb.mean_shift(c)                                  # add_mean / sub_mean (frozen)
  out += tb.conv('head.0', ('head',), c, 64)              # weight (+ bias)
  out += tb.batch_norm('body.0.body.1', ('body', 'bn'), 64)
  out += tb.tail('tail', scale, 64, c)                    # UpSampler + conv_last
  from_torch, to_torch = tb.converters(entries)           # entries(model) -> list[Entry]

Flax-side conventions (every model of the zoo follows them):
  * Conv / Linear: 'kernel' (+ 'bias') under `path` in 'params'.
  * LayerNorm: 'scale' / 'bias'. BatchNorm: 'scale' / 'bias' in 'params', running 'mean' / 'var'
    under the same path in 'batch_stats' (PyTorch eps 1e-5, momentum 0.1 = Flax momentum 0.9);
    `num_batches_tracked` is structural (any integer scalar is accepted, 0 is exported).
  * PReLU: 'alpha' (the slopes). A PReLU module shared by several blocks (SRResNet) is one Flax
    param; its other PyTorch names are 'alias' entries (`alias_of`).
  * MeanShift (author's `sub_mean` / `add_mean` frozen 1x1 convs): a top-level
    `common.MeanShift(name='mean_shift')`, whose mean / std live in the 'constants' collection
    ({'constants': {'mean_shift': {'mean', 'std'}}}).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import numpy as np

from medsr_jax import torch_layouts as tl
from medsr_jax.errors import InputError
from medsr_jax.layers import upsample

Path = tuple[str, ...]
MEAN_SHIFT_PATH = ('mean_shift',)


def conv(key: str, path: Path, din: int, dout: int, k: int = 3, index: Optional[int] = None, *,
         bias: bool = True, groups: int = 1) -> list[tl.Entry]:
  """`nn.Conv2d(din, dout, k, bias=bias, groups=groups)` (Flax kernel (k, k, din/groups, dout))."""
  out = [tl.Entry(f'{key}.weight', (dout, din // groups, k, k), path=path + ('kernel',),
                  transform='conv', index=index)]
  if bias:
    out.append(tl.Entry(f'{key}.bias', (dout,), path=path + ('bias',), index=index))
  return out


def linear(key: str, path: Path, din: int, dout: int, index: Optional[int] = None, *,
           bias: bool = True) -> list[tl.Entry]:
  """`nn.Linear(din, dout)` (Flax kernel (din, dout))."""
  out = [tl.Entry(f'{key}.weight', (dout, din), path=path + ('kernel',), transform='linear',
                  index=index)]
  if bias:
    out.append(tl.Entry(f'{key}.bias', (dout,), path=path + ('bias',), index=index))
  return out


def layer_norm(key: str, path: Path, dim: int, index: Optional[int] = None) -> list[tl.Entry]:
  """`nn.LayerNorm(dim)`: weight -> scale, bias -> bias."""
  return [tl.Entry(f'{key}.weight', (dim,), path=path + ('scale',), index=index),
          tl.Entry(f'{key}.bias', (dim,), path=path + ('bias',), index=index)]


def _any_int_scalar(key: str) -> Callable[[np.ndarray], None]:
  def check(arr: np.ndarray) -> None:
    arr = np.asarray(arr)
    if arr.shape != () or arr.dtype.kind not in 'iu':
      raise InputError(f'buffer {key!r} must be an integer scalar, got {arr.dtype} {arr.shape}')
  return check


def batch_norm(key: str, path: Path, c: int, index: Optional[int] = None,
               affine: bool = True) -> list[tl.Entry]:
  """`nn.BatchNorm2d(c)`: weight/bias -> params scale/bias, running stats -> batch_stats."""
  out = []
  if affine:
    out += [tl.Entry(f'{key}.weight', (c,), path=path + ('scale',), index=index),
            tl.Entry(f'{key}.bias', (c,), path=path + ('bias',), index=index)]
  out += [tl.Entry(f'{key}.running_mean', (c,), 'buffer', path=path + ('mean',), index=index,
                   collection='batch_stats'),
          tl.Entry(f'{key}.running_var', (c,), 'buffer', path=path + ('var',), index=index,
                   collection='batch_stats'),
          tl.Entry(f'{key}.num_batches_tracked', (), 'buffer',
                   value=lambda: np.array(0, np.int64), check=_any_int_scalar(
                       f'{key}.num_batches_tracked'))]
  return out


def prelu(key: str, path: Path, n: int = 1, index: Optional[int] = None) -> list[tl.Entry]:
  """`nn.PReLU(n)`: weight -> alpha."""
  return [tl.Entry(f'{key}.weight', (n,), path=path + ('alpha',), index=index)]


def upsampler(key: str, path: Path, scale: int, n: int, bn: bool = False) -> list[tl.Entry]:
  """`layers.upsample.UpSampler(scale, n, bn=bn)`: the PyTorch Sequential `key` -> Flax
  `path`/conv_k (+ `path`/bn_k after each shuffle when `bn`)."""
  per_step = 3 if bn else 2
  out = []
  for k, (s, t) in enumerate(zip(upsample.upsample_steps(scale),
                                 upsample.torch_indices(scale, per_step))):
    out += conv(f'{key}.{t}', path + (f'conv_{k}',), n, s * s * n)
    if bn:
      out += batch_norm(f'{key}.{t + 2}', path + (f'bn_{k}',), n)
  return out


def tail(key: str, scale: int, n: int, c: int, *, bn: bool = False,
         upsample_path: Path = ('upsample',), last_path: Path = ('conv_last',)
         ) -> list[tl.Entry]:
  """The reference's `tail` = Sequential(UpSampler(scale, n), conv3x3(n -> c)): `key`.0.* ->
  `upsample_path`/conv_k (+ bn_k), `key`.1 -> `last_path` (`models.base.SRModel.upsample_tail`)."""
  return upsampler(f'{key}.0', upsample_path, scale, n, bn) + conv(f'{key}.1', last_path, n, c)


def alias(key: str, of: str, shape: tuple[int, ...]) -> tl.Entry:
  """A second state-dict name for the tensor already listed as `of`."""
  return tl.Entry(key, tuple(shape), 'alias', alias_of=of)


def mean_shift(c: int, prefix: str = '') -> list[tl.Entry]:
  """The frozen `add_mean` / `sub_mean` 1x1 convs, in the order the author's models list them."""
  return [tl.Entry(f'{prefix}add_mean.weight', (c, c, 1, 1), 'frozen'),
          tl.Entry(f'{prefix}add_mean.bias', (c,), 'frozen'),
          tl.Entry(f'{prefix}sub_mean.weight', (c, c, 1, 1), 'frozen'),
          tl.Entry(f'{prefix}sub_mean.bias', (c,), 'frozen')]


def mean_std_from_torch(sd: Mapping[str, np.ndarray], c: int,
                        prefix: str = '') -> tuple[np.ndarray, np.ndarray]:
  """Recovers (mean, std) from the frozen MeanShift convs, or raises InputError."""
  eye = np.eye(c, dtype=bool)
  aw = np.asarray(sd[f'{prefix}add_mean.weight'], np.float32).reshape(c, c)
  sw = np.asarray(sd[f'{prefix}sub_mean.weight'], np.float32).reshape(c, c)
  for key, wgt in ((f'{prefix}add_mean.weight', aw), (f'{prefix}sub_mean.weight', sw)):
    if np.any(wgt[~eye] != 0):
      raise InputError(f'{key} is not diagonal: only per-channel mean/std shifts are supported')
  std = np.diagonal(aw).copy()
  mean = np.asarray(sd[f'{prefix}add_mean.bias'], np.float32).reshape(c).copy()
  if np.any(std == 0):
    raise InputError(f'{prefix}add_mean.weight has a zero std')
  want_w = np.float32(1) / std
  want_b = -mean / std
  got_b = np.asarray(sd[f'{prefix}sub_mean.bias'], np.float32).reshape(c)
  for key, got, want in ((f'{prefix}sub_mean.weight', np.diagonal(sw), want_w),
                         (f'{prefix}sub_mean.bias', got_b, want_b)):
    if not np.allclose(got, want, rtol=1e-6, atol=1e-7):
      raise InputError(f'{key} = {got.tolist()} is not the inverse of add_mean '
                       f'(expected {want.tolist()}): not representable as mean/std')
  return mean, std


def mean_std_to_torch(mean: np.ndarray, std: np.ndarray, prefix: str = '') -> dict[str, np.ndarray]:
  c = mean.shape[0]
  eye = np.eye(c, dtype=np.float32)
  return {
      f'{prefix}add_mean.weight': (eye * std[:, None]).reshape(c, c, 1, 1),
      f'{prefix}add_mean.bias': mean.astype(np.float32).copy(),
      f'{prefix}sub_mean.weight': (eye / std[:, None]).reshape(c, c, 1, 1),
      f'{prefix}sub_mean.bias': (-mean / std).astype(np.float32),
  }


def _mean_shift_prefix(layout: list[tl.Entry]) -> Optional[str]:
  for e in layout:
    if e.kind == 'frozen' and e.key.endswith('add_mean.weight'):
      return e.key[:-len('add_mean.weight')]
  return None


def model_mean_std(model: Any, variables: Mapping[str, Any], c: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) of `model`'s MeanShift: from 'constants' if `variables` has them, else the
  model's `mean` / `std` fields (default 0 / 1), as float32 (c,) arrays."""
  consts = variables.get('constants', {}).get('mean_shift') if hasattr(variables, 'get') else None
  if consts is not None:
    return (np.asarray(consts['mean'], np.float32).reshape(c),
            np.asarray(consts['std'], np.float32).reshape(c))
  mean, std = getattr(model, 'mean', None), getattr(model, 'std', None)
  return (np.asarray(mean if mean is not None else [0.0] * c, np.float32).reshape(c),
          np.asarray(std if std is not None else [1.0] * c, np.float32).reshape(c))


EntriesFn = Callable[[Any], list[tl.Entry]]


def converters(entries: EntriesFn):
  """(from_torch, to_torch) for a model whose layout is `entries(model)`.

  from_torch(model, state_dict) -> {'params', ['batch_stats'], ['constants']}: checks every key,
  imports kept entries and turns a MeanShift pair into 'constants'/'mean_shift'.
  to_torch(model, variables) -> state dict in the reference's key order (buffers regenerated).
  """

  def from_torch(model: Any, state_dict: Mapping[str, Any], **kwargs) -> dict:
    sd = tl.as_numpy_state_dict(state_dict)
    layout = entries(model, **kwargs)
    tl.check_state_dict(layout, sd)
    variables = tl.import_entries(layout, sd)
    prefix = _mean_shift_prefix(layout)
    if prefix is not None:
      mean, std = mean_std_from_torch(sd, model.in_channels, prefix)
      variables['constants'] = {'mean_shift': {'mean': mean, 'std': std}}
    return variables

  def to_torch(model: Any, variables: Mapping[str, Any], **kwargs) -> dict[str, np.ndarray]:
    layout = entries(model, **kwargs)
    if 'params' not in variables:
      variables = {'params': variables}
    parts = tl.export_entries(layout, variables)
    prefix = _mean_shift_prefix(layout)
    if prefix is not None:
      c = model.in_channels
      parts.update(mean_std_to_torch(*model_mean_std(model, variables, c), prefix))
    return {e.key: parts[e.key] for e in layout if e.key in parts}

  return from_torch, to_torch
