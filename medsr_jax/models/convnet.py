"""ConvNet-lite / ConvNet-large: the author's ConvNeXt-block SR networks (thesis §5.4.2), NHWC.

The thesis proposes ConvNet-based SISR models "to discuss the impacts of the receptive field"
(§5.4.2, Table 5.5: 7x7 window, widths 64 / 192, 1.69 / 21.00 GMACs, 0.88M / 12.43M params);
the code is `RDST:networks/convnet.py` `ConvNetSR` (reference spec §5.14):

  x -> head conv3x3(C -> F) = x0
    -> num_blocks x ConvNeXt block -> + x0 * res_scale
    -> UpSampler (2^k x [conv F -> 4F, shuffle 2] or conv F -> 9F, shuffle 3) -> conv3x3(F -> C)

  ConvNeXt block (Liu et al. 2022, "A ConvNet for the 2020s"): depthwise conv 7x7 (padding 3,
  bias) -> LayerNorm(F, eps 1e-6) -> Linear(F -> 4F) -> GELU (exact) -> Linear(4F -> F)
  -> * gamma (layer scale, per channel, initialised 1e-6) -> + block input. No DropPath.

`convnet_lite`: F = 64, 16 blocks, 880,321 trainable at x4 / one channel; `convnet_large`:
F = 192, 32 blocks, 12,452,929 (reference totals minus the 4 MeanShift numbers).

Differences from the textbook / other zoo models:
  * The reference builds `sub_mean` / `add_mean` (so its state dict has them) but never applies
    them in `forward`. Here the `mean_shift` module exists (imported mean / std live in
    'constants' and are exported again) and `mean_shift_in_forward=False` (default, the
    reference) leaves it out of the forward; True applies it like the EDSR-family models.
  * No trunc-normal re-initialisation: `ConvNetSR` keeps PyTorch's default init for its convs and
    Linear layers (uniform, bound 1/sqrt(fan_in); the depthwise conv has fan_in 49), which is also
    the thesis' "Kaiming-uniform". Both `init_scheme`s therefore give the same init here (the
    shared 'reference' trunc-normal Linear init belongs to the Swin models).
  * LayerNorm eps is 1e-6 (ConvNeXt's), not PyTorch's default 1e-5 of `common.layer_norm`.

Stacking: with `scan_blocks=True` (default) the blocks run under `nn.scan`, params under
`params['body']` with a leading block axis; with False they are `params['body_{i}']`.

Run `python -m pytest tests/test_convnet.py`.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax

from medsr_jax.layers import common
from medsr_jax.layers import remat
from medsr_jax.layers import upsample
from medsr_jax.models import base
from medsr_jax.models import registry

LN_EPS = 1e-6
LAYER_SCALE_INIT = 1e-6


class ConvNeXtBlock(nn.Module):
  """dwconv 7x7 -> LayerNorm(eps 1e-6) -> Linear 4F -> GELU -> Linear F -> * gamma, + x."""
  features: int
  kernel_size: int = 7
  expansion: int = 4
  layer_scale_init: float = LAYER_SCALE_INIT

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    f = self.features
    y = common.Conv2d(x.shape[-1], self.kernel_size, groups=x.shape[-1], name='dwconv')(x)
    y = common.layer_norm('norm', eps=LN_EPS)(y)
    # The reference keeps PyTorch's default Linear init: the 'thesis' scheme of common.Linear.
    y = common.Linear(self.expansion * f, init_scheme='thesis', name='pwconv1')(y)
    y = common.Linear(f, init_scheme='thesis', name='pwconv2')(common.gelu(y))
    gamma = self.param('gamma', nn.initializers.constant(self.layer_scale_init), (f,))
    return x + common.broadcast_like(gamma, y) * y


class ScannedConvNeXtBlock(ConvNeXtBlock):
  """`ConvNeXtBlock` with the (carry, x) -> (carry, None) signature of `nn.scan`."""

  def __call__(self, x: jax.Array, _: Optional[jax.Array] = None):  # pytype: disable=signature-mismatch
    return super().__call__(x), None


class ConvNetSR(base.MeanShiftSR):
  """ConvNeXt-block SR network for x2 / x3 / x4 (NHWC in and out)."""
  features: int = 64
  num_blocks: int = 16
  kernel_size: int = 7
  expansion: int = 4
  layer_scale_init: float = LAYER_SCALE_INIT
  res_scale: float = 1.0
  mean_shift_in_forward: bool = False
  scan_blocks: bool = True

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    common.check_init_scheme(self.init_scheme)
    upsample.upsample_steps(self.scale)
    if self.num_blocks < 1 or self.kernel_size % 2 == 0:
      raise ValueError('num_blocks must be >= 1 and kernel_size odd')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: (B, H, W, in_channels) -> (B, scale*H, scale*W, in_channels). `train` is unused."""
    del train  # no dropout, DropPath or BN
    self.check_config()
    self.check_input(x)
    shift = self.mean_shift()
    shifted = shift.sub(x)  # computed always so 'constants' exist; XLA drops it when unused
    if self.mean_shift_in_forward:
      x = shifted
    x0 = self.conv(self.features, 'head')(x)
    kw = dict(features=self.features, kernel_size=self.kernel_size, expansion=self.expansion,
              layer_scale_init=self.layer_scale_init)
    if self.scan_blocks:
      blocks = nn.scan(remat.block(ScannedConvNeXtBlock, scanned=True), variable_axes={'params': 0},
                       split_rngs={'params': True}, length=self.num_blocks)
      y, _ = blocks(**kw, name='body')(x0, None)
    else:
      y = x0
      for i in range(self.num_blocks):
        y = remat.block(ConvNeXtBlock)(**kw, name=f'body_{i}')(y)
    y = self.upsample_tail(y + x0 * self.res_scale)
    return shift.add(y) if self.mean_shift_in_forward else y


registry.register('convnet_lite', registry.make_constructor(ConvNetSR, features=64,
                                                            num_blocks=16))
registry.register('convnet_large', registry.make_constructor(ConvNetSR, features=192,
                                                             num_blocks=32))
