"""Reading the small JSON files that describe a directory (export config, shard manifest).

  path, obj = read_json_object('runs/demo/export', 'config.json', 'model directory',
                               'a medsr_jax export directory')

Every problem (no directory, no file, unreadable or invalid JSON, not a JSON object) is an
`InputError` naming the directory or file, on one line.
"""

from __future__ import annotations

import json
import os
from typing import Any

from medsr_jax.errors import InputError
from medsr_jax.io import images


def read_json_object(directory: Any, name: str, kind: str, owner: str) -> tuple[str, dict]:
  """(path, parsed object) of `directory`/`name`.

  Args:
    directory: the directory that should hold the file.
    name: the file name.
    kind: what the directory is, for the not-found message ('model directory').
    owner: what a directory without the file is not ('a medsr_jax export directory').
  """
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise InputError(f'{directory}: {kind} not found')
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    raise InputError(f'{directory}: no {name} (not {owner})')
  try:
    with open(path, encoding='utf-8') as f:
      obj = json.load(f)
  except (OSError, ValueError) as e:
    raise InputError(f'{path}: cannot read ({images.one_line(e)})') from e
  if not isinstance(obj, dict):
    raise InputError(f'{path}: expected a JSON object')
  return path, obj
