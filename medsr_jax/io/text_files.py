"""Writing a small text file (a report table, a CSV, results.md, config.json) atomically: all of
it or nothing.

  write_text_atomic('runs/table_3_3.md', table, what='--out')
  append_text_atomic('runs/demo/results.md', '\nNote: ...\n', what='results')

The text goes to a temporary file in the target's directory, flushed to disk, which then replaces
the target (`os.replace`), so a failure (a full disk, a kill) never leaves a partial or 0-byte
file: the target holds its old text or the new text. `append_text_atomic` reads the old text and
writes old + new the same way (a plain `open(path, 'a')` can leave half an append). A missing
directory or a failed write is an `InputError` on one line, prefixed by `what` (default: the
path); a full disk is its `DiskFull` kind, which ends a command at once. This module is the one helper for such files: use it rather than a local copy.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_report.py tests/test_mos.py tests/test_true_record.py
"""

from __future__ import annotations

import errno
import os

from medsr_jax.errors import DiskFull, InputError
from medsr_jax.io import images


def write_text_atomic(path: str | os.PathLike, text: str, *, what: str = '') -> None:
  """Writes `text` (UTF-8) to `path` through a temporary file and a rename."""
  path = os.fspath(path)
  what = what or path
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise InputError(f'{what}: directory {folder} not found')
  tmp = images.temp_name(path)
  try:
    # Created as a plain open() would (the umask applies), never over an existing file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    error = DiskFull if e.errno in (errno.ENOSPC, errno.EDQUOT) else InputError
    raise error(f'{what}: cannot write {path} ({images.one_line(e)})') from e
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def append_text_atomic(path: str | os.PathLike, text: str, *, what: str = '') -> None:
  """Appends `text` to `path` (created if missing): old text + `text` through
  `write_text_atomic`, so the file holds either all of the old text alone or both."""
  path = os.fspath(path)
  try:
    with open(path, encoding='utf-8') as f:
      old = f.read()
  except FileNotFoundError:
    old = ''
  except (OSError, ValueError) as e:
    raise InputError(f'{what or path}: cannot read {path} ({images.one_line(e)})') from e
  write_text_atomic(path, old + text, what=what)

