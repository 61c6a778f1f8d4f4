"""Deterministic reference weights for forward-parity tests (rule v1 of reference/PARITY.md).

`state_dict_v1(layout, seed)` regenerates, from a layout file (tests/data/state_dicts/<name>.json:
entries [key, shape, kind, dtype(, alias_of)]), the exact weights the reference outputs in
tests/data/parity/<case>.npz were computed with. Structural buffers (relative-position index,
attention masks, num_batches_tracked) are left out: the importer regenerates or ignores them.
`load_case(name)` returns the parity case and its state dict; `parity_error` is the PARITY.md
error measure. Reusable by every model's parity test.
"""

from __future__ import annotations

import json
import pathlib
import zlib
from typing import Any, Mapping

import numpy as np

DATA = pathlib.Path(__file__).parent / 'data'
MEAN_SHIFT_MEAN = 0.25
MEAN_SHIFT_STD = 1.1
GAIN_ONE_MODELS = ('srgan_d', 'wgan_gp_d', 'unet_seg', 'vgg19', 'fid_inception')


def load_layout(name_or_path: Any) -> dict:
  path = pathlib.Path(name_or_path)
  if not path.suffix:
    path = DATA / 'state_dicts' / f'{name_or_path}.json'
  elif not path.is_absolute() and not path.exists():
    path = DATA / 'state_dicts' / path.name
  with open(path) as f:
    return json.load(f)


def _rng(seed: int, key: str) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(key.encode('utf-8'))])


def _mean_shift(key: str, shape: tuple[int, ...]) -> np.ndarray:
  """MeanShift 1x1 convs with mean 0.25 / std 1.1, float32 arithmetic as in PyTorch."""
  c = shape[0]
  std = np.full((c,), MEAN_SHIFT_STD, np.float32)
  mean = np.full((c,), MEAN_SHIFT_MEAN, np.float32)
  eye = np.eye(c, dtype=np.float32)
  sub = key.startswith('sub_mean')
  if key.endswith('weight'):
    w = eye / std[:, None] if sub else eye * std[:, None]
    return w.reshape(shape).astype(np.float32)
  return (-mean / std if sub else mean).astype(np.float32).reshape(shape)


def state_dict_v1(layout: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
  """Rule v1: one float32 array per non-structural entry, keyed like the PyTorch state dict."""
  entries = layout['state_dict']
  keys = {e[0] for e in entries}
  model = layout.get('name', '')
  base_gain = 1.0 if model in GAIN_ONE_MODELS else 0.5
  out: dict[str, np.ndarray] = {}
  for entry in entries:
    key, shape, kind = entry[0], tuple(entry[1]), entry[2]
    if kind == 'param_alias':
      out[key] = out[entry[4]]
      continue
    rng = _rng(seed, key)
    if kind == 'buffer':
      if key.endswith('running_mean'):
        out[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
      elif key.endswith('running_var'):
        out[key] = (0.5 + rng.random(shape)).astype(np.float32)
      continue  # structural buffers: whatever the model computes
    if kind == 'param_frozen':
      out[key] = _mean_shift(key, shape)
      continue
    if key.endswith('relative_position_bias_table'):
      value = 0.5 * rng.standard_normal(shape)
    elif len(shape) >= 2:
      gain = 3.0 if 'conv_du' in key else base_gain
      fan_in = shape[1] * int(np.prod(shape[2:]))
      value = gain / np.sqrt(fan_in) * rng.standard_normal(shape)
    elif key.endswith('bias'):
      value = 0.05 * rng.standard_normal(shape)
    elif key.endswith('weight'):
      prefix = key[:-len('weight')]
      if f'{prefix}running_mean' in keys or int(np.prod(shape)) > 1:
        value = 1 + 0.1 * rng.standard_normal(shape)
      else:
        value = 0.25 + 0.05 * rng.standard_normal(shape)
    else:
      value = 0.3 * rng.standard_normal(shape)
    out[key] = np.asarray(value).astype(np.float32)
  return out


def load_case(case: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(case arrays, regenerated state dict) for tests/data/parity/<case>.npz."""
  with np.load(DATA / 'parity' / f'{case}.npz') as z:
    data = {k: z[k] for k in z.files}
  if str(data['rule']) != 'v1':
    raise ValueError(f'{case}: unsupported parity rule {data["rule"]}')
  layout = load_layout(str(data['layout']))
  return data, state_dict_v1(layout, int(data['seed']))


def parity_error(y: np.ndarray, ref: np.ndarray) -> float:
  """||y - ref|| / max(||ref - mean(ref)||, ||ref||) over the whole tensor."""
  y = np.asarray(y, np.float64)
  ref = np.asarray(ref, np.float64)
  denom = max(np.linalg.norm(ref - ref.mean()), np.linalg.norm(ref))
  return float(np.linalg.norm(y - ref) / denom)
