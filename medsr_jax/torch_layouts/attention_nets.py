"""PyTorch layouts of the author's RCAN and HAN state dicts <-> `models.attention_nets`.

Key map (spec §5.8, §5.9; `tests/data/state_dicts/{rcan,han}*.json` list every key), with
G = num_groups, R = num_blocks, group i, block j:

  add_mean / sub_mean .weight/.bias        -> 'constants' mean_shift {mean, std} (checked)
  head.0                                   -> head
  body.{i}.body.{j}.body.0 / .body.2       -> <group i>/<block j>/conv_0 / conv_1
      Ada-conv RCAN: .conv0 / .conv1 / .conv2 below each of them (1x1 mask conv, two 3x3)
  body.{i}.body.{j}.body.3.conv_du.0 / .2  -> <group i>/<block j>/ca/down / up
  body.{i}.body.{R}                        -> <group i>/conv
  body.{G}                                 -> body_conv
  HAN only: csa.gamma, csa.conv (Conv3d, (1, 1, 3, 3, 3) <-> Flax (3, 3, 3, 1, 1)), la.gamma,
            last_conv, last                -> csa/gamma, csa/conv, la/gamma, last_conv, last
  tail.0.{0,2} (x3: tail.0.0), tail.1      -> upsample/conv_{0,1}, conv_last

Nested scan and the engine's one-level `index`: with `scan_blocks=True`, <group i> is 'body'
with i on the leading axis and <block j> is 'body'/'blocks' with the leading axes (G, R). The
engine stacks one leading axis from `Entry.index`, so the RCAB entries carry the flattened index
i * R + j; `from_torch` then reshapes every array under params/body/blocks from (G * R, ...) to
(G, R, ...) and `to_torch` does the inverse before calling the engine. Group convs use index i
directly. With `scan_blocks=False` the paths are body_{i}/blocks_{j} and nothing is stacked.

The Conv3d kernel of CSAM is 5-D, which the engine's 'conv' transform does not handle: its entry
is a 'copy' at the PyTorch shape and the converters transpose it ((2, 3, 4, 1, 0) on import).

Run `python -m pytest tests/test_attention_nets.py`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from medsr_jax import torch_layouts as tl
from medsr_jax.models import attention_nets
from medsr_jax.torch_layouts import blocks as tb

BLOCKS_PATH = ('body', 'blocks')
CSA_KERNEL_PATH = ('csa', 'conv', 'kernel')


def _rcab_entries(key: str, path: tuple[str, ...], f: int, reduction: int, ada: bool,
                  index) -> list[tl.Entry]:
  out = []
  for t, name in ((0, 'conv_0'), (2, 'conv_1')):
    if ada:
      out += tb.conv(f'{key}.body.{t}.conv0', path + (name, 'conv0'), f, f, 1, index)
      out += tb.conv(f'{key}.body.{t}.conv1', path + (name, 'conv1'), f, f, 3, index)
      out += tb.conv(f'{key}.body.{t}.conv2', path + (name, 'conv2'), f, f, 3, index)
    else:
      out += tb.conv(f'{key}.body.{t}', path + (name,), f, f, 3, index)
  r = f // reduction
  out += tb.conv(f'{key}.body.3.conv_du.0', path + ('ca', 'down'), f, r, 1, index)
  out += tb.conv(f'{key}.body.3.conv_du.2', path + ('ca', 'up'), r, f, 1, index)
  return out


def _body_entries(model: Any, ada: bool) -> list[tl.Entry]:
  f, g_n, r_n = model.features, model.num_groups, model.num_blocks
  out = []
  for i in range(g_n):
    for j in range(r_n):
      if model.scan_blocks:
        path, index = BLOCKS_PATH, i * r_n + j
      else:
        path, index = (f'body_{i}', f'blocks_{j}'), None
      out += _rcab_entries(f'body.{i}.body.{j}', path, f, model.reduction, ada, index)
    gpath, gindex = (('body',), i) if model.scan_blocks else ((f'body_{i}',), None)
    out += tb.conv(f'body.{i}.body.{r_n}', gpath + ('conv',), f, f, index=gindex)
  out += tb.conv(f'body.{g_n}', ('body_conv',), f, f)
  return out


def entries(model: Any) -> list[tl.Entry]:
  """The ordered reference state-dict layout for `model` (an `RCAN` or a `HAN`)."""
  f, c = model.features, model.in_channels
  is_han = isinstance(model, attention_nets.HAN)
  out = tb.mean_shift(c)
  out += tb.conv('head.0', ('head',), c, f)
  out += _body_entries(model, ada=not is_han and model.ada_conv)
  if is_han:
    n = model.num_groups + 1
    out += [tl.Entry('csa.gamma', (1,), path=('csa', 'gamma')),
            tl.Entry('csa.conv.weight', (1, 1, 3, 3, 3), path=CSA_KERNEL_PATH),
            tl.Entry('csa.conv.bias', (1,), path=('csa', 'conv', 'bias')),
            tl.Entry('la.gamma', (1,), path=('la', 'gamma'))]
    out += tb.conv('last_conv', ('last_conv',), n * f, f)
    out += tb.conv('last', ('last',), 2 * f, f)
  out += tb.tail('tail', model.scale, f, c)
  return out


def _map_at(tree: Mapping[str, Any], path: tuple[str, ...],
            fn: Callable[[np.ndarray], np.ndarray]) -> Any:
  """A copy of nested dict `tree` with `fn` applied to every array at or under `path`."""
  if not path:
    if isinstance(tree, Mapping):
      return {k: _map_at(v, (), fn) for k, v in tree.items()}
    return fn(np.asarray(tree))
  if not isinstance(tree, Mapping) or path[0] not in tree:
    return tree  # absent: the engine reports missing variables by their PyTorch key
  return {**tree, path[0]: _map_at(tree[path[0]], path[1:], fn)}


def _reshape_blocks(params: Mapping[str, Any], model: Any, merge: bool) -> dict:
  g, r = model.num_groups, model.num_blocks
  if merge:
    fn = lambda a: a.reshape((g * r,) + a.shape[2:])
  else:
    fn = lambda a: a.reshape((g, r) + a.shape[1:])
  return _map_at(params, BLOCKS_PATH, fn)


_from_torch, _to_torch = tb.converters(entries)


def from_torch(model: Any, state_dict: Mapping[str, Any]) -> dict:
  """Flax variables ({'params', 'constants'}) from a reference RCAN / HAN state dict."""
  variables = _from_torch(model, state_dict)
  params = variables['params']
  if model.scan_blocks:
    params = _reshape_blocks(params, model, merge=False)
  params = _map_at(params, CSA_KERNEL_PATH, lambda a: np.ascontiguousarray(
      a.transpose(2, 3, 4, 1, 0)))
  variables['params'] = params
  return variables


def to_torch(model: Any, variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The reference state dict (numpy, reference key order) for RCAN / HAN `variables`."""
  if 'params' not in variables:
    variables = {'params': variables}
  params = variables['params']
  if model.scan_blocks:
    params = _reshape_blocks(params, model, merge=True)
  params = _map_at(params, CSA_KERNEL_PATH, lambda a: np.ascontiguousarray(
      a.transpose(4, 3, 0, 1, 2)))
  return _to_torch(model, dict(variables, params=params))
