"""Dense connections: a generic dense stack, the dense Swin layer (DSTL) and the RDSTB, NHWC.

  * `DenseStack`: x -> cat[x, layer_0(x) * dense_scale] -> cat[.., layer_1(..)] ...; each layer
    comes from a factory `factory(index, in_features, name)` and returns `growth` new channels.
    RDN-style conv dense blocks reuse it with a conv + activation factory.
  * `DenseSwinLayer` (DSTL, thesis Eq. 5.6; spec §5.13 and §11 item 3): 2 STLs (shift 0, then
    shift window // 2) on the *full* concatenated width d, then the pre-norm bottleneck
    LayerNorm(d) -> Linear(d -> growth) ('tail' mode of the reference's `DenseSTLayer`).
  * `RDSTB` (thesis Eq. 5.7): 3 DSTLs (60 -> 90 -> 120 -> 150 channels at the defaults), a 3x3
    conv local feature fusion 150 -> 60, times `residual_scale`, plus the block input.

Conv dense blocks of the CNN baselines (reference `networks/common.py`, spec §5.1; thesis §2,
Fig. 2.17 and Fig. 4.2), used by `medsr_jax.models.dense_nets` (SRDenseNet, RDN, ESRGAN):
  * `ConvDenseLayer`: the new features of one reference `DenseLayer`, act(conv3x3(x -> growth));
    `DenseStack` does the concatenation and the `dense_scale`. The reference's optional BN inside
    the layer is used by none of its models and is not offered.
  * `ResidualDenseBlock` (RDB): DenseStack of conv layers -> 1x1 conv LFF back to the input width
    (`bottle_neck`) -> * residual_scale + x.
  * `RRDB`: `num_rdb` RDBs (each with its own residual scale) -> * residual_scale + x.
  * `ScannedRDB` / `ScannedRRDB`: the (carry, x) signatures for `nn.scan`; `ScannedRDB` also
    emits its output so RDN can concatenate all block outputs (global feature fusion).

Parameter names follow the PyTorch modules (`body_{i}` = body.{i}, `blocks_{j}` = body.blocks.{j},
`tail_norm` / `tail_linear` = tail.0 / tail.1, `conv` = conv; conv dense layers: `body_{j}/conv` =
body.{j}.body.0, `bottle_neck` = bottle_neck) so the state-dict mappings in
`medsr_jax.torch_layouts.rdst` / `.dense_nets` stay renames plus transposes.

Run `python -m pytest tests/test_rdst.py tests/test_dense_nets.py`.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.layers import common
from medsr_jax.layers import swin

# factory(index, in_features, name) -> a module mapping (..., in_features) to (..., growth).
LayerFactory = Callable[[int, int, str], nn.Module]


class DenseStack(nn.Module):
  """`num_layers` densely connected layers: output channels = in + num_layers * growth."""
  factory: LayerFactory
  num_layers: int
  dense_scale: float = 1.0
  name_prefix: str = 'body'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_layers):
      new = self.factory(i, x.shape[-1], f'{self.name_prefix}_{i}')(x)
      x = jnp.concatenate([x, new * self.dense_scale], axis=-1)
    return x


class DenseSwinLayer(nn.Module):
  """DSTL: `depth` STLs at the input width d, then LN + Linear(d -> growth) (returns growth ch.).

  `pre_norm=False` gives the reference's other tail order (Linear then LayerNorm). When d equals
  `growth` the reference has no tail (identity) and neither do we.
  """
  dim: int
  growth: int
  num_heads: int = 6
  window_size: int = 8
  depth: int = 2
  mlp_ratio: float = 2.0
  pre_norm: bool = True
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.dim % self.num_heads or self.growth % self.num_heads:
      raise ValueError(f'DSTL width {self.dim} and growth {self.growth} must be multiples of '
                       f'num_heads {self.num_heads}')
    for j in range(self.depth):
      shift = 0 if j % 2 == 0 else self.window_size // 2
      x = swin.SwinTransformerLayer(
          self.dim, self.num_heads, self.window_size, shift, self.mlp_ratio,
          init_scheme=self.init_scheme, name=f'blocks_{j}')(x)
    if self.dim == self.growth:
      return x
    if self.pre_norm:
      x = common.layer_norm('tail_norm')(x)
      return common.Linear(self.growth, init_scheme=self.init_scheme, name='tail_linear')(x)
    x = common.Linear(self.growth, init_scheme=self.init_scheme, name='tail_linear')(x)
    return common.layer_norm('tail_norm')(x)


def _make_dstl(index: int, in_features: int, name: str, **kwargs) -> DenseSwinLayer:
  """`LayerFactory` for the RDSTB: DSTL `index` works at the current concatenated width."""
  del index
  return DenseSwinLayer(in_features, name=name, **kwargs)


class RDSTB(nn.Module):
  """Residual dense Swin transformer block: DenseStack of DSTLs -> conv3x3 LFF -> * s + x."""
  dim: int = 60
  growth: int = 30
  num_dense: int = 3
  stl_per_dense: int = 2
  num_heads: int = 6
  window_size: int = 8
  mlp_ratio: float = 2.0
  dense_scale: float = 1.0
  residual_scale: float = 1.0
  pre_norm: bool = True
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    factory = functools.partial(
        _make_dstl, growth=self.growth, num_heads=self.num_heads, window_size=self.window_size,
        depth=self.stl_per_dense, mlp_ratio=self.mlp_ratio, pre_norm=self.pre_norm,
        init_scheme=self.init_scheme)
    t = DenseStack(factory, self.num_dense, self.dense_scale, name='dense')(x)
    y = common.conv3x3(self.dim, init_scheme=self.init_scheme, name='conv')(t)
    return y * self.residual_scale + x


class ScannedRDSTB(RDSTB):
  """`RDSTB` with the (carry, x) -> (carry, None) signature that `nn.scan` needs."""

  def __call__(self, x: jax.Array, _: Optional[jax.Array] = None):  # pytype: disable=signature-mismatch
    return super().__call__(x), None


class ConvDenseLayer(nn.Module):
  """New features of one conv dense layer: act(conv k x k (x -> growth)), named 'conv'."""
  growth: int
  act: str = 'relu'
  kernel_size: int = 3
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = common.Conv2d(self.growth, self.kernel_size, init_scheme=self.init_scheme, name='conv')(x)
    return common.activation(self.act)(y)


def _make_conv_layer(index: int, in_features: int, name: str, **kwargs) -> ConvDenseLayer:
  """`LayerFactory` for conv dense blocks: every layer adds `growth` channels."""
  del index, in_features
  return ConvDenseLayer(name=name, **kwargs)


def conv_dense_factory(growth: int, act: str = 'relu',
                       init_scheme: str = 'thesis') -> LayerFactory:
  """A `DenseStack` factory of `ConvDenseLayer`s (the reference `DenseBlock`)."""
  return functools.partial(_make_conv_layer, growth=growth, act=act, init_scheme=init_scheme)


class ResidualDenseBlock(nn.Module):
  """RDB: `num_layers` conv dense layers -> 1x1 LFF (in + n * growth -> in) -> * s + x.

  The output width equals the input width, which the LFF conv takes from `x`.
  """
  growth: int = 32
  num_layers: int = 6
  act: str = 'leaky_relu'
  dense_scale: float = 1.0
  residual_scale: float = 1.0
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    factory = conv_dense_factory(self.growth, self.act, self.init_scheme)
    t = DenseStack(factory, self.num_layers, self.dense_scale, name='dense')(x)
    y = common.Conv2d(x.shape[-1], 1, init_scheme=self.init_scheme, name='bottle_neck')(t)
    return y * self.residual_scale + x


class RRDB(nn.Module):
  """Residual-in-residual dense block: `num_rdb` RDBs (`body_{k}`) -> * residual_scale + x."""
  growth: int = 32
  num_layers: int = 4
  num_rdb: int = 3
  act: str = 'leaky_relu'
  dense_scale: float = 1.0
  rdb_residual_scale: float = 0.2
  residual_scale: float = 0.2
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    t = x
    for k in range(self.num_rdb):
      t = ResidualDenseBlock(self.growth, self.num_layers, self.act, self.dense_scale,
                             self.rdb_residual_scale, self.init_scheme, name=f'body_{k}')(t)
    return t * self.residual_scale + x


class ScannedRDB(ResidualDenseBlock):
  """`ResidualDenseBlock` as an `nn.scan` body: (x, _) -> (y, y), so the scan stacks every
  block's output (RDN's global feature fusion concatenates them)."""

  def __call__(self, x: jax.Array,  # pytype: disable=signature-mismatch
               _: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
    y = super().__call__(x)
    return y, y


class ScannedRRDB(RRDB):
  """`RRDB` as an `nn.scan` body: (x, _) -> (y, None)."""

  def __call__(self, x: jax.Array,  # pytype: disable=signature-mismatch
               _: Optional[jax.Array] = None) -> tuple[jax.Array, None]:
    return super().__call__(x), None
