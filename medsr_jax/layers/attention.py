"""Channel, layer and channel-spatial attention blocks of RCAN and HAN (NHWC, PyTorch numerics).

Thesis ch. 5 (§5.4.1-5.4.2, Tables 5.1-5.5) compares RDST with RCAN [136] and HAN [137]; the
networks actually trained are the author's `RDST:networks/rcan.py` and `han.py` (reference spec
§5.8, §5.9). The blocks here follow those files:

  * `CALayer` (channel attention): global average pool -> 1x1 conv (F -> F / r) -> ReLU ->
    1x1 conv (F / r -> F) -> sigmoid, times the input.
  * `AdaConv` (the reference's `Ada_conv`, not part of the published RCAN): a hard per-pixel,
    per-channel choice between two 3x3 convs,
      mask = [sigmoid(conv0(T(x))) < 0.5],   out = conv1(x) * mask + conv2(x) * (1 - mask),
    where conv0 is 1x1 and T is `transpose_reinterpret`: PyTorch's
    `x.permute(0, 1, 3, 2).contiguous().view(B, C, H, W)`, i.e. the H x W plane transposed to
    W x H and its memory read back as H x W. For H != W that is not a transpose: the mask seen at
    pixel (i, j) comes from the input pixel whose row-major index in the transposed W x H plane
    is i * W + j. The mask is never transposed back. `torch.where` with constant branches gives
    conv0 (and the mask path) no gradient, so conv0 keeps its initial weights in the reference;
    here the mask goes through `jax.lax.stop_gradient` to make that explicit. The logits are
    sown in 'intermediates'; an optional 'mask_override' collection pins chosen mask values
    (why: `models.attention_nets`, "The hard mask and float32").
  * `RCAB`: conv -> ReLU -> conv -> CALayer, plus the input. `ada_conv=True` uses `AdaConv` for
    both convs (the reference RCAN), False the plain 3x3 convs of the published RCAN (and of the
    reference HAN). The reference's `res_scale` argument is dead code (the multiply is commented
    out), so there is no such field.
  * `ResidualGroup`: `num_blocks` RCABs -> conv3x3, plus the group input. The RCABs run under
    `nn.scan` (`scan_blocks=True`, params carry a leading block axis under 'blocks').
  * `LayerAttention` (HAN's LAM): on N stacked layer outputs, energy = Q K^T over all of
    (H, W, C), attention = softmax(rowmax(energy) - energy) (the reference's "max minus
    energy" form), out = gamma * attention V + input, returned as N * C channels with layer n at
    channels [n * C, (n + 1) * C) like the reference's view(B, N * C, H, W).
  * `ChannelSpatialAttention` (HAN's CSAM): a Conv3d(1, 1, 3, padding 1) over the volume
    (channel, H, W), sigmoid, times gamma; out = x * a + x.

`gamma` of LAM and CSAM starts at 0 (the reference's value) under both `init_scheme`s; convs use
the PyTorch default uniform bounds (`common.Conv2d`; the CSAM Conv3d has fan_in 27).

Parameter names: CALayer 'down' / 'up' (PyTorch conv_du.0 / conv_du.2); AdaConv 'conv0',
'conv1', 'conv2'; RCAB 'conv_0' / 'conv_1' (body.0 / body.2) and 'ca' (body.3); ResidualGroup
'blocks' (scan) or 'blocks_{j}', and 'conv' (body.{num_blocks}); CSAM 'conv' {'kernel'
(3, 3, 3, 1, 1) = (channel, h, w, in, out), 'bias'} and 'gamma'; LAM 'gamma'.

Run `python -m pytest tests/test_attention_nets.py`.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.layers import common

# Flax collection where `AdaConv` sows its pre-threshold mask logits (apply with
# `mutable=['intermediates']` to read them; a no-op otherwise).
INTERMEDIATES = 'intermediates'
# Optional input collection of `AdaConv`: 'mask' (int8, the mask's shape; -1 = computed, 0 / 1 =
# forced). Absent in normal use. It pins the hard mask where float32 rounding decides it; tests
# use it to follow the reference's own float32 trajectory.
MASK_OVERRIDE = 'mask_override'


def transpose_reinterpret(x: jax.Array) -> jax.Array:
  """NHWC equivalent of PyTorch's `x.permute(0, 1, 3, 2).contiguous().view(B, C, H, W)`.

  Per channel, PyTorch lays the transposed plane out row-major as W x H (flat index w * H + h)
  and reads that memory back as H x W (pixel (i, j) = flat index i * W + j). In NHWC the channel
  axis is last, so transposing H and W and reshaping the (W, H) pixel grid to (H, W) in
  row-major order is the same reinterpretation.
  """
  b, h, w, c = x.shape
  return jnp.transpose(x, (0, 2, 1, 3)).reshape(b, h, w, c)


class CALayer(nn.Module):
  """Channel attention: x * sigmoid(up(relu(down(mean_hw(x)))))."""
  features: int
  reduction: int = 16
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = jnp.mean(x, axis=(1, 2), keepdims=True)
    y = common.Conv2d(self.features // self.reduction, 1, init_scheme=self.init_scheme,
                      name='down')(y)
    y = common.Conv2d(self.features, 1, init_scheme=self.init_scheme, name='up')(jax.nn.relu(y))
    return x * common.broadcast_like(jax.nn.sigmoid(y), x)


class AdaConv(nn.Module):
  """The reference's `Ada_conv`: two 3x3 convs mixed by a hard mask from a 1x1 conv (see top)."""
  features: int
  kernel_size: int = 3
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    logits = common.Conv2d(self.features, 1, init_scheme=self.init_scheme,
                           name='conv0')(transpose_reinterpret(x))
    self.sow(INTERMEDIATES, 'mask_logits', logits)
    # sigmoid(z) < 0.5 as in the reference, not z < 0: in float32 they differ for |z| ~ 1e-8.
    mask = (jax.nn.sigmoid(logits) < 0.5).astype(x.dtype)
    if self.has_variable(MASK_OVERRIDE, 'mask'):
      pin = self.get_variable(MASK_OVERRIDE, 'mask')
      mask = jnp.where(pin >= 0, pin.astype(x.dtype), mask)
    mask = jax.lax.stop_gradient(mask)
    k = self.kernel_size
    a = common.Conv2d(self.features, k, init_scheme=self.init_scheme, name='conv1')(x)
    b = common.Conv2d(self.features, k, init_scheme=self.init_scheme, name='conv2')(x)
    return a * mask + b * (1 - mask)


class RCAB(nn.Module):
  """Residual channel-attention block: conv -> ReLU -> conv -> CALayer, + x."""
  features: int
  reduction: int = 16
  ada_conv: bool = False
  init_scheme: str = 'thesis'

  def _conv(self, name: str) -> nn.Module:
    if self.ada_conv:
      return AdaConv(self.features, init_scheme=self.init_scheme, name=name)
    return common.conv3x3(self.features, init_scheme=self.init_scheme, name=name)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self._conv('conv_0')(x))
    y = self._conv('conv_1')(y)
    y = CALayer(self.features, self.reduction, self.init_scheme, name='ca')(y)
    return y + x


class ScannedRCAB(RCAB):
  """`RCAB` with the (carry, x) -> (carry, None) signature of `nn.scan`."""

  def __call__(self, x: jax.Array, _: Optional[jax.Array] = None):  # pytype: disable=signature-mismatch
    return super().__call__(x), None


class ResidualGroup(nn.Module):
  """`num_blocks` RCABs -> conv3x3, + x (the reference's `ResidualGroup`)."""
  features: int
  num_blocks: int = 20
  reduction: int = 16
  ada_conv: bool = False
  init_scheme: str = 'thesis'
  scan_blocks: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(features=self.features, reduction=self.reduction, ada_conv=self.ada_conv,
              init_scheme=self.init_scheme)
    if self.scan_blocks:
      blocks = nn.scan(ScannedRCAB,
                       variable_axes={'params': 0, INTERMEDIATES: 0, MASK_OVERRIDE: 0},
                       split_rngs={'params': True}, length=self.num_blocks)
      y, _ = blocks(**kw, name='blocks')(x, None)
    else:
      y = x
      for j in range(self.num_blocks):
        y = RCAB(**kw, name=f'blocks_{j}')(y)
    y = common.conv3x3(self.features, init_scheme=self.init_scheme, name='conv')(y)
    return y + x


class ScannedResidualGroup(ResidualGroup):
  """`ResidualGroup` for `nn.scan`: (carry, _) -> (output, output if `emit` else None).

  HAN sets `emit=True` to collect every group's output (stacked on a leading axis) for LAM.
  """
  emit: bool = False

  def __call__(self, x: jax.Array, _: Optional[jax.Array] = None):  # pytype: disable=signature-mismatch
    y = super().__call__(x)
    return y, (y if self.emit else None)


class LayerAttention(nn.Module):
  """HAN's layer attention module (LAM) on `feats` (B, H, W, N, C) -> (B, H, W, N * C)."""
  precision: Optional[jax.lax.Precision] = None

  @nn.compact
  def __call__(self, feats: jax.Array) -> jax.Array:
    b, h, w, n, c = feats.shape
    gamma = self.param('gamma', nn.initializers.zeros_init(), (1,))
    # One row per layer: the dot products are over all of (H, W, C), in any order.
    rows = jnp.moveaxis(feats, 3, 1).reshape(b, n, h * w * c)
    energy = jnp.einsum('bnd,bmd->bnm', rows, rows, precision=self.precision)
    energy = jnp.max(energy, axis=-1, keepdims=True) - energy
    attn = jax.nn.softmax(energy, axis=-1)
    out = jnp.einsum('bnm,bmd->bnd', attn, rows, precision=self.precision)
    out = common.broadcast_like(gamma, out) * out + rows
    return jnp.moveaxis(out.reshape(b, n, h, w, c), 1, 3).reshape(b, h, w, n * c)


class _Conv3dParams(nn.Module):
  """'kernel' (3, 3, 3, 1, 1) and 'bias' (1,) of CSAM's Conv3d(1, 1, 3), PyTorch default init."""
  fan_in: int = 27

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    init = common.torch_uniform(self.fan_in)
    return self.param('kernel', init, (3, 3, 3, 1, 1)), self.param('bias', init, (1,))


class ChannelSpatialAttention(nn.Module):
  """HAN's channel-spatial attention module (CSAM): x * gamma * sigmoid(conv3d(x)) + x.

  The reference runs Conv3d(1, 1, 3, padding 1) on x.unsqueeze(1), a one-channel volume of
  depth C (the feature channels) and size H x W. Here the NHWC input is that volume with the
  feature axis as the depth dimension ('D' in the dimension numbers; nothing is transposed).
  """
  init_scheme: str = 'thesis'
  precision: Optional[jax.lax.Precision] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    common.check_init_scheme(self.init_scheme)
    kernel, bias = _Conv3dParams(name='conv')()
    gamma = self.param('gamma', nn.initializers.zeros_init(), (1,))
    a = jax.lax.conv_general_dilated(
        x[..., None], kernel.astype(x.dtype), window_strides=(1, 1, 1),
        padding=((1, 1), (1, 1), (1, 1)), dimension_numbers=('NHWDC', 'DHWIO', 'NHWDC'),
        precision=self.precision)[..., 0]
    a = jax.nn.sigmoid(a + common.broadcast_like(bias, a))
    return x * (common.broadcast_like(gamma, a) * a) + x


def ca_reduced(features: int, reduction: int) -> int:
  """Channels of the CALayer bottleneck (PyTorch `channel // reduction`); must be >= 1."""
  r = features // reduction
  if r < 1:
    raise ValueError(f'features {features} // reduction {reduction} must be >= 1')
  return r
