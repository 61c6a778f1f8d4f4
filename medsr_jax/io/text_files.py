"""Writing a small text file (a report table, a CSV) atomically: all of it or nothing.

  write_text_atomic('runs/table_3_3.md', table, what='--out')

The text goes to a temporary file in the target's directory, which then replaces the target
(`os.replace`), so a failure never leaves a partial file. A missing directory or a failed write
is an `InputError` on one line, prefixed by `what` (default: the path).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_report.py tests/test_mos.py
"""

from __future__ import annotations

import os
import tempfile

from medsr_jax.errors import InputError
from medsr_jax.io import images


def write_text_atomic(path: str | os.PathLike, text: str, *, what: str = '') -> None:
  """Writes `text` (UTF-8) to `path` through a temporary file and a rename."""
  path = os.fspath(path)
  what = what or path
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise InputError(f'{what}: directory {folder} not found')
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
    os.replace(tmp, path)
  except OSError as e:
    raise InputError(f'{what}: cannot write {path} ({images.one_line(e)})') from e
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
