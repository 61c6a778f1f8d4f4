"""PyTorch layout of the author's `SwinIR` state dict <-> `models.swinir.SwinIR`.

Key map (spec §5.12; `tests/data/state_dicts/swinir*.json` lists every key):

  conv_first                                     -> conv_first                  (conv)
  patch_embed.norm                               -> patch_norm                  (LayerNorm)
  layers.{i}.residual_group.blocks.{j}.<stl>     -> layers[_i]/blocks_{j}/<stl> (rdst.stl_entries)
  layers.{i}.conv                                -> layers[_i]/conv
  norm, conv_after_body                          -> norm, conv_after_body
  'pixelshuffledirect': upsample.0               -> upsample                    (conv d -> s^2 C)
  'pixelshuffle': conv_before_upsample.0         -> conv_before_upsample
                  upsample.{0,2} (x3: upsample.0) -> upsample/conv_{0,1}
                  conv_last                      -> conv_last
  *.attn.relative_position_index, *.attn_mask buffers: checked if present, regenerated on export.

With `scan_blocks=True` the Flax path is layers/... with RSTB i on the leading axis. The
`attn_mask` buffers exist only where the odd STLs shift (x2 / x3 with the reference's patch 24);
they are the masks for the reference's construction size `model.construction_size()` (16 there;
a mask for another square size is accepted if it equals ours for that size). SwinIR has no
MeanShift convs: its mean is a constant, not in the state dict.

Run `python -m pytest tests/test_swinir.py`.
"""

from __future__ import annotations

from typing import Any, Optional

from medsr_jax import torch_layouts as tl
from medsr_jax.torch_layouts import blocks as tb
from medsr_jax.torch_layouts.rdst import stl_entries


def entries(model: Any, img_size: Optional[int] = None) -> list[tl.Entry]:
  """The ordered state-dict layout of the reference SwinIR matching `model` (a `SwinIR`).

  img_size: the reference's construction size (default `model.construction_size()`), which only
  sets the shape of the exported attn_mask buffers.
  """
  c, d, w = model.in_channels, model.embed_dim, model.window_size
  size = model.construction_size() if img_size is None else int(img_size)
  shift = model.shift_size()
  out = tb.conv('conv_first', ('conv_first',), c, d)
  if model.patch_norm:
    out += tb.layer_norm('patch_embed.norm', ('patch_norm',), d)
  for i in range(model.num_layers):
    base, index = (('layers',), i) if model.scan_blocks else ((f'layers_{i}',), None)
    for j in range(model.depth):
      out += stl_entries(f'layers.{i}.residual_group.blocks.{j}', base + (f'blocks_{j}',), d,
                         model.num_heads, w, shift if j % 2 else 0, model.mlp_ratio, index, size)
    out += tb.conv(f'layers.{i}.conv', base + ('conv',), d, d, index=index)
  out += tb.layer_norm('norm', ('norm',), d)
  out += tb.conv('conv_after_body', ('conv_after_body',), d, d)
  s = model.scale
  if model.upsampler == 'pixelshuffledirect':
    out += tb.conv('upsample.0', ('upsample',), d, s * s * c)
  else:
    f = model.num_feat
    out += tb.conv('conv_before_upsample.0', ('conv_before_upsample',), d, f)
    out += tb.upsampler('upsample', ('upsample',), s, f)
    out += tb.conv('conv_last', ('conv_last',), f, c)
  return out


from_torch, to_torch = tb.converters(entries)
