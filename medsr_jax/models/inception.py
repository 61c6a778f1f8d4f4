"""pytorch-fid's FID Inception-v3 as a frozen feature extractor: images -> 2048-d pool3 features.

  from medsr_jax.models import inception
  net = inception.FIDInceptionV3()
  feats = net.apply(variables, x)        # x: (N, H, W, 3) already in [-1, 1], H, W >= 75
                                         # -> (N, 2048) pool3 features

The FID of the thesis (§4.3.2, Eq. for FID(I_res, I_gt); Heusel et al. [175]) is computed by the
author's copy of pytorch-fid 0.3.0 (reference spec §8.4): torchvision's Inception-v3 with 1008
classes and no auxiliary head, carrying the weights that pytorch-fid ported from TensorFlow's
2015-12-05 Inception graph (`pt_inception-2015-12-05-6726825d.pth`). The 2048-d "pool3"
feature is the global average pool after Mixed_7c. This module is that network in NHWC with
eval-mode BatchNorm only (it is never trained). The resize to 299 x 299 and the 2x - 1 scaling
belong to the metric (`medsr_jax.metrics.fid`), not to this module.

Every convolution is a BasicConv2d: conv (no bias) -> BatchNorm (eps 1e-3, running statistics)
-> ReLU. Flax names are the PyTorch module names, so `Mixed_5b.branch1x1.conv.weight` is
params/Mixed_5b/branch1x1/conv/kernel and `...bn.running_mean` is batch_stats/.../bn/mean
(`medsr_jax.torch_layouts.inception`).

  Conv2d_1a_3x3 (3 -> 32, 3x3 s2)   Conv2d_2a_3x3 (32 -> 32, 3x3)   Conv2d_2b_3x3 (32 -> 64, 3x3 p1)
  max-pool 3x3 s2
  Conv2d_3b_1x1 (64 -> 80, 1x1)     Conv2d_4a_3x3 (80 -> 192, 3x3)   max-pool 3x3 s2
  Mixed_5b/5c/5d  FIDInceptionA (pool features 32, 64, 64)           -> 256, 288, 288
  Mixed_6a        InceptionB (torchvision)                           -> 768
  Mixed_6b..6e    FIDInceptionC (7x7 widths 128, 160, 160, 192)      -> 768
  Mixed_7a        InceptionD (torchvision)                           -> 1280
  Mixed_7b        FIDInceptionE_1                                    -> 2048
  Mixed_7c        FIDInceptionE_2                                    -> 2048
  adaptive average pool to 1 x 1 -> (N, 2048)      the output ("pool3")
  fc (2048 -> 1008)  ImageNet logits: kept with the weights (`logits=True`), never used by FID

The FID variants differ from torchvision's blocks only in their pooling branch (pytorch-fid's
port of TF's graph): A, C and E_1 use a 3x3 stride-1 average pool with padding 1 that does NOT
count the padding (count_include_pad=False); E_2 (Mixed_7c) uses a 3x3 stride-1 max pool with
padding 1. B and D are torchvision's (3x3 stride-2 max pool, no padding).

23,850,960 parameters as pytorch-fid's (21,785,568 up to pool3, plus the fc's 2,065,392).
Convolutions run at `precision='highest'` by default so that features (and FID) do not depend on
the accelerator's default float32 matmul precision (TF32 on GPUs, bf16 passes on TPUs).

The input must be at least 75 x 75 (Mixed_7a then sees 3 x 3); FID always feeds 299 x 299.

Run `python -m pytest tests/test_fid.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.errors import InputError
from medsr_jax.layers import common
from medsr_jax.layers import convolution
from medsr_jax.models import registry

FEATURES = 2048
NUM_CLASSES = 1008     # the TF graph's ImageNet classes (1000 + 8 unused)
IN_CHANNELS = 3
BN_EPS = 1e-3          # torchvision BasicConv2d: BatchNorm2d(eps=0.001)
MIN_SIZE = 75          # smallest side the network accepts (Mixed_7a's 3x3 stride-2 needs 3x3)
FID_SIZE = 299         # the size FID resizes every image to
EXAMPLE_SIZE = FID_SIZE  # example input: one FID image (what complexity tables measure)


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """One BasicConv2d: its PyTorch attribute name, widths, kernel (kh, kw), stride, padding."""
  name: str
  din: int
  dout: int
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: tuple[int, int] = (0, 0)


def _c(name, din, dout, kernel=(1, 1), stride=1, padding=(0, 0)) -> ConvSpec:
  return ConvSpec(name, din, dout, tuple(kernel), stride, tuple(padding))


# The stem: (PyTorch name, spec); 'pool' marks torchvision's MaxPool2d(3, stride=2).
STEM = (
    _c('Conv2d_1a_3x3', 3, 32, (3, 3), stride=2),
    _c('Conv2d_2a_3x3', 32, 32, (3, 3)),
    _c('Conv2d_2b_3x3', 32, 64, (3, 3), padding=(1, 1)),
    'pool',
    _c('Conv2d_3b_1x1', 64, 80),
    _c('Conv2d_4a_3x3', 80, 192, (3, 3)),
    'pool',
)

# (name, block kind, input width, option): option = pool features (A) / 7x7 width (C).
MIXED = (
    ('Mixed_5b', 'A', 192, 32),
    ('Mixed_5c', 'A', 256, 64),
    ('Mixed_5d', 'A', 288, 64),
    ('Mixed_6a', 'B', 288, None),
    ('Mixed_6b', 'C', 768, 128),
    ('Mixed_6c', 'C', 768, 160),
    ('Mixed_6d', 'C', 768, 160),
    ('Mixed_6e', 'C', 768, 192),
    ('Mixed_7a', 'D', 768, None),
    ('Mixed_7b', 'E_1', 1280, None),
    ('Mixed_7c', 'E_2', 2048, None),
)


def block_convs(kind: str, din: int, option: Optional[int] = None) -> list[ConvSpec]:
  """The BasicConv2d's of one Inception block, in torchvision's registration (state-dict) order."""
  r17, r71 = ((1, 7), (0, 3)), ((7, 1), (3, 0))
  r13, r31 = ((1, 3), (0, 1)), ((3, 1), (1, 0))
  if kind == 'A':
    return [_c('branch1x1', din, 64),
            _c('branch5x5_1', din, 48), _c('branch5x5_2', 48, 64, (5, 5), padding=(2, 2)),
            _c('branch3x3dbl_1', din, 64), _c('branch3x3dbl_2', 64, 96, (3, 3), padding=(1, 1)),
            _c('branch3x3dbl_3', 96, 96, (3, 3), padding=(1, 1)),
            _c('branch_pool', din, option)]
  if kind == 'B':
    return [_c('branch3x3', din, 384, (3, 3), stride=2),
            _c('branch3x3dbl_1', din, 64), _c('branch3x3dbl_2', 64, 96, (3, 3), padding=(1, 1)),
            _c('branch3x3dbl_3', 96, 96, (3, 3), stride=2)]
  if kind == 'C':
    c7 = option
    return [_c('branch1x1', din, 192),
            _c('branch7x7_1', din, c7), _c('branch7x7_2', c7, c7, r17[0], padding=r17[1]),
            _c('branch7x7_3', c7, 192, r71[0], padding=r71[1]),
            _c('branch7x7dbl_1', din, c7), _c('branch7x7dbl_2', c7, c7, r71[0], padding=r71[1]),
            _c('branch7x7dbl_3', c7, c7, r17[0], padding=r17[1]),
            _c('branch7x7dbl_4', c7, c7, r71[0], padding=r71[1]),
            _c('branch7x7dbl_5', c7, 192, r17[0], padding=r17[1]),
            _c('branch_pool', din, 192)]
  if kind == 'D':
    return [_c('branch3x3_1', din, 192), _c('branch3x3_2', 192, 320, (3, 3), stride=2),
            _c('branch7x7x3_1', din, 192), _c('branch7x7x3_2', 192, 192, r17[0], padding=r17[1]),
            _c('branch7x7x3_3', 192, 192, r71[0], padding=r71[1]),
            _c('branch7x7x3_4', 192, 192, (3, 3), stride=2)]
  if kind in ('E_1', 'E_2'):
    return [_c('branch1x1', din, 320),
            _c('branch3x3_1', din, 384), _c('branch3x3_2a', 384, 384, r13[0], padding=r13[1]),
            _c('branch3x3_2b', 384, 384, r31[0], padding=r31[1]),
            _c('branch3x3dbl_1', din, 448),
            _c('branch3x3dbl_2', 448, 384, (3, 3), padding=(1, 1)),
            _c('branch3x3dbl_3a', 384, 384, r13[0], padding=r13[1]),
            _c('branch3x3dbl_3b', 384, 384, r31[0], padding=r31[1]),
            _c('branch_pool', din, 192)]
  raise ValueError(f'unknown Inception block kind {kind!r}')


def all_convs() -> list[tuple[tuple[str, ...], ConvSpec]]:
  """[(Flax path of the BasicConv2d, spec)] of the whole network, in state-dict order."""
  out = [((s.name,), s) for s in STEM if s != 'pool']
  for name, kind, din, option in MIXED:
    out += [((name, s.name), s) for s in block_convs(kind, din, option)]
  return out


class Conv(nn.Module):
  """`nn.Conv2d(din, dout, (kh, kw), stride, padding, bias=False)`; param 'kernel' (kh, kw, in,
  out). Runs `layers.convolution.conv2d` (rectangular kernels and paddings are fine)."""
  spec: ConvSpec
  precision: Any = 'highest'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = self.spec
    kh, kw = s.kernel
    if x.shape[-1] != s.din:
      raise ValueError(f'{s.name}: expected {s.din} input channels, got {x.shape[-1]}')
    kernel = self.param('kernel', common.torch_uniform(s.din * kh * kw), (kh, kw, s.din, s.dout))
    ph, pw = s.padding
    return convolution.conv2d(x, kernel.astype(x.dtype), padding=((ph, ph), (pw, pw)),
                              stride=s.stride, precision=self.precision)


class BasicConv2d(nn.Module):
  """torchvision BasicConv2d: conv (no bias) -> BatchNorm(eps 1e-3, eval) -> ReLU.

  Params: conv/kernel (kh, kw, in, out); bn/scale, bn/bias; batch_stats bn/mean, bn/var.
  """
  spec: ConvSpec
  precision: Any = 'highest'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = Conv(self.spec, self.precision, name='conv')(x)
    y = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, use_fast_variance=False,
                     name='bn')(y)
    return jax.nn.relu(y)


def _max_pool_s2(x: jax.Array) -> jax.Array:
  """MaxPool2d(kernel_size=3, stride=2) (floor mode, no padding)."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False) (pytorch-fid's A/C/E_1)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3(x: jax.Array) -> jax.Array:
  """F.max_pool2d(x, 3, stride=1, padding=1) (pytorch-fid's E_2; padding never wins a max)."""
  return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


class InceptionBlock(nn.Module):
  """One Mixed_* block: 'A', 'B', 'C', 'D', 'E_1' or 'E_2' (see the module docstring)."""
  kind: str
  din: int
  option: Optional[int] = None
  precision: Any = 'highest'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    convs = {s.name: BasicConv2d(s, self.precision, name=s.name)
             for s in block_convs(self.kind, self.din, self.option)}

    def chain(*names, y=x):
      for n in names:
        y = convs[n](y)
      return y

    if self.kind == 'A':
      return jnp.concatenate([
          chain('branch1x1'), chain('branch5x5_1', 'branch5x5_2'),
          chain('branch3x3dbl_1', 'branch3x3dbl_2', 'branch3x3dbl_3'),
          chain('branch_pool', y=_avg_pool_3x3(x))], axis=-1)
    if self.kind == 'B':
      return jnp.concatenate([
          chain('branch3x3'), chain('branch3x3dbl_1', 'branch3x3dbl_2', 'branch3x3dbl_3'),
          _max_pool_s2(x)], axis=-1)
    if self.kind == 'C':
      return jnp.concatenate([
          chain('branch1x1'), chain('branch7x7_1', 'branch7x7_2', 'branch7x7_3'),
          chain(*[f'branch7x7dbl_{i}' for i in range(1, 6)]),
          chain('branch_pool', y=_avg_pool_3x3(x))], axis=-1)
    if self.kind == 'D':
      return jnp.concatenate([
          chain('branch3x3_1', 'branch3x3_2'),
          chain(*[f'branch7x7x3_{i}' for i in range(1, 5)]), _max_pool_s2(x)], axis=-1)
    # E_1 / E_2: the 3x3 branches split into parallel 1x3 and 3x1 convs.
    b3 = chain('branch3x3_1')
    b3 = jnp.concatenate([convs['branch3x3_2a'](b3), convs['branch3x3_2b'](b3)], axis=-1)
    bd = chain('branch3x3dbl_1', 'branch3x3dbl_2')
    bd = jnp.concatenate([convs['branch3x3dbl_3a'](bd), convs['branch3x3dbl_3b'](bd)], axis=-1)
    pool = _avg_pool_3x3(x) if self.kind == 'E_1' else _max_pool_3x3(x)
    return jnp.concatenate([chain('branch1x1'), b3, bd, chain('branch_pool', y=pool)], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's `fid_inception_v3()`: (N, H, W, 3) in [-1, 1] -> (N, 2048) pool3 features
  (or, with `logits=True`, the (N, 1008) logits of its `fc`, which FID does not use)."""
  precision: Any = 'highest'

  def example_inputs(self):
    x = jax.ShapeDtypeStruct((1, EXAMPLE_SIZE, EXAMPLE_SIZE, IN_CHANNELS), jnp.float32)
    return (x,), {}

  @nn.compact
  def __call__(self, x: jax.Array, logits: bool = False) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != IN_CHANNELS:
      raise InputError(f'FID Inception-v3 expects (N, H, W, 3) input, got {x.shape}')
    if min(x.shape[1:3]) < MIN_SIZE:
      raise InputError(f'FID Inception-v3 needs images of at least {MIN_SIZE}x{MIN_SIZE}, got '
                       f'{x.shape[1]}x{x.shape[2]} (FID resizes to {FID_SIZE}x{FID_SIZE})')
    for s in STEM:
      x = _max_pool_s2(x) if s == 'pool' else BasicConv2d(s, self.precision, name=s.name)(x)
    for name, kind, din, option in MIXED:
      x = InceptionBlock(kind, din, option, self.precision, name=name)(x)
    features = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d((1, 1)) + flatten
    if logits or self.is_initializing():  # the fc is part of the weights file: always created
      out = common.Linear(NUM_CLASSES, precision=self.precision, name='fc')(features)
      if logits:
        return out
    return features


registry.register('fid_inception', registry.make_constructor(
    FIDInceptionV3, scale_kind='none', convention=registry.derive_convention(FIDInceptionV3)))
