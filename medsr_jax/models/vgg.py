"""VGG-19 `features` (torchvision layout) as a frozen feature extractor for perceptual losses.

  from medsr_jax import models
  net = models.build('vgg19')                          # layers=('vgg22', 'vgg54'), normalize=True
  feats = net.apply(variables, x)                      # x: (N, H, W, 3) in [0, 1]
  feats['vgg22'], feats['vgg54']                       # (N, H/2, W/2, 128), (N, H/16, W/16, 512)

The network is torchvision's `vgg19().features` (reference spec §7.2), NHWC: sixteen 3x3 convs
(padding 1, bias) each followed by a ReLU, and 2x2 stride-2 max-pools (floor) after conv1_2,
conv2_2, conv3_4, conv4_4 and conv5_4:

  block 1: conv1_1 (3 -> 64)    features.0    conv1_2 (64 -> 64)    features.2    pool features.4
  block 2: conv2_1 (64 -> 128)  features.5    conv2_2 (128 -> 128)  features.7    pool features.9
  block 3: conv3_1..conv3_4 (-> 256)   features.10, 12, 14, 16                   pool features.18
  block 4: conv4_1..conv4_4 (-> 512)   features.19, 21, 23, 25                   pool features.27
  block 5: conv5_1..conv5_4 (-> 512)   features.28, 30, 32, 34                   pool features.36

The Flax params are named conv{block}_{i} (Caffe names); `torch_layouts.vgg` maps them to the
`features.N` keys. 20,024,384 parameters (torchvision's vgg19.features).

Taps (`layers`): 'vgg22' is the conv2_2 output (`features[:8]`) and 'vgg54' the conv5_4 output
(`features[:35]`), both BEFORE their ReLU as in the author's `loss/vgg.py` (spec §7.2) and ESRGAN;
`after_relu=True` takes them after the ReLU (`features[:9]` / `features[:36]`, SRGAN's
phi_{i,j}, thesis §3.2.4). Only layers up to the deepest requested tap are built and run, so a
'vgg22'-only module has 4 convs (and ignores the other params of a full export in `apply`).

`normalize=True` applies the ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225) to
inputs in [0, 1] (torchvision weights, spec §7.2); `normalize=False` feeds the input as it is
(the MINC VGG of ESRGAN, spec §7.3, and the parity case of reference/PARITY.md).

The model has no `scale` or `in_channels` option: it always takes 3-channel RGB (the perceptual
loss in `medsr_jax.losses.perceptual` repeats grey channels); the registry accepts and ignores
both arguments.

Run `python -m pytest tests/test_vgg.py`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.errors import InputError
from medsr_jax.layers import common
from medsr_jax.models import registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Output widths of the convs of each block (torchvision cfg 'E'); a max-pool ends every block.
BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
# Tap name -> (block, conv index within the block), both 1-based as in the Caffe names.
TAPS = {'vgg22': (2, 2), 'vgg54': (5, 4)}
IN_CHANNELS = 3
EXAMPLE_SIZE = 96


def conv_names() -> list[tuple[str, int, int]]:
  """[(flax name, torchvision `features` index, output width)] of the 16 convs, in order."""
  out, index = [], 0
  for b, widths in enumerate(BLOCKS, start=1):
    for i, w in enumerate(widths, start=1):
      out.append((f'conv{b}_{i}', index, w))
      index += 2  # conv, ReLU
    index += 1  # max-pool
  return out


def tap_conv(tap: str) -> str:
  """The Flax name of the conv whose output is `tap` ('vgg22' -> 'conv2_2')."""
  b, i = TAPS[tap]
  return f'conv{b}_{i}'


class VGG19Features(nn.Module):
  """torchvision VGG-19 `features` up to the deepest tap of `layers`; returns {tap: NHWC}."""
  layers: Sequence[str] = ('vgg22', 'vgg54')
  after_relu: bool = False
  normalize: bool = True

  def check_config(self) -> None:
    layers = tuple(self.layers)
    if not layers:
      raise ValueError('VGG19Features needs at least one layer (vgg22 or vgg54)')
    unknown = [t for t in layers if t not in TAPS]
    if unknown:
      raise ValueError(f'unknown VGG layer(s) {unknown}; known: {sorted(TAPS)}')

  def num_convs(self) -> int:
    """How many of the 16 convs this module builds (up to its deepest tap)."""
    names = [n for n, _, _ in conv_names()]
    return max(names.index(tap_conv(t)) for t in self.layers) + 1

  def example_inputs(self):
    x = jax.ShapeDtypeStruct((1, EXAMPLE_SIZE, EXAMPLE_SIZE, IN_CHANNELS), jnp.float32)
    return (x,), {}

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    """x: (N, H, W, 3) (in [0, 1] when `normalize`) -> {tap: (N, h, w, C) features}."""
    self.check_config()
    if x.ndim != 4 or x.shape[-1] != IN_CHANNELS:
      raise InputError(f'VGG-19 expects (N, H, W, 3) RGB input, got {x.shape}')
    if self.normalize:
      mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
      std = jnp.asarray(IMAGENET_STD, x.dtype)
      x = (x - mean) / std
    wanted = {tap_conv(t): t for t in self.layers}
    remaining = len(set(wanted))
    out = {}
    for b, widths in enumerate(BLOCKS, start=1):
      for i, w in enumerate(widths, start=1):
        name = f'conv{b}_{i}'
        x = common.Conv2d(w, 3, padding=1, name=name)(x)
        pre = x
        x = jax.nn.relu(x)
        if name in wanted:
          out[wanted[name]] = x if self.after_relu else pre
          remaining -= 1
          if remaining == 0:
            return {t: out[t] for t in self.layers}
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
    raise AssertionError('unreachable: every tap is inside the network')


registry.register('vgg19', registry.make_constructor(
    VGG19Features, scale_kind='none',
    convention=registry.derive_convention(VGG19Features, output='dict')))
