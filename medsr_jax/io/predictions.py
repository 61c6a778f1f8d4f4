"""A run's test predictions file, `RUN/predictions/test.npz`: what the MOS kit shows raters.

The chapter-3 trainers (`trainers/lesion_report.py`) write each run's super-resolved test ROIs
here with `write_predictions`; `python -m experiments.mos export` reads them with
`read_predictions` / `PredictionsFile`. A `np.savez_compressed` archive that loads with
`allow_pickle=False`:
  ids     (N,) unicode str     test sample ids, unique, e.g. 'brats_0042/s077#12'
  sr      (N, H, W, C) float32 the method's super-resolved test images, [0, 1]
  hr      (N, H, W, C) float32 the ground-truth HR images, [0, 1]
  method  () unicode str       the method's display name (not 'ground truth')
`write_predictions` also takes (N, H, W) images and adds C = 1; it writes atomically.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_mos.py
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from medsr_jax.errors import InputError
from medsr_jax.io import images as image_io

PREDICTIONS = os.path.join('predictions', 'test.npz')
GROUND_TRUTH = 'ground truth'


def _as_images(name: str, array: Any, where: str) -> np.ndarray:
  try:
    array = np.asarray(array)
  except Exception as e:  # e.g. ragged lists
    raise InputError(f'{where}: {name} is not an array ({image_io.one_line(e)})') from e
  if array.ndim == 3:
    array = array[..., None]
  if array.ndim != 4 or 0 in array.shape:
    raise InputError(f'{where}: {name} must have shape (N, H, W, C) or (N, H, W), '
                     f'got {array.shape}')
  if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
    raise InputError(f'{where}: {name} must be numeric, got dtype {array.dtype}')
  array = array.astype(np.float32)
  if not np.all(np.isfinite(array)):
    raise InputError(f'{where}: {name} has NaN or infinite values')
  return array


def _as_ids(ids: Any, where: str) -> np.ndarray:
  ids = np.asarray(ids)
  if ids.ndim != 1 or (ids.size and ids.dtype.kind not in 'UO'):
    raise InputError(f'{where}: ids must be a 1-D array of strings, got {ids.dtype} '
                     f'of shape {ids.shape}')
  if not all(isinstance(i, str) and i for i in ids.tolist()):
    raise InputError(f'{where}: ids must be non-empty strings')
  ids = np.asarray(ids.tolist(), dtype=str)
  if len(set(ids.tolist())) != ids.size:
    raise InputError(f'{where}: ids are not unique')
  return ids


def _check_method(method: Any, where: str) -> str:
  if not isinstance(method, str) or not method.strip():
    raise InputError(f'{where}: method must be a non-empty string, got {method!r}')
  if method.strip().lower() == GROUND_TRUTH:
    raise InputError(f'{where}: method name {method!r} is reserved for the ground truth')
  if '\n' in method or '\r' in method:
    raise InputError(f'{where}: method name must be one line, got {method!r}')
  return method.strip()


def _check_predictions(where: str, method, ids, sr, hr) -> dict:
  method = _check_method(method, where)
  ids = _as_ids(ids, where)
  sr = _as_images('sr', sr, where)
  hr = _as_images('hr', hr, where)
  if sr.shape != hr.shape:
    raise InputError(f'{where}: sr has shape {sr.shape} but hr has shape {hr.shape}')
  if sr.shape[0] != ids.size:
    raise InputError(f'{where}: {ids.size} ids for {sr.shape[0]} images')
  return {'method': method, 'ids': ids, 'sr': sr, 'hr': hr}


def predictions_path(run_dir: Any) -> str:
  return os.path.join(os.fspath(run_dir), PREDICTIONS)


def write_predictions(run_dir: Any, *, method: str, ids: Sequence[str], sr: Any, hr: Any) -> str:
  """Writes RUN_DIR/predictions/test.npz atomically (see the module docstring); returns its path.

  Args:
    run_dir: the run's directory (created if needed).
    method: the method's display name in the MOS table, e.g. 'MS-GAN'.
    ids: (N,) unique test sample ids.
    sr: (N, H, W, C) or (N, H, W) super-resolved test images in [0, 1].
    hr: ground-truth HR images of the same shape.
  """
  where = f'predictions of {os.fspath(run_dir)}'
  p = _check_predictions(where, method, ids, sr, hr)
  path = predictions_path(run_dir)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with image_io.temp_path(path, '.npz') as tmp:
    with open(tmp, 'wb') as f:
      np.savez_compressed(f, ids=p['ids'], sr=p['sr'], hr=p['hr'], method=np.asarray(p['method']))
    os.replace(tmp, path)
  return path


class PredictionsFile:
  """A run's predictions file, opened lazily: ids and method first, images on demand."""

  def __init__(self, run_dir: str):
    self.run_dir = run_dir
    self.path = predictions_path(run_dir)
    if not os.path.isdir(run_dir):
      raise InputError(f'{run_dir}: run directory not found')
    if not os.path.isfile(self.path):
      raise InputError(f'{run_dir}: no {PREDICTIONS} (the trainer writes it with '
                       'medsr_jax.io.predictions.write_predictions)')
    with self._open() as z:
      missing = [k for k in ('ids', 'sr', 'hr', 'method') if k not in z.files]
      if missing:
        raise InputError(f'{self.path}: missing array(s) {", ".join(missing)}')
      method = self._get(z, 'method')
      if method.ndim != 0 or method.dtype.kind != 'U':
        raise InputError(f'{self.path}: method must be a 0-d string array')
      self.method = _check_method(str(method), self.path)
      self.ids = _as_ids(self._get(z, 'ids'), self.path)
    self.index = {sid: i for i, sid in enumerate(self.ids.tolist())}

  def _open(self):
    try:
      return np.load(self.path, allow_pickle=False)
    except Exception as e:
      raise InputError(f'{self.path}: cannot read ({image_io.one_line(e)})') from e

  def _get(self, z, key: str) -> np.ndarray:
    try:
      return z[key]
    except Exception as e:  # object arrays (allow_pickle=False), truncated files
      raise InputError(f'{self.path}: cannot read {key} ({image_io.one_line(e)})') from e

  def load(self) -> dict:
    with self._open() as z:
      sr, hr = self._get(z, 'sr'), self._get(z, 'hr')
    return _check_predictions(self.path, self.method, self.ids, sr, hr)


def read_predictions(run_dir: Any) -> dict:
  """{'method': str, 'ids': (N,) str, 'sr': (N,H,W,C) float32, 'hr': same} of RUN_DIR, checked."""
  return PredictionsFile(os.fspath(run_dir)).load()
