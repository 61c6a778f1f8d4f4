"""Residual blocks of the CNN baselines (SRResNet, EDSR, MDSR, MS-GAN), NHWC, PyTorch semantics.

`ResBlock` is the author's `networks/common.py` `ResBlock` (spec §5.1; thesis Eq. 3.3 for
SRResNet, Eq. 4.5 / Fig. 4.2 for EDSR's "enhanced residual block"):

  y = conv3x3 -> [BN] -> act -> conv3x3 -> [BN] [-> act if out_act];   out = y * res_scale + x

There is no activation after the addition. `out_act=False` is the reference (and SRGAN/EDSR)
block; `out_act=True` is the block as thesis Eq. 3.3 writes it for SRResNet (an activation after
the second BN too), which the MS-GAN generators use by default (`models.ms_gan`).

PReLU: the author passes ONE `nn.PReLU()` instance to every block of SRResNet, so the whole body
shares a single slope. Here the slope is created once by the model (`PReLUSlope`, Flax path
`prelu/alpha`) and handed to every block as an argument (`ResBlock(...)(x, alpha)`); a block given
no slope creates its own (`<block>/prelu/alpha`). Parameter-free activations are chosen by name
(`common.activation`).

`residual_body` stacks identical blocks with `nn.scan` (one block in the XLA program, params and
BN running statistics with a leading block axis under `<name>/...`) or, with `scan_blocks=False`,
as a Python loop (`<name>_{i}/...`). Flax names inside a block: `conv_0`, `bn_0`, `conv_1`, `bn_1`
(PyTorch `body.{0,1,3,4}` with BN + act, `body.{0,2}` without BN; see
`torch_layouts.resnets.block_entries`).

Run `python -m pytest tests/test_resnets.py`.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.layers import common
from medsr_jax.layers import remat

PRELU = 'prelu'
ACTIVATIONS = tuple(sorted(common.ACTIVATIONS)) + (PRELU,)


def check_act(act: str) -> None:
  """Raises ValueError unless `act` is a `common.activation` name or 'prelu'."""
  if act not in ACTIVATIONS:
    raise ValueError(f'act must be one of {ACTIVATIONS}, got {act!r}')


def prelu(x: jax.Array, alpha: jax.Array) -> jax.Array:
  """PyTorch PReLU with slope(s) `alpha` (shape (1,) or (channels,))."""
  return jnp.where(x >= 0, x, common.broadcast_like(alpha, x) * x)


class PReLUSlope(nn.Module):
  """The slope of a PReLU shared by many blocks: param 'alpha' (num_parameters,), init 0.25."""
  num_parameters: int = 1

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param('alpha', nn.initializers.constant(0.25), (self.num_parameters,))


class ResBlock(nn.Module):
  """conv -> [BN] -> act -> conv -> [BN] [-> act], scaled by `res_scale`, plus the input.

  `train` is a field (not a call argument) so that `nn.scan` can stack the block; it only
  matters with `bn=True`. `__call__(x, alpha=None)`: `alpha` is the shared PReLU slope when
  `act='prelu'` (the block creates its own when None); ignored for other activations.
  """
  features: int
  act: str = 'relu'
  bn: bool = False
  res_scale: float = 1.0
  out_act: bool = False
  kernel_size: int = 3
  train: bool = False
  init_scheme: str = 'thesis'

  def _act(self, x: jax.Array, alpha: Optional[jax.Array]) -> jax.Array:
    if self.act != PRELU:
      return common.activation(self.act)(x)
    return prelu(x, alpha)

  @nn.compact
  def __call__(self, x: jax.Array, alpha: Optional[jax.Array] = None) -> jax.Array:
    check_act(self.act)
    if self.act == PRELU and alpha is None:
      alpha = PReLUSlope(name='prelu')()  # one slope for both activations of this block
    y = x
    for i in range(2):
      y = common.Conv2d(self.features, self.kernel_size, init_scheme=self.init_scheme,
                        name=f'conv_{i}')(y)
      if self.bn:
        y = common.batch_norm(self.train, name=f'bn_{i}')(y)
      if i == 0 or self.out_act:
        y = self._act(y, alpha)
    if self.res_scale != 1:
      y = y * jnp.asarray(self.res_scale, y.dtype)
    return y + x


class ScannedResBlock(ResBlock):
  """`ResBlock` with the (carry, broadcast alpha) -> (carry, None) signature of `nn.scan`."""

  def __call__(self, x: jax.Array, alpha=None):  # pytype: disable=signature-mismatch
    return super().__call__(x, alpha), None


def residual_body(x: jax.Array, num_blocks: int, *, name: str = 'body', scan_blocks: bool = True,
                  alpha: Optional[jax.Array] = None, **block_kwargs) -> jax.Array:
  """`num_blocks` identical `ResBlock(**block_kwargs)` applied in sequence to `x`.

  Call it inside a parent's `nn.compact` method: the blocks become children of that parent,
  named `name` (scanned: leading block axis) or `{name}_{i}` (loop). `alpha` (shared PReLU slope)
  is broadcast to every block.
  """
  if num_blocks < 1:
    raise ValueError(f'num_blocks must be >= 1, got {num_blocks}')
  if scan_blocks:
    scanned = nn.scan(remat.block(ScannedResBlock, scanned=True),
                      variable_axes={'params': 0, 'batch_stats': 0},
                      split_rngs={'params': True}, in_axes=nn.broadcast, length=num_blocks)
    x, _ = scanned(**block_kwargs, name=name)(x, alpha)
    return x
  for i in range(num_blocks):
    x = remat.block(ResBlock)(**block_kwargs, name=f'{name}_{i}')(x, alpha)
  return x
