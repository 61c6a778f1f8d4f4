"""PyTorch layout of the author's `MetaSR` (MIASSR, MetaRDN, Meta-*) <-> `models.meta_sr.MetaSR`.

Reference state dict (spec §5.10, §5.11; `tests/data/state_dicts/{miassr,meta_rdn}.json`), in
this order:

  feature_extractor.<key>        the feature extractor's own layout in `feature_maps_only` mode
                                 (`torch_layouts.resnets` / `.dense_nets`), nested under
                                 Flax params['feature_extractor'] with `torch_layouts.prefixed`
  feature_extractor.tail.*       the reference's dead tail for the ini's sr_scale (x2: tail.0.0,
                                 tail.1; the full model's tail keys, after the body)
                                   reference_tail_scale set: params/batch_stats ['dead_tail']
                                   thesis default (None):    'unused' ['dead_tail'] (kept for
                                                             export, never trainable)
  add_mean / sub_mean            -> 'constants' mean_shift {mean, std} (checked)
  meta_upsampler.P2W.meta_block.0 / .2   -> meta_upsampler/fc1, fc2 (Linear 3 -> 256 -> 9 F C)

Which dead tail (`tail_scale` keyword of `entries`, `from_torch`, `to_torch`):
  * a model with `reference_tail_scale` always uses that scale;
  * otherwise 'auto': on import, the tail scale (2, 3, 4, or none) whose keys and shapes the
    state dict has; on export, the one the 'unused' collection holds, or x2 (the MIASSR ini)
    filled with zeros when there is no 'unused' collection (e.g. a model trained here from
    scratch; the reference's forward never reads those tensors, but its strict
    `load_state_dict` needs them). `entries(model)` lists the x2 tail.

The same code serves every feature extractor of `models.meta_sr.FEATURE_EXTRACTORS`; only
miassr and meta_rdn have reference layouts to check against. The tail keys of the others are
those of the feature extractor's own full layout (inferred, not verified against the author's
code; for MDSR all three per-scale tails).

Run `python -m pytest tests/test_meta_sr.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

import numpy as np

from medsr_jax import torch_layouts as tl
from medsr_jax.errors import InputError
from medsr_jax.models import meta_sr
from medsr_jax.torch_layouts import blocks as tb

AUTO = 'auto'
REFERENCE_TAIL_SCALE = 2.0  # the MIASSR ini's sr_scale
TAIL_SCALES = (2.0, 3.0, 4.0)
FE_KEY = 'feature_extractor.'
FE_PATH = ('feature_extractor',)

TailScale = Union[str, float, None]


def _resolve(model: Any, tail_scale: TailScale) -> Optional[float]:
  """The dead-tail scale of `model`'s layout (None: no dead-tail keys)."""
  if model.reference_tail_scale is not None:
    ref = float(model.reference_tail_scale)
    if tail_scale != AUTO and (tail_scale is None or float(tail_scale) != ref):
      raise InputError(f'tail_scale {tail_scale} contradicts the model\'s reference_tail_scale '
                       f'{ref}')
    return ref
  if tail_scale == AUTO:
    return REFERENCE_TAIL_SCALE
  return None if tail_scale is None else float(tail_scale)


def dead_tail_entries(model: Any, tail_scale: float) -> list[tl.Entry]:
  """The feature extractor's tail keys at `tail_scale` (after its body), as kept by `model`."""
  layout = tl.get(model.feature_extractor)
  live = {e.key for e in layout.entries(model.feature_model())}
  trainable = model.reference_tail_scale is not None
  out = []
  for e in layout.entries(model.full_feature_model(tail_scale)):
    if e.key in live or e.kind == 'frozen':
      continue
    if e.index is not None:
      raise InputError(f'layout bug: dead-tail key {e.key!r} is a scanned block entry')
    if e.kept:
      e = dataclasses.replace(e, path=(meta_sr.DEAD_TAIL,) + e.path,
                              collection=e.collection if trainable else meta_sr.UNUSED)
    out.append(e)
  return tl.prefixed(out, FE_KEY)


def entries(model: Any, tail_scale: TailScale = AUTO) -> list[tl.Entry]:
  """The ordered reference state-dict layout of `model` (a `MetaSR`)."""
  c = model.in_channels
  fe_layout = tl.get(model.feature_extractor)
  out = tl.prefixed(fe_layout.entries(model.feature_model()), FE_KEY, FE_PATH)
  ts = _resolve(model, tail_scale)
  if ts is not None:
    out += dead_tail_entries(model, ts)
  out += tb.mean_shift(c)
  k2fc = model.kernel_size ** 2 * model.feature_channels() * c
  out += tb.linear('meta_upsampler.P2W.meta_block.0', ('meta_upsampler', 'fc1'), 3,
                   model.weight_hidden)
  out += tb.linear('meta_upsampler.P2W.meta_block.2', ('meta_upsampler', 'fc2'),
                   model.weight_hidden, k2fc)
  return out


def _matches(layout: list[tl.Entry], sd: Mapping[str, np.ndarray]) -> bool:
  """Whether `sd` has exactly the keys (and shapes) of `layout` (aliases and buffers optional)."""
  known = {e.key: e for e in layout}
  for key, arr in sd.items():
    e = known.get(key)
    if e is None or (not e.structural and tuple(arr.shape) != e.shape):
      return False
  return all(e.key in sd for e in layout if not e.structural and e.kind != 'alias')


def _detect_from_state_dict(model: Any, sd: Mapping[str, np.ndarray]) -> Optional[float]:
  for ts in TAIL_SCALES + (None,):
    if _matches(entries(model, ts), sd):
      return ts
  return REFERENCE_TAIL_SCALE  # the check then names the offending key


def _unused_shapes(model: Any, tail_scale: float) -> dict[tuple[str, ...], tuple[int, ...]]:
  return {e.path: tl.flax_shape(e) for e in dead_tail_entries(model, tail_scale) if e.kept}


def _detect_from_unused(model: Any, unused: Optional[Mapping[str, Any]]) -> float:
  if unused is None:
    return REFERENCE_TAIL_SCALE
  have = {path: tuple(np.shape(v)) for path, v in tl.flatten(unused).items()}
  for ts in TAIL_SCALES:
    if _unused_shapes(model, ts) == have:
      return ts
  return REFERENCE_TAIL_SCALE  # the export then names the offending variable


def from_torch(model: Any, state_dict: Mapping[str, Any], tail_scale: TailScale = AUTO) -> dict:
  """Flax variables {'params', ['batch_stats'], 'constants', ['unused']} from a state dict."""
  sd = tl.as_numpy_state_dict(state_dict)
  if model.reference_tail_scale is None and tail_scale == AUTO:
    tail_scale = _detect_from_state_dict(model, sd)
  layout = entries(model, tail_scale)
  tl.check_state_dict(layout, sd)
  variables = tl.import_entries(layout, sd)
  mean, std = tb.mean_std_from_torch(sd, model.in_channels)
  variables['constants'] = {'mean_shift': {'mean': mean, 'std': std}}
  return variables


def to_torch(model: Any, variables: Mapping[str, Any],
             tail_scale: TailScale = AUTO) -> dict[str, np.ndarray]:
  """The reference state dict (numpy, reference key order) for `model`'s Flax `variables`."""
  if 'params' not in variables:
    variables = {'params': variables}
  variables = dict(variables)
  collections = ('params', 'batch_stats')
  if model.reference_tail_scale is None:
    if tail_scale == AUTO:
      tail_scale = _detect_from_unused(model, variables.get(meta_sr.UNUSED))
    collections += (meta_sr.UNUSED,)
    if meta_sr.UNUSED not in variables and tail_scale is not None:
      zeros = {path: np.zeros(shape, np.float32)
               for path, shape in _unused_shapes(model, float(tail_scale)).items()}
      variables[meta_sr.UNUSED] = tl.nest(zeros)
  layout = entries(model, tail_scale)
  parts = tl.export_entries(layout, variables, collections)
  parts.update(tb.mean_std_to_torch(*tb.model_mean_std(model, variables, model.in_channels)))
  return {e.key: parts[e.key] for e in layout if e.key in parts}
