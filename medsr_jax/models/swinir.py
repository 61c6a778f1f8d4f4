"""SwinIR, as the author's RDST repository builds it: the thesis' transformer baseline, NHWC.

The thesis compares RDST with SwinIR [138] and "SwinIR-lite" (ch. 5, Tables 5.1 and 5.5, §5.4.2);
the code is the author's copy of SwinIR (`RDST:networks/swin_transformer_sr.py`, factory
`swinir_make_model`; reference spec §5.12, §6 and §11 item 4). Forward:

  x -> pad to a window multiple (see below) -> (x - mean) * img_range
    -> conv_first conv3x3(C -> d) = x0
    -> LayerNorm(d) (patch_norm) -> num_layers x RSTB -> LayerNorm(d)
    -> conv_after_body conv3x3(d -> d) -> + x0
    -> up-sampler -> / img_range + mean -> crop to scale*H x scale*W.
  RSTB: depth x STL (W-MSA / SW-MSA alternating, see below) -> conv3x3(d -> d) -> + RSTB input.
  Up-samplers: 'pixelshuffledirect' (UpsampleOneStep): conv3x3(d -> s^2 C) -> shuffle(s);
  'pixelshuffle': conv3x3(d -> 64) -> LeakyReLU(0.01) -> [conv3x3(64 -> 4*64) -> shuffle(2)] x k
  (or conv3x3(64 -> 9*64) -> shuffle(3)) -> conv3x3(64 -> C).

Registered names (parameter counts at x4, one channel; all trainable, SwinIR has no MeanShift):
  * 'swinir_light': the RDST ini's [SwinIR] section: d 60, 4 RSTB x 6 STL, 6 heads, window 8,
    MLP ratio 2, 'pixelshuffledirect'. 911,236 (878,836 without the relative-position tables:
    the "0.88M" of Table 5.5's SwinIR-lite).
  * 'swinir': classical SwinIR (d 180, 6 RSTB x 6 STL, 'pixelshuffle'): 11,895,805 (11,847,205
    without the tables). The spec infers this is the thesis' "SwinIR" comparator; its ini is not
    in the repository.
  * 'swinir_psd': classical SwinIR with 'pixelshuffledirect': 11,521,996, i.e. 11,473,396 without
    the tables, the "11.47M" of thesis Tables 5.1 / 5.5; its conv + linear MACs on 40x32 (14.59 G,
    param_counts.md) are also closer to the tables' 14.68 G than those of 'swinir' (15.65 G). So
    the thesis' SwinIR is most likely this one.

Where the reference differs from the textbook SwinIR:
  * No shifted windows at x4. `swinir_make_model` builds the net for img_size =
    int(patch_size // scale // window + 1) * window with the ini's patch_size 24: 8 at x4, 16 at x2
    and x3. SwinIR's STL forces shift_size = 0 when its construction size is <= the window, so at
    x4 every STL is plain W-MSA (spec §5.12 [verified]); at x2 / x3 the odd STLs shift by w // 2.
    Here `torch_patch_size` (24) reproduces that rule and `shift_windows=True` / `False` overrides
    it (e.g. `shift_windows=True` at x4 is the textbook SwinIR). Masks are computed for the actual
    (padded) input size, as the reference does for every size other than its construction size.
  * The copy in the RDST repository has no `check_image_size`: it fails on sizes that are not
    window multiples. Upstream SwinIR pads the image at the bottom / right with 'reflect'
    (`check_image_size`, before the mean shift) and crops the *output* to scale*H x scale*W; that
    is our default `pad_mode='reflect'`; also 'symmetric' (the flip padding of SwinIR's test
    script, which however adds a whole window even to sizes that are multiples), 'edge',
    'constant', or 'none' = reject. On window multiples nothing is padded, as in the reference.
    Unlike RDST, the crop is after the up-sampler, as upstream.
  * mean: DIV2K RGB mean (0.4488, 0.4371, 0.4040) for 3 channels, else 0 (`mean=None`); it is a
    plain constant in the reference (not in the state dict), so here too (no 'constants').
  * DropPath: drop_path_rate 0.1, linearly increasing over all STLs (linspace(0, 0.1, L * depth)),
    is active in the reference's training. Here it runs with `apply(..., train=True,
    rngs={'dropout': key})` and is off in eval (`train=False`, the default; parity is eval mode).
  * The LeakyReLU after conv_before_upsample has PyTorch's default slope 0.01 (not 0.2).
  * Not implemented (never configured by the author): 'nearest+conv' and '' up-samplers,
    '3conv' residual connections, absolute position embedding, per-layer depth / head lists.

Stacking: with `scan_blocks=True` (default) the identical RSTBs run under `nn.scan` (params under
`params['layers']` with a leading axis of size `num_layers`; the per-block DropPath rates are the
scanned input); with False they are `params['layers_{i}']`. On CPU the scan is fully unrolled
(`cpu_compile.scan_unroll`: same params, no while loop; 1.38x faster steps for 1.3x compile),
except while initialising.

Parity with the author's PyTorch SwinIR (reference/PARITY.md, full float32 matmuls): 6.9e-7 to
8.5e-7 for swinir_light (x4, x2), swinir_psd and swinir.

Run `python -m pytest tests/test_swinir.py`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax.layers import common
from medsr_jax.layers import remat
from medsr_jax.layers import swin
from medsr_jax.layers import upsample
from medsr_jax.models import base
from medsr_jax.models import registry
from medsr_jax.models.rdst import pad_to_multiple

UPSAMPLERS = ('pixelshuffledirect', 'pixelshuffle')
PAD_MODES = ('reflect', 'symmetric', 'edge', 'constant', 'none')
RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean SwinIR subtracts from 3-channel inputs
TORCH_PATCH_SIZE = 24  # `patch_size` of the RDST ini that `swinir_make_model` receives


def construction_size(torch_patch_size: int, scale: int, window_size: int) -> int:
  """img_size the reference factory builds SwinIR for: (p // s // w + 1) * w."""
  return int(torch_patch_size // scale // window_size + 1) * window_size


class RSTB(nn.Module):
  """Residual Swin transformer block: `depth` STLs -> conv3x3 -> + input (SwinIR '1conv')."""
  dim: int
  depth: int = 6
  num_heads: int = 6
  window_size: int = 8
  shift_size: int = 4
  mlp_ratio: float = 2.0
  train: bool = False
  init_scheme: str = 'thesis'

  @nn.compact
  def __call__(self, x: jax.Array, drop_rates: Any = None) -> jax.Array:
    """x: (B, H, W, dim); drop_rates: (depth,) DropPath rates (used only when `train`)."""
    y = x
    for j in range(self.depth):
      rate = 0.0 if drop_rates is None else drop_rates[j]
      y = swin.SwinTransformerLayer(
          self.dim, self.num_heads, self.window_size, self.shift_size if j % 2 else 0,
          self.mlp_ratio, init_scheme=self.init_scheme, name=f'blocks_{j}')(y, rate, self.train)
    y = common.conv3x3(self.dim, init_scheme=self.init_scheme, name='conv')(y)
    return y + x


class ScannedRSTB(RSTB):
  """`RSTB` with the (carry, xs) -> (carry, None) signature that `nn.scan` needs."""

  def __call__(self, x: jax.Array, drop_rates: Any = None):  # pytype: disable=signature-mismatch
    return super().__call__(x, drop_rates), None


class SwinIR(base.SRModel):
  """SwinIR for x2 / x3 / x4 single-image SR (NHWC in and out); defaults = 'swinir_light'."""
  xla_cpu_ynn_fusions = True  # XLA:CPU: YNNPACK dot and reduce fusions (cpu_compile.py)
  embed_dim: int = 60
  num_layers: int = 4
  depth: int = 6
  num_heads: int = 6
  window_size: int = 8
  mlp_ratio: float = 2.0
  upsampler: str = 'pixelshuffledirect'
  num_feat: int = 64
  img_range: float = 1.0
  mean: Optional[Sequence[float]] = None
  patch_norm: bool = True
  torch_patch_size: int = TORCH_PATCH_SIZE
  shift_windows: Optional[bool] = None
  drop_path_rate: float = 0.1
  pad_mode: str = 'reflect'
  scan_blocks: bool = True

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    common.check_init_scheme(self.init_scheme)
    if self.upsampler not in UPSAMPLERS:
      raise ValueError(f'upsampler must be one of {UPSAMPLERS}, got {self.upsampler!r}')
    if self.upsampler == 'pixelshuffle':
      upsample.upsample_steps(self.scale)
    elif self.scale < 1:
      raise ValueError(f'scale must be >= 1, got {self.scale}')
    if self.pad_mode not in PAD_MODES:
      raise ValueError(f'pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}')
    if self.embed_dim % self.num_heads:
      raise ValueError(f'embed_dim {self.embed_dim} must be a multiple of num_heads '
                       f'{self.num_heads}')
    if self.window_size < 2 or self.num_layers < 1 or self.depth < 1:
      raise ValueError('window_size must be >= 2, num_layers and depth >= 1')
    if not 0.0 <= self.drop_path_rate < 1.0:
      raise ValueError(f'drop_path_rate must be in [0, 1), got {self.drop_path_rate}')
    self.channel_mean()

  def construction_size(self) -> int:
    """Square input size the reference model is built for (its attn_mask buffers' size)."""
    return construction_size(self.torch_patch_size, self.scale, self.window_size)

  def shift_size(self) -> int:
    """Shift of the odd STLs: w // 2, or 0 where the reference disables SW-MSA (x4, patch 24)."""
    shifted = self.shift_windows
    if shifted is None:
      shifted = self.construction_size() > self.window_size
    return self.window_size // 2 if shifted else 0

  def channel_mean(self) -> np.ndarray:
    """The per-channel mean subtracted from the input (SwinIR's `self.mean`)."""
    if self.mean is None:
      mean = RGB_MEAN if self.in_channels == 3 else (0.0,) * self.in_channels
    else:
      mean = tuple(self.mean)
    if len(mean) != self.in_channels:
      raise ValueError(f'mean has {len(mean)} values, expected {self.in_channels} (channels)')
    return np.asarray(mean, np.float32)

  def drop_path_rates(self) -> np.ndarray:
    """(num_layers, depth) float32 DropPath rates: linspace(0, rate, all STLs), per RSTB."""
    n = self.num_layers * self.depth
    return np.linspace(0.0, self.drop_path_rate, n, dtype=np.float32).reshape(
        self.num_layers, self.depth)

  def _reconstruct(self, res: jax.Array) -> jax.Array:
    c, s = self.in_channels, self.scale
    if self.upsampler == 'pixelshuffledirect':
      return upsample.pixel_shuffle(self.conv(s * s * c, 'upsample')(res), s)
    y = self.conv(self.num_feat, 'conv_before_upsample')(res)
    y = jax.nn.leaky_relu(y, 0.01)  # nn.LeakyReLU() default slope
    return self.upsample_tail(y)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: (B, H, W, in_channels) -> (B, scale*H, scale*W, in_channels).

    `train=True` enables DropPath (needs `rngs={'dropout': key}` when drop_path_rate > 0).
    """
    self.check_config()
    self.check_input(x)
    h, w = x.shape[1:3]
    mean = jnp.asarray(self.channel_mean(), x.dtype)
    x = pad_to_multiple(x, self.window_size, self.pad_mode)
    x = (x - mean) * self.img_range

    d = self.embed_dim
    x0 = self.conv(d, 'conv_first')(x)
    t = common.layer_norm('patch_norm')(x0) if self.patch_norm else x0
    drop = train and self.drop_path_rate > 0
    rates = jnp.asarray(self.drop_path_rates()) if drop else None
    block = dict(dim=d, depth=self.depth, num_heads=self.num_heads, window_size=self.window_size,
                 shift_size=self.shift_size(), mlp_ratio=self.mlp_ratio, train=drop,
                 init_scheme=self.init_scheme)
    if self.scan_blocks:
      scanned = nn.scan(remat.block(ScannedRSTB, scanned=True), variable_axes={'params': 0},
                        split_rngs={'params': True, swin.DROP_PATH_RNG: True},
                        length=self.num_layers, unroll=self.scan_unroll(self.num_layers))
      t, _ = scanned(**block, name='layers')(t, rates)
    else:
      for i in range(self.num_layers):
        t = remat.block(RSTB)(**block, name=f'layers_{i}')(t, None if rates is None else rates[i])
    res = self.global_skip(common.layer_norm('norm')(t), x0, 'conv_after_body')

    y = self._reconstruct(res)
    y = y / self.img_range + mean
    return y[:, :self.scale * h, :self.scale * w]


LIGHT = dict(embed_dim=60, num_layers=4, depth=6, num_heads=6, upsampler='pixelshuffledirect')
CLASSICAL = dict(embed_dim=180, num_layers=6, depth=6, num_heads=6, upsampler='pixelshuffle')

registry.register('swinir_light', registry.make_constructor(SwinIR, **LIGHT))
registry.register('swinir', registry.make_constructor(SwinIR, **CLASSICAL))
registry.register('swinir_psd', registry.make_constructor(
    SwinIR, **dict(CLASSICAL, upsampler='pixelshuffledirect')))
