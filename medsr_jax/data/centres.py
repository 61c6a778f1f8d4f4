"""ROI centres predicted by the lesion detector, as a CSV file (`python -m medsr_jax.detect`).

  split,shard,index,row,col,height,width
  train,train-00000-of-00003.tfrecord,0,61.25,40.5,60,60

One row per record of a split: `index` is the record's index within its split (the
`shards.ShardSource` index; the embedded sample's slice order for `--data=sample`), `shard` the
shard file holding it ('sample' for the sample), `row`, `col` the predicted centre in pixels of
the image the detector was given and `height`, `width` that image's size (the LR slice, or the
slice itself at scale 1). Keeping the detector's own image size makes the file independent of the
HR size the reader wants: `read_centres` maps each centre to HR pixels with the half-pixel
convention, hr = (v + 0.5) * H_hr / height - 0.5 (likewise for columns), the same mapping as
`lesion.scale_centres` (thesis eq. 3.9: LD runs on the LR image; the ROI is cropped from both).

  from medsr_jax.data import centres
  centres.write_centres('centres.csv', rows)                       # atomic: temp file + rename
  rc = centres.read_centres('centres.csv', 'train', (240, 240), n)  # (n, 2) (row, col) HR pixels

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_detector.py
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from medsr_jax.errors import InputError
from medsr_jax.io import images as images_io

HEADER = ('split', 'shard', 'index', 'row', 'col', 'height', 'width')


def _row_values(row: Any) -> list[Any]:
  if isinstance(row, Mapping):
    missing = [k for k in HEADER if k not in row]
    if missing:
      raise InputError(f'a centre row lacks {missing}')
    return [row[k] for k in HEADER]
  values = list(row)
  if len(values) != len(HEADER):
    raise InputError(f'a centre row has {len(values)} values, expected {len(HEADER)} {HEADER}')
  return values


def write_centres(path: str | os.PathLike, rows: Iterable[Any]) -> int:
  """Writes `rows` (dicts with the HEADER keys, or tuples in HEADER order) to the CSV `path`,
  atomically (a temporary name in the same directory, then a rename); returns the row count."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise InputError(f'output directory does not exist: {directory}')
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator='\n')
  writer.writerow(HEADER)
  n = 0
  for row in rows:
    split, shard, index, r, c, h, w = _row_values(row)
    writer.writerow([str(split), str(shard), int(index), f'{float(r):.4f}', f'{float(c):.4f}',
                     int(h), int(w)])
    n += 1
  tmp = images_io.temp_name(path)
  try:
    with open(tmp, 'x', encoding='utf-8', newline='') as f:
      f.write(buf.getvalue())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return n


def read_centres(path: str | os.PathLike, split: str, hr_hw: Sequence[int],
                 count: int) -> np.ndarray:
  """(count, 2) (row, col) centres of records 0..count-1 of `split`, in pixels of (H, W) =
  `hr_hw` slices (module docstring). InputError for a missing or malformed file, a split not in
  it, or an index below `count` that is missing or repeated; rows with index >= count are
  ignored."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise InputError(f'centres file not found: {path}')
  hr_h, hr_w = (int(v) for v in tuple(hr_hw)[:2])
  if hr_h < 1 or hr_w < 1 or int(count) < 0:
    raise InputError(f'read_centres needs a positive HR size and count >= 0, got {tuple(hr_hw)},'
                     f' {count}')
  try:
    with open(path, encoding='utf-8', newline='') as f:
      reader = csv.reader(f)
      header = next(reader, None)
      if header is None or tuple(h.strip() for h in header) != HEADER:
        raise InputError(f'{path}: not a centres file (header {header!r}, expected '
                         f'{",".join(HEADER)})')
      out = np.full((int(count), 2), np.nan, np.float64)
      splits = set()
      for line_no, fields in enumerate(reader, start=2):
        if not fields:
          continue
        if len(fields) != len(HEADER):
          raise InputError(f'{path}:{line_no}: {len(fields)} fields, expected {len(HEADER)}')
        splits.add(fields[0])
        if fields[0] != split:
          continue
        try:
          index, h, w = int(fields[2]), int(fields[5]), int(fields[6])
          r, c = float(fields[3]), float(fields[4])
        except ValueError as e:
          raise InputError(f'{path}:{line_no}: bad number ({e})') from None
        if h < 1 or w < 1 or index < 0 or not (math.isfinite(r) and math.isfinite(c)):
          raise InputError(f'{path}:{line_no}: bad centre row {fields}')
        if index >= count:
          continue
        if not np.isnan(out[index, 0]):
          raise InputError(f'{path}:{line_no}: index {index} of split {split!r} appears twice')
        out[index] = ((r + 0.5) * hr_h / h - 0.5, (c + 0.5) * hr_w / w - 0.5)
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise InputError(f'{path}: cannot read centres ({" ".join(str(e).split())})') from None
  if split not in splits:
    raise InputError(f'{path}: no centres for split {split!r} (the file has '
                     f'{sorted(splits) or "none"})')
  missing = np.flatnonzero(np.isnan(out[:, 0]))
  if missing.size:
    raise InputError(f'{path}: no centre for index {int(missing[0])} of split {split!r} '
                     f'({missing.size} of {count} missing)')
  return out
