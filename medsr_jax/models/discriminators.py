"""GAN discriminators: SRGAN-style D (reference, WGAN-GP, MS-GAN, MIASSR) and the pix2pix PatchGAN.

All are NHWC Linen modules. `srgan_d`, `wgan_gp_d`, `msgan_d` and `miassr_d` are one class,
`SRGANDiscriminator`, and return (N, 1) logits (no sigmoid); `patchgan` takes two images,
`apply(v, img_a, img_b)`, and returns its (N, h, w, 1) patch map of logits. Every module takes
`train: bool = False` (only BatchNorm uses it: apply with `mutable=['batch_stats']` when True).

SRGAN-style D (spec §5.15; the author's `loss/wgan.py` `Discriminator`; thesis Fig. 3.4, §4.3.3):

  conv_0 (C -> w_0, stride s_0) [-> BN] -> LReLU(0.2) -> ... conv_7 (w_6 -> w_7, s_7) [-> BN]
    -> LReLU -> flatten in PyTorch (C, H, W) order -> fc1 Linear(w_7 p^2, 1024) -> LReLU
    -> fc2 Linear(1024, 1)

  p is the side of the last feature map: every 3x3 conv with padding 1 and stride 2 halves the side
  rounding up, so p = ceil(input_size / 16) for four stride-2 convs (6 for 96; inputs of 81..96
  give the same 6 x 6 map, which the reference relies on for MIASSR's variable HR sizes). The FC
  layer fixes p, so the HR size is a field (`input_size`) and other sizes raise InputError.

  * `srgan_d`: widths 64, 64, 128, 128, 256, 256, 512, 512, strides 1, 2, 1, 2, 1, 2, 1, 2,
    convs without bias (`BasicBlock(bias=False)`) followed by BatchNorm: the reference built with
    a gan_type without 'GP' (e.g. MIASSR's example ini, gan_type='GAN', spec §11 item 9).
    23,562,561 params.
  * `wgan_gp_d`: the same with no BN ('GP' in gan_type: a gradient penalty needs per-sample
    gradients, which batch statistics would mix). The convs still have no bias, as in the
    reference. 23,558,721 params.
  * `miassr_d`: the discriminator of thesis §4.3.3: "similar to DCGAN and SRGAN", "7 down-sample
    blocks, each with one convolution layer with stride = 1 for feature expanding and one ... with
    stride = 2", "no batch normalisation", LeakyReLU 0.2. The author's code has one head conv and
    a 7-conv loop alternating stride 2 / stride 1 (width doubling at the stride-1 convs); read
    literally, 7 blocks of two convs would halve a 96 patch seven times (to 1 x 1) and end at
    64 * 2^7 channels, so we take "7 blocks" to be those 7 loop convs. With no BN this is
    architecturally `wgan_gp_d` (and loads its state dicts); note that the MIASSR example ini
    actually trains `srgan_d` (BN), see spec §7.4.
  * `msgan_d`: the WGAN-GP discriminator of MS-GAN (thesis Fig. 3.4, §3.2.4; TensorFlow, no code
    published): "4 dual-convolution blocks and two fully-connected layers"; in each block "the
    first convolutional layer has stride = 1 and remains the size of feature maps; the second
    layer doubles the number of convolution kernels and halves the size ... by setting stride = 2";
    Table 3.4: "the same as in SRGAN and DCGAN", activations "following WGAN / WGAN-GP". Choices
    where the thesis is silent (each a field): block widths (32 -> 64), (64 -> 128), (128 -> 256),
    (256 -> 512), i.e. the stride-2 convs have DCGAN's widths 64..512 and the last map is SRGAN's
    512 x p x p, so the classifier is SRGAN's Linear(512 p^2, 1024) -> LReLU -> Linear(1024, 1);
    no BN (WGAN-GP); conv biases on (nothing normalises them away); LeakyReLU 0.2; HR size 96;
    the output is an unbounded critic value (the caption's "flag in [0, 1]" is the label
    convention, not a sigmoid). 21,219,009 params at 96 x 96.

PatchGAN (spec §5.15, the author's `networks/PatchGAN.py` = pix2pix `NLayerDiscriminator` with
InstanceNorm, conditional): input = concat(img_a, img_b) on channels (2C), then
conv4x4 s2 (2C -> 64) -> LReLU; 2 x [conv4x4 s2 -> InstanceNorm -> LReLU] (64 -> 128 -> 256);
conv4x4 s1 (256 -> 512) -> IN -> LReLU; conv4x4 s1 (512 -> 1); padding 1 everywhere, every conv
with a bias (InstanceNorm has no affine part, as in PyTorch's default). 2,763,713 params for C=1;
a 96 x 96 pair gives a 10 x 10 map. The reference ships it but never uses it (spec §5.15).

Initialisation: both `init_scheme`s give PyTorch's default U(+-1/sqrt(fan_in)) for convs and
Linear layers (Kaiming-uniform, thesis §4.3.3), because the author's code re-initialises Linear
layers only inside SwinIR / RDST (spec §3.4); BN starts at scale 1, bias 0.

Run `python -m pytest tests/test_discriminators.py`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.errors import InputError
from medsr_jax.layers import common
from medsr_jax.models import registry

SRGAN_WIDTHS = (64, 64, 128, 128, 256, 256, 512, 512)
MSGAN_WIDTHS = (32, 64, 64, 128, 128, 256, 256, 512)
DUAL_STRIDES = (1, 2, 1, 2, 1, 2, 1, 2)
# The reference re-initialises Linear layers only in SwinIR / RDST: D keeps PyTorch's default.
LINEAR_INIT = 'thesis'


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
  """PyTorch's conv / pool output side: floor((size + 2 padding - kernel) / stride) + 1."""
  return (size + 2 * padding - kernel_size) // stride + 1


def flatten_nchw(x: jax.Array) -> jax.Array:
  """PyTorch's `x.view(N, -1)` of an NCHW tensor, from NHWC `x` (channel-major order)."""
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


class SRGANDiscriminator(nn.Module):
  """SRGAN-style discriminator: strided 3x3 convs [+ BN] + LReLU, then two Linear layers.

  Input (N, H, W, in_channels) with ceil-divided sides equal to those of `input_size`; output
  (N, 1) logits.
  """
  in_channels: int = 1
  input_size: int = 96
  widths: Sequence[int] = SRGAN_WIDTHS
  strides: Sequence[int] = DUAL_STRIDES
  batch_norm: bool = True
  conv_bias: bool = False
  fc_features: int = 1024
  negative_slope: float = 0.2
  init_scheme: str = 'thesis'

  def check_config(self) -> None:
    common.check_init_scheme(self.init_scheme)
    if len(self.widths) != len(self.strides) or not self.widths:
      raise ValueError(f'widths {tuple(self.widths)} and strides {tuple(self.strides)} must be '
                       'non-empty and of the same length')
    if any(s < 1 for s in self.strides) or any(w < 1 for w in self.widths):
      raise ValueError('widths and strides must be positive')
    if self.input_size < 1:
      raise ValueError(f'input_size must be positive, got {self.input_size}')

  def feature_size(self, size: Optional[int] = None) -> int:
    """Side of the last feature map for an input side `size` (default `input_size`)."""
    p = self.input_size if size is None else size
    for s in self.strides:
      p = conv_output_size(p, 3, s, 1)
    return p

  def example_inputs(self):
    x = jax.ShapeDtypeStruct((1, self.input_size, self.input_size, self.in_channels), jnp.float32)
    return (x,), {}

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: (N, H, W, in_channels) -> (N, 1) logits. `train` selects BN batch statistics."""
    self.check_config()
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise InputError(f'discriminator expects (N, H, W, {self.in_channels}) input, got {x.shape}')
    p = self.feature_size()
    got = (self.feature_size(x.shape[1]), self.feature_size(x.shape[2]))
    if got != (p, p):
      raise InputError(f'discriminator built for {self.input_size}x{self.input_size} inputs '
                       f'(a {p}x{p} last feature map) got {x.shape[1]}x{x.shape[2]}, which gives '
                       f'{got[0]}x{got[1]}')
    for i, (w, s) in enumerate(zip(self.widths, self.strides)):
      x = common.Conv2d(w, 3, stride=s, padding=1, use_bias=self.conv_bias,
                        init_scheme=self.init_scheme, name=f'conv_{i}')(x)
      if self.batch_norm:
        x = common.batch_norm(train, f'bn_{i}')(x)
      x = jax.nn.leaky_relu(x, self.negative_slope)
    x = flatten_nchw(x)
    x = common.Linear(self.fc_features, init_scheme=LINEAR_INIT, name='fc1')(x)
    x = jax.nn.leaky_relu(x, self.negative_slope)
    return common.Linear(1, init_scheme=LINEAR_INIT, name='fc2')(x)


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """PyTorch `nn.InstanceNorm2d` (affine=False): per sample and channel, biased variance."""
  mean = jnp.mean(x, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


class PatchGAN(nn.Module):
  """Conditional pix2pix PatchGAN: `apply(v, img_a, img_b)` -> (N, h, w, 1) patch logits.

  img_a, img_b: (N, H, W, in_channels) each (e.g. the condition and the real / generated image),
  concatenated on channels in that order as the reference's `torch.cat((img_A, img_B), 1)`.
  """
  in_channels: int = 1
  features: int = 64
  num_layers: int = 3
  kernel_size: int = 4
  max_width_mult: int = 8
  instance_norm: bool = True
  negative_slope: float = 0.2
  example_size: int = 96
  init_scheme: str = 'thesis'

  def check_config(self) -> None:
    common.check_init_scheme(self.init_scheme)
    if self.num_layers < 1 or self.features < 1:
      raise ValueError('num_layers and features must be positive')

  def plan(self) -> list[tuple[int, int]]:
    """(out channels, stride) of each conv, as pix2pix's NLayerDiscriminator builds them."""
    f = self.features
    mult = lambda n: min(2 ** n, self.max_width_mult)
    out = [(f, 2)] + [(f * mult(n), 2) for n in range(1, self.num_layers)]
    return out + [(f * mult(self.num_layers), 1), (1, 1)]

  def example_inputs(self):
    x = jax.ShapeDtypeStruct((1, self.example_size, self.example_size, self.in_channels),
                             jnp.float32)
    return (x, x), {}

  @nn.compact
  def __call__(self, img_a: jax.Array, img_b: jax.Array, train: bool = False) -> jax.Array:
    """(N, H, W, C) x 2 -> (N, h, w, 1) logits (h = 10 for H = 96). `train` is unused."""
    del train  # InstanceNorm has no running statistics
    self.check_config()
    if (img_a.ndim != 4 or img_a.shape[-1] != self.in_channels
        or tuple(img_a.shape) != tuple(img_b.shape)):
      raise InputError(f'PatchGAN expects two (N, H, W, {self.in_channels}) images of the same '
                       f'shape, got {img_a.shape} and {img_b.shape}')
    x = jnp.concatenate([img_a, img_b], axis=-1)
    plan = self.plan()
    for i, (w, s) in enumerate(plan):
      x = common.Conv2d(w, self.kernel_size, stride=s, padding=1, init_scheme=self.init_scheme,
                        name=f'conv_{i}')(x)
      if i == len(plan) - 1:
        break
      if 0 < i and self.instance_norm:
        x = instance_norm(x)
      x = jax.nn.leaky_relu(x, self.negative_slope)
    return x


registry.register('srgan_d', registry.make_constructor(
    SRGANDiscriminator, scale_kind='none', batch_norm=True))
registry.register('wgan_gp_d', registry.make_constructor(
    SRGANDiscriminator, scale_kind='none', batch_norm=False))
registry.register('miassr_d', registry.make_constructor(
    SRGANDiscriminator, scale_kind='none', batch_norm=False))
registry.register('msgan_d', registry.make_constructor(
    SRGANDiscriminator, scale_kind='none', widths=MSGAN_WIDTHS, batch_norm=False,
    conv_bias=True))
registry.register('patchgan', registry.make_constructor(PatchGAN, scale_kind='none'))
