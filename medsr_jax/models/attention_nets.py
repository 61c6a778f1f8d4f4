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

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.layers import attention
from medsr_jax.layers import common
from medsr_jax.layers import remat
from medsr_jax.layers import upsample
from medsr_jax.models import base
from medsr_jax.models import registry


class _ResidualGroupSR(base.MeanShiftSR):
  """Fields and checks shared by RCAN and HAN (residual groups of RCABs)."""
  features: int = 64
  num_groups: int = 10
  num_blocks: int = 20
  reduction: int = 16
  scan_blocks: bool = True

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    common.check_init_scheme(self.init_scheme)
    upsample.upsample_steps(self.scale)
    attention.ca_reduced(self.features, self.reduction)
    if self.num_groups < 1 or self.num_blocks < 1:
      raise ValueError('num_groups and num_blocks must be >= 1')

  @nn.nowrap
  def residual_groups(self, x: jax.Array, ada_conv: bool, emit: bool):
    """The body's residual groups, created inside the compact `__call__` (names 'body' or
    'body_{i}'). Returns (last output, the stacked outputs of every group if `emit`)."""
    kw = dict(features=self.features, num_blocks=self.num_blocks, reduction=self.reduction,
              ada_conv=ada_conv, init_scheme=self.init_scheme, scan_blocks=self.scan_blocks)
    if self.scan_blocks:
      groups = nn.scan(remat.block(attention.ScannedResidualGroup, scanned=True),
                       variable_axes={'params': 0, attention.INTERMEDIATES: 0,
                                       attention.MASK_OVERRIDE: 0},
                       split_rngs={'params': True}, length=self.num_groups)
      return groups(**kw, emit=emit, name='body')(x, None)
    outs = []
    for i in range(self.num_groups):
      x = remat.block(attention.ResidualGroup)(**kw, name=f'body_{i}')(x)
      outs.append(x)
    return x, (jnp.stack(outs) if emit else None)


class RCAN(_ResidualGroupSR):
  """The author's RCAN (Ada-conv RCABs by default) for x2 / x3 / x4 SR, NHWC in and out.

  `__call__(x, train=False)`: (B, H, W, in_channels) -> (B, scale*H, scale*W, in_channels);
  `train` is unused (no BN or dropout).
  """
  ada_conv: bool = True

  @nn.nowrap
  def feature_maps(self, x: jax.Array, train: bool) -> jax.Array:
    """head -> residual groups -> body_conv -> + head."""
    del train  # no BN or dropout
    x0 = self.conv(self.features, 'head')(x)
    res, _ = self.residual_groups(x0, self.ada_conv, emit=False)
    return self.global_skip(res, x0)


class HAN(_ResidualGroupSR):
  """The author's HAN (128 features, LAM + CSAM) for x2 / x3 / x4 SR, NHWC in and out.

  `__call__(x, train=False)`: (B, H, W, in_channels) -> (B, scale*H, scale*W, in_channels);
  `train` is unused.
  """
  features: int = 128

  @nn.nowrap
  def feature_maps(self, x: jax.Array, train: bool) -> jax.Array:
    """head -> groups -> body_conv; LAM over all group outputs, CSAM; 'last' conv -> + head."""
    del train
    f = self.features
    x0 = self.conv(f, 'head')(x)
    res, groups = self.residual_groups(x0, ada_conv=False, emit=True)
    out1 = self.conv(f, 'body_conv')(res)
    # Newest first: body_conv output, then group num_groups - 1, ..., group 0 -> (B, H, W, N, F).
    stacked = jnp.concatenate([out1[None], groups[::-1]], axis=0)
    layers = attention.LayerAttention(name='la')(jnp.moveaxis(stacked, 0, 3))
    out2 = self.conv(f, 'last_conv')(layers)
    out1 = attention.ChannelSpatialAttention(self.init_scheme, name='csa')(out1)
    return self.global_skip(jnp.concatenate([out1, out2], axis=-1), x0, 'last')


registry.register('rcan', registry.make_constructor(RCAN))
registry.register('han', registry.make_constructor(HAN))
