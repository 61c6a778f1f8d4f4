"""PyTorch layouts of the author's SRDenseNet, RDN and ESRGAN state dicts <-> `models.dense_nets`.

Key maps (spec §5.1, §5.5-§5.7; `tests/data/state_dicts/{srdensenet,rdn,esrgan}*.json` list every
key). A conv dense layer is `<block>.body.{l}.body.0` in PyTorch and `<block>/.../body_{l}/conv`
here; RDB / RRDB entries carry `index=i` (block i on the leading axis) when `scan_blocks=True`.

  all three   add_mean / sub_mean .weight/.bias  -> 'constants' mean_shift {mean, std} (checked)
              head.0                             -> head
              tail.0.{0,2} (x3: tail.0.0)        -> upsample/conv_{0,1}
              tail.1                             -> conv_last
  SRDenseNet  body.{b}.body.{l}.body.0           -> body_{b}/body_{l}/conv
              bottleneck                         -> bottleneck (1x1)
  RDN         F0                                 -> F0
              body.{i}.body.{l}.body.0           -> body[_i]/dense/body_{l}/conv
              body.{i}.bottle_neck               -> body[_i]/bottle_neck (LFF 1x1)
              bottleneck.0 / bottleneck.1        -> bottleneck_0 (GFF 1x1) / bottleneck_1 (3x3)
  ESRGAN      body.{i}.body.{k}.body.{l}.body.0  -> body[_i]/body_{k}/dense/body_{l}/conv
              body.{i}.body.{k}.bottle_neck      -> body[_i]/body_{k}/bottle_neck
              body.{num_blocks}                  -> body_conv

With `feature_maps_only=True` the mean-shift and tail keys are left out (the feature extractor
of the Meta-SR models; `blocks.tail` builds the tail keys for a caller that needs them).

Run `python -m pytest tests/test_dense_nets.py`.
"""

from __future__ import annotations

from typing import Any, Optional

from medsr_jax import torch_layouts as tl
from medsr_jax.models import dense_nets
from medsr_jax.torch_layouts import blocks as tb

Path = tuple[str, ...]


def dense_layers(key: str, path: Path, din: int, growth: int, num_layers: int,
                 index: Optional[int] = None) -> list[tl.Entry]:
  """Reference `DenseBlock` body `key`.{l}.body.0 (conv3x3 din + l * growth -> growth)."""
  out = []
  for j in range(num_layers):
    out += tb.conv(f'{key}.{j}.body.0', path + (f'body_{j}', 'conv'), din + j * growth, growth,
                   index=index)
  return out


def rdb_entries(key: str, path: Path, features: int, growth: int, num_layers: int,
                index: Optional[int] = None) -> list[tl.Entry]:
  """Reference `ResidualDenseBlock` at `key` -> `layers.dense.ResidualDenseBlock` at `path`."""
  out = dense_layers(f'{key}.body', path + ('dense',), features, growth, num_layers, index)
  out += tb.conv(f'{key}.bottle_neck', path + ('bottle_neck',), features + num_layers * growth,
                 features, 1, index=index)
  return out


def rrdb_entries(key: str, path: Path, features: int, growth: int, num_layers: int, num_rdb: int,
                 index: Optional[int] = None) -> list[tl.Entry]:
  """Reference `ResidualRDB` at `key` -> `layers.dense.RRDB` at `path`."""
  out = []
  for k in range(num_rdb):
    out += rdb_entries(f'{key}.body.{k}', path + (f'body_{k}',), features, growth, num_layers,
                       index)
  return out


def _srdensenet(model: dense_nets.SRDenseNet) -> list[tl.Entry]:
  c, g = model.in_channels, model.growth_rate
  out = tb.conv('head.0', ('head',), c, g)
  for b, width in enumerate(model.block_widths()):
    out += dense_layers(f'body.{b}.body', (f'body_{b}',), width, g, model.num_layers)
  out += tb.conv('bottleneck', ('bottleneck',), model.bottleneck_in(), model.features, 1)
  return out


def _block(model: Any, i: int) -> tuple[Path, Optional[int]]:
  return (('body',), i) if model.scan_blocks else ((f'body_{i}',), None)


def _rdn(model: dense_nets.RDN) -> list[tl.Entry]:
  c, f, d = model.in_channels, model.features, model.num_blocks
  out = tb.conv('head.0', ('head',), c, f)
  out += tb.conv('F0', ('F0',), f, f)
  for i in range(d):
    path, index = _block(model, i)
    out += rdb_entries(f'body.{i}', path, f, model.growth_rate, model.num_layers, index)
  out += tb.conv('bottleneck.0', ('bottleneck_0',), d * f, f, 1)
  out += tb.conv('bottleneck.1', ('bottleneck_1',), f, f)
  return out


def _esrgan(model: dense_nets.ESRGAN) -> list[tl.Entry]:
  c, f = model.in_channels, model.features
  out = tb.conv('head.0', ('head',), c, f)
  for i in range(model.num_blocks):
    path, index = _block(model, i)
    out += rrdb_entries(f'body.{i}', path, f, model.growth_rate, model.num_layers,
                        model.num_rdb, index)
  out += tb.conv(f'body.{model.num_blocks}', ('body_conv',), f, f)
  return out


_BODIES = {dense_nets.SRDenseNet: _srdensenet, dense_nets.RDN: _rdn,
           dense_nets.ESRGAN: _esrgan}


def entries(model: Any) -> list[tl.Entry]:
  """The ordered reference state-dict layout of `model` (an SRDenseNet, RDN or ESRGAN)."""
  body = next((fn for cls, fn in _BODIES.items() if isinstance(model, cls)), None)
  if body is None:
    raise TypeError(f'no dense-net layout for {type(model).__name__}')
  if model.feature_maps_only:
    return body(model)
  out = tb.mean_shift(model.in_channels)
  out += body(model)
  out += tb.tail('tail', model.scale, model.feature_channels, model.in_channels)
  return out


from_torch, to_torch = tb.converters(entries)
