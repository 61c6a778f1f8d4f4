"""Sub-pixel up-sampling in PyTorch channel order, and the EDSR-style `UpSampler` (NHWC).

`pixel_shuffle(x, s)`: input channel `c * s * s + i * s + j` at pixel (h, w) becomes output channel
`c` at pixel (h * s + i, w * s + j), exactly `torch.nn.PixelShuffle` (thesis §2, Eq. of the
sub-pixel layer), so PyTorch conv weights feeding a shuffle port without re-ordering.

`UpSampler(scale, features)` is the author's `networks/common.py` UpSampler (spec §5.1):
  * scale 2^k: k x [conv3x3(n -> 4n), pixel_shuffle(2), (BN), (act)];
  * scale 3: conv3x3(n -> 9n), pixel_shuffle(3), (BN), (act);
  * other scales: ValueError.
Convs are named `conv_0`, `conv_1`, ...; in PyTorch they are Sequential entries 0, 2, ... (the
shuffles take the odd slots; with BN or an activation the stride changes, see `torch_indices`).
`bn=True` (SRResNet, spec §5.2) adds a BatchNorm after each shuffle, named `bn_0`, `bn_1`, ...
(PyTorch entries 2, 5, ...: `torch_indices(scale, 3)` gives the convs, + 2 the norms); the
module then takes `train` like every BN module of the zoo.

Run `python -m pytest tests/test_rdst.py -k shuffle` (and tests/test_resnets.py for the BN).
"""

from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax

from medsr_jax.layers import common


def pixel_shuffle(x: jax.Array, scale: int) -> jax.Array:
  """(B, H, W, C * s * s) -> (B, H * s, W * s, C), PyTorch channel order."""
  b, h, w, cs = x.shape
  s = int(scale)
  if cs % (s * s):
    raise ValueError(f'pixel_shuffle: {cs} channels is not a multiple of {s}^2')
  c = cs // (s * s)
  x = x.reshape(b, h, w, c, s, s)
  x = x.transpose(0, 1, 4, 2, 5, 3)  # b, h, i, w, j, c
  return x.reshape(b, h * s, w * s, c)


def pixel_unshuffle(x: jax.Array, scale: int) -> jax.Array:
  """Inverse of `pixel_shuffle`: (B, H * s, W * s, C) -> (B, H, W, C * s * s)."""
  b, hs, ws, c = x.shape
  s = int(scale)
  x = x.reshape(b, hs // s, s, ws // s, s, c)
  x = x.transpose(0, 1, 3, 5, 2, 4)  # b, h, w, c, i, j
  return x.reshape(b, hs // s, ws // s, c * s * s)


def upsample_steps(scale: int) -> list[int]:
  """Shuffle factors of the UpSampler: [2] * log2(s) for s = 2^k, [3] for s = 3."""
  s = int(scale)
  if s != scale or s < 2:
    raise ValueError(f'UpSampler supports scales 2^k and 3, got {scale}')
  if s & (s - 1) == 0:
    return [2] * (s.bit_length() - 1)
  if s == 3:
    return [3]
  raise ValueError(f'UpSampler supports scales 2^k and 3, got {scale}')


def torch_indices(scale: int, entries_per_step: int = 2) -> list[int]:
  """Sequential indices of the UpSampler convs in PyTorch (conv, shuffle[, bn][, act] per step)."""
  return [i * entries_per_step for i in range(len(upsample_steps(scale)))]


class UpSampler(nn.Module):
  """EDSR-style sub-pixel up-sampler; without BN by default (the RDST / EDSR configuration).

  `bn=True` puts a BatchNorm after every shuffle (SRResNet); `train` then selects batch
  statistics (True) or the running ones (False). Without BN `train` is unused.
  """
  scale: int
  features: int
  act: Optional[Callable[[jax.Array], jax.Array]] = None
  init_scheme: str = 'thesis'
  bn: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, s in enumerate(upsample_steps(self.scale)):
      x = common.conv3x3(s * s * self.features, init_scheme=self.init_scheme, name=f'conv_{i}')(x)
      x = pixel_shuffle(x, s)
      if self.bn:
        x = common.batch_norm(train, name=f'bn_{i}')(x)
      if self.act is not None:
        x = self.act(x)
    return x
