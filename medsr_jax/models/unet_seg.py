"""The segmentation U-Net behind the segmentation-based perceptual losses (thesis §5.2.2, Fig 5.2).

The author's `loss/seg_unet.py` builds `smp.Unet(in_channels, classes)` of
segmentation-models-pytorch 0.3.3 with its defaults (spec §5.16): a ResNet-34 encoder of depth 5
and a U-Net decoder. NHWC here:

  encoder (torchvision ResNet-34 without avgpool / fc):
    e1 = ReLU(BN(conv1 7x7 s2 p3, no bias))                64 @ /2   (spec: stage index 1)
    e2 = layer1(maxpool 3x3 s2 p1 (e1))  3 BasicBlocks    64 @ /4
    e3 = layer2(e2)                      4 BasicBlocks    128 @ /8
    e4 = layer3(e3)                      6 BasicBlocks    256 @ /16
    e5 = layer4(e4)                      3 BasicBlocks    512 @ /32
    BasicBlock: ReLU(BN(conv3x3(ReLU(BN(conv3x3 s(x))))) + shortcut), convs without bias;
    shortcut = BN(conv1x1 s(x)) in the first block of layers 2-4 (stride 2), else x.
  decoder (centre = identity), 5 blocks of widths (256, 128, 64, 32, 16):
    x = e5; for skip in (e4, e3, e2, e1, none):
      x = nearest x2 upsample(x) -> concat(x, skip) -> [conv3x3 (no bias) -> BN -> ReLU] x 2
  head: conv3x3 (16 -> classes, bias), no activation: 'logits'.

`__call__` returns a dict: 'logits' (B, H, W, num_classes); the encoder stages 'e1'..'e5'
(strides 2..32; the thesis' U[E_i], spec §5.16 stage indices 1..5) and 'decoder' (the last
decoder block, 16 channels at full size: the thesis' U[D]) so the perceptual losses of spec §7.5
can tap them: 'encoder-L1' uses e1 (feature 1 of smp's `encoder(x)` list), 'decoder' uses
'decoder', 'label-hr' uses 'logits'. `encoder_only=True` runs the encoder alone and returns only
'e1'..'e5', which is what the reference does for its 'encoder' loss modes (the decoder's BN
statistics are then untouched in train mode).

BatchNorm: `train=True` uses batch statistics and updates the running ones (apply with
`mutable=['batch_stats']`). Note the reference's trap (spec §7.5, §11 item 5): its loss module is
never put in eval mode, so the U-Net runs with training-mode BN during the perceptual loss; the
loss code decides which mode to use, this module only offers both.

H and W must be multiples of 32 (smp's `check_input_shape` refuses the others: the skips would
not line up).
24,430,532 params for 1 -> 4 (encoder 21,278,400, decoder 3,151,552, head 580); in_channels 4
(BraTS) changes conv1 only. Layout keys: `torch_layouts.unet_seg` (the smp state dict).

Initialisation: PyTorch's default uniform for every conv in both `init_scheme`s. The reference
never trains from its own init: smp downloads ImageNet encoder weights and the author then loads
a segmentation checkpoint (not available, spec §10 item 1), so import trained weights with
`export_torch.variables_from_torch('unet_seg', ...)` for real use.

Blocks are a plain loop (16 BasicBlocks in four stages of 3-6; no nn.scan): the forward at
160 x 128 compiles and runs in about 4-5 s on a shared 2-core CPU.

Run `python -m pytest tests/test_unet_seg.py`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.errors import InputError
from medsr_jax.layers import common
from medsr_jax.models import registry

RESNET34_BLOCKS = (3, 4, 6, 3)
RESNET_WIDTHS = (64, 128, 256, 512)
DECODER_CHANNELS = (256, 128, 64, 32, 16)
ENCODER_DEPTH = 5
OUTPUT_STRIDE = 2 ** ENCODER_DEPTH
FEATURES = ('e1', 'e2', 'e3', 'e4', 'e5')


def needs_downsample(in_features: int, features: int, stride: int) -> bool:
  """torchvision's rule for a projection shortcut in a BasicBlock."""
  return stride != 1 or in_features != features


class BasicBlock(nn.Module):
  """torchvision ResNet BasicBlock (expansion 1), convs without bias."""
  features: int
  stride: int = 1
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    kw = dict(use_bias=False, init_scheme=self.init_scheme)
    y = common.Conv2d(self.features, 3, stride=self.stride, padding=1, name='conv1', **kw)(x)
    y = nn.relu(common.batch_norm(train, 'bn1')(y))
    y = common.Conv2d(self.features, 3, stride=1, padding=1, name='conv2', **kw)(y)
    y = common.batch_norm(train, 'bn2')(y)
    if needs_downsample(x.shape[-1], self.features, self.stride):
      x = common.Conv2d(self.features, 1, stride=self.stride, padding=0, name='downsample_conv', **kw)(x)
      x = common.batch_norm(train, 'downsample_bn')(x)
    return nn.relu(y + x)


class ResNetEncoder(nn.Module):
  """smp `ResNetEncoder` (torchvision ResNet without avgpool / fc): returns (e1, ..., e5)."""
  stem_features: int = 64
  stage_widths: Sequence[int] = RESNET_WIDTHS
  blocks_per_stage: Sequence[int] = RESNET34_BLOCKS
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    x = common.Conv2d(self.stem_features, 7, stride=2, padding=3, use_bias=False, init_scheme=self.init_scheme,
                      name='conv1')(x)
    x = nn.relu(common.batch_norm(train, 'bn1')(x))
    feats = [x]
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, (width, n) in enumerate(zip(self.stage_widths, self.blocks_per_stage)):
      for b in range(n):
        stride = 2 if (stage > 0 and b == 0) else 1
        x = BasicBlock(width, stride, self.init_scheme, name=f'layer{stage + 1}_{b}')(x, train)
      feats.append(x)
    return tuple(feats)


class DecoderBlock(nn.Module):
  """smp `DecoderBlock`: nearest x2 upsample, concat skip, 2 x [conv3x3 (no bias), BN, ReLU]."""
  features: int
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array, skip: Optional[jax.Array], train: bool = False) -> jax.Array:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if skip is not None:
      x = jnp.concatenate([x, skip], axis=-1)
    for i in (1, 2):
      x = common.conv3x3(self.features, init_scheme=self.init_scheme, name=f'conv{i}',
                         use_bias=False)(x)
      x = nn.relu(common.batch_norm(train, f'bn{i}')(x))
    return x


class UNetDecoder(nn.Module):
  """smp `UnetDecoder` (centre = identity): e5 up through the skips e4, e3, e2, e1, none."""
  decoder_channels: Sequence[int] = DECODER_CHANNELS
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, feats: Sequence[jax.Array], train: bool = False) -> jax.Array:
    y = feats[-1]
    skips = list(feats[-2::-1]) + [None]
    for i, (width, skip) in enumerate(zip(self.decoder_channels, skips)):
      y = DecoderBlock(width, self.init_scheme, name=f'block_{i}')(y, skip, train)
    return y


class UNetSeg(nn.Module):
  """smp.Unet(resnet34, depth 5): (B, H, W, in_channels) -> dict of logits and tapped features."""
  in_channels: int = 1
  num_classes: int = 4
  stem_features: int = 64
  stage_widths: Sequence[int] = RESNET_WIDTHS
  blocks_per_stage: Sequence[int] = RESNET34_BLOCKS
  decoder_channels: Sequence[int] = DECODER_CHANNELS
  example_hw: tuple[int, int] = (160, 128)  # an OASIS slice: traces init, sizes tables
  init_scheme: str = 'thesis'

  def check_config(self) -> None:
    common.check_init_scheme(self.init_scheme)
    if len(self.stage_widths) != ENCODER_DEPTH - 1 or len(self.blocks_per_stage) != (
        ENCODER_DEPTH - 1):
      raise ValueError(f'stage_widths and blocks_per_stage need {ENCODER_DEPTH - 1} entries '
                       '(encoder depth 5)')
    if len(self.decoder_channels) != ENCODER_DEPTH:
      raise ValueError(f'decoder_channels needs {ENCODER_DEPTH} entries, got '
                       f'{tuple(self.decoder_channels)}')
    if min(self.blocks_per_stage) < 1 or self.num_classes < 1:
      raise ValueError('blocks_per_stage entries and num_classes must be positive')

  def example_inputs(self):
    h, w = self.example_hw
    return (jax.ShapeDtypeStruct((1, h, w, self.in_channels), jnp.float32),), {}

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               encoder_only: bool = False) -> dict[str, jax.Array]:
    """x: (B, H, W, in_channels), H and W multiples of 32.

    Returns {'e1', ..., 'e5'} and, unless `encoder_only`, 'decoder' (B, H, W, 16) and
    'logits' (B, H, W, num_classes).
    """
    self.check_config()
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise InputError(f'U-Net expects (B, H, W, {self.in_channels}) input, got {x.shape}')
    if x.shape[1] % OUTPUT_STRIDE or x.shape[2] % OUTPUT_STRIDE:
      raise InputError(f'U-Net input sides must be multiples of {OUTPUT_STRIDE}, got '
                       f'{x.shape[1]}x{x.shape[2]}')
    feats = ResNetEncoder(self.stem_features, self.stage_widths, self.blocks_per_stage,
                          self.init_scheme, name='encoder')(x, train)
    out = dict(zip(FEATURES, feats))
    if encoder_only:
      return out
    y = UNetDecoder(self.decoder_channels, self.init_scheme, name='decoder')(feats, train)
    out['decoder'] = y
    out['logits'] = common.conv3x3(self.num_classes, init_scheme=self.init_scheme,
                                   name='segmentation_head')(y)
    return out


registry.register('unet_seg', registry.make_constructor(
    UNetSeg, scale_kind='none', convention=registry.derive_convention(UNetSeg, output='dict')))
