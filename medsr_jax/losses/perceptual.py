"""VGG perceptual loss: MSE between VGG-19 features of SR and HR images (reference spec §7.2).

  from medsr_jax import export
  from medsr_jax.losses import perceptual
  _, vgg_variables, _ = export.load_export('weights/vgg19')   # python -m medsr_jax.export
                                                               #   --model=vgg19 --from_torch=...
  loss = perceptual.vgg_loss(vgg_variables, sr, hr, layer='vgg22')

`vgg_variables` are the variables of a 'vgg19' export (torchvision's ImageNet weights imported
with the converter); they are never trained (a separate, non-donated argument of the jitted train
step: the function traces with them as a traced argument). sr and hr are NHWC in [0, 1] with C
channels; they are not clipped.

  * layer 'vgg22': conv2_2 (`features[:8]`), 'vgg54': conv5_4 (`features[:35]`); both before their
    ReLU unless `after_relu` (the author's code and ESRGAN: before; SRGAN, thesis §3.2.4: after).
  * C = 1: the grey image is repeated to RGB; C = 3: used as is; any other C (e.g. 4 BraTS
    modalities): every channel is repeated to RGB on its own and the per-channel feature MSEs are
    averaged (`channel_reduce='mean'`, the thesis' per-channel average, §4.3.3) or summed
    (`'sum'`, the author's code, spec §7.2).
  * `normalize=True`: ImageNet mean / std on the [0, 1] input (torchvision weights);
    `normalize=False`: raw input (the MINC VGG of ESRGAN, spec §7.3).
  * loss = mean((V(sr) - stop_gradient(V(hr)))^2) in float32 (PyTorch `F.mse_loss(vgg(sr),
    vgg(hr).detach())`).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from medsr_jax.models import vgg

LAYERS = tuple(vgg.TAPS)
CHANNEL_REDUCTIONS = ('mean', 'sum')


@functools.lru_cache(maxsize=None)
def vgg_module(layer: str, after_relu: bool, normalize: bool) -> vgg.VGG19Features:
  """The (cached) VGG-19 module that computes only `layer`."""
  return vgg.VGG19Features(layers=(layer,), after_relu=after_relu, normalize=normalize)


def _check(layer: str, channel_reduce: str) -> None:
  if layer not in LAYERS:
    raise ValueError(f'unknown VGG layer {layer!r}; known: {list(LAYERS)}')
  if channel_reduce not in CHANNEL_REDUCTIONS:
    raise ValueError(f'channel_reduce must be one of {list(CHANNEL_REDUCTIONS)}, '
                     f'got {channel_reduce!r}')


def _as_rgb_groups(x: jax.Array) -> jax.Array:
  """(N, H, W, C) -> (G, N, H, W, 3): one RGB group for C in (1, 3), else one per channel."""
  c = x.shape[-1]
  if c == 3:
    return x[None]
  # (N, H, W, C) -> (C, N, H, W, 1) -> repeat the single channel to RGB.
  per_channel = jnp.moveaxis(x, -1, 0)[..., None]
  return jnp.repeat(per_channel, 3, axis=-1)


def vgg_features(vgg_variables: Mapping[str, Any], x: jax.Array, layer: str = 'vgg22',
                 after_relu: bool = False, normalize: bool = True) -> jax.Array:
  """VGG-19 features of the RGB groups of `x`: (G, N, h, w, F) (see `vgg_loss`)."""
  _check(layer, 'mean')
  groups = _as_rgb_groups(x.astype(jnp.float32))
  g, n = groups.shape[:2]
  module = vgg_module(layer, bool(after_relu), bool(normalize))
  variables = vgg_variables if 'params' in vgg_variables else {'params': vgg_variables}
  feats = module.apply(variables, groups.reshape((g * n,) + groups.shape[2:]))[layer]
  return feats.reshape((g, n) + feats.shape[1:])


def vgg_loss(vgg_variables: Mapping[str, Any], sr: jax.Array, hr: jax.Array,
             layer: str = 'vgg22', after_relu: bool = False, channel_reduce: str = 'mean',
             normalize: bool = True) -> jax.Array:
  """MSE of VGG-19 `layer` features of `sr` and `hr` (NHWC, [0, 1]); a float32 scalar.

  Gradients reach `sr` only: the HR features and the VGG weights are under `stop_gradient`.

  Raises:
    ValueError: unknown `layer` or `channel_reduce`, or sr / hr of different or non-NHWC shapes.
  """
  _check(layer, channel_reduce)
  if sr.ndim != 4 or sr.shape != hr.shape:
    raise ValueError(f'vgg_loss needs sr and hr of one NHWC shape, got {sr.shape} and {hr.shape}')
  vgg_variables = jax.lax.stop_gradient(vgg_variables)
  kwargs = dict(layer=layer, after_relu=after_relu, normalize=normalize)
  f_sr = vgg_features(vgg_variables, sr, **kwargs)
  f_hr = jax.lax.stop_gradient(vgg_features(vgg_variables, jax.lax.stop_gradient(hr), **kwargs))
  per_group = jnp.mean(jnp.square(f_sr - f_hr), axis=tuple(range(1, f_sr.ndim)))
  return jnp.sum(per_group) if channel_reduce == 'sum' else jnp.mean(per_group)
