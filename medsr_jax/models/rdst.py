"""RDST and RDST-E: the residual dense Swin transformer of thesis ch. 5 (§5.2, Fig. 5.1), NHWC.

Forward (reference `RDSTSR.forward`, spec §5.13 and §11 item 3):

  x -> MeanShift sub (identity for mean 0 / std 1) -> * img_range -> pad to a window multiple
    -> head conv3x3(C -> d) = x0
    -> LayerNorm(d) -> num_blocks x RDSTB -> LayerNorm(d) -> * global_res_scale
    -> conv_after_body conv3x3(d -> d) -> + x0 -> crop to the input size
    -> UpSampler (2^k x [conv d -> 4d, shuffle 2] or conv d -> 9d, shuffle 3) -> conv3x3(d -> C)
    -> / img_range -> MeanShift add.

Inputs whose H or W is not a multiple of `window_size` are padded at the bottom/right (`pad_mode`
'edge' = PyTorch 'replicate', like the author's MIASSR variant of RDST; also 'reflect',
'constant' or 'none' = reject) and the features are cropped back before the up-sampler, so the
output is always scale*H x scale*W. The shifted-window mask is computed for the padded size
(the reference recomputes it on the fly for every size other than its 24 x 24 patch).

`rdst`: 8 RDSTBs, 4,464,961 trainable params at x4 / 1 channel (the reference's 4,464,965 minus
its 4 frozen MeanShift numbers, which live in the 'constants' collection here). `rdst_e`: 4
RDSTBs, 2,379,241. DropPath is absent: the reference builds its RDSTBs without it.

Global feature fusion (`gff`, thesis §5.4.2, Table 5.5 "RDST+GFF" and Fig. 5.8; the reference's
`RDSTSR_N`, spec §5.13, built when `rdst_global_bottleneck=True`, which no ini sets):

  x0 -> LayerNorm -> num_blocks x RDSTB, keeping every block output F_1 .. F_n
    -> GFF(concat[F_1, .., F_n]) (d * n channels, block-major) -> * global_res_scale -> + x0
    -> crop -> UpSampler -> conv_last   (the final LayerNorm and conv_after_body are skipped)
  'conv': conv1x1(n d -> f) -> conv3x3(f -> f);  'mlp': Linear(n d -> f) -> Linear(f -> f), no
  activation in between; f = int(d * gff_ratio).

  * `RDSTSR_N` still builds the final LayerNorm `norm` and `conv_after_body` but never applies
    them; they are kept here as (gradient-free) params so the state dict and the parameter count
    match the reference class (see below for MACs).
  * The head features are added to the GFF output, so the reference only runs with f == d
    (gff_ratio 1); other ratios are rejected by `check_config`.
  * `rdst_gff` ('conv') has 4,526,281 trainable params at x4 (+61,320 = 28,860 + 32,460 over
    rdst) and `rdst_mlp_gff` ('mlp') 4,497,481 (+32,520 = 28,860 + 3,660); x2: 4,396,441 /
    4,367,641; x3: 4,558,741 / 4,529,941. Derived from the class, not from a reference file.
  * Which one is Table 5.5's "RDST+GFF" (4.40M params, 6.17 GMACs, 2 layers deeper than RDST)?
    Counting the modules its forward uses, without relative-position tables: 'mlp' = 4,400,105
    (rdst: 4,400,165) with exactly RDST's multiply-adds (the two Linears cost what the skipped
    conv_after_body did: 28,800 + 3,600 = 32,400 per pixel; 6,779,059,200 MACs for both on a
    40x32 input); 'conv' = 4,428,905 and 36,864,000 more MACs. So the table's figures fit the
    MLP GFF of Fig. 5.8. Under `apply` the unused modules are not computed (they are created
    only while initialising).

Stacking: with `scan_blocks=True` (default) the identical RDSTBs run under `nn.scan` and their
params carry a leading axis of size `num_blocks` under `params['body']`; with False they
are `params['body_{i}']`. Compile times measured for num_blocks=8 on a 40x32 input (scan / loop):
2-core CPU: forward 1.5-3.4 s / 3.5-6.0 s, gradient 6.5-12.6 s / 22-35 s, init 7.6-8.9 s /
47-52 s (the machine was shared, hence ranges); H100 (jax 0.11.2): forward 18 s / 43 s, gradient
41 s / 74 s, init 29 s / > 120 s. The forward runs equally fast; the scanned gradient was
2-23x slower on XLA:CPU until `layers/convolution.py` gave convolutions canonical gradients, and
is now within 7-28% of the unrolled one (docs/BENCHMARKS.md). Hence scan is the default.
On CPU a stack of at most `cpu_compile.MAX_UNROLLED_BLOCKS` (6) blocks, i.e. RDST-E's 4, is
scanned with `unroll=num_blocks` (`cpu_compile.scan_unroll`): the same stacked params and one
traced body, but no while loop, whose stacked-residual slices cost a quarter of RDST-E's step
(13.0 -> 10.0 s per step, train-step compile 40 -> 43 s). RDST's 8 blocks stay a loop: unrolled,
its gradient compiled in 28 s against 13 s scanned (measured the same hour), beyond 2x. `init`
is never unrolled (the params do not depend on it; RDST's unrolled init compiled in 126 s).

Precision: parity with the PyTorch reference is ~3e-7 in full float32; GPUs default to TF32
matmuls (`jax.default_matmul_precision`), which moves the output by ~2e-4 (relative).

Run `python -m pytest tests/test_rdst.py tests/test_rdst_gff.py`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.errors import InputError
from medsr_jax.layers import common
from medsr_jax.layers import dense
from medsr_jax.layers import remat
from medsr_jax.layers import upsample
from medsr_jax.models import base
from medsr_jax.models import registry

PAD_MODES = ('edge', 'reflect', 'constant', 'none')
GFF_MODES = ('none', 'conv', 'mlp')


def pad_to_multiple(x: jax.Array, multiple: int, mode: str) -> jax.Array:
  """Pads NHWC `x` at the bottom/right so H and W are multiples of `multiple`."""
  h, w = x.shape[1:3]
  ph, pw = -h % multiple, -w % multiple
  if not ph and not pw:
    return x
  if mode == 'none':
    raise InputError(f'input size {h}x{w} is not a multiple of the window {multiple} '
                     "and pad_mode is 'none'")
  if mode == 'reflect' and (ph >= h or pw >= w):
    raise InputError(f'input size {h}x{w} is too small for reflect padding to {multiple}')
  return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)


class RDST(base.MeanShiftSR):
  """Residual Dense Swin Transformer for x2 / x3 / x4 single-image SR (NHWC in and out)."""
  xla_cpu_ynn_fusions = True  # XLA:CPU: YNNPACK dot and reduce fusions (cpu_compile.py)
  embed_dim: int = 60
  num_blocks: int = 8
  dense_layers: int = 3
  stl_per_dense: int = 2
  num_heads: int = 6
  window_size: int = 8
  mlp_ratio: float = 2.0
  growth_rate: int = 30
  img_range: float = 1.0
  pad_mode: str = 'edge'
  dense_scale: float = 1.0
  block_residual_scale: float = 1.0
  global_res_scale: float = 1.0
  pre_norm: bool = True
  scan_blocks: bool = True
  gff: str = 'none'
  gff_ratio: float = 1.0

  def check_config(self) -> None:
    """Raises ValueError for a configuration the reference cannot build."""
    common.check_init_scheme(self.init_scheme)
    upsample.upsample_steps(self.scale)
    if self.pad_mode not in PAD_MODES:
      raise ValueError(f'pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}')
    h = self.num_heads
    widths = [self.embed_dim + i * self.growth_rate for i in range(self.dense_layers)]
    if self.growth_rate % h or any(d % h for d in widths):
      raise ValueError(f'embed_dim {self.embed_dim} and growth_rate {self.growth_rate} must be '
                       f'multiples of num_heads {h}')
    if self.window_size < 2 or self.num_blocks < 1:
      raise ValueError('window_size must be >= 2 and num_blocks >= 1')
    if self.gff not in GFF_MODES:
      raise ValueError(f'gff must be one of {GFF_MODES}, got {self.gff!r}')
    if self.gff != 'none' and self.gff_features() != self.embed_dim:
      raise ValueError(f'gff_ratio {self.gff_ratio} gives {self.gff_features()} GFF channels; the '
                       f'reference adds the {self.embed_dim} head channels to them, so it must '
                       f'give embed_dim')

  def gff_features(self) -> int:
    """Output channels f of the global feature fusion (the reference's final_feature_channels)."""
    return int(self.embed_dim * self.gff_ratio)

  def _block_kwargs(self) -> dict:
    return dict(dim=self.embed_dim, growth=self.growth_rate, num_dense=self.dense_layers,
                stl_per_dense=self.stl_per_dense, num_heads=self.num_heads,
                window_size=self.window_size, mlp_ratio=self.mlp_ratio,
                dense_scale=self.dense_scale, residual_scale=self.block_residual_scale,
                pre_norm=self.pre_norm, init_scheme=self.init_scheme)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: (B, H, W, in_channels) -> (B, scale*H, scale*W, in_channels). `train` is unused."""
    del train  # no dropout, DropPath or BatchNorm in RDST
    self.check_config()
    self.check_input(x)
    h, w = x.shape[1:3]
    shift = self.mean_shift()
    x = shift.sub(x) * self.img_range
    x = pad_to_multiple(x, self.window_size, self.pad_mode)

    x0 = self.conv(self.embed_dim, 'head')(x)
    t = common.layer_norm('patch_norm')(x0)
    kw = self._block_kwargs()
    if self.gff != 'none':
      return shift.add(self._gff_forward(t, x0, h, w, kw) / self.img_range)
    if self.scan_blocks:
      scanned = nn.scan(remat.block(dense.ScannedRDSTB, scanned=True), variable_axes={'params': 0},
                        split_rngs={'params': True}, length=self.num_blocks,
                        unroll=self.scan_unroll(self.num_blocks))
      t, _ = scanned(**kw, name='body')(t, None)
    else:
      for i in range(self.num_blocks):
        t = remat.block(dense.RDSTB)(**kw, name=f'body_{i}')(t)
    t = common.layer_norm('norm')(t) * self.global_res_scale
    res = self.global_skip(t, x0, 'conv_after_body')[:, :h, :w]
    return shift.add(self.upsample_tail(res) / self.img_range)

  def _gff_forward(self, t: jax.Array, x0: jax.Array, h: int, w: int, kw: dict) -> jax.Array:
    """RDSTSR_N body and tail: GFF of all RDSTB outputs + x0 -> up-sampler (before add_mean)."""
    b, hp, wp, d = t.shape
    if self.scan_blocks:
      scanned = nn.scan(remat.block(_ScannedRDSTBWithOutput, scanned=True),
                        variable_axes={'params': 0}, split_rngs={'params': True},
                        length=self.num_blocks, unroll=self.scan_unroll(self.num_blocks))
      t, outs = scanned(**kw, name='body')(t, None)  # outs: (n, B, H, W, d)
      feats = jnp.moveaxis(outs, 0, 3).reshape(b, hp, wp, self.num_blocks * d)
    else:
      outs = []
      for i in range(self.num_blocks):
        t = remat.block(dense.RDSTB)(**kw, name=f'body_{i}')(t)
        outs.append(t)
      feats = jnp.concatenate(outs, axis=-1)
    if self.is_initializing():  # built but not applied by the reference's RDSTSR_N: params only
      self.conv(d, 'conv_after_body')(common.layer_norm('norm')(t))
    f = self.gff_features()
    if self.gff == 'mlp':
      g = common.Linear(f, init_scheme=self.init_scheme, name='bottleneck_0')(feats)
      g = common.Linear(f, init_scheme=self.init_scheme, name='bottleneck_1')(g)
    else:
      g = self.conv(f, 'bottleneck_0', kernel_size=1)(feats)
      g = self.conv(f, 'bottleneck_1')(g)
    res = (g * self.global_res_scale + x0)[:, :h, :w]
    return self.upsample_tail(res)


class _ScannedRDSTBWithOutput(dense.RDSTB):
  """`RDSTB` for `nn.scan` that also emits its output, so the GFF sees every block's features."""

  def __call__(self, x: jax.Array, _=None):  # pytype: disable=signature-mismatch
    y = super().__call__(x)
    return y, y


registry.register('rdst', registry.make_constructor(RDST, num_blocks=8))
registry.register('rdst_e', registry.make_constructor(RDST, num_blocks=4))
registry.register('rdst_gff', registry.make_constructor(RDST, num_blocks=8, gff='conv'))
registry.register('rdst_mlp_gff', registry.make_constructor(RDST, num_blocks=8, gff='mlp'))
