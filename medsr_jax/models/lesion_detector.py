"""Lesion detection network LD of MS-GAN's lesion-focused training (thesis §3.2.2, §3.3.3).

LD predicts the centre (c_x, c_y) of the lesion ROI from one image; the ROI of a preset size is
then cropped from the LR / HR pair (thesis eq. 3.7-3.10). It was written in TensorFlow and no code
is published, so this module is built from the text and the Fig. 3.2 caption alone:

  * "a resizing layer as the head" making LD "input-scale free" (trained on HR, run on LR):
    bilinear resize of the input to `input_size` x `input_size`;
  * "a 5-level encoder": "5 max pooling residual blocks, each of which has 4 convolutional layers
    (width = [32, 64, 128, 128, 128] and kernel size = 3 x 3)"; "each level consists of two
    residual blocks and halves the size of feature maps by max pooling";
  * "three fully connected layers [that] have [1024, 128, 2] nodes";
  * "ReLU activation applies after each batch normalisation layer and the FC layer".

NHWC forward:

  x -> resize to S x S -> 5 levels of:
         2 x ResBlock: y = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x)))) + shortcut(x)))
         -> max-pool 2x2 stride 2
    -> flatten (H, W, C) -> fc1 (128 (S/32)^2 -> 1024) -> ReLU -> fc2 (1024 -> 128) -> ReLU
    -> fc3 (128 -> 2) = (c_x, c_y)

Choices where the thesis is silent (each a field; rows in docs/FIDELITY.md):
  * `input_size` S = 256: the BraTS HR slices (240 x 240, the training input) rounded up to a
    multiple of 32 so the five poolings divide evenly; `resize_method` 'linear' (bilinear,
    half-pixel centres, no anti-aliasing; TensorFlow's resize default is bilinear). An input
    already S x S is not resampled.
  * The residual blocks are ResNet BasicBlocks (two 3x3 convs, each followed by BN; ReLU after
    the sum). When a block changes the width (the first block of levels 1-3) its shortcut is a
    1x1 conv + BN projection (ResNet option B), which the "4 convolutional layers" count of 3x3
    convs does not include; otherwise the identity.
  * Convs followed by BN have no bias (BN's shift makes it redundant); FC layers have biases.
  * Initialisation: PyTorch's default U(+-1/sqrt(fan_in)) ("Kaiming-uniform", as the thesis
    says of its PyTorch work) in both `init_scheme`s, since there is no reference code.
  * The last FC layer is linear (no ReLU): it regresses the centre, trained with an L2 loss
    (thesis eq. 3.8). Coordinates are in whatever units the training labels use; normalised
    [0, 1] coordinates (x / W, y / H) make them independent of the input scale.

Output: (N, 2) (c_x, c_y). 10,388,354 params at the defaults for one channel (closed form in
tests/test_lesion_detector.py). BatchNorm: `train=True` uses batch statistics and updates the
running ones (apply with `mutable=['batch_stats']`).

Run `python -m pytest tests/test_lesion_detector.py`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.errors import InputError
from medsr_jax.layers import common
from medsr_jax.models import registry

LD_WIDTHS = (32, 64, 128, 128, 128)
LD_FC = (1024, 128)
RESIZE_METHODS = ('linear', 'nearest', 'cubic')
# No reference code exists: both init schemes use PyTorch's default (Kaiming-uniform) init.
LINEAR_INIT = 'thesis'


class ResBlock(nn.Module):
  """ResNet BasicBlock (stride 1): conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU."""
  features: int
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    kw = dict(init_scheme=self.init_scheme, use_bias=False)
    y = common.conv3x3(self.features, name='conv1', **kw)(x)
    y = nn.relu(common.batch_norm(train, 'bn1')(y))
    y = common.conv3x3(self.features, name='conv2', **kw)(y)
    y = common.batch_norm(train, 'bn2')(y)
    if x.shape[-1] != self.features:
      x = common.Conv2d(self.features, 1, name='shortcut_conv', **kw)(x)
      x = common.batch_norm(train, 'shortcut_bn')(x)
    return nn.relu(y + x)


class LesionDetector(nn.Module):
  """LD: (N, H, W, in_channels) of any size -> (N, 2) predicted ROI centre (c_x, c_y)."""
  in_channels: int = 1
  input_size: int = 256
  widths: Sequence[int] = LD_WIDTHS
  blocks_per_level: int = 2
  fc_features: Sequence[int] = LD_FC
  num_outputs: int = 2
  resize_method: str = 'linear'
  init_scheme: str = 'thesis'

  def check_config(self) -> None:
    common.check_init_scheme(self.init_scheme)
    if self.resize_method not in RESIZE_METHODS:
      raise ValueError(f'resize_method must be one of {RESIZE_METHODS}, got '
                       f'{self.resize_method!r}')
    levels = len(self.widths)
    if levels < 1 or self.blocks_per_level < 1:
      raise ValueError('widths and blocks_per_level must be non-empty / positive')
    if self.input_size % 2 ** levels:
      raise ValueError(f'input_size {self.input_size} must be a multiple of 2^{levels} '
                       f'({levels} max-pool levels)')

  def example_inputs(self):
    s = self.input_size
    return (jax.ShapeDtypeStruct((1, s, s, self.in_channels), jnp.float32),), {}

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: (N, H, W, in_channels) -> (N, num_outputs). `train` selects BN batch statistics."""
    self.check_config()
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise InputError(f'lesion detector expects (N, H, W, {self.in_channels}) input, '
                       f'got {x.shape}')
    s = self.input_size
    if x.shape[1:3] != (s, s):
      x = jax.image.resize(x, (x.shape[0], s, s, x.shape[-1]), self.resize_method,
                           antialias=False)
    for level, width in enumerate(self.widths):
      for b in range(self.blocks_per_level):
        x = ResBlock(width, self.init_scheme, name=f'level{level}_block{b}')(x, train)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    for i, f in enumerate(self.fc_features):
      x = nn.relu(common.Linear(f, init_scheme=LINEAR_INIT, name=f'fc{i + 1}')(x))
    return common.Linear(self.num_outputs, init_scheme=LINEAR_INIT,
                         name=f'fc{len(self.fc_features) + 1}')(x)


registry.register('lesion_detector', registry.make_constructor(LesionDetector, scale_kind='none'))
