"""MS-GAN's multi-scale generators (thesis ch. 3, §3.2.3, Fig. 3.3, Eq. 3.11-3.13), NHWC.

Both decompose x4 SR into two x2 steps and return the intermediate x2 image too:
`apply(variables, x) -> (x2_image, x4_image)` (Eq. 3.11), for the multi-scale loss of Eq. 3.21.

  'ms_srresnet' (Fig. 3.3 top): ONE SRResNet feature extractor F; its x4 sub-pixel up-sampler is
      replaced by two x2 ones, with a conv inserted after the first to make the x2 image:
        E1 = M1(F(x)),  I2 = C1(E1),  I4 = C2(M2(E1)).
  'ms_gan' (Fig. 3.3 bottom, Eq. 3.13): two stacked x2 SRResNets; the second takes the first's
      enlarged feature maps (not its image):
        E1 = M1(F1(x)),  I2 = C1(E1),  I4 = C2(M2(F2(E1))).
  F = head conv3x3 -> ResBlocks -> conv3x3 -> + head (the SRResNet trunk of `models.resnets`);
  M = conv3x3(n -> 4n) -> pixel shuffle 2 -> BN; C = conv3x3(n -> C). F2's head maps n -> n.

What the thesis fixes (§3.3.3, Eq. 3.3), used as defaults here: each SRResNet has 16 residual
blocks of 64 3x3 kernels; ReLU "after each layer" (`act='relu'`); the block is
conv-BN-act-conv-BN-act + skip as Eq. 3.3 writes it (`out_act=True`).
Where the thesis is silent these follow the reference SRResNet (`models.resnets.SRResNet`,
spec §5.2): 3x3 head and tail convs (Fig. 3.3 does not give kernel sizes), no activation after the
head or in the up-sampler, BN after each shuffle (`upsampler_bn=True`), a conv after the blocks
plus a global skip, a (by default identity) MeanShift around the whole generator (`mean`/`std`),
and F2's own head conv (Eq. 3.13 writes F2 applied to the enlarged features; "another x2
SRResNet" has a head). `act='prelu', out_act=False` gives the reference SRResNet block (one
shared PReLU slope per trunk). There is no author code for MS-GAN (spec §9: the MSGAN repository
holds a README and a poster only; the thesis implementation was TensorFlow).

Scales: `scale` = 2^k with k >= 2 (k x2 stages, k images: (x2, x4[, x8 ...])); the thesis uses 4.

Trainable parameters at C = 1 with the defaults (no thesis figure exists; closed form, see
tests/test_ms_gan.py): one x2 SRResNet stage 1,371,777 (SRResNet x2 without the PReLU slope);
'ms_srresnet' 1,371,777 + 147,840 + 577 = 1,520,194; 'ms_gan' 1,371,777 + 1,408,065 =
2,779,842 (stage 2's head is 64 -> 64: + 36,288).

Run `python -m pytest tests/test_ms_gan.py`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from medsr_jax.layers import common
from medsr_jax.layers import upsample
from medsr_jax.models import base
from medsr_jax.models import registry
from medsr_jax.models import resnets


class StageOptions(resnets.TrunkOptions):
  """The options of one x2 stage's SRResNet (`resnets.trunk`) and up-sampler, MS-GAN defaults.

  Fields of both `MultiScaleSRResNet` and its `X2Stage`s, which it passes on unchanged.
  """
  act: str = 'relu'
  out_act: bool = True
  upsampler_bn: bool = True

  @nn.nowrap
  def stage_options(self) -> dict:
    """{field: value} of the `StageOptions` fields."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(StageOptions)
            if f.name not in ('parent', 'name')}


class X2Stage(StageOptions):
  """[SRResNet trunk F] -> x2 up-sampler M -> (enlarged features, image conv C(M(...))).

  With `trunk=False` only M and C (the second stage of MS-SRResNet). Params: head, body,
  body_conv, [prelu], upsample (conv_0, bn_0), tail.
  """
  out_channels: int = 1
  trunk: bool = True
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    conv = lambda c, name: common.conv3x3(c, init_scheme=self.init_scheme, name=name)
    if self.trunk:
      x = resnets.trunk(conv(self.n_feats, 'head')(x), self, train, resnets.shared_slope(self))
    e = upsample.UpSampler(2, self.n_feats, init_scheme=self.init_scheme, bn=self.upsampler_bn,
                           name='upsample')(x, train)
    return e, conv(self.out_channels, 'tail')(e)


class MultiScaleSRResNet(StageOptions, base.MeanShiftSR):
  """x2-step generator: `__call__(x, train=False)` -> tuple of log2(scale) images (x2, x4, ...).

  `stacked=False`: MS-SRResNet (one trunk, stages after the first are up-sampler + conv only);
  `stacked=True`: MS-GAN (every x2 stage is a full SRResNet on the previous stage's features).
  Stage k's params are under `stage_{k}`.
  """
  stacked: bool = True

  def stages(self) -> int:
    """Number of x2 stages (= number of output images)."""
    steps = upsample.upsample_steps(self.scale)  # [2] * k, or [3]
    if len(steps) < 2:
      raise ValueError(f'multi-scale generators need scale 2^k with k >= 2, got {self.scale}')
    return len(steps)

  def check_config(self) -> None:
    """Raises ValueError for an unsupported configuration."""
    resnets.check_common(self)
    self.stages()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    self.check_config()
    self.check_input(x)
    shift = self.mean_shift()
    e = shift.sub(x)
    images = []
    for k in range(self.stages()):
      e, img = X2Stage(out_channels=self.in_channels, trunk=self.stacked or k == 0,
                       init_scheme=self.init_scheme, name=f'stage_{k + 1}',
                       **self.stage_options())(e, train)
      images.append(shift.add(img))
    return tuple(images)


# Outputs: the tuple (x2, x4, ...), the final image last (`registry.primary_output`).
_TUPLE_OUT = registry.derive_convention(MultiScaleSRResNet, output='tuple')
registry.register('ms_srresnet', registry.make_constructor(
    MultiScaleSRResNet, stacked=False, convention=_TUPLE_OUT))
registry.register('ms_gan', registry.make_constructor(
    MultiScaleSRResNet, stacked=True, convention=_TUPLE_OUT))
