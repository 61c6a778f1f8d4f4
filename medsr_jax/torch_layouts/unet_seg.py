"""PyTorch layout of smp.Unet(resnet34) (the author's seg U-Net, spec §5.16) <-> `UNetSeg`.

Key map (`tests/data/state_dicts/unet_seg.json` lists every key; all convs but the head have no
bias):

  encoder.conv1 / encoder.bn1                       -> encoder/conv1, encoder/bn1
  encoder.layer{s}.{b}.conv1 / bn1 / conv2 / bn2    -> encoder/layer{s}_{b}/conv1 / bn1 / ...
  encoder.layer{s}.0.downsample.0 / .1              -> encoder/layer{s}_0/downsample_conv / _bn
  decoder.blocks.{i}.conv1.0 / conv1.1              -> decoder/block_{i}/conv1 / bn1
  decoder.blocks.{i}.conv2.0 / conv2.1              -> decoder/block_{i}/conv2 / bn2
  segmentation_head.0                               -> segmentation_head
  BN running_mean / running_var -> 'batch_stats'; *.num_batches_tracked: structural (any integer
  scalar accepted, 0 exported).

Run `python -m pytest tests/test_unet_seg.py`.
"""

from __future__ import annotations

from typing import Any

from medsr_jax import torch_layouts as tl
from medsr_jax.models import unet_seg
from medsr_jax.torch_layouts import blocks as tb


def _conv_bn(key: str, bn_key: str, path: tuple[str, ...], conv_name: str, bn_name: str,
             din: int, dout: int, k: int) -> list[tl.Entry]:
  return (tb.conv(key, path + (conv_name,), din, dout, k, bias=False)
          + tb.batch_norm(bn_key, path + (bn_name,), dout))


def entries(model: Any) -> list[tl.Entry]:
  """The ordered smp state-dict layout matching `model` (a `UNetSeg`)."""
  out = _conv_bn('encoder.conv1', 'encoder.bn1', ('encoder',), 'conv1', 'bn1',
                 model.in_channels, model.stem_features, 7)
  c = model.stem_features
  enc_channels = [c]
  for s, (width, n) in enumerate(zip(model.stage_widths, model.blocks_per_stage)):
    for b in range(n):
      key, path = f'encoder.layer{s + 1}.{b}', ('encoder', f'layer{s + 1}_{b}')
      stride = 2 if (s > 0 and b == 0) else 1
      out += _conv_bn(f'{key}.conv1', f'{key}.bn1', path, 'conv1', 'bn1', c, width, 3)
      out += _conv_bn(f'{key}.conv2', f'{key}.bn2', path, 'conv2', 'bn2', width, width, 3)
      if unet_seg.needs_downsample(c, width, stride):
        out += _conv_bn(f'{key}.downsample.0', f'{key}.downsample.1', path, 'downsample_conv',
                        'downsample_bn', c, width, 1)
      c = width
    enc_channels.append(c)
  skips = enc_channels[-2::-1] + [0]
  for i, (width, skip) in enumerate(zip(model.decoder_channels, skips)):
    key, path = f'decoder.blocks.{i}', ('decoder', f'block_{i}')
    out += _conv_bn(f'{key}.conv1.0', f'{key}.conv1.1', path, 'conv1', 'bn1', c + skip, width, 3)
    out += _conv_bn(f'{key}.conv2.0', f'{key}.conv2.1', path, 'conv2', 'bn2', width, width, 3)
    c = width
  out += tb.conv('segmentation_head.0', ('segmentation_head',), c, model.num_classes, 3)
  return out


from_torch, to_torch = tb.converters(entries)
