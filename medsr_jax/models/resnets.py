"""The residual CNN baselines: SRResNet, EDSR-lite, EDSR and MDSR, as in the author's code (NHWC).

Thesis: SRResNet is the baseline of ch. 3 (§3.2.1, Fig. 3.1, Eq. 3.3) and, with EDSR(-lite) and
MDSR, one of the compared generators / MIASSR feature extractors of ch. 4 (§4.2.1, Fig. 4.2,
Eq. 4.5, §4.4). Layer by layer they follow the author's `networks/{srresnet,edsr,mdsr}.py`
(reference spec §5.1-§5.4; parameter counts §6), which differ from the textbook networks:

  SRResNet  x -> MeanShift sub -> head conv3x3(C -> 64) -> 16 x ResBlock(conv, BN, PReLU, conv,
            BN) -> conv3x3 (no BN) -> + head -> UpSampler with BN after every shuffle, no act
            -> conv3x3(64 -> C) -> MeanShift add.
            Ledig et al. use 9x9 head/tail convs, a PReLU after the head and in the up-sampler,
            BN after the body conv and per-layer PReLUs; the reference has 3x3 convs, no such
            PReLUs, BN inside the up-sampler and ONE PReLU slope shared by all 16 blocks
            (Flax `params['prelu']['alpha']`; PyTorch lists it under every block's name).
            The thesis' Eq. 3.3 also applies the activation after the second BN of a block; the
            reference (and SRGAN) does not: `out_act` (default False = reference) switches it.
  EDSR      the same trunk without BN: 'edsr_lite' = 64 features, 16 blocks, LeakyReLU(0.2)
            (original EDSR: ReLU), res_scale 1; 'edsr' = 256, 32, ReLU, res_scale 0.1. The
            up-sampler has no BN.
  MDSR      one conv3x3 head per scale (original MDSR: two 5x5 ResBlocks per scale), a shared
            body of 80 ReLU ResBlocks + conv + skip, one UpSampler + conv3x3 tail per scale;
            `apply(variables, x, scale)` with a static scale in `scales` (2, 3, 4). The reference
            also builds an `input_layer` conv3x3(C -> 64) that its forward never uses; it is
            kept as params (field `input_layer=True`) so parameter counts equal the reference
            (6,725,187 trainable) and state dicts round-trip exactly; it never touches the
            output.

Feature-extractor mode (`feature_maps_only=True`, the MIASSR / Meta-SR feature extractors of
spec §5.2-§5.4, §5.11): no MeanShift, no up-sampler/tail (and no tail params); the models return
the body + skip features (B, h, w, n_feats). MDSR then takes (x, scale) and uses head
ceil(scale), as Meta_MDSR calls `MDSR(feature_maps_only=True)(x, ceil(s))`. (The reference EDSR
still builds its unused tail in this mode; a Meta-SR model that wants the reference's dead
params adds them itself.)

MeanShift: the reference's frozen `sub_mean`/`add_mean` 1x1 convs are a `common.MeanShift` whose
mean/std live in 'constants' (trainable counts are the reference totals minus 4 at C = 1).

Stacking: the identical ResBlocks run under `nn.scan` (`scan_blocks=True`, default): params and
BN running statistics carry a leading block axis under `params['body']` /
`batch_stats['body']`; with False they are `body_{i}`. Class fields (stable API, also used by
`models.meta_sr`): `n_feats`, `n_resblocks`, `act`, `res_scale`, `feature_maps_only`,
`scan_blocks`, `init_scheme`, `mean`, `std` (+ `bn`, `upsampler_bn`, `out_act`; MDSR: `scales`,
`input_layer`).

Trainable counts at C = 1 (x2 / x3 / x4): srresnet 1,371,778 / 1,556,418 / 1,519,618;
edsr_lite 1,367,553 / 1,552,193 / 1,515,265; edsr 40,720,385 / 43,670,785 / 43,080,705;
mdsr 6,725,187 (all scales in one model).

Run `python -m pytest tests/test_resnets.py`.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.errors import InputError
from medsr_jax.layers import common
from medsr_jax.layers import residual
from medsr_jax.layers import upsample
from medsr_jax.models import base
from medsr_jax.models import registry


def trunk(x0: jax.Array, model: Any, train: bool, alpha: Optional[jax.Array] = None
          ) -> jax.Array:
  """ResBlocks -> conv3x3 (`body_conv`) -> + x0: the shared body of every model here.

  Called inside `model`'s compact `__call__`; reads the `TrunkOptions` fields and init_scheme
  from `model`.
  """
  t = residual.residual_body(
      x0, model.n_resblocks, name='body', scan_blocks=model.scan_blocks, alpha=alpha,
      features=model.n_feats, act=model.act, bn=model.bn, res_scale=model.res_scale,
      out_act=model.out_act, train=train, init_scheme=model.init_scheme)
  return base.global_skip(t, x0, model.init_scheme)


def shared_slope(model: Any) -> Optional[jax.Array]:
  """The one PReLU slope of the body (`params['prelu']['alpha']`) when act is 'prelu'."""
  if model.act == residual.PRELU:
    return residual.PReLUSlope(name='prelu')()
  return None


def check_common(model: Any) -> None:
  common.check_init_scheme(model.init_scheme)
  residual.check_act(model.act)
  if model.n_feats < 1 or model.n_resblocks < 1:
    raise ValueError(f'n_feats and n_resblocks must be >= 1, got {model.n_feats}, '
                     f'{model.n_resblocks}')


class TrunkOptions(nn.Module):
  """The fields that `trunk`, `shared_slope` and `check_common` read (with `init_scheme`).

  Defaults: the reference SRResNet body. A base of every model here and of the MS-GAN stages.
  """
  n_feats: int = 64
  n_resblocks: int = 16
  act: str = 'prelu'
  bn: bool = True
  res_scale: float = 1.0
  out_act: bool = False
  scan_blocks: bool = True


class _ResNetSR(TrunkOptions, base.FeatureExtractorSR):
  """A residual-trunk generator whose features (the trunk output) have `n_feats` channels."""

  @property
  def feature_channels(self) -> int:
    """Channels of the features that feed the tail (the output with `feature_maps_only`)."""
    return self.n_feats


class ResidualSR(_ResNetSR):
  """Fixed-scale residual CNN: MeanShift, head, ResBlocks, conv + skip, UpSampler, tail conv.

  Base of `SRResNet` and `EDSR`, which differ only in their defaults (and in the order the
  PyTorch state dicts list their keys). `__call__(x, train=False)`: (B, H, W, C) ->
  (B, sH, sW, C), or the (B, H, W, n_feats) features with `feature_maps_only`. `train` selects
  BatchNorm batch statistics (apply with `mutable=['batch_stats']`); unused without BN.
  """
  upsampler_bn: bool = True

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    check_common(self)
    if not self.feature_maps_only:
      upsample.upsample_steps(self.scale)

  @nn.nowrap
  def feature_maps(self, x: jax.Array, train: bool) -> jax.Array:
    """head -> ResBlocks -> body_conv -> + head."""
    return trunk(self.conv(self.n_feats, 'head')(x), self, train, shared_slope(self))

  @nn.nowrap
  def reconstruct(self, features: jax.Array, train: bool) -> jax.Array:
    """UpSampler (with BN if `upsampler_bn`) -> conv3x3 'tail'."""
    return self.upsample_tail(features, train, bn=self.upsampler_bn, last_name='tail')


class SRResNet(ResidualSR):
  """SRResNet as in the author's code (spec §5.2): 64 features, 16 BN ResBlocks, one shared
  PReLU slope, BN in the up-sampler, 3x3 head and tail."""
  act: str = 'prelu'
  bn: bool = True
  upsampler_bn: bool = True


class EDSR(ResidualSR):
  """EDSR / EDSR-lite as in the author's code (spec §5.3). Defaults are EDSR-lite (64
  features, 16 blocks, LeakyReLU(0.2), res_scale 1); 'edsr' is 256, 32, ReLU, 0.1."""
  act: str = 'leaky_relu'
  bn: bool = False
  upsampler_bn: bool = False


class MDSR(_ResNetSR):
  """Multi-scale EDSR (spec §5.4): per-scale heads and tails around one shared body.

  `__call__(x, scale=None, train=False)`: `scale` is a static Python number in `scales`
  (default: the field `scale`, the scale `example_inputs` traces with); with
  `feature_maps_only` any scale whose ceiling is in `scales` (head ceil(scale), no tail).
  `init` creates every head and tail whatever scale it is given.
  """
  n_resblocks: int = 80
  act: str = 'relu'
  bn: bool = False  # the reference MDSR has no BN
  scales: Sequence[int] = (2, 3, 4)
  input_layer: bool = True

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    check_common(self)
    if not self.scales or len(set(self.scales)) != len(self.scales):
      raise ValueError(f'scales must be distinct, got {self.scales}')
    for s in self.scales:
      upsample.upsample_steps(s)
    if self.scale not in self.scales:
      raise ValueError(f'MDSR scale must be one of {tuple(self.scales)}, got {self.scale}')

  def example_inputs(self):
    """One (1, 24, 24, C) image and the static scale (the `scale` field)."""
    x = jax.ShapeDtypeStruct((1, registry.EXAMPLE_SIZE, registry.EXAMPLE_SIZE,
                              self.in_channels), jnp.float32)
    return (x,), {'scale': self.scale}

  def branch(self, scale: Any) -> int:
    """The head/tail scale used for the call scale `scale` (InputError if there is none)."""
    if scale is None:
      scale = self.scale
    try:
      s = float(scale)
    except (TypeError, jax.errors.ConcretizationTypeError) as e:
      raise InputError(f'MDSR needs a static Python number as scale, got {scale!r}') from e
    k = math.ceil(s) if self.feature_maps_only else s
    if k not in self.scales or (not self.feature_maps_only and s != int(s)):
      want = f'ceil(scale) in {tuple(self.scales)}' if self.feature_maps_only else (
          f'one of {tuple(self.scales)}')
      raise InputError(f'MDSR scale must be {want}, got {scale}')
    return int(k)

  @nn.compact
  def __call__(self, x: jax.Array, scale: Any = None, train: bool = False) -> jax.Array:
    self.check_config()
    self.check_input(x)
    s = self.branch(scale)
    init = self.is_initializing()
    shift = None
    if not self.feature_maps_only:
      shift = self.mean_shift()
      x = shift.sub(x)
    if self.input_layer:
      unused = self.conv(self.n_feats, 'input_layer')
      if init:
        unused(x)  # creates the reference's built-but-unused conv; never used by apply
    heads = {k: self.conv(self.n_feats, f'head_{k}') for k in self.scales}
    if init:
      for k in self.scales:
        if k != s:
          heads[k](x)
    t = trunk(heads[s](x), self, train)
    if self.feature_maps_only:
      return t
    tails = {k: (upsample.UpSampler(k, self.n_feats, init_scheme=self.init_scheme,
                                    name=f'upsample_{k}'), self.conv(self.in_channels, f'tail_{k}'))
             for k in self.scales}
    if init:
      for k in self.scales:
        if k != s:
          tails[k][1](tails[k][0](t))
    up, tail = tails[s]
    return shift.add(tail(up(t)))


registry.register('srresnet', registry.make_constructor(SRResNet))
registry.register('edsr_lite', registry.make_constructor(
    EDSR, n_feats=64, n_resblocks=16, act='leaky_relu', res_scale=1.0))
registry.register('edsr', registry.make_constructor(
    EDSR, n_feats=256, n_resblocks=32, act='relu', res_scale=0.1))
registry.register('mdsr', registry.make_constructor(MDSR))
