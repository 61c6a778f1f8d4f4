"""Segmentation losses: smp's multiclass Dice loss and the U-Net perceptual losses of RDST.

Thesis §5.2.2 (Eqs 5.9-5.14) and reference spec §7.5 (the author's `loss/seg_unet.py`).

  from medsr_jax.losses import segmentation
  loss = segmentation.dice_loss(logits, labels)             # (N, H, W, K), (N, H, W) ints
  loss = segmentation.unet_perceptual_loss(unet_variables, sr, hr, 'e1', criterion='mse',
                                           bn='train')      # RDST-E1 as the author's code runs it

`unet_variables` are a trained 'unet_seg' (smp.Unet, ResNet-34; spec §5.16), e.g. imported with
`export_torch.variables_from_torch('unet_seg', ...)` or trained by the segmentation trainer. They
are frozen: the loss is constant in them (stop_gradient), gradients reach `sr` only.
Modes: 'e1'..'e5' (Eq. 5.10), 'e_sum', 'd' (Eq. 5.11), 'hrl' (Eq. 5.12, Dice of SR logits
against the HR prediction); see `unet_perceptual_loss` for the thesis-vs-code switches
(criterion, bn, layer_division, classes) and for the padding of sizes that are not multiples of 32.

Run `python -m pytest -q tests/test_segmentation_losses.py`.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from medsr_jax.errors import InputError
from medsr_jax.losses import pixel
from medsr_jax.models import unet_seg

DICE_EPS = 1e-7


def _class_indices(classes: Optional[Sequence[int]], num_classes: int) -> Optional[tuple[int, ...]]:
  if classes is None:
    return None
  if isinstance(classes, int):
    classes = (classes,)
  out = tuple(int(c) for c in classes)
  if not out:
    raise ValueError('classes must name at least one class (or be None for all)')
  bad = [c for c in out if not 0 <= c < num_classes]
  if bad:
    raise ValueError(f'classes {bad} out of range for {num_classes} classes')
  return out


def dice_loss(logits: jax.Array, labels: jax.Array,
              classes: Optional[Sequence[int]] = None) -> jax.Array:
  """smp 0.3.3 `DiceLoss('multiclass', classes)` (spec §7.5): a float32 scalar.

  logits: (N, H, W, K) raw scores; labels: (N, H, W) integers in [0, K); classes: static
  Python ints (a tuple under jit), e.g. (1, 2, 3) for the code's 'lesion_only'.
    p = softmax(logits) over K, t = one_hot(labels, K);
    dice_c = 2 sum(p_c t_c) / max(sum(p_c + t_c), 1e-7)       (sums over batch and pixels)
    loss_c = (1 - dice_c) * [class c has target pixels in the batch]
  The mean of loss_c over `classes` (None = all K): an absent class adds 0 but still counts in
  the mean's denominator, as smp multiplies by the mask before `.mean()`. Differentiable in
  `logits`; the thesis' Dice of Eq. 5.13, soft form.

  Raises:
    InputError: logits not (N, H, W, K) or labels not of shape (N, H, W).
    ValueError: `classes` empty or out of range.
  """
  if logits.ndim != 4 or labels.shape != logits.shape[:3]:
    raise InputError(f'dice_loss needs logits (N, H, W, K) and labels (N, H, W), got '
                     f'{logits.shape} and {labels.shape}')
  k = logits.shape[-1]
  keep = _class_indices(classes, k)
  p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).reshape(-1, k)
  t = jax.nn.one_hot(labels.reshape(-1), k, dtype=jnp.float32)
  intersection = jnp.sum(p * t, axis=0)
  cardinality = jnp.sum(p + t, axis=0)
  dice = 2.0 * intersection / jnp.maximum(cardinality, DICE_EPS)
  present = (jnp.sum(t, axis=0) > 0).astype(jnp.float32)
  per_class = (1.0 - dice) * present
  if keep is not None:
    per_class = per_class[jnp.asarray(keep)]
  return jnp.mean(per_class)


# ----------------------------------------------------------------------------------------------
# Segmentation U-Net perceptual losses (thesis Eqs 5.10-5.12, spec §7.5).

MODES = ('e1', 'e2', 'e3', 'e4', 'e5', 'e_sum', 'd', 'hrl')
CRITERIA = ('l1', 'mse')
BN_MODES = ('eval', 'train')
_CRITERION_FNS = {'l1': pixel.l1, 'mse': pixel.mse}


def _check_options(mode: str, criterion: str, bn: str) -> None:
  if mode not in MODES:
    raise ValueError(f'unknown U-Net loss mode {mode!r}; allowed: {list(MODES)}')
  if criterion not in CRITERIA:
    raise ValueError(f'unknown U-Net loss criterion {criterion!r}; allowed: {list(CRITERIA)}')
  if bn not in BN_MODES:
    raise ValueError(f'unknown U-Net BatchNorm mode {bn!r}; allowed: {list(BN_MODES)}')


def _params_of(variables: Mapping[str, Any]) -> Mapping[str, Any]:
  return variables['params'] if 'params' in variables else variables


@functools.lru_cache(maxsize=None)
def _unet_module(in_channels: int, num_classes: int, stem_features: int,
                 stage_widths: tuple[int, ...], blocks_per_stage: tuple[int, ...],
                 decoder_channels: tuple[int, ...]) -> unet_seg.UNetSeg:
  return unet_seg.UNetSeg(in_channels=in_channels, num_classes=num_classes,
                          stem_features=stem_features, stage_widths=stage_widths,
                          blocks_per_stage=blocks_per_stage, decoder_channels=decoder_channels)


def unet_from_variables(variables: Mapping[str, Any]) -> unet_seg.UNetSeg:
  """The unbound `UNetSeg` whose variables these are, read from parameter names and shapes.

  `variables` is {'params': ..., 'batch_stats': ...} (or the 'params' tree alone); arrays,
  tracers or ShapeDtypeStructs all work (only `.shape` is read). in_channels and stem_features
  come from the stem conv kernel (7, 7, in, stem); stage widths and block counts from the
  'layer{s}_{b}' blocks; decoder_channels from 'block_{i}/conv1'; num_classes from the head.
  `init_scheme` and `example_hw` are left at their defaults (they do not change `apply`).
  Modules are cached per signature, so repeated calls (e.g. while tracing) return one object.

  Raises:
    InputError: the tree is not a `unet_seg` variable tree.
  """
  params = _params_of(variables)
  try:
    encoder, decoder = params['encoder'], params['decoder']
    _, _, in_channels, stem = encoder['conv1']['kernel'].shape
    widths, blocks = [], []
    for s in range(1, unet_seg.ENCODER_DEPTH):
      n = 0
      while f'layer{s}_{n}' in encoder:
        n += 1
      if n == 0:
        raise KeyError(f'layer{s}_0')
      widths.append(int(encoder[f'layer{s}_0']['conv1']['kernel'].shape[-1]))
      blocks.append(n)
    dec = tuple(int(decoder[f'block_{i}']['conv1']['kernel'].shape[-1])
                for i in range(unet_seg.ENCODER_DEPTH))
    num_classes = int(params['segmentation_head']['kernel'].shape[-1])
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise InputError(f'not the variables of a unet_seg model (missing or malformed {e})') from e
  return _unet_module(int(in_channels), num_classes, int(stem), tuple(widths), tuple(blocks),
                      dec)


def _pad_to_stride(x: jax.Array) -> jax.Array:
  """Edge-pads (N, H, W, C) at the bottom / right to multiples of the U-Net's stride (32)."""
  stride = unet_seg.OUTPUT_STRIDE
  ph, pw = -x.shape[1] % stride, -x.shape[2] % stride
  if ph == 0 and pw == 0:
    return x
  return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='edge')


def covered_size(name: str, h: int, w: int) -> tuple[int, int]:
  """The part of output `name` that covers an H x W input: ceil(H / 2^i) x ceil(W / 2^i) for
  'e{i}' (every stride-2 layer of the encoder maps n to ceil(n / 2)), H x W otherwise."""
  if name in unet_seg.FEATURES:
    f = 2 ** int(name[1:])
    return -(-h // f), -(-w // f)
  return h, w


def unet_features(unet_variables: Mapping[str, Any], x: jax.Array, *, bn: str = 'eval',
                  encoder_only: bool = False,
                  model: Optional[unet_seg.UNetSeg] = None) -> dict[str, jax.Array]:
  """The U-Net outputs of `x` (N, H, W, C) at any H, W, each cropped to the part covering `x`.

  H / W that are not multiples of 32 are edge-padded at the bottom / right to the next multiple,
  the U-Net runs on the padded image, and every output is cropped back (`covered_size`): the
  top-left maps equal the unpadded network's wherever its receptive field stays inside the
  image, with replicated border values beyond. bn='eval' uses the running statistics
  (`train=False`); bn='train' normalises with this batch's statistics (of the padded batch) and
  discards the running-statistic updates. Returns 'e1'..'e5' and, unless `encoder_only`,
  'decoder' and 'logits' (float32). No stop_gradient here: callers decide.
  """
  if bn not in BN_MODES:
    raise ValueError(f'unknown U-Net BatchNorm mode {bn!r}; allowed: {list(BN_MODES)}')
  if x.ndim != 4:
    raise InputError(f'U-Net features need an (N, H, W, C) image, got shape {x.shape}')
  if model is None:
    model = unet_from_variables(unet_variables)
  h, w = x.shape[1:3]
  padded = _pad_to_stride(x.astype(jnp.float32))
  if bn == 'train':
    out, _ = model.apply(unet_variables, padded, train=True, encoder_only=encoder_only,
                         mutable=['batch_stats'])
  else:
    out = model.apply(unet_variables, padded, train=False, encoder_only=encoder_only)
  cropped = {}
  for name, y in out.items():
    ch, cw = covered_size(name, h, w)
    cropped[name] = y[:, :ch, :cw]
  return cropped


def unet_perceptual_loss(unet_variables: Mapping[str, Any], sr: jax.Array, hr: jax.Array,
                         mode: str, criterion: str = 'l1', bn: str = 'eval', *,
                         model: Optional[unet_seg.UNetSeg] = None,
                         classes: Optional[Sequence[int]] = None,
                         layer_division: bool = False) -> jax.Array:
  """Segmentation-U-Net perceptual loss of RDST (thesis §5.2.2; spec §7.5): a float32 scalar.

  unet_variables: a trained 'unet_seg' ({'params', 'batch_stats'}); frozen: the loss is computed
    under `stop_gradient` of them, so it has no gradient w.r.t. the U-Net.
  sr, hr: (N, H, W, C) images of one shape (C = the U-Net's in_channels); gradients reach `sr`
    only, the whole HR branch is under stop_gradient (the reference's `no_grad`).
  mode:
    'e1'..'e5': crit(U[E_i](sr), U[E_i](hr)), thesis Eq. 5.10 (encoder only; 'e1' = the stem
      conv+BN+ReLU at /2 = the 'E1' loss of RDST-E1).
    'e_sum': the thesis' sum over E_1..E_5. `layer_division=True` is the author's loop instead,
      where `loss /= len(layers)` sits inside the loop: loss = 0; for each layer
      (loss += crit_l; loss /= 5), so earlier layers are divided repeatedly. (For the
      single-layer modes the division is by 1 and changes nothing.)
    'd': crit on the last decoder block (16 channels, full size), Eq. 5.11.
    'hrl': L_HRL, Eq. 5.12: `dice_loss(logits(sr), argmax(logits(hr)), classes)`; classes None
      = all (thesis), (1, 2, 3) = the code's 'lesion_only' subset.
  criterion: 'l1' (mean |a - b|, the thesis) or 'mse' (mean (a - b)^2: what the author's
    'encoder-L1' mode actually computes, spec §7.5). Unused by 'hrl'.
  bn: 'eval' (running statistics: the thesis' inference-mode U-Net) or 'train' (the code: the
    U-Net module is never put in eval mode, so BN uses batch statistics, computed separately for
    the SR batch and for the HR batch as its two forward passes; running-stat updates are
    discarded here).
  model: the unbound UNetSeg; None rebuilds it from the variables (`unet_from_variables`).

  Sizes that are not multiples of 32 are edge-padded and the compared maps cropped back
  (`unet_features`); the reference instead needs 32-multiples (its 96 x 96 patches).

  Raises:
    ValueError: unknown mode, criterion or bn (the message lists the allowed values).
    InputError: sr / hr not of one NHWC shape, or variables that are not a unet_seg's.
  """
  _check_options(mode, criterion, bn)
  if sr.ndim != 4 or sr.shape != hr.shape:
    raise InputError(f'unet_perceptual_loss needs sr and hr of one (N, H, W, C) shape, got '
                     f'{sr.shape} and {hr.shape}')
  unet_variables = jax.lax.stop_gradient(unet_variables)
  if model is None:
    model = unet_from_variables(unet_variables)
  encoder_only = mode.startswith('e')
  features = functools.partial(unet_features, unet_variables, bn=bn, encoder_only=encoder_only,
                               model=model)
  f_sr = features(sr)
  f_hr = jax.lax.stop_gradient(features(jax.lax.stop_gradient(hr)))
  if mode == 'hrl':
    labels = jnp.argmax(f_hr['logits'], axis=-1)
    return dice_loss(f_sr['logits'], labels, classes)
  crit = _CRITERION_FNS[criterion]
  if mode == 'd':
    return crit(f_sr['decoder'], f_hr['decoder'])
  if mode != 'e_sum':
    return crit(f_sr[mode], f_hr[mode])
  terms = [crit(f_sr[name], f_hr[name]) for name in unet_seg.FEATURES]
  if not layer_division:
    return sum(terms[1:], terms[0])
  loss = jnp.zeros((), jnp.float32)
  for term in terms:
    loss = (loss + term) / len(terms)
  return loss
