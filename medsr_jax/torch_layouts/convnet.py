"""PyTorch layout of the author's `ConvNetSR` (ConvNet-lite / -large) <-> `models.convnet`.

Key map (spec §5.14; `tests/data/state_dicts/convnet_*.json` list every key):

  add_mean / sub_mean .weight/.bias   -> 'constants' mean_shift {mean, std} (checked; unused by
                                         the reference forward, kept for the round trip)
  head.0                              -> head
  body.{i}.gamma                      -> body[_i]/gamma            (layer scale, copy)
  body.{i}.dwconv (C, 1, 7, 7)        -> body[_i]/dwconv (7, 7, 1, C)   (depthwise, 'conv')
  body.{i}.norm                       -> body[_i]/norm             (LayerNorm, eps 1e-6)
  body.{i}.pwconv1 / pwconv2          -> body[_i]/pwconv1 / pwconv2 (Linear)
  tail.0.{0,2} (x3: tail.0.0)         -> upsample/conv_{0,1}
  tail.1                              -> conv_last

With `scan_blocks=True` the Flax path is body/... with block i on the leading axis.

Run `python -m pytest tests/test_convnet.py`.
"""

from __future__ import annotations

from typing import Any

from medsr_jax import torch_layouts as tl
from medsr_jax.torch_layouts import blocks as tb


def entries(model: Any) -> list[tl.Entry]:
  """The ordered reference state-dict layout of `model` (a `ConvNetSR`)."""
  c, f, k = model.in_channels, model.features, model.kernel_size
  hidden = model.expansion * f
  out = tb.mean_shift(c)
  out += tb.conv('head.0', ('head',), c, f)
  for i in range(model.num_blocks):
    base, index = (('body',), i) if model.scan_blocks else ((f'body_{i}',), None)
    key = f'body.{i}'
    out.append(tl.Entry(f'{key}.gamma', (f,), path=base + ('gamma',), index=index))
    out += tb.conv(f'{key}.dwconv', base + ('dwconv',), f, f, k, index, groups=f)
    out += tb.layer_norm(f'{key}.norm', base + ('norm',), f, index)
    out += tb.linear(f'{key}.pwconv1', base + ('pwconv1',), f, hidden, index)
    out += tb.linear(f'{key}.pwconv2', base + ('pwconv2',), hidden, f, index)
  out += tb.tail('tail', model.scale, f, c)
  return out


from_torch, to_torch = tb.converters(entries)
