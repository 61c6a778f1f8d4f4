"""RCAN and HAN as the author implemented them (thesis ch. 5 baselines; spec §5.8, §5.9), NHWC.

The thesis compares RDST with "RCAN [136]" and "HAN [137]" (§5.4.1, Tables 5.1-5.4; §5.4.2,
Table 5.5); its tables give 32.03M / 64.19M parameters and 41.34 / 83.86 GMACs, which are the
author's own networks (`RDST:networks/rcan.py`, `han.py`), not the published ones. Those are the
defaults here.

RCAN (`rcan`, reference `rcan_make_model`):

  x -> MeanShift sub -> head conv3x3(C -> 64) = x0
    -> 10 x ResidualGroup[20 x RCAB -> conv3x3, + input] -> conv3x3 ('body_conv') -> + x0
    -> UpSampler (2^k x [conv 64 -> 256, shuffle 2] or conv 64 -> 576, shuffle 3) -> conv3x3
    -> MeanShift add.

  Differences from the published RCAN (Zhang et al. 2018): every conv of every RCAB is the
  reference's `Ada_conv` (two 3x3 convs chosen per pixel and channel by a hard threshold on a
  1x1 conv of a transposed-and-reinterpreted input; see `layers.attention`), which doubles the
  convs: 32,025,249 trainable parameters at x4 / one channel (reference total 32,025,253 minus
  the 4 MeanShift numbers) against 15,590,049 with standard RCABs (`ada_conv=False`). The 1x1
  mask conv never gets a gradient (here: stop_gradient), so training leaves it at its initial
  weights, as in the reference. The reference's `res_scale` argument is ignored by its RCAB, so
  there is no such option.

HAN (`han`, reference `han_make_model`):

  x -> MeanShift sub -> head conv3x3(C -> 128) = x0
    -> 10 standard ResidualGroups (20 RCABs each) and a final conv3x3 ('body_conv'); the 11
       outputs, newest first (body_conv output, group 9, ..., group 0), are stacked for LAM
    -> LAM -> conv3x3(11 * 128 -> 128) ('last_conv') = out2
    -> CSAM(body_conv output) = out1
    -> conv3x3(cat[out1, out2] -> 128) ('last') -> + x0 -> UpSampler -> conv3x3 -> MeanShift add.

  Differences from the published HAN (Niu et al. 2020): 128 features instead of 64 (64,194,143
  trainable at x4); LAM and CSAM otherwise follow the published code (CSAM's gamma and LAM's
  gamma start at 0).

Stacking: with `scan_blocks=True` (default) the groups run under one `nn.scan` and the RCABs of a
group under a nested one, so XLA compiles one RCAB and one group; params are
`params['body']['blocks'][...]` with leading axes (num_groups, num_blocks) and
`params['body']['conv']` with (num_groups,). With False every block is unrolled
(`body_{i}/blocks_{j}`). Compile times, 2-core CPU, one 40 x 32 input, scan: rcan forward
0.9 s / gradient 3.7 s, han 1.5 s / 3.7 s.

The hard mask and float32 (rcan). A mask logit within rounding of 0 can land on either side in
two float32 implementations, and one flipped mask value early in the network spreads through
the later blocks and flips many more: two correct float32 forwards of the reference RCAN can
differ by ~5% (relative L2) on the same input. The forward takes any H x W (no padding).
`AdaConv` sows its pre-threshold logits in 'intermediates' (`apply(..., mutable=
['intermediates'])`) and reads an optional 'mask_override' collection that pins chosen mask
values (`layers.attention.MASK_OVERRIDE`); tests/test_attention_nets.py uses it to follow the
reference's own float32 trajectory in the parity test.

Run `python -m pytest tests/test_attention_nets.py`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.errors import InputError
from medsr_jax.layers import attention
from medsr_jax.layers import common
from medsr_jax.layers import upsample
from medsr_jax.models import registry


def _residual_groups(model: nn.Module, x: jax.Array, ada_conv: bool, emit: bool):
  """The body's residual groups, created inside `model`'s compact method (names 'body' or
  'body_{i}'). Returns (last output, the stacked outputs of every group if `emit`)."""
  kw = dict(features=model.features, num_blocks=model.num_blocks, reduction=model.reduction,
            ada_conv=ada_conv, init_scheme=model.init_scheme, scan_blocks=model.scan_blocks)
  if model.scan_blocks:
    groups = nn.scan(attention.ScannedResidualGroup,
                     variable_axes={'params': 0, attention.INTERMEDIATES: 0,
                                     attention.MASK_OVERRIDE: 0},
                     split_rngs={'params': True}, length=model.num_groups)
    return groups(**kw, emit=emit, name='body')(x, None)
  outs = []
  for i in range(model.num_groups):
    x = attention.ResidualGroup(**kw, name=f'body_{i}')(x)
    outs.append(x)
  return x, (jnp.stack(outs) if emit else None)


def _check(model: nn.Module) -> None:
  common.check_init_scheme(model.init_scheme)
  upsample.upsample_steps(model.scale)
  attention.ca_reduced(model.features, model.reduction)
  if model.num_groups < 1 or model.num_blocks < 1:
    raise ValueError('num_groups and num_blocks must be >= 1')


def _check_input(name: str, x: jax.Array, c: int) -> None:
  if x.ndim != 4 or x.shape[-1] != c:
    raise InputError(f'{name} expects (B, H, W, {c}) input, got {x.shape}')


class RCAN(nn.Module):
  """The author's RCAN (Ada-conv RCABs by default) for x2 / x3 / x4 SR, NHWC in and out."""
  scale: int = 4
  in_channels: int = 1
  features: int = 64
  num_groups: int = 10
  num_blocks: int = 20
  reduction: int = 16
  ada_conv: bool = True
  init_scheme: str = 'thesis'
  mean: Optional[Sequence[float]] = None
  std: Optional[Sequence[float]] = None
  scan_blocks: bool = True

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    _check(self)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: (B, H, W, in_channels) -> (B, scale*H, scale*W, in_channels). `train` is unused."""
    del train  # no BN or dropout
    self.check_config()
    _check_input('RCAN', x, self.in_channels)
    shift = common.MeanShift(self.in_channels, self.mean, self.std, name='mean_shift')
    x0 = common.conv3x3(self.features, init_scheme=self.init_scheme, name='head')(shift.sub(x))
    res, _ = _residual_groups(self, x0, self.ada_conv, emit=False)
    res = common.conv3x3(self.features, init_scheme=self.init_scheme, name='body_conv')(res)
    y = upsample.UpSampler(self.scale, self.features, init_scheme=self.init_scheme,
                           name='upsample')(res + x0)
    y = common.conv3x3(self.in_channels, init_scheme=self.init_scheme, name='conv_last')(y)
    return shift.add(y)


class HAN(nn.Module):
  """The author's HAN (128 features, LAM + CSAM) for x2 / x3 / x4 SR, NHWC in and out."""
  scale: int = 4
  in_channels: int = 1
  features: int = 128
  num_groups: int = 10
  num_blocks: int = 20
  reduction: int = 16
  init_scheme: str = 'thesis'
  mean: Optional[Sequence[float]] = None
  std: Optional[Sequence[float]] = None
  scan_blocks: bool = True

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    _check(self)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: (B, H, W, in_channels) -> (B, scale*H, scale*W, in_channels). `train` is unused."""
    del train
    self.check_config()
    _check_input('HAN', x, self.in_channels)
    f, conv_kw = self.features, dict(init_scheme=self.init_scheme)
    shift = common.MeanShift(self.in_channels, self.mean, self.std, name='mean_shift')
    x0 = common.conv3x3(f, name='head', **conv_kw)(shift.sub(x))
    res, groups = _residual_groups(self, x0, ada_conv=False, emit=True)
    out1 = common.conv3x3(f, name='body_conv', **conv_kw)(res)
    # Newest first: body_conv output, then group num_groups - 1, ..., group 0 -> (B, H, W, N, F).
    stacked = jnp.concatenate([out1[None], groups[::-1]], axis=0)
    layers = attention.LayerAttention(name='la')(jnp.moveaxis(stacked, 0, 3))
    out2 = common.conv3x3(f, name='last_conv', **conv_kw)(layers)
    out1 = attention.ChannelSpatialAttention(self.init_scheme, name='csa')(out1)
    res = common.conv3x3(f, name='last', **conv_kw)(jnp.concatenate([out1, out2], axis=-1))
    y = upsample.UpSampler(self.scale, f, name='upsample', **conv_kw)(res + x0)
    y = common.conv3x3(self.in_channels, name='conv_last', **conv_kw)(y)
    return shift.add(y)


registry.register('rcan', registry.make_constructor(RCAN))
registry.register('han', registry.make_constructor(HAN))
