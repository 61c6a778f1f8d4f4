"""Framework-neutral export of a trained model: a directory with parameters and a config.

Layout of an export directory (format version 1):
  config.json          model name, scale, in_channels, model_kwargs, parameter count, versions,
                       the file holding the parameters, and `extra` (e.g. the training step)
  params.npz           every variable as a float32 array under a "/"-joined key, sorted
                       ("params/head/kernel", "constants/mean_shift/mean", ...)
  or params.safetensors  the same arrays in safetensors format (`fmt='safetensors'`)

An export directory is written as a whole: into a temporary sibling directory
(`.<name>.tmp-<random>`), which then takes the place of the old export in one atomic exchange
(`renameat2(RENAME_EXCHANGE)` on Linux), so a kill, a full disk or any failure leaves the old
export (or none) intact, never a partial one. Only a directory that holds nothing but an export's
files is replaced (an `--out` that holds other files is refused). Leftovers of a killed save are
removed by the next save to the same directory (one writer at a time per export directory).

Nothing in an export is ever unpickled (`np.load(..., allow_pickle=False)`), so exports from
untrusted sources are safe to read; `load_export` checks every key and shape against the model
that config.json names before handing the variables out.

  from medsr_jax import export
  export.save_export('run/export', model_name='rdst', model_kwargs={}, scale=4, in_channels=1,
                     params=state['params'], extra={'step': 100000})
  module, variables, config = export.load_export('run/export')
  sr = module.apply(variables, lr)           # lr: NHWC float32 in [0, 1]

`python -m medsr_jax.export ...` is the PyTorch state-dict converter: this package's `__main__`
runs `medsr_jax.export_cli` (which imports this module; this module never imports it), and the
converter's flags are defined only when that command runs.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_export.py tests/test_export_cli.py
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import sys
import uuid
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

import medsr_jax
from medsr_jax.errors import InputError
# PyTorch state-dict import/export (the author's key layout) lives in its own module; re-exported.
from medsr_jax.export_torch import variables_from_torch, variables_to_torch  # noqa: F401
from medsr_jax.io import images
from medsr_jax.io import json_files

FORMAT = 'medsr_jax.export'
FORMAT_VERSION = 1
CONFIG_FILE = 'config.json'
PARAM_FILES = {'npz': 'params.npz', 'safetensors': 'params.safetensors'}
SEP = '/'
NORMALISATION = ('Inputs are NHWC float32 in [0, 1]: each image or volume is min-max '
                 'normalised, (v - min) / (max - min), before super-resolution, and the output is '
                 'mapped back with v * (max - min) + min (per-volume min-max as in the author\'s '
                 'data loaders, reference spec §4.1; dissertation ch. 4-5 work in [0, 1]).')


# ----------------------------------------------------------------------------------------------
# Flat views of nested variable dicts.


def flatten_params(tree: Mapping[str, Any], sep: str = SEP) -> dict[str, Any]:
  """Nested mapping -> {"a/b/c": leaf}, keys in sorted order.

  Raises:
    ValueError: a key that contains `sep` or is not a string, or a non-mapping container.
  """
  flat: dict[str, Any] = {}

  def visit(node, prefix):
    for key in sorted(node):
      if not isinstance(key, str) or sep in key or not key:
        raise ValueError(f'cannot flatten key {key!r} under {prefix or "<root>"!r}')
      value = node[key]
      name = f'{prefix}{sep}{key}' if prefix else key
      if isinstance(value, Mapping):
        visit(value, name)
      elif isinstance(value, (list, tuple)):
        raise ValueError(f'{name}: lists/tuples are not supported in a parameter tree')
      else:
        flat[name] = value

  if not isinstance(tree, Mapping):
    raise ValueError(f'expected a mapping of variables, got {type(tree).__name__}')
  visit(tree, '')
  return flat


def unflatten_params(flat: Mapping[str, Any], sep: str = SEP) -> dict[str, Any]:
  """{"a/b/c": leaf} -> nested dicts (the inverse of `flatten_params`)."""
  tree: dict[str, Any] = {}
  for name in sorted(flat):
    parts = name.split(sep)
    node = tree
    for part in parts[:-1]:
      child = node.setdefault(part, {})
      if not isinstance(child, dict):
        raise ValueError(f'{name}: {part!r} is both a leaf and a subtree')
      node = child
    if parts[-1] in node:
      raise ValueError(f'{name}: duplicate or conflicting key')
    node[parts[-1]] = flat[name]
  return tree


# ----------------------------------------------------------------------------------------------
# Model helpers.


def _tuples(value: Any) -> Any:
  """JSON lists back to tuples (hashable module fields)."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.generic, jax.Array)) and np.ndim(value) == 0:
    return np.asarray(value).item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return value


def _build(model_name: str, scale: Any, in_channels: int, model_kwargs: Mapping[str, Any],
           where: str):
  from medsr_jax import models  # pylint: disable=g-import-not-at-top
  if model_name not in models.available():
    raise InputError(f'{where}: unknown model {model_name!r} (available: '
                     f'{", ".join(models.available())})')
  try:
    return models.build(model_name, scale=scale, in_channels=in_channels,
                        **_tuples(dict(model_kwargs)))
  except InputError as e:
    raise InputError(f'{where}: {e}') from e
  except (TypeError, ValueError) as e:
    raise InputError(f'{where}: cannot build model {model_name!r}: {e}') from e


def expected_shapes(module) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat {key: ShapeDtypeStruct} of every variable `module.init` creates (no compute)."""
  from medsr_jax import models  # pylint: disable=g-import-not-at-top
  return flatten_params(models.abstract_variables(module))


def _as_variables(params: Mapping[str, Any]) -> Mapping[str, Any]:
  """A full variables dict ({'params': ..., ...}) or a bare params tree -> variables."""
  return params if 'params' in params else {'params': params}


def _to_numpy(x: Any) -> np.ndarray:
  arr = np.asarray(jax.device_get(x))
  if arr.dtype.kind == 'f' or arr.dtype == jnp.bfloat16:
    arr = arr.astype(np.float32)
  return np.ascontiguousarray(arr)


def _shape_problems(got: Mapping[str, tuple], want: Mapping[str, tuple], limit: int = 3) -> str:
  """'' when the key sets and shapes agree, else one line naming the first few differences."""
  missing = [k for k in want if k not in got]
  extra = [k for k in got if k not in want]
  wrong = [f'{k} {tuple(got[k])} (expected {tuple(want[k])})'
           for k in want if k in got and tuple(got[k]) != tuple(want[k])]
  parts = []
  for label, items in (('missing', missing), ('unexpected', extra), ('wrong shape', wrong)):
    if items:
      more = f' and {len(items) - limit} more' if len(items) > limit else ''
      parts.append(f'{len(items)} {label}: {", ".join(items[:limit])}{more}')
  return '; '.join(parts)


# ----------------------------------------------------------------------------------------------
# Saving.


def _write_params(path: str, arrays: Mapping[str, np.ndarray], fmt: str,
                  metadata: Mapping[str, str]) -> None:
  if fmt == 'npz':
    with open(path, 'wb') as f:
      np.savez(f, **arrays)
  else:
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    save_file(dict(arrays), path, metadata=dict(metadata))


_TMP_TAG = '.tmp-'   # .<name>.tmp-<hex>: a new export being written, or an old one being removed
_OLD_TAG = '.old-'   # .<name>.old-<hex>: the old export moved aside (without RENAME_EXCHANGE)
# Temporary files of the per-file writes of earlier versions, killed mid-write.
_OLD_TEMP_RE = re.compile(r'^\.(config\.json|params\.(npz|safetensors))\.[0-9a-f]+\.tmp$')


def _check_replaceable(directory: str, target: str) -> None:
  """InputError unless `target` is absent or a directory holding only an export's files."""
  if not os.path.lexists(target):
    return
  if not os.path.isdir(target):
    raise InputError(f'{directory}: exists and is not a directory; cannot write an export there')
  own = {CONFIG_FILE, *PARAM_FILES.values()}
  others = sorted(n for n in os.listdir(target) if n not in own and not _OLD_TEMP_RE.match(n))
  if others:
    more = f' and {len(others) - 3} more' if len(others) > 3 else ''
    raise InputError(f'{directory}: holds {", ".join(others[:3])}{more} besides an export; an '
                     'export replaces its whole directory, so write it to a new or empty one')


def _remove_leftovers(parent: str, name: str) -> None:
  """Removes what a killed save of `parent/name` left beside it."""
  for entry in os.listdir(parent):
    if entry.startswith((f'.{name}{_TMP_TAG}', f'.{name}{_OLD_TAG}')):
      shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _fsync(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _exchange(a: str, b: str) -> bool:
  """Atomically swaps the paths `a` and `b` (Linux renameat2 RENAME_EXCHANGE); False where the
  system or the file system cannot."""
  if not sys.platform.startswith('linux'):
    return False
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (OSError, AttributeError):  # glibc < 2.28, musl
    return False
  renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                        ctypes.c_uint]
  renameat2.restype = ctypes.c_int
  at_fdcwd, rename_exchange = -100, 2
  if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
    return False
  raise OSError(err, os.strerror(err), b)


def _move_into_place(tmp: str, target: str, directory: str) -> None:
  """The complete export `tmp` becomes `target`; an old `target` ends up at `tmp`."""
  try:
    if not os.path.lexists(target):
      os.rename(tmp, target)
      return
    if _exchange(tmp, target):
      return
    # No atomic exchange here: the old export is moved aside for a moment.
    old = os.path.join(os.path.dirname(target),
                       f'.{os.path.basename(target)}{_OLD_TAG}{uuid.uuid4().hex[:12]}')
    os.rename(target, old)
    try:
      os.rename(tmp, target)
    except BaseException:
      os.rename(old, target)
      raise
    os.rename(old, tmp)
  except OSError as e:
    if e.errno in (errno.EBUSY, errno.EXDEV):  # a mount point
      raise InputError(f'{directory}: cannot replace it ({images.one_line(e)}); write the '
                       'export to a folder inside it') from e
    raise


def save_export(directory: str, *, model_name: str, model_kwargs: Mapping[str, Any], scale: Any,
                in_channels: int, params: Mapping[str, Any],
                extra: Optional[Mapping[str, Any]] = None, fmt: str = 'npz') -> dict[str, Any]:
  """Writes `directory`/config.json and params.npz (or params.safetensors).

  Args:
    directory: created if needed (with its parents); an existing export there is replaced as
      a whole, once the new one is complete. A directory that holds other files is refused.
    model_name: a name registered in `medsr_jax.models`.
    model_kwargs: overrides passed to `models.build` (JSON-serialisable).
    scale: the model's SR scale.
    in_channels: image channels the model takes.
    params: the variables dict ({'params': ..., 'constants': ...}) or just the params tree. Any
      non-'params' collection the model has but `params` lacks (e.g. RDST's MeanShift
      'constants') is filled from the model's initialisation.
    extra: more JSON-serialisable facts to record (training step, validation PSNR, ...).
    fmt: 'npz' or 'safetensors'.

  The variables are checked against the model before anything is written. The export is written
  to a temporary sibling directory, synced to disk, and exchanged with the old one atomically, so
  a crash or a full disk leaves either the old export or the new one, complete.

  Raises:
    ValueError: variables that do not match the model, or an unknown `fmt`.
    InputError: `directory` is a file, holds other files than an export's, or is a mount point.
    OSError: a failed write (a full disk); the old export, if any, is intact.

  Returns:
    The config dict written to config.json.
  """
  if fmt not in PARAM_FILES:
    raise ValueError(f'fmt must be one of {sorted(PARAM_FILES)}, got {fmt!r}')
  module = _build(model_name, scale, in_channels, model_kwargs, where='save_export')
  want = expected_shapes(module)
  variables = dict(_as_variables(params))
  want_cols = {k.split(SEP, 1)[0] for k in want}
  missing_cols = sorted(c for c in want_cols - set(variables) if c != 'params')
  if missing_cols:
    # Only the missing collections are kept, so XLA drops the parameter initialisers.
    from medsr_jax import models  # pylint: disable=g-import-not-at-top
    init = jax.jit(lambda k: {c: models.init(module, k)[c] for c in missing_cols})
    variables.update(init(jax.random.key(0)))
  arrays = {k: _to_numpy(v) for k, v in flatten_params(variables).items()}
  problems = _shape_problems({k: v.shape for k, v in arrays.items()},
                             {k: v.shape for k, v in want.items()})
  if problems:
    raise ValueError(f'variables do not match model {model_name!r}: {problems}')

  param_count = int(sum(a.size for k, a in arrays.items() if k.startswith('params' + SEP)))
  config = {
      'format': FORMAT,
      'format_version': FORMAT_VERSION,
      'model': model_name,
      'scale': _jsonable(scale),
      'in_channels': int(in_channels),
      'model_kwargs': _jsonable(dict(model_kwargs)),
      'param_count': param_count,
      'params_file': PARAM_FILES[fmt],
      'dtype': 'float32',
      'medsr_jax_version': medsr_jax.__version__,
      'jax_version': jax.__version__,
      'normalisation': NORMALISATION,
      'extra': _jsonable(dict(extra or {})),
  }
  text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + '\n'

  target = os.path.realpath(os.fspath(directory))  # a symlink to an export stays one
  _check_replaceable(os.fspath(directory), target)
  parent, name = os.path.split(target)
  os.makedirs(parent, exist_ok=True)
  _remove_leftovers(parent, name)
  tmp = os.path.join(parent, f'.{name}{_TMP_TAG}{uuid.uuid4().hex[:12]}')
  os.mkdir(tmp)  # the umask applies, as to a plain os.makedirs
  try:
    _write_params(os.path.join(tmp, PARAM_FILES[fmt]), arrays, fmt,
                  {'format': FORMAT, 'model': model_name})
    with open(os.path.join(tmp, CONFIG_FILE), 'x', encoding='utf-8') as f:
      f.write(text)
    for entry in (PARAM_FILES[fmt], CONFIG_FILE, ''):  # on disk before the exchange
      _fsync(os.path.join(tmp, entry))
    _move_into_place(tmp, target, os.fspath(directory))  # tmp now holds the old export, if any
    _fsync(parent)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return config


# ----------------------------------------------------------------------------------------------
# Loading.


def read_config(directory: str) -> dict[str, Any]:
  """Reads and checks `directory`/config.json (InputError for anything wrong)."""
  path, config = json_files.read_json_object(directory, CONFIG_FILE, 'model directory',
                                             'a medsr_jax export directory')
  if config.get('format', FORMAT) != FORMAT:
    raise InputError(f'{path}: not a medsr_jax export (format {config.get("format")!r})')
  version = config.get('format_version', FORMAT_VERSION)
  if not isinstance(version, int) or version > FORMAT_VERSION:
    raise InputError(f'{path}: export format version {version!r} is newer than this medsr_jax '
                     f'reads ({FORMAT_VERSION})')
  for key, kind in (('model', str), ('scale', (int, float)), ('in_channels', int)):
    if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
      raise InputError(f'{path}: missing or invalid {key!r}')
  if not isinstance(config.setdefault('model_kwargs', {}), dict):
    raise InputError(f'{path}: "model_kwargs" must be an object')
  params_file = config.setdefault('params_file', PARAM_FILES['npz'])
  if params_file not in PARAM_FILES.values():
    raise InputError(f'{path}: unknown params_file {params_file!r}')
  return config


def _read_params(path: str) -> dict[str, np.ndarray]:
  if not os.path.isfile(path):
    raise InputError(f'{os.path.dirname(path)}: no {os.path.basename(path)} (parameters missing)')
  try:
    if path.endswith('.npz'):
      with np.load(path, allow_pickle=False) as z:
        return {k: np.asarray(z[k]) for k in z.files}
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return dict(load_file(path))
  except Exception as e:  # corrupt zip/header/array: many exception types
    raise InputError(f'{path}: cannot read parameters ({" ".join(str(e).split())})') from e


def load_export(directory: str):
  """Reads an export directory written by `save_export`.

  Returns:
    (module, variables, config): the unbound Linen module from `models.build`, the variables
    ({'params': ..., plus any other collection}) as jax arrays, and the config dict.

  Raises:
    InputError: missing directory, config.json or parameter file; unreadable or corrupt files;
      unknown model; parameters whose keys or shapes do not match the model.
  """
  directory = os.fspath(directory)
  config = read_config(directory)
  where = os.path.join(directory, CONFIG_FILE)
  module = _build(config['model'], config['scale'], config['in_channels'],
                  config['model_kwargs'], where=where)
  params_path = os.path.join(directory, config['params_file'])
  arrays = _read_params(params_path)
  want = expected_shapes(module)
  problems = _shape_problems({k: v.shape for k, v in arrays.items()},
                             {k: v.shape for k, v in want.items()})
  if problems:
    raise InputError(f'{params_path}: parameters do not match model {config["model"]!r}: '
                     f'{problems}')
  for k, v in arrays.items():
    if v.dtype.kind not in 'biuf':
      raise InputError(f'{params_path}: {k} has unsupported type {v.dtype}')
    if v.dtype.kind == 'f' and not np.all(np.isfinite(v)):
      raise InputError(f'{params_path}: {k} contains NaN or infinite values')
  variables = unflatten_params(
      {k: jnp.asarray(v, dtype=want[k].dtype) for k, v in arrays.items()})
  return module, variables, config

