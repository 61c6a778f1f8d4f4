"""PyTorch state-dict layouts: key-by-key maps between the author's state dicts and Flax params.

A model's layout is a list of `Entry` rows, one per PyTorch state-dict key, in state-dict order:
the key, its PyTorch shape, its kind ('param', 'frozen' = requires_grad False, 'buffer') and, for
params, the Flax path inside the 'params' collection plus the tensor transform:

  'conv'    PyTorch (out, in, kh, kw)  <->  Flax (kh, kw, in, out)
  'linear'  PyTorch (out, in)          <->  Flax (in, out)
  'copy'    as is (biases, LayerNorm weight <-> scale, relative-position-bias tables)

Params of blocks stacked by `nn.scan` carry `index`: entry i of the Flax array's leading axis.
Buffers (relative-position index, shifted-window masks) are never imported: when present they
are checked against the model's own computation; on export they are regenerated.

The engine here (`check_state_dict`, `params_from_torch`, `params_to_torch`) is shared by every
model; each model module (e.g. `torch_layouts.rdst`) builds its entries and exposes
`from_torch(model, state_dict)` and `to_torch(model, variables)`. `get(name)` returns that module
for a registered model name. Every error is an `InputError` (a ValueError) naming the key.

Public entry points for users: `medsr_jax.export_torch.variables_from_torch / variables_to_torch`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping, Optional

import numpy as np

from medsr_jax.errors import InputError

TRANSFORMS = ('conv', 'linear', 'copy')

# model name -> module path of its layout (a module with from_torch / to_torch).
_LAYOUTS: dict[str, str] = {
    'rdst': 'medsr_jax.torch_layouts.rdst',
    'rdst_e': 'medsr_jax.torch_layouts.rdst',
}


def register(name: str, module_path: str) -> None:
  """Registers the layout module (import path) used for model `name`."""
  _LAYOUTS[name] = module_path


def get(name: str) -> Any:
  """The layout module for model `name` (has `from_torch` and `to_torch`)."""
  if name not in _LAYOUTS:
    raise InputError(f'no PyTorch layout for model {name!r}; have: {", ".join(sorted(_LAYOUTS))}')
  return importlib.import_module(_LAYOUTS[name])


@dataclasses.dataclass(frozen=True)
class Entry:
  """One PyTorch state-dict key and where it goes."""
  key: str
  shape: tuple[int, ...]
  kind: str = 'param'  # 'param' | 'frozen' | 'buffer'
  path: tuple[str, ...] = ()
  transform: str = 'copy'
  index: Optional[int] = None
  # Buffers: `value()` regenerates the buffer; `check(arr)` raises if a given one is wrong
  # (default: exact equality with `value()`).
  value: Optional[Callable[[], np.ndarray]] = None
  check: Optional[Callable[[np.ndarray], None]] = None


def to_flax(arr: np.ndarray, transform: str) -> np.ndarray:
  if transform == 'conv':
    return np.ascontiguousarray(arr.transpose(2, 3, 1, 0))
  if transform == 'linear':
    return np.ascontiguousarray(arr.T)
  return arr


def to_torch(arr: np.ndarray, transform: str) -> np.ndarray:
  if transform == 'conv':
    return np.ascontiguousarray(arr.transpose(3, 2, 0, 1))
  if transform == 'linear':
    return np.ascontiguousarray(arr.T)
  return arr


def _flax_shape(e: Entry) -> tuple[int, ...]:
  return tuple(to_flax(np.empty(e.shape, np.uint8), e.transform).shape)


def as_numpy_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Converts tensors (numpy, CPU torch tensors, lists) to numpy arrays."""
  out = {}
  for k, v in state_dict.items():
    if hasattr(v, 'detach'):
      v = v.detach().cpu().numpy()
    out[str(k)] = np.asarray(v)
  return out


def check_state_dict(entries: list[Entry], sd: Mapping[str, np.ndarray]) -> None:
  """Raises InputError on an extra key, a missing param, a shape or a buffer mismatch."""
  known = {e.key: e for e in entries}
  extra = [k for k in sd if k not in known]
  if extra:
    more = f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''
    raise InputError(f'unexpected key in state dict: {extra[0]!r}{more}')
  for e in entries:
    if e.key not in sd:
      if e.kind == 'buffer':
        continue
      raise InputError(f'missing key in state dict: {e.key!r}')
    arr = sd[e.key]
    if e.kind == 'buffer' and e.check is not None:
      e.check(arr)
      continue
    if tuple(arr.shape) != e.shape:
      raise InputError(f'state dict key {e.key!r} has shape {tuple(arr.shape)}, expected {e.shape}')
    if e.kind == 'buffer' and e.value is not None:
      if not np.array_equal(arr, e.value()):
        raise InputError(f'buffer {e.key!r} differs from the value this model computes')


def params_from_torch(entries: list[Entry], sd: Mapping[str, np.ndarray]) -> dict:
  """Nested Flax 'params' dict (float32 numpy) built from the 'param' entries of `sd`."""
  flat: dict[tuple[str, ...], Any] = {}
  for e in entries:
    if e.kind != 'param':
      continue
    arr = to_flax(np.asarray(sd[e.key], np.float32), e.transform)
    if e.index is None:
      flat[e.path] = arr
    else:
      flat.setdefault(e.path, {})[e.index] = arr
  nested: dict = {}
  for path, value in flat.items():
    if isinstance(value, dict):
      n = max(value) + 1
      if sorted(value) != list(range(n)):
        raise InputError(f'stacked parameter {"/".join(path)} misses block indices')
      value = np.stack([value[i] for i in range(n)])
    node = nested
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  return nested


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, prefix + (str(k),)))
    else:
      out[prefix + (str(k),)] = v
  return out


def params_to_torch(entries: list[Entry], params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """State dict (numpy) for every 'param' and 'buffer' entry; every Flax param must be used."""
  flat = {k: np.asarray(v) for k, v in _flatten(params).items()}
  used = set()
  out: dict[str, np.ndarray] = {}
  for e in entries:
    if e.kind == 'buffer':
      if e.value is not None:
        out[e.key] = e.value()
      continue
    if e.kind != 'param':
      continue
    if e.path not in flat:
      raise InputError(f'Flax param {"/".join(e.path)} (for {e.key!r}) is missing')
    arr = flat[e.path]
    used.add(e.path)
    if e.index is not None:
      if arr.ndim == 0 or e.index >= arr.shape[0]:
        raise InputError(f'Flax param {"/".join(e.path)} has no block {e.index} (for {e.key!r})')
      arr = arr[e.index]
    if tuple(arr.shape) != _flax_shape(e):
      raise InputError(f'Flax param {"/".join(e.path)} has shape {arr.shape}, expected '
                       f'{_flax_shape(e)} for {e.key!r}')
    out[e.key] = to_torch(np.asarray(arr, np.float32), e.transform)
  unused = sorted('/'.join(p) for p in flat if p not in used)
  if unused:
    raise InputError(f'Flax param {unused[0]} has no PyTorch key ({len(unused)} unused)')
  return out
