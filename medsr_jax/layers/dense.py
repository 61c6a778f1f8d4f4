"""Dense connections: a generic dense stack, the dense Swin layer (DSTL) and the RDSTB, NHWC.

  * `DenseStack`: x -> cat[x, layer_0(x) * dense_scale] -> cat[.., layer_1(..)] ...; each layer
    comes from a factory `factory(index, in_features, name)` and returns `growth` new channels.
    RDN-style conv dense blocks reuse it with a conv + activation factory.
  * `DenseSwinLayer` (DSTL, thesis Eq. 5.6; spec §5.13 and §11 item 3): 2 STLs (shift 0, then
    shift window // 2) on the *full* concatenated width d, then the pre-norm bottleneck
    LayerNorm(d) -> Linear(d -> growth) ('tail' mode of the reference's `DenseSTLayer`).
  * `RDSTB` (thesis Eq. 5.7): 3 DSTLs (60 -> 90 -> 120 -> 150 channels at the defaults), a 3x3
    conv local feature fusion 150 -> 60, times `residual_scale`, plus the block input.

Parameter names follow the PyTorch modules (`body_{i}` = body.{i}, `blocks_{j}` = body.blocks.{j},
`tail_norm` / `tail_linear` = tail.0 / tail.1, `conv` = conv) so the state-dict mapping in
`medsr_jax.torch_layouts.rdst` stays a rename plus transposes.

Run `python -m pytest tests/test_rdst.py`.
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
