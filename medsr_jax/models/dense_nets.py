"""The dense CNN baselines of thesis ch. 4: SRDenseNet, RDN and the ESRGAN (RRDB) generator, NHWC.

These are the fixed-scale SISR methods MIASSR is compared with (thesis §4.3.4, Table 4.1, Fig. 4.4)
and, with their up-samplers replaced by the meta-upscale module, the feature extractors of the
MIASSR generator ablation (§4.4.2, Fig. 4.8: Meta-SRDenseNet, MetaRDN, Meta-ESRGAN). Their blocks
are the dense block, the residual dense block and the residual-in-residual dense block of thesis
Fig. 2.17 / Fig. 4.2. The layer-by-layer reference is the author's PyTorch code (spec §5.1 shared
blocks, §5.5 SRDenseNet, §5.6 RDN, §5.7 ESRGAN; §6 parameter counts):

  SRDenseNet (`srdensenet`, 10,733,217 trainable at x4 / 1 channel):
    MeanShift sub -> head conv3x3(C -> G=16) -> 8 dense blocks of 8 conv3x3 + ReLU layers
    (G=16; 16 -> 144 -> ... -> 1040 channels) -> 'all': concat[head, every block output]
    (4752 ch) -> bottleneck conv1x1 (-> 256) -> UpSampler(256) -> conv3x3(256 -> C)
    -> MeanShift add.
  RDN (`rdn`, 5,761,921 at x4):
    MeanShift sub -> head conv3x3(C -> 64) = F_-1 -> F0 conv3x3(64 -> 64) -> 20 RDBs (6 conv3x3 +
    LeakyReLU(0.2) layers, G=32, LFF conv1x1 256 -> 64, + x) -> GFF: concat of the 20 RDB outputs
    (1280 ch) -> conv1x1(-> 64) -> conv3x3(64 -> 64), * global_res_scale, + F_-1
    -> UpSampler(64) -> conv3x3(64 -> C) -> MeanShift add.
  ESRGAN generator (`esrgan`, 10,097,345 at x4):
    MeanShift sub -> head conv3x3(C -> 64) -> 23 RRDBs [3 RDBs (4 conv3x3 + LeakyReLU(0.2) layers,
    G=32, LFF conv1x1 192 -> 64, * 0.2 + x), * 0.2 + x] -> body conv3x3(64 -> 64),
    * global_res_scale, + head -> UpSampler(64) -> conv3x3(64 -> C) -> MeanShift add.

UpSampler = the EDSR-style pixel-shuffle up-sampler without BN or activation
(`layers.upsample.UpSampler`); counts exclude the reference's 4 frozen MeanShift numbers, which
live in the 'constants' collection here (see `layers.common.MeanShift`).

Where the reference differs from the textbook networks (all defaults follow the reference):
  * SRDenseNet (Tong et al. 2017): pixel-shuffle up-sampling instead of two deconvolution layers;
    no activation after the head conv or the 1x1 bottleneck; types 'h' (last block only) and 'hl'
    (head + last block) are offered through `dense_type`.
  * RDN (Zhang et al. 2018): LeakyReLU(0.2) instead of ReLU, G=32 / C=6 / D=20 instead of
    G=64 / C=8 / D=16, plus the MeanShift layers.
  * ESRGAN (Wang et al. 2018): each RDB has 4 dense conv3x3 layers plus a 1x1 LFF (not five 3x3
    convs), and the tail is the pixel-shuffle UpSampler plus one conv (not nearest-neighbour
    up-sampling with two extra convs).

Feature-extractor mode (`feature_maps_only=True`, the reference's Meta-SR feature extractors):
no MeanShift and no tail are built (no 'constants', no up-sampler params) and `__call__` returns
the features that would feed the tail, (B, h, w, `feature_channels`): SRDenseNet the bottleneck
output (256), RDN GFF + F_-1 (64), ESRGAN body + head (64). `scale` is then unused. (The
reference MIASSR feature extractors still build a dead tail for the ini's sr_scale; the Meta-SR
module adds those keys itself.)

Stacking: RDN's 20 RDBs and ESRGAN's 23 RRDBs run under `nn.scan` (`scan_blocks=True`, params
under `params['body']` with a leading block axis; False: `body_{i}`). SRDenseNet's 8 dense blocks
have different widths, so they are a Python loop (`body_{b}`). CPU compile times on a 40x32 input
at x4 (2-core machine, shared; scan / loop): RDN forward 0.4 s / 1.6 s, gradient 2.4 s / 4.3 s;
ESRGAN forward 0.6 s / 3.8 s, gradient 2.7 s / 13.6 s; SRDenseNet forward 1.2 s, gradient 7.5 s.

Precision: forward parity with the PyTorch reference (PARITY.md rule v1) is 1e-7 to 8e-7 in full
float32 (SRDenseNet 7.8e-8, RDN 9.9e-8, ESRGAN 7.9e-7).

Run `python -m pytest tests/test_dense_nets.py`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.layers import common
from medsr_jax.layers import dense
from medsr_jax.layers import remat
from medsr_jax.layers import upsample
from medsr_jax.models import base
from medsr_jax.models import registry

DENSE_TYPES = ('all', 'h', 'hl')


def _check_common(model: nn.Module, positive: dict[str, int]) -> None:
  """Checks shared by the three models (init scheme, activation, scale, positive sizes)."""
  common.check_init_scheme(model.init_scheme)
  common.activation(model.act)
  if not model.feature_maps_only:
    upsample.upsample_steps(model.scale)
  bad = sorted(k for k, v in positive.items() if int(v) < 1)
  if bad:
    raise ValueError(f'{type(model).__name__}: {", ".join(bad)} must be >= 1')


class _DenseSR(base.FeatureExtractorSR):
  """What the three models share: `features` feed the tail (UpSampler(features) -> conv_last)."""
  features: int = 64

  @property
  def feature_channels(self) -> int:
    """Channels of the features that feed the tail (the output with `feature_maps_only`)."""
    return self.features


class SRDenseNet(_DenseSR):
  """SRDenseNet (reference MIASSR `srdensenet.py`) for x2 / x3 / x4 SR, NHWC in and out.

  Params: head, body_{b}/body_{l}/conv (block b, layer l), bottleneck, upsample/conv_{n},
  conv_last; 'constants'/mean_shift.
  """
  growth_rate: int = 16
  num_blocks: int = 8
  num_layers: int = 8
  features: int = 256
  dense_type: str = 'all'
  act: str = 'relu'
  dense_scale: float = 1.0

  def block_widths(self) -> list[int]:
    """Input width of each dense block (16, 144, ..., 912 at the defaults)."""
    per_block = self.num_layers * self.growth_rate
    return [self.growth_rate + b * per_block for b in range(self.num_blocks)]

  def bottleneck_in(self) -> int:
    """Channels entering the 1x1 bottleneck for `dense_type` (4752 for 'all' at the defaults)."""
    g, per_block = self.growth_rate, self.num_layers * self.growth_rate
    last = g + self.num_blocks * per_block
    if self.dense_type == 'h':
      return last
    if self.dense_type == 'hl':
      return g + last
    return g + sum(w + per_block for w in self.block_widths())

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    _check_common(self, dict(growth_rate=self.growth_rate, num_blocks=self.num_blocks,
                             num_layers=self.num_layers, features=self.features))
    if self.dense_type not in DENSE_TYPES:
      raise ValueError(f'dense_type must be one of {DENSE_TYPES}, got {self.dense_type!r}')

  @nn.nowrap
  def feature_maps(self, x: jax.Array, train: bool) -> jax.Array:
    """head -> dense blocks -> [concat per `dense_type`] -> 1x1 bottleneck (`features` ch)."""
    del train  # no BatchNorm or dropout
    head = self.conv(self.growth_rate, 'head')(x)
    factory = dense.conv_dense_factory(self.growth_rate, self.act, self.init_scheme)
    t, outputs = head, []
    for b in range(self.num_blocks):
      t = dense.DenseStack(factory, self.num_layers, self.dense_scale, name=f'body_{b}')(t)
      outputs.append(t)
    if self.dense_type == 'all':
      t = jnp.concatenate([head] + outputs, axis=-1)
    elif self.dense_type == 'hl':
      t = jnp.concatenate([head, t], axis=-1)
    return self.conv(self.features, 'bottleneck', kernel_size=1)(t)


class RDN(_DenseSR):
  """Residual dense network (reference `rdn.py`, MIASSR ini [RDN]) for x2 / x3 / x4, NHWC.

  Params: head, F0, body (scanned RDBs: dense/body_{l}/conv, bottle_neck) or body_{i},
  bottleneck_0 (GFF 1x1), bottleneck_1 (GFF 3x3), upsample/conv_{n}, conv_last;
  'constants'/mean_shift.
  """
  features: int = 64
  growth_rate: int = 32
  num_layers: int = 6
  num_blocks: int = 20
  act: str = 'leaky_relu'
  dense_scale: float = 1.0
  block_residual_scale: float = 1.0
  global_res_scale: float = 1.0
  scan_blocks: bool = True

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    _check_common(self, dict(features=self.features, growth_rate=self.growth_rate,
                             num_layers=self.num_layers, num_blocks=self.num_blocks))

  @nn.nowrap
  def feature_maps(self, x: jax.Array, train: bool) -> jax.Array:
    """head (F_-1) -> F0 -> RDBs -> GFF(concat of every RDB output) * global_res_scale + F_-1."""
    del train  # no BatchNorm or dropout
    f_1 = self.conv(self.features, 'head')(x)
    t = self.conv(self.features, 'F0')(f_1)
    kw = dict(growth=self.growth_rate, num_layers=self.num_layers, act=self.act,
              dense_scale=self.dense_scale, residual_scale=self.block_residual_scale,
              init_scheme=self.init_scheme)
    if self.scan_blocks:
      scanned = nn.scan(remat.block(dense.ScannedRDB, scanned=True), variable_axes={'params': 0},
                        split_rngs={'params': True}, length=self.num_blocks)
      _, outs = scanned(**kw, name='body')(t, None)  # (D, B, h, w, F)
      b, h, w, f = outs.shape[1:]
      gff_in = outs.transpose(1, 2, 3, 0, 4).reshape(b, h, w, self.num_blocks * f)
    else:
      outs = []
      for i in range(self.num_blocks):
        t = remat.block(dense.ResidualDenseBlock)(**kw, name=f'body_{i}')(t)
        outs.append(t)
      gff_in = jnp.concatenate(outs, axis=-1)
    g = self.conv(self.features, 'bottleneck_0', kernel_size=1)(gff_in)
    return self.global_skip(g, f_1, 'bottleneck_1', self.global_res_scale)


class ESRGAN(_DenseSR):
  """ESRGAN generator with RRDBs (reference MIASSR `esrgan.py`) for x2 / x3 / x4, NHWC.

  Params: head, body (scanned RRDBs: body_{k}/dense/body_{l}/conv, body_{k}/bottle_neck) or
  body_{i}, body_conv, upsample/conv_{n}, conv_last; 'constants'/mean_shift.
  """
  features: int = 64
  growth_rate: int = 32
  num_layers: int = 4
  num_rdb: int = 3
  num_blocks: int = 23
  act: str = 'leaky_relu'
  dense_scale: float = 1.0
  rdb_residual_scale: float = 0.2
  rrdb_residual_scale: float = 0.2
  global_res_scale: float = 1.0
  scan_blocks: bool = True

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    _check_common(self, dict(features=self.features, growth_rate=self.growth_rate,
                             num_layers=self.num_layers, num_rdb=self.num_rdb,
                             num_blocks=self.num_blocks))

  @nn.nowrap
  def feature_maps(self, x: jax.Array, train: bool) -> jax.Array:
    """head -> RRDBs -> body_conv, * global_res_scale, + head."""
    del train  # no BatchNorm or dropout
    x0 = self.conv(self.features, 'head')(x)
    kw = dict(growth=self.growth_rate, num_layers=self.num_layers, num_rdb=self.num_rdb,
              act=self.act, dense_scale=self.dense_scale,
              rdb_residual_scale=self.rdb_residual_scale,
              residual_scale=self.rrdb_residual_scale, init_scheme=self.init_scheme)
    if self.scan_blocks:
      scanned = nn.scan(remat.block(dense.ScannedRRDB, scanned=True), variable_axes={'params': 0},
                        split_rngs={'params': True}, length=self.num_blocks)
      t, _ = scanned(**kw, name='body')(x0, None)
    else:
      t = x0
      for i in range(self.num_blocks):
        t = remat.block(dense.RRDB)(**kw, name=f'body_{i}')(t)
    return self.global_skip(t, x0, 'body_conv', self.global_res_scale)


registry.register('srdensenet', registry.make_constructor(SRDenseNet))
registry.register('rdn', registry.make_constructor(RDN))
registry.register('esrgan', registry.make_constructor(ESRGAN))
