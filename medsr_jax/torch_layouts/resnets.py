"""PyTorch layouts of the author's SRResNet, EDSR(-lite) and MDSR <-> `models.resnets`.

Key maps (spec §5.2-§5.4; `tests/data/state_dicts/{srresnet,edsr_lite,edsr,mdsr}*.json` list
every key in order):

  add_mean / sub_mean .weight/.bias            -> 'constants' mean_shift {mean, std} (checked)
  head.0                                       -> head                       (MDSR: head_{s}.0)
  body.{i}.body.{0,3} (SRResNet) / {0,2}       -> body/conv_{0,1}            (block i on axis 0)
  body.{i}.body.{1,4}  BatchNorm (SRResNet)    -> body/bn_{0,1} (+ running stats in batch_stats)
  body.0.body.2.weight  the shared PReLU       -> prelu/alpha
  body.{i>0}.body.2.weight                     -> alias of body.0.body.2.weight (must be equal)
  body.{n_resblocks}                           -> body_conv
  tail.0.{t} (+ BN tail.0.{t+2} in SRResNet)   -> upsample/conv_{k} (+ upsample/bn_{k})
  tail.1                                       -> tail                       (MDSR: tail_{s}.1)
  input_layer.0 (MDSR, unused by its forward)  -> input_layer
  *.num_batches_tracked                        -> structural: any integer scalar, 0 on export

Order: SRResNet lists mean shift, head, body, tail; EDSR lists mean shift, TAIL, head, body (its
constructor builds the tail first); MDSR lists mean shift, input_layer, head_2/3/4, body,
tail_2/3/4. With `feature_maps_only` the mean-shift and tail keys are left out (the model has no
such variables); with `scan_blocks=False` block i is `body_{i}/...`.

`block_entries` and `trunk_entries` are reusable by composite layouts (Meta-SR around an EDSR /
SRResNet / MDSR; see `torch_layouts.prefixed`); the up-sampler is `blocks.upsampler`.

Run `python -m pytest tests/test_resnets.py`.
"""

from __future__ import annotations

from typing import Any, Optional

from medsr_jax import torch_layouts as tl
from medsr_jax.layers import residual
from medsr_jax.models import resnets
from medsr_jax.torch_layouts import blocks as tb

Path = tuple[str, ...]


def block_entries(key: str, path: Path, n: int, *, bn: bool, act: str, out_act: bool = False,
                  index: Optional[int] = None, prelu_of: Optional[str] = None,
                  prelu_path: Path = ('prelu',)) -> list[tl.Entry]:
  """One `ResBlock`: Sequential(conv, [BN], act, conv, [BN], [act]) under `key`.body.

  PReLU (act 'prelu'): with `prelu_of` None the slope is a param at `prelu_path`, otherwise an
  alias of that key (the SRResNet shared slope).
  """
  out: list[tl.Entry] = []
  t = 0
  for i in range(2):
    out += tb.conv(f'{key}.body.{t}', path + (f'conv_{i}',), n, n, index=index)
    t += 1
    if bn:
      out += tb.batch_norm(f'{key}.body.{t}', path + (f'bn_{i}',), n, index=index)
      t += 1
    if i == 0 or out_act:
      if act == residual.PRELU:
        k = f'{key}.body.{t}.weight'
        out.append(tb.alias(k, prelu_of, (1,)) if prelu_of else
                   tb.prelu(f'{key}.body.{t}', prelu_path)[0])
        prelu_of = prelu_of or k
      t += 1
  return out


def trunk_entries(model: Any) -> list[tl.Entry]:
  """body.{i} ResBlocks + body.{R} conv of `resnets.trunk` (the shared PReLU at body.0)."""
  n, r = model.n_feats, model.n_resblocks
  shared = None
  out = []
  for i in range(r):
    path, index = (('body',), i) if model.scan_blocks else ((f'body_{i}',), None)
    block = block_entries(f'body.{i}', path, n, bn=model.bn, act=model.act,
                          out_act=model.out_act, index=index, prelu_of=shared)
    if model.act == residual.PRELU and shared is None:
      shared = next(e.key for e in block if e.path == ('prelu', 'alpha'))
    out += block
  out += tb.conv(f'body.{r}', ('body_conv',), n, n)
  return out


def entries(model: Any) -> list[tl.Entry]:
  """The ordered reference state-dict layout of `model` (SRResNet, EDSR or MDSR)."""
  c, n = model.in_channels, model.n_feats
  full = not model.feature_maps_only
  out = tb.mean_shift(c) if full else []
  if isinstance(model, resnets.MDSR):
    if model.input_layer:
      out += tb.conv('input_layer.0', ('input_layer',), c, n)
    for s in model.scales:
      out += tb.conv(f'head_{s}.0', (f'head_{s}',), c, n)
    out += trunk_entries(model)
    if full:
      for s in model.scales:
        out += tb.tail(f'tail_{s}', s, n, c, upsample_path=(f'upsample_{s}',),
                       last_path=(f'tail_{s}',))
    return out
  head = tb.conv('head.0', ('head',), c, n)
  tail = tb.tail('tail', model.scale, n, c, bn=getattr(model, 'upsampler_bn', False),
                 last_path=('tail',)) if full else []
  if isinstance(model, resnets.EDSR):
    return out + tail + head + trunk_entries(model)
  return out + head + trunk_entries(model) + tail


from_torch, to_torch = tb.converters(entries)
