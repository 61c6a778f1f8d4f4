"""Fields and forward steps shared by the zoo's single-image SR generators (NHWC).

Most generators of the zoo are variations of one skeleton, the post-upsampling framework of
thesis Fig. 2.16 built from the author's `networks/common.py` blocks (reference spec §5.1):

  x -> MeanShift sub -> head conv3x3(C -> F) = x0 -> body -> conv3x3(F -> F) -> + x0
    -> UpSampler(F) -> conv3x3(F -> C) -> MeanShift add

The classes here hold what the models of `resnets`, `dense_nets`, `attention_nets`, `convnet`,
`swinir`, `rdst`, `ms_gan` and `meta_sr` repeat:

  `SRModel`        fields `scale`, `in_channels`, `init_scheme`; `check_input` (an InputError
                   naming the class unless x is (B, H, W, in_channels)), `conv` (a
                   `common.Conv2d` with the model's init scheme), `global_skip` (conv3x3 +
                   skip) and `upsample_tail` (`upsample.UpSampler` -> conv3x3 back to C).
  `MeanShiftSR`    + fields `mean` / `std` and `mean_shift()`, the top-level
                   `common.MeanShift(name='mean_shift')` of models with the reference's frozen
                   `sub_mean` / `add_mean`; a `__call__` template: MeanShift sub ->
                   `feature_maps(x, train)` -> `reconstruct(features, train)` (default:
                   `upsample_tail`) -> MeanShift add.
  `FeatureExtractorSR`  + field `feature_maps_only` (the Meta-SR feature-extractor mode: no
                   MeanShift and no tail are built; `__call__` returns `feature_maps(x)`),
                   and `feature_channels`.

The helpers are `nn.nowrap` and build their layers as children of the model (they must be
called from its compact `__call__`), so Flax parameter names are the model's own ('head',
'body_conv', 'upsample', 'conv_last', ...) and checkpoints / PyTorch layouts do not depend on
this module. Each model keeps its own fields, defaults and `check_config`.

Run `python -m pytest tests/test_zoo.py` (and each family's test file).
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax

from medsr_jax import cpu_compile
from medsr_jax.errors import InputError
from medsr_jax.layers import common
from medsr_jax.layers import upsample


def global_skip(t: jax.Array, x0: jax.Array, init_scheme: str, name: str = 'body_conv',
                res_scale: Optional[float] = None) -> jax.Array:
  """conv3x3(t -> x0's channels) [* res_scale] + x0, the conv created as `name` in the caller's
  compact method (also for modules that are not `SRModel`s, e.g. an MS-GAN stage)."""
  y = common.conv3x3(x0.shape[-1], init_scheme=init_scheme, name=name)(t)
  if res_scale is not None:
    y = y * res_scale
  return y + x0


class SRModel(nn.Module):
  """Base of the SR generators: scale, image channels, init scheme and the shared layers."""
  scale: int = 4
  in_channels: int = 1
  init_scheme: str = 'thesis'

  @nn.nowrap
  def check_input(self, x: jax.Array) -> None:
    """InputError unless `x` is (B, H, W, in_channels)."""
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise InputError(f'{type(self).__name__} expects (B, H, W, {self.in_channels}) input, '
                       f'got {x.shape}')

  @nn.nowrap
  def scan_unroll(self, length: int) -> int:
    """`nn.scan(..., unroll=)` for the model's stack of `length` blocks: `cpu_compile.scan_unroll`
    (the whole stack on CPU when short enough), never while the model initialises."""
    return cpu_compile.scan_unroll(length, initializing=self.is_initializing())

  @nn.nowrap
  def conv(self, features: int, name: str, kernel_size: int = 3) -> common.Conv2d:
    """The reference's `default_conv` (padding k // 2, bias) with the model's init scheme."""
    return common.Conv2d(features, kernel_size, init_scheme=self.init_scheme, name=name)

  @nn.nowrap
  def global_skip(self, t: jax.Array, x0: jax.Array, name: str = 'body_conv',
                  res_scale: Optional[float] = None) -> jax.Array:
    """conv3x3(t) (named `name`) [* res_scale] + x0: the body's last conv and global skip."""
    return global_skip(t, x0, self.init_scheme, name, res_scale)

  @nn.nowrap
  def upsample_tail(self, features: jax.Array, train: bool = False, *, bn: bool = False,
                    upsample_name: str = 'upsample', last_name: str = 'conv_last') -> jax.Array:
    """UpSampler(scale, F) (`upsample_name`) -> conv3x3(F -> in_channels) (`last_name`).

    F is the channel count of `features`; `bn` puts BatchNorm after every shuffle (SRResNet),
    which `train` then drives.
    """
    y = upsample.UpSampler(self.scale, features.shape[-1], init_scheme=self.init_scheme, bn=bn,
                           name=upsample_name)(features, train)
    return self.conv(self.in_channels, last_name)(y)


class MeanShiftSR(SRModel):
  """An `SRModel` wrapped in the reference's fixed MeanShift (`mean` / `std`, 'constants').

  Subclasses define `check_config()` and `feature_maps(x, train)` (head to the features that
  feed the tail) and may override `reconstruct(features, train)`; `__call__(x, train=False)`:
  (B, H, W, C) -> (B, sH, sW, C).
  """
  mean: Optional[Sequence[float]] = None
  std: Optional[Sequence[float]] = None

  @nn.nowrap
  def mean_shift(self) -> common.MeanShift:
    """The top-level `common.MeanShift` ('mean_shift'), created in the caller's compact call."""
    return common.MeanShift(self.in_channels, self.mean, self.std, name='mean_shift')

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    raise NotImplementedError

  @nn.nowrap
  def feature_maps(self, x: jax.Array, train: bool) -> jax.Array:
    """The features that feed the tail, from the mean-shifted input."""
    raise NotImplementedError

  @nn.nowrap
  def reconstruct(self, features: jax.Array, train: bool) -> jax.Array:
    """The tail: UpSampler -> conv_last (before MeanShift add)."""
    del train
    return self.upsample_tail(features)

  @nn.nowrap
  def features_only(self) -> bool:
    """True when `__call__` returns the features (no MeanShift, no tail)."""
    return False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: (B, H, W, C) -> (B, sH, sW, C); `train` is passed to `feature_maps` / `reconstruct`."""
    self.check_config()
    self.check_input(x)
    if self.features_only():
      return self.feature_maps(x, train)
    shift = self.mean_shift()
    return shift.add(self.reconstruct(self.feature_maps(shift.sub(x), train), train))


class FeatureExtractorSR(MeanShiftSR):
  """A `MeanShiftSR` that is also a Meta-SR feature extractor (`feature_maps_only`).

  With `feature_maps_only=True` no MeanShift and no tail are built (no 'constants', no tail
  params) and `__call__` returns the (B, H, W, `feature_channels`) features; `scale` is unused.
  """
  feature_maps_only: bool = False

  @property
  def feature_channels(self) -> int:
    """Channels of the features that feed the tail (the output with `feature_maps_only`)."""
    raise NotImplementedError

  @nn.nowrap
  def features_only(self) -> bool:
    return self.feature_maps_only
