"""PyTorch state-dict layouts: key-by-key maps between the author's state dicts and Flax variables.

A model's layout is a list of `Entry` rows, one per PyTorch state-dict key, in state-dict order:
the key, its PyTorch shape, its kind and, where the value is kept, the Flax path inside a
collection plus the tensor transform:

  'conv'    PyTorch (out, in, kh, kw)  <->  Flax (kh, kw, in, out)
  'linear'  PyTorch (out, in)          <->  Flax (in, out)
  'copy'    as is (biases, norm scales, relative-position-bias tables, running statistics)

Kinds:
  'param'   a trainable tensor, kept at `path` in `collection` ('params').
  'buffer'  with a `path`: a kept buffer such as BatchNorm's running_mean / running_var
            (`collection='batch_stats'`). Without a path: structural (relative-position index,
            shifted-window mask, num_batches_tracked): never imported; when present it is checked
            (`check`, or equality with `value()`), and `value()` regenerates it on export.
  'frozen'  requires_grad=False parameters (the MeanShift 1x1 convs): converted by the layout
            module (see `torch_layouts.blocks.mean_shift_*`), not by the engine.
  'alias'   the same tensor as the earlier key `alias_of` (SRResNet's one shared PReLU): on
            import it must equal that key's value; on export it is a copy.

Params of blocks stacked by `nn.scan` carry `index`: entry i of the Flax array's leading axis.

The engine here (`check_state_dict`, `import_entries`, `export_entries`, `prefixed`, and the
helpers `flatten` / `nest` / `flax_shape`) is shared by every model; each layout module (e.g.
`torch_layouts.rdst`) builds its entries and exposes `from_torch(model, state_dict)` and
`to_torch(model, variables)` (usually through `torch_layouts.blocks.converters`). `get(name)` returns that module for a model name. Every
error is an `InputError` (a ValueError) naming the key.

Public entry points for users: `medsr_jax.export_torch.variables_from_torch / variables_to_torch`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from medsr_jax.errors import InputError

TRANSFORMS = ('conv', 'linear', 'copy')
KINDS = ('param', 'buffer', 'frozen', 'alias')

# model name -> module path of its layout (a module with from_torch / to_torch). Filled for every
# model of the zoo; a model whose layout module is missing reports that when it is asked for.
_LAYOUTS: dict[str, str] = {}


def register(name: str, module_path: str) -> None:
  """Registers the layout module (import path) used for model `name`."""
  _LAYOUTS[name] = module_path


def _register_many(module_path: str, names: Iterable[str]) -> None:
  for name in names:
    register(name, module_path)


_register_many('medsr_jax.torch_layouts.rdst', ['rdst', 'rdst_e', 'rdst_gff', 'rdst_mlp_gff'])
_register_many('medsr_jax.torch_layouts.resnets', ['srresnet', 'edsr_lite', 'edsr', 'mdsr'])
_register_many('medsr_jax.torch_layouts.dense_nets', ['srdensenet', 'rdn', 'esrgan'])
_register_many('medsr_jax.torch_layouts.attention_nets', ['rcan', 'han'])
_register_many('medsr_jax.torch_layouts.convnet', ['convnet_lite', 'convnet_large'])
_register_many('medsr_jax.torch_layouts.swinir', ['swinir_light', 'swinir', 'swinir_psd'])
_register_many('medsr_jax.torch_layouts.meta_sr', ['miassr', 'meta_rdn', 'meta_srresnet',
                                                   'meta_edsr', 'meta_srdensenet',
                                                   'meta_esrgan', 'meta_mdsr'])
_register_many('medsr_jax.torch_layouts.discriminators', ['srgan_d', 'wgan_gp_d', 'miassr_d'])
_register_many('medsr_jax.torch_layouts.unet_seg', ['unet_seg'])
_register_many('medsr_jax.torch_layouts.vgg', ['vgg19'])
_register_many('medsr_jax.torch_layouts.inception', ['fid_inception'])


def names() -> list[str]:
  """Model names that have a PyTorch layout."""
  return sorted(_LAYOUTS)


def get(name: str) -> Any:
  """The layout module for model `name` (has `from_torch` and `to_torch`)."""
  if name not in _LAYOUTS:
    raise InputError(f'no PyTorch layout for model {name!r}; have: {", ".join(names())}')
  return importlib.import_module(_LAYOUTS[name])


def ignored_note(name: str, state_dict: Mapping[str, Any]) -> str:
  """One line on the keys of `state_dict` that model `name`'s `from_torch` leaves out on purpose
  (a layout module's optional `ignored_keys(state_dict)` and `IGNORED_NOTE`, e.g. torchvision
  VGG's `classifier.*`), or '' when there are none (every other model: extra keys are errors)."""
  module = get(name)
  find = getattr(module, 'ignored_keys', None)
  keys = list(find(state_dict)) if find is not None else []
  if not keys:
    return ''
  groups = ', '.join(sorted({str(k).split('.', 1)[0] + '.*' for k in keys}))
  why = getattr(module, 'IGNORED_NOTE', 'not used by this model')
  return f'left out {len(keys)} {groups} tensors ({why})'


def source_hint(name: str) -> str:
  """What file to pass for model `name` (a layout module's optional `SOURCE_HINT`), or ''."""
  return getattr(get(name), 'SOURCE_HINT', '')


@dataclasses.dataclass(frozen=True)
class Entry:
  """One PyTorch state-dict key and where it goes."""
  key: str
  shape: tuple[int, ...]
  kind: str = 'param'  # one of KINDS
  path: tuple[str, ...] = ()
  transform: str = 'copy'
  index: Optional[int] = None
  collection: str = 'params'
  alias_of: Optional[str] = None
  # Structural buffers: `value()` regenerates the buffer; `check(arr)` raises if a given one is
  # wrong (default: exact equality with `value()`; neither: any array of the right shape).
  value: Optional[Callable[[], np.ndarray]] = None
  check: Optional[Callable[[np.ndarray], None]] = None

  @property
  def kept(self) -> bool:
    """True when the value lives in a Flax collection (params and running statistics)."""
    return self.kind == 'param' or (self.kind == 'buffer' and bool(self.path))

  @property
  def structural(self) -> bool:
    """True for a buffer that is never imported (checked, and regenerated on export)."""
    return self.kind == 'buffer' and not self.path


def prefixed(entries: Iterable[Entry], key_prefix: str = '',
             path_prefix: tuple[str, ...] = ()) -> list[Entry]:
  """The same entries with `key_prefix` before every key (and alias) and `path_prefix` before
  every kept path: how a composite model (e.g. Meta-SR around an EDSR) nests a sub-layout."""
  out = []
  for e in entries:
    out.append(dataclasses.replace(
        e, key=key_prefix + e.key,
        path=(tuple(path_prefix) + e.path) if e.path else e.path,
        alias_of=(key_prefix + e.alias_of) if e.alias_of else None))
  return out


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


def flax_shape(e: Entry) -> tuple[int, ...]:
  """The shape of `e`'s value on the Flax side (after its transform)."""
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
  """Raises InputError on an extra key, a missing one, a wrong shape, alias or buffer."""
  known = {e.key: e for e in entries}
  if len(known) != len(entries):
    raise InputError('layout bug: duplicate keys in the layout')
  extra = [k for k in sd if k not in known]
  if extra:
    more = f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''
    raise InputError(f'unexpected key in state dict: {extra[0]!r}{more}')
  for e in entries:
    if e.key not in sd:
      if e.structural:
        continue
      if e.kind == 'alias' and e.alias_of in sd:
        continue  # PyTorch lists shared tensors under every name; one is enough
      raise InputError(f'missing key in state dict: {e.key!r}')
    arr = sd[e.key]
    if e.structural and e.check is not None:
      e.check(arr)
      continue
    if tuple(arr.shape) != e.shape:
      raise InputError(f'state dict key {e.key!r} has shape {tuple(arr.shape)}, expected {e.shape}')
    if e.structural and e.value is not None:
      if not np.array_equal(arr, e.value()):
        raise InputError(f'buffer {e.key!r} differs from the value this model computes')
    if e.kind == 'alias' and not np.array_equal(arr, sd[e.alias_of]):
      raise InputError(f'{e.key!r} must be the same tensor as {e.alias_of!r} (shared module), '
                       'but the values differ')


def nest(flat: Mapping[tuple[str, ...], Any]) -> dict:
  """{(k1, k2, ...): value} -> nested dicts {k1: {k2: ...: value}} (inverse of `flatten`)."""
  nested: dict = {}
  for path, value in flat.items():
    node = nested
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  return nested


def import_entries(entries: list[Entry], sd: Mapping[str, np.ndarray]) -> dict:
  """Flax variables {collection: nested dict} (float32 numpy) from the kept entries of `sd`."""
  flat: dict[tuple[str, ...], Any] = {}
  for e in entries:
    if not e.kept:
      continue
    arr = to_flax(np.asarray(sd[e.key], np.float32), e.transform)
    where = (e.collection,) + e.path
    if e.index is None:
      if where in flat:
        raise InputError(f'layout bug: two keys map to {"/".join(where)}')
      flat[where] = arr
    else:
      flat.setdefault(where, {})[e.index] = arr
  for where, value in list(flat.items()):
    if isinstance(value, dict):
      n = max(value) + 1
      if sorted(value) != list(range(n)):
        raise InputError(f'stacked variable {"/".join(where)} misses block indices')
      flat[where] = np.stack([value[i] for i in range(n)])
  return nest(flat)


def flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict:
  """Nested mappings -> {(prefix..., k1, k2, ...): leaf} (string keys; empty mappings vanish)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, prefix + (str(k),)))
    else:
      out[prefix + (str(k),)] = v
  return out


def export_entries(entries: list[Entry], variables: Mapping[str, Any],
                   collections: Iterable[str] = ('params', 'batch_stats')
                   ) -> dict[str, np.ndarray]:
  """State dict (numpy) for every kept, alias and structural entry ('frozen' ones are left to
  the layout module). Every leaf of `collections` in `variables` must be used."""
  flat = {}
  for col in collections:
    if col in variables:
      flat.update({(col,) + k: np.asarray(v) for k, v in flatten(variables[col]).items()})
  used = set()
  out: dict[str, np.ndarray] = {}
  for e in entries:
    if e.kind == 'alias':
      out[e.key] = out[e.alias_of].copy()
      continue
    if e.structural:
      if e.value is not None:
        out[e.key] = e.value()
      continue
    if not e.kept:
      continue
    where = (e.collection,) + e.path
    name = '/'.join(where)
    if where not in flat:
      raise InputError(f'Flax variable {name} (for {e.key!r}) is missing')
    arr = flat[where]
    used.add(where)
    if e.index is not None:
      if arr.ndim == 0 or e.index >= arr.shape[0]:
        raise InputError(f'Flax variable {name} has no block {e.index} (for {e.key!r})')
      arr = arr[e.index]
    if tuple(arr.shape) != flax_shape(e):
      raise InputError(f'Flax variable {name} has shape {arr.shape}, expected '
                       f'{flax_shape(e)} for {e.key!r}')
    out[e.key] = to_torch(np.asarray(arr, np.float32), e.transform)
  unused = sorted('/'.join(p) for p in flat if p not in used)
  if unused:
    raise InputError(f'Flax variable {unused[0]} has no PyTorch key ({len(unused)} unused)')
  return out
